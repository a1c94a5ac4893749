//! Hostile input over the wire (issue 8): a real server with mutual TLS and a
//! role policy, on SQLite and PostgreSQL, fed what an attacker would send —
//! oversized messages and broken gRPC frames, protobuf that is truncated,
//! mistyped, nested deep or carries invalid UTF-8, huge label and context
//! maps, forged and replayed page tokens, filters written as injection
//! attempts, and reaches into another tenant. Each kind of input is one test;
//! one more sends all of them to a single server.
//!
//! Every test ends the same way ([`Fixture::finish`]): health still SERVING,
//! both tenants' secrets still resolve to what was stored, the database holds
//! exactly what it held before the hostile calls (compared row by row), and
//! nothing the process logged (TRACE, every target) contains a canary value
//! — neither the stored secrets' values nor the values the hostile requests
//! carried — as text, base64 or a byte list.
//!
//! Bytes that are not valid protobuf cannot be built with the generated
//! clients, so two raw paths are used: [`raw_unary`] (tonic's own framing
//! around arbitrary message bytes) and [`raw_http`] (an HTTP/2 request whose
//! body is arbitrary, gRPC framing included). Both run over the same mTLS
//! channel as the generated clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coffer_core::filter::{AuditFilterSpec, SecretFilter};
use coffer_core::record::{SecretRecord, VersionRecord, now_micros};
use coffer_proto::v1;
use coffer_tests::{Db, TestServer, reason, violated_fields};
use http_body_util::{BodyExt, Full};
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::Service;
use tonic::codegen::http::{self, uri::PathAndQuery};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

/// Admin on acme only.
const ALICE: &str = "spiffe://test/alice";
/// Admin on globex only.
const BOB: &str = "spiffe://test/bob";
/// Viewer on acme: may read metadata, may not write or resolve.
const VIEWER: &str = "spiffe://test/viewer";

const POLICY: &str = r#"
[[grant]]
principal = "spiffe://test/alice"
tenants = ["acme"]
roles = ["admin"]

[[grant]]
principal = "spiffe://test/bob"
tenants = ["globex"]
roles = ["admin"]

[[grant]]
principal = "spiffe://test/viewer"
tenants = ["acme"]
roles = ["viewer"]
"#;

const ACME: &str = "tenants/acme";
const GLOBEX: &str = "tenants/globex";
const ACME_DB: &str = "tenants/acme/secrets/db";
const GLOBEX_DB: &str = "tenants/globex/secrets/db";

/// The server's documented request limit (`ServeOptions::max_decoding_message_size`).
const MAX_REQUEST: usize = 1024 * 1024;

const CREATE: &str = "/coffer.v1.SecretsService/CreateSecret";
const RESOLVE: &str = "/coffer.v1.SecretsService/ResolveSecret";
const LIST: &str = "/coffer.v1.SecretsService/ListSecrets";

/// The `env` label of each seeded acme secret: values an injected LIKE
/// pattern, quote or escape would match too broadly.
const ACME_LABELLED: [(&str, &str); 7] = [
    ("db", "prod"),
    ("pct", "%"),
    ("under", "_"),
    ("quote", "x' OR '1'='1"),
    ("backslash", "\\"),
    ("dquote", "say \"hi\""),
    ("prefix", "pro"),
];

// ---------------------------------------------------------------- logs

/// Everything the process logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs (once per process) a JSON subscriber at TRACE for every target.
fn capture_logs() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            tracing_subscriber::fmt()
                .json()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .try_init()
                .expect("no other subscriber in this test binary");
            captured
        })
        .clone()
}

// ------------------------------------------------------------- fixture

type Snapshot = Vec<(SecretRecord, Vec<VersionRecord>)>;

/// A running server with both tenants seeded, the canaries in play and the
/// database as it was before the hostile calls.
struct Fixture {
    server: TestServer,
    logs: Captured,
    /// Values that must never appear in a log: the stored ones and every
    /// value a hostile request carried.
    canaries: Mutex<Vec<String>>,
    acme_value: String,
    globex_value: String,
    before: Snapshot,
}

impl Fixture {
    async fn start(db: Db) -> Option<Fixture> {
        let logs = capture_logs();
        let server = TestServer::start_mtls(db, POLICY).await?;
        let unique = format!("{}-{}", std::process::id(), now_micros());
        let acme_value = format!("canary-acme-{unique}");
        let globex_value = format!("canary-globex-{unique}");

        let mut alice = server.secrets_as(ALICE);
        for (key, env) in ACME_LABELLED {
            let value = if key == "db" {
                acme_value.clone()
            } else {
                format!("{acme_value}-{key}")
            };
            alice
                .create_secret(create(ACME, key, value.as_bytes(), &[("env", env)]))
                .await
                .unwrap();
        }
        // Two versions, so version lists have a second page.
        alice
            .rotate_secret(rotate(ACME_DB, format!("{acme_value}-old").as_bytes()))
            .await
            .unwrap();
        alice
            .rotate_secret(rotate(ACME_DB, acme_value.as_bytes()))
            .await
            .unwrap();
        server
            .secrets_as(BOB)
            .create_secret(create(
                GLOBEX,
                "db",
                globex_value.as_bytes(),
                &[("env", "prod")],
            ))
            .await
            .unwrap();

        let mut canaries = vec![acme_value.clone(), globex_value.clone()];
        canaries.extend(ACME_LABELLED.map(|(key, _)| format!("{acme_value}-{key}")));
        canaries.push(format!("{acme_value}-old"));
        let before = snapshot(&server).await;
        Some(Fixture {
            server,
            logs,
            canaries: Mutex::new(canaries),
            acme_value,
            globex_value,
            before,
        })
    }

    /// A fresh value for a hostile request to carry; the logs must not show it.
    fn canary(&self, tag: &str) -> String {
        let value = format!("{}-{tag}", self.acme_value);
        self.canaries.lock().unwrap().push(value.clone());
        value
    }

    fn secrets(
        &self,
        principal: &str,
    ) -> v1::secrets_service_client::SecretsServiceClient<Channel> {
        self.server.secrets_as(principal)
    }

    fn channel(&self, principal: &str) -> Channel {
        self.server.channel_as(principal)
    }

    /// The server survived: an ordinary call still works on `channel`.
    async fn assert_up(&self, channel: &Channel) {
        let secret = v1::secrets_service_client::SecretsServiceClient::new(channel.clone())
            .get_secret(v1::GetSecretRequest {
                name: ACME_DB.into(),
            })
            .await
            .expect("an ordinary call after hostile input");
        assert_eq!(secret.into_inner().name, ACME_DB);
    }

    /// The checks every test ends with (see the module docs).
    async fn finish(self) {
        let health = self.server.health_status("").await;
        assert_eq!(health, Some(ServingStatus::Serving));
        let health = self.server.health_status("coffer.v1.SecretsService").await;
        assert_eq!(health, Some(ServingStatus::Serving));

        let after = snapshot(&self.server).await;
        assert!(self.before == after, "hostile input changed the database");

        let resolved = self
            .secrets(ALICE)
            .resolve_secret(resolve(ACME_DB))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resolved.value, self.acme_value.as_bytes());
        assert_eq!(resolved.version, 3);
        let resolved = self
            .secrets(BOB)
            .resolve_secret(resolve(GLOBEX_DB))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resolved.value, self.globex_value.as_bytes());

        let text = self.logs.text();
        // The capture holds the server's own lines, so the check below means something.
        assert!(
            text.contains("rpc finished"),
            "the server's logs were not captured"
        );
        for canary in self.canaries.lock().unwrap().iter() {
            let base64 = STANDARD.encode(canary.as_bytes());
            let list = format!("{:?}", canary.as_bytes());
            let list = &list[1..list.len() - 1];
            for needle in [canary.as_str(), &base64, list] {
                assert!(!text.contains(needle), "the log holds a value ({needle})");
            }
        }
        self.server.stop().await;
    }
}

/// Every secret (deleted included) and every version of each, in the
/// tenants the tests touch.
async fn snapshot(server: &TestServer) -> Snapshot {
    let mut out = Vec::new();
    for tenant in ["acme", "globex", "initech"] {
        let tenant = coffer_core::TenantId::parse(tenant, "t").unwrap();
        let secrets = server
            .store
            .list_secrets(&tenant, &SecretFilter::default(), true, None, 10_000)
            .await
            .unwrap();
        for mut secret in secrets {
            let versions = server
                .store
                .list_versions(&secret.uid, None, 10_000)
                .await
                .unwrap();
            // The tests' own successful resolves move it; nothing else may move.
            secret.last_resolve_time = None;
            out.push((secret, versions));
        }
    }
    out
}

/// One test per kind of input on SQLite and PostgreSQL, each on its own server.
macro_rules! hostile_test {
    ($name:ident, $case:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let fixture = Fixture::start(Db::Sqlite).await.expect("sqlite server");
                super::$case(&fixture).await;
                fixture.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(fixture) = Fixture::start(Db::Postgres).await else {
                    return;
                };
                super::$case(&fixture).await;
                fixture.finish().await;
            }
        }
    };
}

// ----------------------------------------------------------- messages

fn create(
    parent: &str,
    key: &str,
    value: &[u8],
    labels: &[(&str, &str)],
) -> v1::CreateSecretRequest {
    v1::CreateSecretRequest {
        parent: parent.into(),
        secret_id: key.into(),
        secret: Some(v1::Secret {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }),
        source: Some(v1::create_secret_request::Source::Value(value.to_vec())),
        request_id: String::new(),
    }
}

fn rotate(name: &str, value: &[u8]) -> v1::RotateSecretRequest {
    v1::RotateSecretRequest {
        name: name.into(),
        source: Some(v1::rotate_secret_request::Source::Value(value.to_vec())),
        ..Default::default()
    }
}

fn resolve(name: &str) -> v1::ResolveSecretRequest {
    v1::ResolveSecretRequest {
        name: name.into(),
        ..Default::default()
    }
}

fn list(parent: &str, filter: &str, page_size: i32, page_token: &str) -> v1::ListSecretsRequest {
    v1::ListSecretsRequest {
        parent: parent.into(),
        page_size,
        page_token: page_token.into(),
        filter: filter.into(),
        show_deleted: false,
    }
}

/// The call failed with `code` and a sane message: lowercase, bounded, and
/// free of anything that would betray the database underneath.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code) -> tonic::Status {
    let status = result.expect_err("the call should have been refused");
    assert_eq!(status.code(), code, "wrong code: {status:?}");
    assert_clean(&status);
    status
}

#[track_caller]
fn assert_clean(status: &tonic::Status) {
    let message = status.message().to_ascii_lowercase();
    assert!(!message.is_empty(), "{status:?}");
    assert!(message.len() <= 512, "an unbounded message: {status:?}");
    assert!(
        status.details().len() <= 4096,
        "unbounded details: {status:?}"
    );
    for word in [
        "select ",
        "insert ",
        "sqlx",
        "sqlite",
        "postgres",
        "sea_orm",
        "seaorm",
        "relation ",
        "syntax error at",
        "constraint",
        "panicked",
        "database",
    ] {
        assert!(!message.contains(word), "a leaky message: {status:?}");
    }
}

/// A tonic decode failure: the bytes never became a request.
#[track_caller]
fn undecodable<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Internal, "{what}: {status:?}");
    assert!(
        status
            .message()
            .starts_with("failed to decode Protobuf message"),
        "{what}: {status:?}"
    );
    assert_clean(&status);
}

// ------------------------------------------------------ raw wire access

/// A codec that sends the given bytes as the message and hands back the
/// response's bytes: protobuf the generated types could never produce.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
struct RawCoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// A unary call of `method` whose message is exactly `message`.
async fn raw_unary(
    channel: &Channel,
    method: &'static str,
    message: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    grpc.unary(
        tonic::Request::new(message),
        PathAndQuery::from_static(method),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A gRPC POST of `method` whose HTTP/2 body is exactly `body` (framing
/// included), with `headers` added: the code and message the server answered.
async fn raw_http(
    channel: &Channel,
    method: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (Code, String) {
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(method)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(tonic::body::Body::new(Full::new(bytes::Bytes::from(body))))
        .unwrap();
    let mut channel = channel.clone();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), channel.call(request))
        .await
        .expect("the server answered in time")
        .expect("an HTTP/2 response");
    assert_eq!(response.status(), http::StatusCode::OK);
    let (parts, body) = response.into_parts();
    // A trailers-only answer carries the status in the headers.
    let grpc_status = |map: &http::HeaderMap| {
        map.get("grpc-status").map(|code| {
            let code = Code::from(code.to_str().unwrap().parse::<i32>().unwrap());
            let message = map
                .get("grpc-message")
                .map(|m| percent_decode(m.to_str().unwrap()))
                .unwrap_or_default();
            (code, message)
        })
    };
    if let Some(answer) = grpc_status(&parts.headers) {
        return answer;
    }
    let collected = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the body ended in time")
        .expect("a readable body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    grpc_status(&trailers).expect("a grpc-status trailer")
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| raw.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A gRPC length-prefixed frame: flag, big-endian length, then `message`.
fn frame(flag: u8, declared_len: u32, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&declared_len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

// ------------------------------------------------- protobuf by hand

fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn key(field: u64, wire_type: u64) -> Vec<u8> {
    varint((field << 3) | wire_type)
}

/// A length-delimited field.
fn len_field(field: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = key(field, 2);
    out.extend(varint(payload.len() as u64));
    out.extend_from_slice(payload);
    out
}

/// A map entry message: key = 1, value = 2.
fn map_entry(field: u64, k: &[u8], v: &[u8]) -> Vec<u8> {
    let mut entry = len_field(1, k);
    entry.extend(len_field(2, v));
    len_field(field, &entry)
}

/// Deterministic junk (xorshift), so a failure can be replayed.
fn junk(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

// ================================================================ cases

/// Requests over the 1 MiB limit are refused by the transport with
/// OUT_OF_RANGE (tonic's code for a message over `max_decoding_message_size`)
/// before anything is decoded; a request of exactly 1 MiB is decoded and
/// judged on its merits. The connection and the server stay usable.
async fn oversized_messages(f: &Fixture) {
    let channel = f.channel(ALICE);
    let mut alice = v1::secrets_service_client::SecretsServiceClient::new(channel.clone());
    let canary = f.canary("oversized");

    // Exactly at the limit: decoded, then refused as a value over 64 KiB.
    let mut at_limit = create(ACME, "at-limit", b"", &[]);
    let mut value_len = MAX_REQUEST - 64;
    loop {
        let value: Vec<u8> = canary.bytes().cycle().take(value_len).collect();
        at_limit.source = Some(v1::create_secret_request::Source::Value(value));
        let len = at_limit.encoded_len();
        if len == MAX_REQUEST {
            break;
        }
        value_len = value_len + MAX_REQUEST - len;
    }
    let status = refused(
        alice.create_secret(at_limit.clone()).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["value"]);

    // One byte over, 2 MiB, 8 MiB: refused on the length prefix alone.
    for extra in [1, MAX_REQUEST, 7 * MAX_REQUEST] {
        let mut over = at_limit.clone();
        let value: Vec<u8> = canary.bytes().cycle().take(value_len + extra).collect();
        over.source = Some(v1::create_secret_request::Source::Value(value));
        let status = refused(alice.create_secret(over).await, Code::OutOfRange);
        assert!(
            status
                .message()
                .contains(&format!("the limit is: {MAX_REQUEST} bytes")),
            "{status:?}"
        );
        f.assert_up(&channel).await;
    }
    // The size limit holds for every field, not just the value.
    let mut long_description = create(ACME, "described", canary.as_bytes(), &[]);
    long_description.secret.as_mut().unwrap().description = "d".repeat(2 * MAX_REQUEST);
    refused(
        alice.create_secret(long_description).await,
        Code::OutOfRange,
    );
    let status = refused(
        alice
            .list_secrets(list(ACME, &"x".repeat(MAX_REQUEST + 1), 0, ""))
            .await,
        Code::OutOfRange,
    );
    assert!(status.message().contains("too large"), "{status:?}");

    // A length prefix that claims 4 GiB with five bytes behind it: refused
    // without waiting for (or allocating) the rest.
    let (code, message) = raw_http(&channel, CREATE, &[], frame(0, u32::MAX, b"hello")).await;
    assert_eq!(code, Code::OutOfRange, "{message}");
    let (code, message) =
        raw_http(&channel, CREATE, &[], frame(0, MAX_REQUEST as u32 + 1, &[])).await;
    assert_eq!(code, Code::OutOfRange, "{message}");
    f.assert_up(&channel).await;
    // A fresh connection works too.
    f.assert_up(&f.channel(ALICE)).await;
}
hostile_test!(
    oversized_messages_get_out_of_range_and_the_server_stays_up,
    oversized_messages
);

/// Bytes that are not protobuf, sent as a well-framed gRPC message (after
/// a valid `value` field holding a canary, so a partial decode has seen it):
/// truncated and overlong varints, lengths past the end, wrong wire types,
/// invalid tags, stray end-groups and junk. Each answers INTERNAL with
/// tonic's decode error, on the same connection, and nothing panics.
async fn malformed_protobuf(f: &Fixture) {
    let channel = f.channel(ALICE);
    let canary = f.canary("malformed");
    let prefix = len_field(4, canary.as_bytes());
    let mut inputs: Vec<(&str, Vec<u8>)> = vec![
        ("truncated varint value", vec![0x78]),
        ("truncated length varint", vec![0x0a, 0x80]),
        ("truncated key varint", vec![0x80]),
        ("overlong varint (11 bytes)", {
            let mut v = vec![0x78];
            v.extend([0xff; 10]);
            v.push(0x01);
            v
        }),
        ("length past the end", vec![0x0a, 0x64, b'a', b'c']),
        ("length of 2^64-1", {
            let mut v = vec![0x0a];
            v.extend(varint(u64::MAX));
            v
        }),
        ("string field as varint", vec![0x08, 0x01]),
        ("string field as fixed32", vec![0x0d, 1, 2, 3, 4]),
        ("bytes field as fixed64", vec![0x21, 1, 2, 3, 4, 5, 6, 7, 8]),
        ("message field as varint", vec![0x18, 0x05]),
        (
            "message field holding junk",
            len_field(3, &[0xff, 0xff, 0xff]),
        ),
        ("field number 0", vec![0x00, 0x01]),
        ("field number above 2^29", {
            let mut v = varint((1u64 << 32) | 2);
            v.extend([0x01, 0x00]);
            v
        }),
        ("wire type 6", vec![0x0e]),
        ("wire type 7", vec![0x0f]),
        ("end-group without a start", vec![0x0c]),
        ("start-group without an end", vec![0x7b, 0x08, 0x01]),
        ("mismatched end-group", vec![0x7b, 0x84, 0x01]),
        (
            "map entry cut short",
            len_field(3, &[0x2a, 0x05, 0x0a, 0x01, 0xff]),
        ),
    ];
    for seed in 1..=12u64 {
        // Junk that starts with a length field running past the end
        // cannot decode, whatever follows.
        let mut bytes = vec![0x12, 0xff, 0xff, 0x03];
        bytes.extend(junk(seed, 64 + 64 * seed as usize));
        inputs.push(("junk", bytes));
    }
    for (what, bytes) in &inputs {
        let mut message = prefix.clone();
        message.extend_from_slice(bytes);
        undecodable(raw_unary(&channel, CREATE, message.clone()).await, what);
        undecodable(raw_unary(&channel, RESOLVE, message.clone()).await, what);
        undecodable(raw_unary(&channel, LIST, message).await, what);
    }
    f.assert_up(&channel).await;

    // Decodable oddities reach validation and are refused there: an empty
    // message, a field set twice, an unknown field far up the number space.
    let status = refused(
        raw_unary(&channel, CREATE, Vec::new()).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["parent"]);
    let mut twice = len_field(1, b"tenants/globex");
    twice.extend(len_field(1, b"tenants/acme"));
    twice.extend(len_field(2, b"Bad Key"));
    twice.extend(prefix.clone());
    let status = refused(
        raw_unary(&channel, CREATE, twice).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["secret_id"]);
    let mut unknown = len_field(1, ACME_DB.as_bytes());
    unknown.extend(key((1 << 29) - 1, 0));
    unknown.extend(varint(7));
    let resolved = raw_unary(&channel, RESOLVE, unknown).await.unwrap();
    let resolved = v1::ResolveSecretResponse::decode(resolved.as_slice()).unwrap();
    assert_eq!(resolved.value, f.acme_value.as_bytes());

    // Broken gRPC framing around the message.
    let body = frame(0, 100, &[0x0a; 10]);
    /// What is wrong, extra headers, the HTTP/2 body, the expected code.
    type FramingCase = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Vec<u8>,
        Code,
    );
    let cases: Vec<FramingCase> = vec![
        ("no message at all", vec![], Vec::new(), Code::Internal),
        (
            "a frame header cut short",
            vec![],
            vec![0, 0, 0],
            Code::Internal,
        ),
        (
            "a frame shorter than its prefix",
            vec![],
            body,
            Code::Internal,
        ),
        (
            "the compressed flag without grpc-encoding",
            vec![],
            frame(1, prefix.len() as u32, &prefix),
            Code::Internal,
        ),
        (
            "an invalid compressed flag",
            vec![],
            frame(7, prefix.len() as u32, &prefix),
            Code::Internal,
        ),
        (
            "an encoding the server does not accept",
            vec![("grpc-encoding", "gzip")],
            frame(1, 4, &[0x1f, 0x8b, 0x08, 0x00]),
            Code::Unimplemented,
        ),
        (
            "an unknown encoding",
            vec![("grpc-encoding", "x-hostile")],
            frame(1, prefix.len() as u32, &prefix),
            Code::Unimplemented,
        ),
    ];
    for (what, headers, body, code) in cases {
        let (got, message) = raw_http(&channel, CREATE, &headers, body).await;
        assert_eq!(got, code, "{what}: {message}");
        assert!(!message.contains(&canary), "{what}: {message}");
    }
    // An unknown method under a real service.
    let (got, _) = raw_http(
        &channel,
        "/coffer.v1.SecretsService/DropTables",
        &[],
        frame(0, 0, &[]),
    )
    .await;
    assert_eq!(got, Code::Unimplemented);
    f.assert_up(&channel).await;
}
hostile_test!(
    malformed_protobuf_and_framing_get_internal_without_a_panic,
    malformed_protobuf
);

/// Nesting that would recurse without bound: unknown groups thousands deep
/// (prost's recursion limit answers, no stack overflow — which would take
/// the whole test process down), an unterminated group chain, length-
/// delimited unknown fields nested thousands deep (skipped as bytes) and a
/// nested message repeated hundreds of thousands of times (merged).
async fn deeply_nested(f: &Fixture) {
    let channel = f.channel(ALICE);
    let canary = f.canary("nested");
    let value = len_field(4, canary.as_bytes());
    for depth in [150, 1_000, 10_000, 200_000] {
        let mut message = value.clone();
        // Field 15 as start-group (0x7b) … end-group (0x7c).
        message.extend(std::iter::repeat_n(0x7b, depth));
        message.extend(std::iter::repeat_n(0x7c, depth));
        undecodable(
            raw_unary(&channel, CREATE, message.clone()).await,
            "nested groups",
        );
        // The same inside the nested Secret message.
        let mut inner = Vec::new();
        inner.extend(std::iter::repeat_n(0x7b, depth));
        inner.extend(std::iter::repeat_n(0x7c, depth));
        let mut message = value.clone();
        message.extend(len_field(3, &inner));
        undecodable(
            raw_unary(&channel, CREATE, message).await,
            "nested groups in a message",
        );
    }
    let mut open = value.clone();
    open.extend(std::iter::repeat_n(0x7b, 300_000));
    undecodable(
        raw_unary(&channel, CREATE, open).await,
        "unterminated groups",
    );

    // Below the limit, nested groups are legal unknown fields.
    let mut shallow = len_field(1, ACME_DB.as_bytes());
    shallow.extend(std::iter::repeat_n(0x7b, 50));
    shallow.extend(std::iter::repeat_n(0x7c, 50));
    let resolved = raw_unary(&channel, RESOLVE, shallow).await.unwrap();
    let resolved = v1::ResolveSecretResponse::decode(resolved.as_slice()).unwrap();
    assert_eq!(resolved.value, f.acme_value.as_bytes());

    // Length-delimited unknown fields nested 20 000 deep: opaque bytes.
    // Built outside in: level i + 1 wraps `sizes[i]` bytes.
    const LEVELS: usize = 20_000;
    let mut sizes = vec![0usize];
    for i in 0..LEVELS {
        sizes.push(sizes[i] + 1 + varint(sizes[i] as u64).len());
    }
    let mut nested = Vec::with_capacity(sizes[LEVELS]);
    for i in (0..LEVELS).rev() {
        nested.extend(key(15, 2));
        nested.extend(varint(sizes[i] as u64));
    }
    assert_eq!(nested.len(), sizes[LEVELS]);
    let mut message = len_field(1, ACME.as_bytes());
    message.extend(len_field(2, b"Nested Key"));
    message.extend(value.clone());
    message.extend(len_field(3, &nested));
    assert!(message.len() < MAX_REQUEST);
    let status = refused(
        raw_unary(&channel, CREATE, message).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["secret_id"]);

    // The nested Secret repeated 300 000 times, each with a label: merged.
    let mut message = len_field(1, ACME.as_bytes());
    message.extend(len_field(2, b"Repeated Key"));
    message.extend(value);
    let one = len_field(3, &map_entry(5, b"env", b"x"));
    for _ in 0..(MAX_REQUEST - 200) / one.len() {
        message.extend_from_slice(&one);
    }
    let status = refused(
        raw_unary(&channel, CREATE, message).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["secret_id"]);
    f.assert_up(&channel).await;
}
hostile_test!(
    deeply_nested_protobuf_is_refused_without_a_stack_overflow,
    deeply_nested
);

/// Invalid UTF-8 in `string` fields (top level, nested, map keys and
/// values, list and resolve requests) fails to decode: INTERNAL, the bytes
/// not echoed. The same bytes in the `bytes` value field are legal.
async fn invalid_utf8(f: &Fixture) {
    let channel = f.channel(ALICE);
    let canary = f.canary("utf8");
    let bad: [&[u8]; 7] = [
        b"\xff",
        b"tenants/acme\xfe",
        b"\xc0\x80",         // overlong NUL
        b"\xed\xa0\x80",     // a UTF-16 surrogate
        b"\xe2\x82",         // cut-off sequence
        b"\xf4\x90\x80\x80", // above U+10FFFF
        b"db\x80password",
    ];
    for bytes in bad {
        let ok_create = |fields: Vec<Vec<u8>>| {
            let mut m = len_field(4, canary.as_bytes());
            for field in fields {
                m.extend(field);
            }
            m
        };
        let cases: Vec<(&str, &'static str, Vec<u8>)> = vec![
            ("parent", CREATE, ok_create(vec![len_field(1, bytes)])),
            (
                "secret_id",
                CREATE,
                ok_create(vec![len_field(1, ACME.as_bytes()), len_field(2, bytes)]),
            ),
            ("request_id", CREATE, ok_create(vec![len_field(6, bytes)])),
            (
                "secret.display_name",
                CREATE,
                ok_create(vec![len_field(3, &len_field(3, bytes))]),
            ),
            (
                "secret.labels key",
                CREATE,
                ok_create(vec![len_field(3, &map_entry(5, bytes, b"v"))]),
            ),
            (
                "secret.labels value",
                CREATE,
                ok_create(vec![len_field(3, &map_entry(5, b"env", bytes))]),
            ),
            ("resolve name", RESOLVE, len_field(1, bytes)),
            ("resolve context", RESOLVE, {
                let mut m = len_field(1, ACME_DB.as_bytes());
                m.extend(map_entry(5, b"k", bytes));
                m
            }),
            ("list filter", LIST, {
                let mut m = len_field(1, ACME.as_bytes());
                m.extend(len_field(4, bytes));
                m
            }),
            ("list page_token", LIST, {
                let mut m = len_field(1, ACME.as_bytes());
                m.extend(len_field(3, bytes));
                m
            }),
        ];
        for (what, method, message) in cases {
            let result = raw_unary(&channel, method, message).await;
            let status = result.clone().expect_err(what);
            assert!(
                status
                    .message()
                    .contains("invalid string value: data is not UTF-8 encoded"),
                "{what}: {status:?}"
            );
            undecodable(result, what);
        }
    }
    // In the bytes field, anything goes: decoded, then judged (a bad key here).
    let mut message = len_field(1, ACME.as_bytes());
    message.extend(len_field(2, b"Not A Key"));
    message.extend(len_field(4, b"\xff\xfe\xc0\x80"));
    let status = refused(
        raw_unary(&channel, CREATE, message).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["secret_id"]);
    f.assert_up(&channel).await;
}
hostile_test!(
    invalid_utf8_in_string_fields_is_refused_without_a_panic,
    invalid_utf8
);

/// Label maps far past the limits — thousands of labels, keys and values
/// thousands of characters long, control characters — on create and
/// update, and the same for a resolve's context map: INVALID_ARGUMENT with
/// a BadRequest naming the field, in a bounded answer.
async fn huge_label_maps(f: &Fixture) {
    let mut alice = f.secrets(ALICE);
    let canary = f.canary("labels");
    let many = |n: usize, key_len: usize, value_len: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                let key = format!("k{i:06}");
                let key = format!("{key}{}", "k".repeat(key_len.saturating_sub(key.len())));
                (key, "v".repeat(value_len))
            })
            .collect()
    };
    let long_key = "a".repeat(10_000);
    let cases: Vec<(Vec<(String, String)>, String)> = vec![
        (many(65, 1, 1), "secret.labels".into()),
        (many(5_000, 1, 1), "secret.labels".into()),
        (many(40_000, 1, 0), "secret.labels".into()),
        (many(1_000, 63, 256), "secret.labels".into()),
        (
            vec![(long_key.clone(), "v".into())],
            format!("secret.labels.{}", &long_key[..64]),
        ),
        (
            vec![("bad\u{0}key\u{7}".into(), "v".into())],
            "secret.labels.badkey".into(),
        ),
        (
            vec![("UPPER".into(), "v".into())],
            "secret.labels.UPPER".into(),
        ),
        (
            vec![("ok' OR 1=1 --".into(), "v".into())],
            "secret.labels.ok' OR 1=1 --".into(),
        ),
        (
            vec![("env".into(), "v".repeat(100_000))],
            "secret.labels.env".into(),
        ),
        (
            vec![("env".into(), "a\u{0}b".into())],
            "secret.labels.env".into(),
        ),
        (
            vec![("env".into(), "line\r\nbreak".into())],
            "secret.labels.env".into(),
        ),
    ];
    for (labels, field) in cases {
        let count = labels.len();
        let mut req = create(ACME, "labelled", canary.as_bytes(), &[]);
        req.secret.as_mut().unwrap().labels = labels.iter().cloned().collect();
        let status = refused(alice.create_secret(req).await, Code::InvalidArgument);
        assert_eq!(
            violated_fields(&status),
            vec![field.clone()],
            "{count} labels"
        );
        assert_eq!(reason(&status), "BAD_REQUEST");

        let update = v1::UpdateSecretRequest {
            secret: Some(v1::Secret {
                name: ACME_DB.into(),
                labels: labels.into_iter().collect(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels".into()],
            }),
        };
        let status = refused(alice.update_secret(update).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), vec![field], "{count} labels");
    }

    // The resolve context map.
    let contexts: Vec<(Vec<(String, String)>, &str)> = vec![
        (many(5_000, 1, 1), "context"),
        (vec![("k".repeat(10_000), "v".into())], "context"),
        (vec![("k".into(), "v".repeat(100_000))], "context.k"),
        (vec![("k".into(), "\u{0}".into())], "context.k"),
    ];
    for (context, field) in contexts {
        let mut req = resolve(ACME_DB);
        req.context = context.into_iter().collect();
        let status = refused(alice.resolve_secret(req).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), vec![field]);
    }
    f.assert_up(&f.channel(ALICE)).await;
}
hostile_test!(
    huge_label_maps_get_invalid_argument_naming_the_field,
    huge_label_maps
);

/// Page tokens that were garbled, forged, replayed against another query,
/// or carried across tenants: INVALID_ARGUMENT on `page_token` (or the
/// tenant's NOT_FOUND for a caller without a grant), never a row of
/// another tenant. A token forged with the right query fingerprint (the
/// scheme is public) only moves the cursor within the caller's own query.
async fn page_tokens(f: &Fixture) {
    let mut alice = f.secrets(ALICE);
    let mut bob = f.secrets(BOB);
    let acme_names: Vec<String> = ACME_LABELLED
        .iter()
        .map(|(key, _)| format!("{ACME}/secrets/{key}"))
        .collect();

    let page = alice
        .list_secrets(list(ACME, "", 1, ""))
        .await
        .unwrap()
        .into_inner();
    let acme_token = page.next_page_token;
    assert!(!acme_token.is_empty());
    // Sanity: the genuine token works on its own query.
    let second = alice
        .list_secrets(list(ACME, "", 1, &acme_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.secrets.len(), 1);
    assert_ne!(second.secrets[0].name, page.secrets[0].name);
    // A well-formed token of globex's query.
    let globex_scope = coffer_core::page::query_scope(&[
        "secrets",
        "globex",
        &SecretFilter::default().canonical(),
        "",
    ]);
    let globex_token = coffer_core::page::encode(&globex_scope, "a");

    let mut flipped = acme_token.clone().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let json = |text: &str| URL_SAFE_NO_PAD.encode(text.as_bytes());
    let deep_json = json(&format!("{}{}", "[".repeat(1500), "]".repeat(1500)));
    let garbled: Vec<String> = vec![
        String::from_utf8(flipped).unwrap(),
        acme_token[..acme_token.len() - 3].to_owned(),
        format!("{acme_token}x"),
        format!("{acme_token}=="),
        "garbage!".into(),
        "' OR 1=1 --".into(),
        "%".into(),
        "_".into(),
        "\\".into(),
        "\u{0}".into(),
        "A".repeat(5_000),
        "A".repeat(100_000),
        json("{}"),
        json("null"),
        json(r#"{"q":1,"a":2}"#),
        json(r#"{"q":"","a":""}"#),
        json(r#"{"a":"zzz"}"#),
        deep_json,
        globex_token.clone(),
    ];
    for token in &garbled {
        let status = refused(
            alice.list_secrets(list(ACME, "", 0, token)).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["page_token"], "{token:?}");
    }

    // A token of another query: another filter, show_deleted, page size is free.
    let status = refused(
        alice
            .list_secrets(list(ACME, "labels.env = \"prod\"", 0, &acme_token))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["page_token"]);
    let mut deleted = list(ACME, "", 0, &acme_token);
    deleted.show_deleted = true;
    refused(alice.list_secrets(deleted).await, Code::InvalidArgument);

    // Across tenants: acme's token on globex (by globex's admin), a real
    // globex token on acme, and a caller without a grant.
    let status = refused(
        bob.list_secrets(list(GLOBEX, "", 0, &acme_token)).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["page_token"]);
    let real_globex = bob
        .list_secrets(list(GLOBEX, "", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(real_globex.secrets.len(), 1);
    let status = refused(
        alice.list_secrets(list(GLOBEX, "", 0, &acme_token)).await,
        Code::NotFound,
    );
    assert_eq!(reason(&status), "TENANT_NOT_FOUND");

    // Forged with acme's own fingerprint: the cursor moves, nothing else.
    let scope = coffer_core::page::query_scope(&[
        "secrets",
        "acme",
        &SecretFilter::default().canonical(),
        "",
    ]);
    for cursor in [
        "",
        "' OR '1'='1",
        "%",
        "_",
        "\\",
        "zzzzzz",
        "tenants/globex/secrets/db",
        "db\" OR 1=1 --",
        &"z".repeat(2_000),
    ] {
        let token = coffer_core::page::encode(&scope, cursor);
        let page = alice
            .list_secrets(list(ACME, "", 0, &token))
            .await
            .unwrap_or_else(|status| panic!("{cursor:?}: {status:?}"))
            .into_inner();
        for secret in &page.secrets {
            assert!(
                acme_names.contains(&secret.name),
                "{cursor:?} listed {}",
                secret.name
            );
        }
        match cursor {
            "" => assert_eq!(page.secrets.len(), acme_names.len()),
            "zzzzzz" => assert!(page.secrets.is_empty()),
            _ => {}
        }
    }
    // A cursor with NUL or another control character cannot be a key.
    for cursor in ["\u{0}", "db\u{0}", "db\u{0}' OR 1=1 --", "\u{1b}[2J"] {
        let token = coffer_core::page::encode(&scope, cursor);
        let status = refused(
            alice.list_secrets(list(ACME, "", 0, &token)).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["page_token"], "{cursor:?}");
    }

    // Version lists: a token of one secret on another, and forged cursors.
    let versions = alice
        .list_secret_versions(v1::ListSecretVersionsRequest {
            parent: ACME_DB.into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!versions.next_page_token.is_empty());
    for parent in ["tenants/acme/secrets/pct"] {
        let status = refused(
            alice
                .list_secret_versions(v1::ListSecretVersionsRequest {
                    parent: parent.into(),
                    page_size: 1,
                    page_token: versions.next_page_token.clone(),
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["page_token"]);
    }
    let status = refused(
        bob.list_secret_versions(v1::ListSecretVersionsRequest {
            parent: GLOBEX_DB.into(),
            page_size: 1,
            page_token: versions.next_page_token.clone(),
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["page_token"]);

    // Audit lists: forged cursors that are not sequence numbers.
    let audit_scope =
        coffer_core::page::query_scope(&["audit", "acme", &AuditFilterSpec::default().canonical()]);
    for cursor in ["abc", "1 OR 1=1", "99999999999999999999", "", "1.5"] {
        let status = refused(
            alice
                .list_audit_events(v1::ListAuditEventsRequest {
                    parent: ACME.into(),
                    filter: String::new(),
                    page_size: 0,
                    page_token: coffer_core::page::encode(&audit_scope, cursor),
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["page_token"], "{cursor:?}");
    }
    f.assert_up(&f.channel(ALICE)).await;
}
hostile_test!(
    forged_replayed_and_foreign_page_tokens_are_refused,
    page_tokens
);

/// The acme secrets whose `env` label is exactly `value`, as names.
fn labelled(value: &str) -> Vec<String> {
    let mut names: Vec<String> = ACME_LABELLED
        .iter()
        .filter(|(_, env)| *env == value)
        .map(|(key, _)| format!("{ACME}/secrets/{key}"))
        .collect();
    names.sort();
    names
}

/// Filters written as injection attempts: either refused as a syntax error
/// (INVALID_ARGUMENT on `filter`, no SQL in the message) or run as an exact
/// comparison — `%`, `_`, quotes and backslashes match only themselves.
async fn filter_injection(f: &Fixture) {
    let mut alice = f.secrets(ALICE);
    let names = |response: v1::ListSecretsResponse| -> Vec<String> {
        let mut names: Vec<String> = response.secrets.into_iter().map(|s| s.name).collect();
        names.sort();
        names
    };

    // Exact matches: each value matches only the secret that carries it.
    let exact: Vec<(String, Vec<String>)> = vec![
        (r#"labels.env = "%""#.into(), labelled("%")),
        (r#"labels.env = "_""#.into(), labelled("_")),
        (
            r#"labels.env = "x' OR '1'='1""#.into(),
            labelled("x' OR '1'='1"),
        ),
        (r#"labels.env = "\\""#.into(), labelled("\\")),
        (
            r#"labels.env = "say \"hi\"""#.into(),
            labelled("say \"hi\""),
        ),
        (r#"labels.env = "pro""#.into(), labelled("pro")),
        (r#"labels.env = "pro%""#.into(), vec![]),
        (r#"labels.env = "pro_""#.into(), vec![]),
        (r#"labels.env = "%%""#.into(), vec![]),
        (r#"labels.env = "*""#.into(), vec![]),
        (r#"labels.env = "prod' --""#.into(), vec![]),
        (
            r#"labels.env = "prod'; DROP TABLE secrets; --""#.into(),
            vec![],
        ),
        (
            r#"labels.env = "prod\"; DELETE FROM secret_versions; --""#.into(),
            vec![],
        ),
        (
            r#"labels.env = "' OR 1=1 OR labels.env = '""#.into(),
            vec![],
        ),
        (r#"labels.env = "\\%""#.into(), vec![]),
        (r#"labels.env = "PROD""#.into(), vec![]),
        (r#"labels.env = "prod" AND labels.env = "%""#.into(), vec![]),
        (r#"labels.env = prod"#.into(), labelled("prod")),
        (
            r#"labels.env = "prod" AND state = ACTIVE"#.into(),
            labelled("prod"),
        ),
        (r#"provider = "local_encrypted' OR '1'='1""#.into(), vec![]),
        (r#"provider = "%""#.into(), vec![]),
        (r#"vault = "tenants/globex/vaults/default""#.into(), vec![]),
        (r#"vault = "%""#.into(), vec![]),
        (format!("labels.{} = x", "k".repeat(1_000)), vec![]),
        (format!("labels.env = \"{}\"", "%".repeat(1_000)), vec![]),
        (r#"labels.env = "ünïcødé ☃""#.into(), vec![]),
        (r#"labels.env = """#.into(), vec![]),
    ];
    for (filter, expected) in &exact {
        let got = alice
            .list_secrets(list(ACME, filter, 0, ""))
            .await
            .unwrap_or_else(|status| panic!("{filter:?}: {status:?}"));
        assert_eq!(&names(got.into_inner()), expected, "{filter:?}");
    }

    // Syntax the grammar does not have: refused, naming the filter.
    let refused_filters: Vec<String> = vec![
        "state = ACTIVE OR 1=1".into(),
        "state = ACTIVE; DROP TABLE secrets".into(),
        "state = ACTIVE --".into(),
        "labels.env = 'prod'".into(),
        "labels.env = \"prod\" OR labels.env = \"%\"".into(),
        "state = \"ACTIVE' OR '1'='1\"".into(),
        "mode = \"%\"".into(),
        "labels.% = x".into(),
        "labels.env' OR 1=1 = x".into(),
        "labels. = x".into(),
        "1=1".into(),
        "name = \"x\"".into(),
        "tenant = globex".into(),
        "key LIKE \"%\"".into(),
        "labels.env = \"unterminated".into(),
        "labels.env = \"a\\".into(),
        "\"".into(),
        "\\".into(),
        "AND AND".into(),
        "state = ACTIVE AND".into(),
        "(state = ACTIVE)".into(),
        "state = ACTIVE\u{0}".into(),
        "\u{0}".into(),
        "labels.env = \"x\" /* */".into(),
        // Control characters inside a quoted value: nothing stored holds
        // one (PostgreSQL cannot even compare NUL).
        "labels.env = \"\u{0}\"".into(),
        "labels.env = \"prod\u{0}\"".into(),
        "labels.env = \"prod\\\u{0}\"".into(),
        "provider = \"\u{0}\"".into(),
        "vault = \"\u{1b}[31m\"".into(),
        "state != ACTIVE".into(),
        "state >= ACTIVE".into(),
        format!("labels.env = \"{}\"", "x".repeat(1_020)),
        "x".repeat(100_000),
        format!("{}\"", "labels.env = \"".repeat(200)),
    ];
    for filter in &refused_filters {
        let status = refused(
            alice.list_secrets(list(ACME, filter, 0, "")).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["filter"], "{filter:?}");
        // Long input is not echoed back.
        assert!(
            !status.message().contains(&"x".repeat(64)),
            "the message echoes the filter: {status:?}"
        );
    }

    // The audit filter: values compared exactly.
    for filter in [
        r#"secret = "tenants/acme/secrets/db' OR '1'='1""#,
        r#"secret = "%""#,
        r#"action = "secret.%""#,
        r#"consumer = "agent/%""#,
        r#"consumer = "%/%""#,
        r#"secret = "tenants/globex/secrets/db""#,
    ] {
        let events = alice
            .list_audit_events(v1::ListAuditEventsRequest {
                parent: ACME.into(),
                filter: filter.into(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("{filter:?}: {status:?}"))
            .into_inner();
        assert!(events.audit_events.is_empty(), "{filter:?}");
    }
    for filter in [
        "outcome = \"DENIED' OR '1'='1\"",
        "time >= \"2026-01-01T00:00:00Z' OR '1'='1\"",
        "secret = x OR 1=1",
        "secret LIKE \"%\"",
        "secret = \"tenants/acme/secrets/db\u{0}\"",
        "action = \"\u{0}\"",
        "consumer = \"agent/\u{0}\"",
        "time >= \"2026-11-29T00:00:00+0\u{e9}::\"",
    ] {
        let status = refused(
            alice
                .list_audit_events(v1::ListAuditEventsRequest {
                    parent: ACME.into(),
                    filter: filter.into(),
                    page_size: 0,
                    page_token: String::new(),
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["filter"], "{filter:?}");
    }

    // The data is intact: every seeded secret is still listed.
    let all = names(
        alice
            .list_secrets(list(ACME, "", 0, ""))
            .await
            .unwrap()
            .into_inner(),
    );
    let mut expected: Vec<String> = ACME_LABELLED
        .iter()
        .map(|(key, _)| format!("{ACME}/secrets/{key}"))
        .collect();
    expected.sort();
    assert_eq!(all, expected);
}
hostile_test!(
    filter_injection_is_refused_or_matched_exactly,
    filter_injection
);

/// code, reason, message and ErrorInfo metadata of a status, with `name`
/// written as `{name}`, to compare answers about different names.
fn shape(status: &tonic::Status, name: &str) -> (Code, String, String, Vec<(String, String)>) {
    use tonic_types::StatusExt;
    let mut metadata: Vec<(String, String)> = status
        .get_error_details()
        .error_info()
        .map(|info| {
            info.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.replace(name, "{name}")))
                .collect()
        })
        .unwrap_or_default();
    metadata.sort();
    (
        status.code(),
        reason(status),
        status.message().replace(name, "{name}"),
        metadata,
    )
}

/// A caller allowed only in acme reaching into globex: every RPC answers
/// exactly what it would for a resource that does not exist (no existence
/// oracle, docs/SECURITY.md), confused-deputy references from acme into
/// globex are refused, names that try to escape their tenant are refused as
/// malformed, and a role without the permission gets PERMISSION_DENIED.
async fn cross_tenant(f: &Fixture) {
    let mut alice = f.secrets(ALICE);
    let mut bob = f.secrets(BOB);
    let canary = f.canary("cross-tenant");
    const GHOST: &str = "tenants/globex/secrets/ghost";

    /// One RPC about one secret name.
    async fn call(
        client: &mut v1::secrets_service_client::SecretsServiceClient<Channel>,
        rpc: usize,
        name: &str,
        value: &str,
    ) -> Result<(), tonic::Status> {
        let name = name.to_owned();
        match rpc {
            0 => client
                .get_secret(v1::GetSecretRequest { name })
                .await
                .map(drop),
            1 => client.resolve_secret(resolve(&name)).await.map(drop),
            2 => client
                .resolve_secret(v1::ResolveSecretRequest {
                    name,
                    consumer: Some(v1::Consumer {
                        kind: "agent".into(),
                        id: "a-1".into(),
                    }),
                    config_path: "db.password".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            3 => client
                .rotate_secret(rotate(&name, value.as_bytes()))
                .await
                .map(drop),
            4 => client
                .update_secret(v1::UpdateSecretRequest {
                    secret: Some(v1::Secret {
                        name,
                        description: "owned".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["description".into()],
                    }),
                })
                .await
                .map(drop),
            5 => client
                .delete_secret(v1::DeleteSecretRequest {
                    name,
                    force: true,
                    ..Default::default()
                })
                .await
                .map(drop),
            6 => client
                .undelete_secret(v1::UndeleteSecretRequest {
                    name,
                    etag: String::new(),
                })
                .await
                .map(drop),
            7 => client
                .get_secret_version(v1::GetSecretVersionRequest {
                    name: format!("{name}/versions/1"),
                })
                .await
                .map(drop),
            8 => client
                .destroy_secret_version(v1::DestroySecretVersionRequest {
                    name: format!("{name}/versions/1"),
                    etag: String::new(),
                })
                .await
                .map(drop),
            9 => client
                .disable_secret_version(v1::DisableSecretVersionRequest {
                    name: format!("{name}/versions/1"),
                    etag: String::new(),
                })
                .await
                .map(drop),
            10 => client
                .list_secret_versions(v1::ListSecretVersionsRequest {
                    parent: name,
                    ..Default::default()
                })
                .await
                .map(drop),
            _ => client
                .resolve_secret(v1::ResolveSecretRequest {
                    name,
                    version: "1".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        }
    }

    for rpc in 0..12 {
        // Bob, who may look, asks for a secret that is not there.
        let missing = call(&mut bob, rpc, GHOST, &canary)
            .await
            .expect_err("ghost");
        assert_eq!(missing.code(), Code::NotFound, "rpc {rpc}: {missing:?}");
        // Alice asks for the same missing secret, then for one that exists.
        let foreign_missing = call(&mut alice, rpc, GHOST, &canary)
            .await
            .expect_err("ghost");
        let foreign_existing = call(&mut alice, rpc, GLOBEX_DB, &canary)
            .await
            .expect_err("a foreign secret");
        assert_eq!(
            shape(&foreign_missing, GHOST),
            shape(&missing, GHOST),
            "rpc {rpc}"
        );
        assert_eq!(
            shape(&foreign_existing, GLOBEX_DB),
            shape(&missing, GHOST),
            "rpc {rpc}: an existence oracle"
        );
        assert_clean(&foreign_existing);
    }

    // Requests under the foreign parent: the tenant is not found.
    let denials = [
        alice
            .create_secret(create(GLOBEX, "planted", canary.as_bytes(), &[]))
            .await
            .map(drop),
        alice.list_secrets(list(GLOBEX, "", 0, "")).await.map(drop),
        alice
            .list_audit_events(v1::ListAuditEventsRequest {
                parent: GLOBEX.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        alice
            .list_bindings(v1::ListBindingsRequest {
                parent: GLOBEX.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        alice
            .batch_resolve_secrets(v1::BatchResolveSecretsRequest {
                parent: GLOBEX.into(),
                requests: vec![resolve(GLOBEX_DB)],
            })
            .await
            .map(drop),
        f.server
            .vaults_as(ALICE)
            .list_vaults(v1::ListVaultsRequest {
                parent: GLOBEX.into(),
                ..Default::default()
            })
            .await
            .map(drop),
    ];
    for (i, result) in denials.into_iter().enumerate() {
        let status = refused(result, Code::NotFound);
        assert_eq!(reason(&status), "TENANT_NOT_FOUND", "call {i}");
        assert_eq!(status.message(), "tenants/globex not found");
    }

    // From inside acme, pointing into globex.
    let batch = alice
        .batch_resolve_secrets(v1::BatchResolveSecretsRequest {
            parent: ACME.into(),
            requests: vec![resolve(GLOBEX_DB), resolve(ACME_DB)],
        })
        .await;
    match batch {
        Ok(response) => {
            let results = response.into_inner().results;
            assert_eq!(results.len(), 2);
            match &results[0].result {
                Some(v1::batch_resolve_result::Result::Error(err)) => {
                    assert_ne!(err.code, 0);
                }
                other => panic!("a foreign item resolved: {:?}", other.is_some()),
            }
        }
        Err(status) => assert_eq!(status.code(), Code::InvalidArgument, "{status:?}"),
    }
    let mut in_foreign_vault = create(ACME, "deputy", canary.as_bytes(), &[]);
    in_foreign_vault.secret.as_mut().unwrap().vault = "tenants/globex/vaults/default".into();
    let status = alice
        .create_secret(in_foreign_vault)
        .await
        .expect_err("a foreign vault");
    assert!(
        matches!(status.code(), Code::InvalidArgument | Code::NotFound),
        "{status:?}"
    );
    assert_clean(&status);
    let binding = alice
        .create_binding(v1::CreateBindingRequest {
            parent: ACME.into(),
            binding: Some(v1::Binding {
                secret: GLOBEX_DB.into(),
                consumer: Some(v1::Consumer {
                    kind: "agent".into(),
                    id: "a-1".into(),
                }),
                config_path: "db.password".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect_err("a binding to a foreign secret");
    assert!(
        matches!(binding.code(), Code::InvalidArgument | Code::NotFound),
        "{binding:?}"
    );

    // Names that try to leave their tenant: malformed, not resolved.
    for name in [
        "tenants/acme/../globex/secrets/db",
        "tenants/acme/secrets/../../globex/secrets/db",
        "tenants/acme/secrets/db/../../../globex/secrets/db",
        "tenants/acme%2fglobex/secrets/db",
        "tenants//globex/secrets/db",
        "tenants/globex\u{0}/secrets/db",
        "tenants/acme\u{0}tenants/globex/secrets/db",
        "tenants/GLOBEX/secrets/db",
        " tenants/globex/secrets/db",
        "tenants/acme/secrets/db\u{0}",
        "tenants/*/secrets/db",
        "tenants/%/secrets/db",
        "/tenants/globex/secrets/db",
    ] {
        let status = refused(
            alice.resolve_secret(resolve(name)).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["name"], "{name:?}");
    }

    // A role without the permission, in its own tenant.
    let mut viewer = f.secrets(VIEWER);
    for result in [
        viewer.resolve_secret(resolve(ACME_DB)).await.map(drop),
        viewer
            .rotate_secret(rotate(ACME_DB, canary.as_bytes()))
            .await
            .map(drop),
        viewer
            .create_secret(create(ACME, "viewer", canary.as_bytes(), &[]))
            .await
            .map(drop),
    ] {
        let status = refused(result, Code::PermissionDenied);
        assert_eq!(reason(&status), "PERMISSION_DENIED");
    }
    // … and in a tenant where it has nothing: not found, like anyone's.
    let status = refused(
        viewer
            .get_secret(v1::GetSecretRequest {
                name: GLOBEX_DB.into(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(reason(&status), "SECRET_NOT_FOUND");
    // The viewer may read acme's metadata, the value never.
    viewer
        .get_secret(v1::GetSecretRequest {
            name: ACME_DB.into(),
        })
        .await
        .unwrap();
}
hostile_test!(
    other_tenants_resources_are_not_found_and_roles_are_enforced,
    cross_tenant
);

/// NUL and other control characters in every free-text field a caller can
/// set. PostgreSQL refuses NUL in text, so one that slipped past validation
/// would surface as INTERNAL there (and be stored on SQLite): each answer
/// must be a refusal of the caller's input — never INTERNAL — on both.
async fn control_characters(f: &Fixture) {
    let channel = f.channel(ALICE);
    let mut alice = f.secrets(ALICE);
    let mut vaults = f.server.vaults_as(ALICE);
    let canary = f.canary("control");
    let consumer = |kind: &str, id: &str| {
        Some(v1::Consumer {
            kind: kind.into(),
            id: id.into(),
        })
    };
    let resolve_with = |consumer: Option<v1::Consumer>, config_path: &str, version: &str| {
        v1::ResolveSecretRequest {
            name: ACME_DB.into(),
            version: version.into(),
            consumer,
            config_path: config_path.into(),
            context: Default::default(),
        }
    };
    for bad in [
        "\u{0}",
        "a\u{0}b",
        "\u{7}",
        "a\u{1b}[31mb",
        "line\nbreak",
        "\u{7f}",
    ] {
        let with_secret = |secret: v1::Secret| {
            let mut req = create(ACME, "ctl", canary.as_bytes(), &[]);
            req.secret = Some(secret);
            req
        };
        let binding = |binding: v1::Binding| v1::CreateBindingRequest {
            parent: ACME.into(),
            binding: Some(binding),
            request_id: String::new(),
        };
        let ok_binding = || v1::Binding {
            secret: ACME_DB.into(),
            consumer: consumer("agent", "a-1"),
            config_path: "db.password".into(),
            ..Default::default()
        };
        let results: Vec<(&str, Result<(), tonic::Status>)> = vec![
            (
                "resolve consumer id",
                alice
                    .resolve_secret(resolve_with(consumer("agent", bad), "db.password", ""))
                    .await
                    .map(drop),
            ),
            (
                "resolve consumer kind",
                alice
                    .resolve_secret(resolve_with(consumer(bad, "a-1"), "db.password", ""))
                    .await
                    .map(drop),
            ),
            (
                "resolve config_path",
                alice
                    .resolve_secret(resolve_with(
                        consumer("agent", "a-1"),
                        &format!("db.{bad}"),
                        "",
                    ))
                    .await
                    .map(drop),
            ),
            (
                "resolve version",
                alice
                    .resolve_secret(resolve_with(None, "", &format!("1{bad}")))
                    .await
                    .map(drop),
            ),
            (
                "create secret_id",
                alice
                    .create_secret(create(ACME, &format!("ctl{bad}"), canary.as_bytes(), &[]))
                    .await
                    .map(drop),
            ),
            (
                "create display_name",
                alice
                    .create_secret(with_secret(v1::Secret {
                        display_name: format!("name{bad}"),
                        ..Default::default()
                    }))
                    .await
                    .map(drop),
            ),
            (
                "create description",
                alice
                    .create_secret(with_secret(v1::Secret {
                        description: format!("text\u{0}{bad}"),
                        ..Default::default()
                    }))
                    .await
                    .map(drop),
            ),
            (
                "create external_ref",
                alice
                    .create_secret(v1::CreateSecretRequest {
                        parent: ACME.into(),
                        secret_id: "ctl-ext".into(),
                        secret: None,
                        source: Some(v1::create_secret_request::Source::External(
                            v1::ExternalRef {
                                r#ref: format!("arn:aws:secretsmanager:x{bad}"),
                                version_ref: String::new(),
                            },
                        )),
                        request_id: String::new(),
                    })
                    .await
                    .map(drop),
            ),
            (
                "create request_id",
                alice
                    .create_secret({
                        let mut req = create(ACME, "ctl", canary.as_bytes(), &[]);
                        req.request_id = format!("0190c3f1-8b2a-7cde-9f00-1234567890a{bad}");
                        req
                    })
                    .await
                    .map(drop),
            ),
            (
                "update_mask path",
                alice
                    .update_secret(v1::UpdateSecretRequest {
                        secret: Some(v1::Secret {
                            name: ACME_DB.into(),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec![format!("description{bad}")],
                        }),
                    })
                    .await
                    .map(drop),
            ),
            (
                "rotate etag",
                alice
                    .rotate_secret(v1::RotateSecretRequest {
                        etag: format!("r1{bad}"),
                        ..rotate(ACME_DB, canary.as_bytes())
                    })
                    .await
                    .map(drop),
            ),
            (
                "binding config_path",
                alice
                    .create_binding(binding(v1::Binding {
                        config_path: format!("db.{bad}"),
                        ..ok_binding()
                    }))
                    .await
                    .map(drop),
            ),
            (
                "binding label",
                alice
                    .create_binding(binding(v1::Binding {
                        label: format!("l{bad}"),
                        ..ok_binding()
                    }))
                    .await
                    .map(drop),
            ),
            (
                "binding version_selector",
                alice
                    .create_binding(binding(v1::Binding {
                        version_selector: format!("1{bad}"),
                        ..ok_binding()
                    }))
                    .await
                    .map(drop),
            ),
            (
                "binding consumer",
                alice
                    .create_binding(binding(v1::Binding {
                        consumer: consumer("agent", bad),
                        ..ok_binding()
                    }))
                    .await
                    .map(drop),
            ),
            (
                "list bindings consumer",
                alice
                    .list_bindings(v1::ListBindingsRequest {
                        parent: ACME.into(),
                        consumer: consumer("agent", bad),
                        ..Default::default()
                    })
                    .await
                    .map(drop),
            ),
            (
                "vault display_name",
                vaults
                    .create_vault(v1::CreateVaultRequest {
                        parent: ACME.into(),
                        vault_id: "ctl".into(),
                        vault: Some(v1::Vault {
                            provider: "local_encrypted".into(),
                            display_name: format!("v{bad}"),
                            ..Default::default()
                        }),
                    })
                    .await
                    .map(drop),
            ),
        ];
        for (what, result) in results {
            let status = result.expect_err(what);
            assert!(
                !matches!(
                    status.code(),
                    Code::Internal | Code::Unknown | Code::Unavailable
                ),
                "{what} with {bad:?}: {status:?}"
            );
            assert_clean(&status);
        }
    }
    // Refused resolves are audited with what they asked for, in group-
    // committed batches: a hostile event must not fail the batch it shares
    // with another tenant's resolves.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..16 {
        let mut hostile = f.secrets(ALICE);
        let request = resolve_with(consumer("agent", &format!("a\u{0}{i}")), "db.password", "");
        calls.spawn(async move { (false, hostile.resolve_secret(request).await.map(drop)) });
        let mut honest = f.secrets(BOB);
        calls.spawn(async move {
            (
                true,
                honest.resolve_secret(resolve(GLOBEX_DB)).await.map(drop),
            )
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = calls.join_next().await {
        results.push(joined.unwrap());
    }
    // The honest ones first: they are what a poisoned batch would break.
    results.sort_by_key(|(honest, _)| !honest);
    for (honest, result) in results {
        if honest {
            result.expect("an honest resolve next to hostile ones");
        } else {
            let status = result.expect_err("a hostile resolve");
            assert!(
                !matches!(
                    status.code(),
                    Code::Internal | Code::Unknown | Code::Unavailable
                ),
                "{status:?}"
            );
        }
    }
    f.assert_up(&channel).await;
}
hostile_test!(
    control_characters_in_free_text_fields_are_refused_not_internal,
    control_characters
);

/// All of the above against one server, in sequence: it is still SERVING
/// at the end and its logs hold none of the canaries.
async fn everything(f: &Fixture) {
    oversized_messages(f).await;
    malformed_protobuf(f).await;
    deeply_nested(f).await;
    invalid_utf8(f).await;
    huge_label_maps(f).await;
    page_tokens(f).await;
    filter_injection(f).await;
    cross_tenant(f).await;
    control_characters(f).await;
}
hostile_test!(
    every_hostile_input_in_one_session_leaves_the_server_serving_without_leaks,
    everything
);
