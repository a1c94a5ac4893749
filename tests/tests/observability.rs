//! What an operator sees, end to end: one JSON log line per RPC naming the
//! method, principal, tenant, request id and code (and never a value, even
//! at TRACE); the request id echoed back; Prometheus series on the metrics
//! listener; and graceful shutdown — health NOT_SERVING at once, new calls
//! refused, in-flight calls finished (and audited) within the grace period,
//! and calls that outlast it cut.
//!
//! The slow in-flight calls are real: the test holds the SQLite write lock
//! from a second connection, so the server's writes (a create, a resolve's
//! audit batch) wait on it.
//!
//! A log subscriber and a metrics recorder are process-wide: the tests
//! install them once and tolerate each other's output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use coffer_core::record::now_micros;
use coffer_core::{SecretKey, TenantId};
use coffer_proto::v1;
use coffer_proto::v1::secrets_service_client::SecretsServiceClient;
use coffer_server::ServeOptions;
use coffer_store::AuditFilter;
use coffer_tests::{Db, TestServer, wait_until};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const PARENT: &str = "tenants/acme";
const APP: &str = "spiffe://test/app";
const STRANGER: &str = "spiffe://test/stranger";
const POLICY: &str = r#"
[[grant]]
principal = "spiffe://test/app"
tenants = ["acme"]
roles = ["admin"]
"#;

fn create(key: &str, value: &[u8]) -> v1::CreateSecretRequest {
    v1::CreateSecretRequest {
        parent: PARENT.into(),
        secret_id: key.into(),
        secret: Some(v1::Secret::default()),
        source: Some(v1::create_secret_request::Source::Value(value.to_vec())),
        request_id: String::new(),
    }
}

fn resolve(key: &str) -> v1::ResolveSecretRequest {
    v1::ResolveSecretRequest {
        name: format!("{PARENT}/secrets/{key}"),
        ..Default::default()
    }
}

fn get(key: &str) -> v1::GetSecretRequest {
    v1::GetSecretRequest {
        name: format!("{PARENT}/secrets/{key}"),
    }
}

fn with_request_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

fn echoed(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .expect("the response carries x-request-id")
        .to_str()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------- logs

/// Everything the process logged, as JSON lines.
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

    /// The "rpc finished" lines.
    fn rpc_lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["fields"]["message"] == "rpc finished")
            .collect()
    }

    fn rpc_line(&self, method: &str, request_id: &str) -> Option<Value> {
        self.rpc_lines().into_iter().find(|line| {
            line["span"]["rpc.method"] == method && line["span"]["request_id"] == request_id
        })
    }

    async fn wait_rpc_line(&self, method: &str, request_id: &str) -> Value {
        wait_until(Duration::from_secs(5), || async {
            self.rpc_line(method, request_id).is_some()
        })
        .await
        .unwrap_or_else(|()| panic!("no log line for {method} with request id {request_id}"));
        self.rpc_line(method, request_id).unwrap()
    }
}

/// Installs (once) a JSON subscriber at TRACE for every target, writing
/// into memory.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_logs_one_line_with_its_caller_request_id_and_code_and_never_a_value() {
    let logs = capture_logs();
    let server = TestServer::start_mtls(Db::Sqlite, POLICY).await.unwrap();
    let mut app = server.secrets_as(APP);
    let canary = format!("canary-{}-{}", std::process::id(), now_micros());

    let created = app
        .create_secret(with_request_id(
            create("canary", canary.as_bytes()),
            "obs-create-1",
        ))
        .await
        .unwrap();
    assert_eq!(echoed(created.metadata()), "obs-create-1");
    let resolved = app
        .resolve_secret(with_request_id(resolve("canary"), "obs-resolve-1"))
        .await
        .unwrap();
    assert_eq!(echoed(resolved.metadata()), "obs-resolve-1");
    assert_eq!(resolved.get_ref().value, canary.as_bytes());

    // Errors are trailers-only responses; they carry the id too.
    let missing = app
        .get_secret(with_request_id(get("missing"), "obs-missing-1"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(echoed(missing.metadata()), "obs-missing-1");

    // No id, or one that is not sane: the server makes one up and says which.
    let generated = app.get_secret(get("canary")).await.unwrap();
    let generated_id = echoed(generated.metadata());
    assert_eq!(generated_id.len(), 36, "{generated_id}");
    let replaced = app
        .get_secret(with_request_id(get("canary"), "not sane {}"))
        .await
        .unwrap();
    let replaced_id = echoed(replaced.metadata());
    assert_ne!(replaced_id, "not sane {}");
    assert_eq!(replaced_id.len(), 36, "{replaced_id}");

    // A principal without a grant on the tenant.
    let denied = server
        .secrets_as(STRANGER)
        .get_secret(with_request_id(get("canary"), "obs-denied-1"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::NotFound);

    let line = logs
        .wait_rpc_line("/coffer.v1.SecretsService/ResolveSecret", "obs-resolve-1")
        .await;
    assert_eq!(line["level"], "INFO", "{line}");
    // The line is written inside the call's span, which carries its fields
    // (once: the event repeats none of them).
    assert_eq!(
        line["fields"].as_object().map(|f| f.len()),
        Some(1),
        "{line}"
    );
    let span = &line["span"];
    assert_eq!(span["name"], "rpc", "{line}");
    assert_eq!(span["request_id"], "obs-resolve-1", "{line}");
    assert_eq!(span["principal"], APP, "{line}");
    assert_eq!(span["tenant"], "acme", "{line}");
    assert_eq!(span["code"], "OK", "{line}");
    assert!(span["latency_ms"].as_f64().unwrap() >= 0.0, "{line}");

    let line = logs
        .wait_rpc_line("/coffer.v1.SecretsService/CreateSecret", "obs-create-1")
        .await;
    assert_eq!(line["span"]["code"], "OK", "{line}");
    let line = logs
        .wait_rpc_line("/coffer.v1.SecretsService/GetSecret", "obs-missing-1")
        .await;
    assert_eq!(line["span"]["code"], "NOT_FOUND", "{line}");
    assert_eq!(line["span"]["principal"], APP, "{line}");
    logs.wait_rpc_line("/coffer.v1.SecretsService/GetSecret", &generated_id)
        .await;
    logs.wait_rpc_line("/coffer.v1.SecretsService/GetSecret", &replaced_id)
        .await;
    let line = logs
        .wait_rpc_line("/coffer.v1.SecretsService/GetSecret", "obs-denied-1")
        .await;
    assert_eq!(line["span"]["principal"], STRANGER, "{line}");
    assert_eq!(line["span"]["tenant"], "acme", "{line}");
    assert_eq!(line["span"]["code"], "NOT_FOUND", "{line}");

    // The handler ran inside the call's span: the authorizer's own line
    // about the denial sits under it.
    let denial = logs
        .text()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| {
            line["fields"]["message"] == "call denied"
                && line["span"]["request_id"] == "obs-denied-1"
        });
    assert!(
        denial.is_some(),
        "the denial was not logged inside its rpc span"
    );

    // Health checks are logged too, at DEBUG.
    server.wait_serving().await;
    wait_until(Duration::from_secs(5), || async {
        logs.rpc_lines().iter().any(|line| {
            line["span"]["rpc.method"] == "/grpc.health.v1.Health/Check" && line["level"] == "DEBUG"
        })
    })
    .await
    .expect("no DEBUG line for a health check");

    // At TRACE, everything the process logged still holds no value: not as
    // text, not base64, not as a list of bytes.
    let text = logs.text();
    assert!(!text.is_empty());
    let base64 = base64::engine::general_purpose::STANDARD.encode(canary.as_bytes());
    let bytes = format!("{:?}", canary.as_bytes());
    let bytes = &bytes[1..bytes.len() - 1];
    for needle in [canary.as_str(), &base64, bytes] {
        assert!(!text.contains(needle), "the log holds the value ({needle})");
    }
    server.stop().await;
}

// ------------------------------------------------------------- metrics

/// Answers `GET path` over a fresh TCP connection: (status, content type, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an http response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// The value of the series `name` whose labels include every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, l)) => (n, l),
                None => (series, ""),
            };
            (series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .next()
}

/// A metrics listener on loopback, and options that serve it.
async fn with_metrics(mut options: ServeOptions) -> (ServeOptions, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    options.metrics_listener = Some(listener);
    (options, addr)
}

async fn metrics_series_follow_the_calls(db: Db) {
    let (options, metrics) = with_metrics(ServeOptions::dev()).await;
    let Some(server) = TestServer::start_with(db, options).await else {
        return;
    };
    let mut secrets = server.secrets();
    secrets
        .create_secret(create("db-password", b"s3cret"))
        .await
        .unwrap();
    secrets
        .resolve_secret(resolve("db-password"))
        .await
        .unwrap();
    let missing = secrets
        .resolve_secret(resolve("missing"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let unbound = secrets
        .resolve_secret(v1::ResolveSecretRequest {
            consumer: Some(v1::Consumer {
                kind: "agent".into(),
                id: "a1".into(),
            }),
            config_path: "env.DB_PASSWORD".into(),
            ..resolve("db-password")
        })
        .await
        .unwrap_err();
    assert_eq!(unbound.code(), Code::FailedPrecondition);
    // Listing remote secrets is not something the built-in store can do:
    // a provider error of kind unsupported.
    let mut vaults = server.vaults();
    vaults
        .create_vault(v1::CreateVaultRequest {
            parent: PARENT.into(),
            vault_id: "main".into(),
            vault: Some(v1::Vault {
                provider: "local_encrypted".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let unsupported = vaults
        .preview_remote_import(v1::PreviewRemoteImportRequest {
            vault: format!("{PARENT}/vaults/main"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unsupported.code(), Code::Unimplemented);

    let (status, content_type, text) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let has = |name: &str, labels: &[(&str, &str)]| {
        let value = sample(&text, name, labels);
        assert!(
            value.is_some_and(|v| v > 0.0),
            "no positive {name} {labels:?} in\n{text}"
        );
    };
    let create_ok = [
        ("method", "/coffer.v1.SecretsService/CreateSecret"),
        ("code", "OK"),
    ];
    has("coffer_rpc_requests_total", &create_ok);
    has(
        "coffer_rpc_requests_total",
        &[
            ("method", "/coffer.v1.SecretsService/ResolveSecret"),
            ("code", "NOT_FOUND"),
        ],
    );
    has(
        "coffer_rpc_requests_total",
        &[
            ("method", "/coffer.v1.VaultService/PreviewRemoteImport"),
            ("code", "UNIMPLEMENTED"),
        ],
    );
    // Health checks (the harness polls them) are counted like any call.
    has(
        "coffer_rpc_requests_total",
        &[("method", "/grpc.health.v1.Health/Check"), ("code", "OK")],
    );
    has("coffer_rpc_duration_seconds_count", &create_ok);
    has(
        "coffer_rpc_duration_seconds_bucket",
        &[create_ok[0], create_ok[1], ("le", "+Inf")],
    );
    has("coffer_resolves_total", &[("outcome", "success")]);
    has("coffer_resolves_total", &[("outcome", "failure")]);
    has("coffer_resolves_total", &[("outcome", "denied")]);
    has(
        "coffer_provider_call_duration_seconds_count",
        &[("provider", "local_encrypted"), ("operation", "put_value")],
    );
    has(
        "coffer_provider_call_duration_seconds_count",
        &[
            ("provider", "local_encrypted"),
            ("operation", "resolve_many"),
        ],
    );
    has(
        "coffer_provider_errors_total",
        &[
            ("provider", "local_encrypted"),
            ("operation", "list_remote"),
            ("kind", "unsupported"),
        ],
    );
    has("coffer_audit_batch_size_count", &[]);
    has("coffer_audit_batch_size_bucket", &[("le", "512")]);
    has("coffer_audit_flush_duration_seconds_count", &[]);
    let pools: &[&str] = match db {
        Db::Sqlite => &["read", "write"],
        Db::Postgres => &["shared", "audit"],
    };
    for pool in pools {
        has("coffer_db_pool_max_connections", &[("pool", pool)]);
        for state in ["idle", "in_use"] {
            assert!(
                sample(
                    &text,
                    "coffer_db_pool_connections",
                    &[("pool", pool), ("state", state)]
                )
                .is_some(),
                "no pool gauge {pool}/{state} in\n{text}"
            );
        }
    }
    assert!(
        sample(&text, "coffer_rpc_in_flight", &[]).is_some(),
        "{text}"
    );
    has(
        "coffer_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
    );
    assert!(text.contains("# TYPE coffer_rpc_duration_seconds histogram"));
    // No value, and no caller-chosen label.
    assert!(!text.contains("s3cret"));

    let (status, _, _) = http_get(metrics, "/").await;
    assert_eq!(status, 404);
    let (status, _, _) = http_get(metrics, "/metrics/extra").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_rpc_resolve_provider_audit_and_pool_series_sqlite() {
    metrics_series_follow_the_calls(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_rpc_resolve_provider_audit_and_pool_series_postgres() {
    metrics_series_follow_the_calls(Db::Postgres).await;
}

// ------------------------------------------------------------ shutdown

/// Waits until the server reports at least `calls` calls in flight.
async fn wait_in_flight(metrics: SocketAddr, calls: f64) {
    wait_until(Duration::from_secs(10), || async {
        let (_, _, text) = http_get(metrics, "/metrics").await;
        sample(&text, "coffer_rpc_in_flight", &[]).is_some_and(|n| n >= calls)
    })
    .await
    .unwrap_or_else(|()| panic!("fewer than {calls} calls in flight"));
}

fn fresh_client(addr: SocketAddr) -> SecretsServiceClient<Channel> {
    SecretsServiceClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy(),
    )
}

/// Takes SQLite's write lock from the test's own connection (a write in an
/// open transaction); the server's writes wait until it is dropped.
async fn hold_writer(server: &TestServer, uid: &str) -> coffer_store::WriteTx {
    let tx = server.store.begin().await.unwrap();
    tx.set_last_resolve_time(&[uid.to_owned()], now_micros())
        .await
        .unwrap();
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_goes_not_serving_refuses_new_calls_and_drains_in_flight_ones() {
    let grace = Duration::from_secs(20);
    let (mut options, metrics) = with_metrics(ServeOptions::dev()).await;
    options.shutdown_grace = grace;
    let mut server = TestServer::start_with(Db::Sqlite, options).await.unwrap();
    let mut secrets = server.secrets();
    let uid = secrets
        .create_secret(create("slow-a", b"value-a"))
        .await
        .unwrap()
        .into_inner()
        .uid;

    let mut health = HealthClient::new(server.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = health.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let writer = hold_writer(&server, &uid).await;
    // A resolve waits for its audit batch, a create for its transaction.
    let resolving = tokio::spawn({
        let mut client = server.secrets();
        async move { client.resolve_secret(resolve("slow-a")).await }
    });
    let creating = tokio::spawn({
        let mut client = server.secrets();
        async move { client.create_secret(create("slow-b", b"value-b")).await }
    });
    // The health watch, the resolve and the create.
    wait_in_flight(metrics, 3.0).await;

    let shutdown_at = Instant::now();
    server.begin_shutdown();
    let update = tokio::time::timeout(Duration::from_secs(5), health.message())
        .await
        .expect("health did not change at shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    drop(health);

    // New connections are refused once the listener is closed, and new
    // calls on open connections once the server's GOAWAY reached them (HTTP/2
    // lets a call that crossed it on the wire through).
    wait_until(Duration::from_secs(5), || async {
        fresh_client(server.addr)
            .get_secret(get("slow-a"))
            .await
            .is_err_and(|status| status.code() == Code::Unavailable)
    })
    .await
    .expect("a new connection was still served after shutdown");
    wait_until(Duration::from_secs(5), || async {
        server.secrets().get_secret(get("slow-a")).await.is_err()
    })
    .await
    .expect("an open connection still took new calls after shutdown");
    assert!(!resolving.is_finished() && !creating.is_finished());

    // Release the lock: the in-flight calls finish, and serve returns.
    writer.rollback().await.unwrap();
    let resolved = resolving.await.unwrap().expect("the in-flight resolve");
    assert_eq!(resolved.into_inner().value, b"value-a");
    let created = creating.await.unwrap().expect("the in-flight create");
    assert_eq!(
        created.into_inner().name,
        format!("{PARENT}/secrets/slow-b")
    );
    server.wait_stopped(grace).await.unwrap();
    assert!(shutdown_at.elapsed() < grace);

    // Every completed call is in the audit trail.
    let events = server
        .store
        .list_audit_events(
            &TenantId::parse("acme", "tenant").unwrap(),
            &AuditFilter::default(),
            None,
            100,
        )
        .await
        .unwrap();
    let seen: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e.event.action.clone(),
                e.event.resource.clone(),
                e.event.outcome.as_str().to_owned(),
            )
        })
        .collect();
    for (action, key) in [
        ("secret.create", "slow-a"),
        ("secret.create", "slow-b"),
        ("secret.resolve", "slow-a"),
    ] {
        let wanted = (
            action.to_owned(),
            format!("{PARENT}/secrets/{key}"),
            "success".to_owned(),
        );
        assert!(seen.contains(&wanted), "{wanted:?} missing from {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_calls_that_outlast_the_grace_period() {
    let grace = Duration::from_millis(300);
    let (mut options, metrics) = with_metrics(ServeOptions::dev()).await;
    options.shutdown_grace = grace;
    let mut server = TestServer::start_with(Db::Sqlite, options).await.unwrap();
    let uid = server
        .secrets()
        .create_secret(create("base", b"value"))
        .await
        .unwrap()
        .into_inner()
        .uid;

    let writer = hold_writer(&server, &uid).await;
    let creating = tokio::spawn({
        let mut client = server.secrets();
        async move { client.create_secret(create("cut-me", b"value")).await }
    });
    wait_in_flight(metrics, 1.0).await;

    let shutdown_at = Instant::now();
    server.begin_shutdown();
    // The create would wait on the lock for as long as the test holds it;
    // serve returns after the grace period and the cut instead.
    server
        .wait_stopped(Duration::from_secs(4))
        .await
        .expect("serve returns after the grace period");
    let stopped_after = shutdown_at.elapsed();
    assert!(stopped_after >= grace, "{stopped_after:?}");
    let cut = creating.await.unwrap().expect_err("the create was cut");
    assert_eq!(cut.code(), Code::Unavailable, "{cut:?}");
    assert!(cut.message().contains("shutting down"), "{cut:?}");

    // The cut call's transaction never committed.
    writer.rollback().await.unwrap();
    let key = SecretKey::parse("cut-me", "key").unwrap();
    let tenant = TenantId::parse("acme", "tenant").unwrap();
    assert!(
        server
            .store
            .get_secret(&tenant, &key)
            .await
            .unwrap()
            .is_none()
    );
}
