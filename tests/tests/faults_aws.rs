//! AWS Secrets Manager endpoint faults, loopback only. A vault is set up on a
//! real moto server, then its `endpoint_url` is switched to a tiny TCP fault
//! server in this file that hangs, answers HTTP 500, answers a throttling
//! error, or closes every connection. Each resolve, rotate and import call
//! into that vault must end within the provider's operation timeout plus a
//! margin, with the documented gRPC code and reason, after at most
//! `max_attempts` requests per AWS operation (no retry storm); a failed
//! rotate writes no version; and a local secret and a second, healthy AWS
//! vault keep resolving promptly while a call into the faulty vault hangs
//! (a rotate too: it writes to the provider before it takes the secret's
//! row lock, so on SQLite the database's one write lock is never held for
//! a provider call).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coffer_proto::v1;
use coffer_providers::testing::MotoServer;
use coffer_server::app::{CofferOptions, ValueCacheOptions};
use coffer_tests::{Db, TestServer, reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

const PARENT: &str = "tenants/acme";
const VAULT: &str = "tenants/acme/vaults/aws";
const HEALTHY_VAULT: &str = "tenants/acme/vaults/aws-ok";

/// What the harness's AWS provider allows (`MotoServer::provider_options`).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_ATTEMPTS: usize = 2;
/// Room for gRPC, the database and scheduling on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);
/// What "promptly" means for a call that does not touch the faulty vault.
const PROMPT: Duration = Duration::from_millis(750);

/// How the fault server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Accepts, reads the request, never answers.
    Hang,
    /// HTTP 500 with a non-AWS body to every request.
    ServerError,
    /// HTTP 400 ThrottlingException, as AWS throttles.
    Throttle,
    /// Accepts and closes at once, before reading anything.
    Close,
}

/// A TCP server on 127.0.0.1 that misbehaves as its [`Fault`] says and
/// counts the attempts it saw (requests read, or connections for `Close`).
struct FaultServer {
    addr: SocketAddr,
    attempts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    async fn start(fault: Fault) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = attempts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(serve_connection(stream, fault, counter));
            }
        });
        FaultServer {
            addr,
            attempts,
            task,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The attempts seen since the last call, and resets the count.
    fn take_attempts(&self) -> usize {
        self.attempts.swap(0, Ordering::SeqCst)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(mut stream: TcpStream, fault: Fault, attempts: Arc<AtomicUsize>) {
    if fault == Fault::Close {
        attempts.fetch_add(1, Ordering::SeqCst);
        drop(stream);
        return;
    }
    // Keep-alive: one connection may carry several requests.
    let mut buffer = Vec::new();
    loop {
        let Some(request_len) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        buffer.drain(..request_len);
        attempts.fetch_add(1, Ordering::SeqCst);
        let response = match fault {
            Fault::Hang => {
                // Hold the connection open until the client gives up.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Fault::ServerError => http_response(
                "500 Internal Server Error",
                &[("Content-Type", "text/plain")],
                "internal error",
            ),
            Fault::Throttle => http_response(
                "400 Bad Request",
                &[
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("x-amzn-errortype", "ThrottlingException"),
                ],
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            ),
            Fault::Close => unreachable!(),
        };
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body) into
/// `buffer`; returns its length, or None when the peer went away.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let body_len = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = end + 4 + body_len;
            while buffer.len() < total {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            return Some(total);
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn http_response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut response = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    response
}

fn aws_config(moto: &MotoServer, namespace: &str, endpoint: String) -> v1::vault::Config {
    let config = moto.vault_config(namespace);
    v1::vault::Config::AwsSecretsManager(v1::AwsSecretsManagerConfig {
        region: config.region,
        endpoint_url: endpoint,
        namespace: config.namespace,
        recovery_window_days: 7,
        ..Default::default()
    })
}

async fn create_aws_vault(server: &TestServer, moto: &MotoServer, id: &str, namespace: &str) {
    server
        .vaults()
        .create_vault(v1::CreateVaultRequest {
            parent: PARENT.into(),
            vault_id: id.into(),
            vault: Some(v1::Vault {
                provider: "aws_secrets_manager".into(),
                config: Some(aws_config(moto, namespace, moto.endpoint())),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

/// Points the `aws` vault (namespace `faulty`) at `endpoint`.
async fn point_faulty_vault_at(server: &TestServer, moto: &MotoServer, endpoint: String) {
    server
        .vaults()
        .update_vault(v1::UpdateVaultRequest {
            vault: Some(v1::Vault {
                name: VAULT.into(),
                config: Some(aws_config(moto, "faulty", endpoint)),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["config".into()],
            }),
        })
        .await
        .unwrap();
}

async fn create_secret(server: &TestServer, key: &str, vault: &str, value: &[u8]) {
    let provider = if vault.is_empty() {
        "local_encrypted"
    } else {
        "aws_secrets_manager"
    };
    server
        .secrets()
        .create_secret(v1::CreateSecretRequest {
            parent: PARENT.into(),
            secret_id: key.into(),
            secret: Some(v1::Secret {
                provider: provider.into(),
                vault: vault.into(),
                ..Default::default()
            }),
            source: Some(v1::create_secret_request::Source::Value(value.to_vec())),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn resolve(server: &TestServer, key: &str) -> Result<Vec<u8>, tonic::Status> {
    server
        .secrets()
        .resolve_secret(v1::ResolveSecretRequest {
            name: format!("{PARENT}/secrets/{key}"),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().value)
}

async fn rotate(server: &TestServer, key: &str, value: &[u8]) -> Result<(), tonic::Status> {
    server
        .secrets()
        .rotate_secret(v1::RotateSecretRequest {
            name: format!("{PARENT}/secrets/{key}"),
            source: Some(v1::rotate_secret_request::Source::Value(value.to_vec())),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn stored_secret(server: &TestServer, key: &str) -> coffer_core::record::SecretRecord {
    let tenant = coffer_core::TenantId::parse("acme", "tenant").unwrap();
    let key = coffer_core::SecretKey::parse(key, "key").unwrap();
    server
        .store
        .get_secret(&tenant, &key)
        .await
        .unwrap()
        .unwrap()
}

async fn version_count(server: &TestServer, key: &str) -> usize {
    server
        .secrets()
        .list_secret_versions(v1::ListSecretVersionsRequest {
            parent: format!("{PARENT}/secrets/{key}"),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .versions
        .len()
}

/// Runs `call` against the faulty vault while a local secret and the
/// healthy AWS vault are resolved: each of those must answer within `prompt`.
/// Returns the call's result, how long it took and the attempts it caused.
async fn faulty_call<T, F>(
    server: &TestServer,
    fault: &FaultServer,
    prompt: Duration,
    call: F,
) -> (Result<T, tonic::Status>, Duration, usize)
where
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    fault.take_attempts();
    let started = Instant::now();
    let bystanders = async {
        // Let the faulty call get going first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for key in ["local-key", "healthy-key"] {
            let started = Instant::now();
            let value = resolve(server, key).await.unwrap();
            let elapsed = started.elapsed();
            assert!(!value.is_empty());
            assert!(
                elapsed < prompt,
                "{key} took {elapsed:?} during a fault (bound {prompt:?})"
            );
        }
    };
    let (result, ()) = tokio::join!(call, bystanders);
    let elapsed = started.elapsed();
    // A hung attempt is counted when its request arrives; give a late
    // retry no chance to hide.
    tokio::time::sleep(Duration::from_millis(50)).await;
    (result, elapsed, fault.take_attempts())
}

/// Sets up acme's vaults on moto, then points `aws` at a fault server and
/// checks every call into it. Runs on a replica without a value cache, so
/// every resolve reaches the provider.
async fn run_fault(db: Db, fault_kind: Fault) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let moto = MotoServer::start();
    create_aws_vault(&server, &moto, "aws", "faulty").await;
    create_aws_vault(&server, &moto, "aws-ok", "healthy").await;
    create_secret(&server, "aws-key", VAULT, b"remote v1").await;
    create_secret(&server, "healthy-key", HEALTHY_VAULT, b"healthy v1").await;
    create_secret(&server, "local-key", "", b"local v1").await;
    moto.create_secret("team/imported", "remote value").await;

    let server = server
        .start_replica_with(CofferOptions {
            value_cache: ValueCacheOptions {
                enabled: false,
                ..ValueCacheOptions::default()
            },
            ..CofferOptions::default()
        })
        .await;
    let fault = FaultServer::start(fault_kind).await;
    point_faulty_vault_at(&server, &moto, fault.endpoint()).await;
    let before = stored_secret(&server, "aws-key").await;
    let versions_before = version_count(&server, "aws-key").await;

    let (expected_code, expected_reason) = match fault_kind {
        Fault::Throttle => (Code::Unavailable, "PROVIDER_THROTTLED"),
        _ => (Code::Unavailable, "PROVIDER_UNAVAILABLE"),
    };
    let bound = OPERATION_TIMEOUT + MARGIN;
    let mut figures = Vec::new();

    // Resolve: one GetSecretValue.
    let (result, elapsed, attempts) =
        faulty_call(&server, &fault, PROMPT, resolve(&server, "aws-key")).await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), expected_code, "resolve: {status:?}");
    assert_eq!(reason(&status), expected_reason, "resolve: {status:?}");
    assert!(elapsed < bound, "resolve took {elapsed:?}");
    assert!(
        (1..=MAX_ATTEMPTS).contains(&attempts),
        "resolve: {attempts} attempts"
    );
    assert!(!status.message().contains("Rate exceeded"), "{status:?}");
    figures.push(("resolve", elapsed, attempts));

    // Rotate: one PutSecretValue; nothing may be written on failure. The
    // provider write holds no database lock or connection (on SQLite the
    // one write lock of the whole database), so bystanders stay prompt.
    let (result, elapsed, attempts) = faulty_call(
        &server,
        &fault,
        PROMPT,
        rotate(&server, "aws-key", b"remote v2"),
    )
    .await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), expected_code, "rotate: {status:?}");
    assert_eq!(reason(&status), expected_reason, "rotate: {status:?}");
    assert!(elapsed < bound, "rotate took {elapsed:?}");
    assert!(
        (1..=MAX_ATTEMPTS).contains(&attempts),
        "rotate: {attempts} attempts"
    );
    figures.push(("rotate", elapsed, attempts));
    let after = stored_secret(&server, "aws-key").await;
    assert_eq!(after.latest_version, before.latest_version);
    assert_eq!(after.revision, before.revision);
    assert_eq!(version_count(&server, "aws-key").await, versions_before);

    // Import preview: one ListSecrets page, refused as a whole.
    let mut vaults = server.vaults();
    let (result, elapsed, attempts) = faulty_call(
        &server,
        &fault,
        PROMPT,
        vaults.preview_remote_import(v1::PreviewRemoteImportRequest {
            vault: VAULT.into(),
            query: String::new(),
            page_size: 10,
            page_token: String::new(),
        }),
    )
    .await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), expected_code, "preview: {status:?}");
    assert_eq!(reason(&status), expected_reason, "preview: {status:?}");
    assert!(elapsed < bound, "preview took {elapsed:?}");
    assert!(
        (1..=MAX_ATTEMPTS).contains(&attempts),
        "preview: {attempts} attempts"
    );
    figures.push(("preview_import", elapsed, attempts));

    // Import commit of one row: the row fails, nothing is imported.
    let mut vaults = server.vaults();
    let (result, elapsed, attempts) = faulty_call(
        &server,
        &fault,
        PROMPT,
        vaults.commit_remote_import(v1::CommitRemoteImportRequest {
            vault: VAULT.into(),
            rows: vec![v1::ImportRow {
                external_ref: "team/imported".into(),
                key: "imported".into(),
                ..Default::default()
            }],
        }),
    )
    .await;
    assert!(elapsed < bound, "commit took {elapsed:?}");
    match result {
        Ok(response) => {
            let response = response.into_inner();
            assert_eq!((response.imported, response.failed), (0, 1), "{response:?}");
            assert!(
                !response.results[0].reason.contains("Rate exceeded"),
                "{response:?}"
            );
        }
        Err(status) => {
            assert_eq!(status.code(), expected_code, "commit: {status:?}");
            assert_eq!(reason(&status), expected_reason, "commit: {status:?}");
        }
    }
    assert!(attempts <= MAX_ATTEMPTS, "commit: {attempts} attempts");
    figures.push(("commit_import", elapsed, attempts));
    let missing = resolve(&server, "imported").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // Health tells the truth, also within a bound.
    let started = Instant::now();
    let health = server
        .vaults()
        .check_vault_health(v1::CheckVaultHealthRequest { name: VAULT.into() })
        .await
        .unwrap()
        .into_inner();
    let elapsed = started.elapsed();
    assert!(
        elapsed < bound + OPERATION_TIMEOUT,
        "health took {elapsed:?}"
    );
    assert_eq!(health.state, v1::vault::State::Warning as i32, "{health:?}");

    // Back on moto: the vault works again and the failed rotate left nothing.
    point_faulty_vault_at(&server, &moto, moto.endpoint()).await;
    assert_eq!(resolve(&server, "aws-key").await.unwrap(), b"remote v1");
    rotate(&server, "aws-key", b"remote v2").await.unwrap();
    assert_eq!(resolve(&server, "aws-key").await.unwrap(), b"remote v2");
    assert_eq!(version_count(&server, "aws-key").await, versions_before + 1);

    eprintln!("{db:?} fault {fault_kind:?}: (call, elapsed, attempts) = {figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_fails_within_the_operation_timeout() {
    run_fault(Db::Sqlite, Fault::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_500_is_unavailable_without_a_retry_storm() {
    run_fault(Db::Sqlite, Fault::ServerError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_endpoint_is_reported_as_throttled() {
    run_fault(Db::Sqlite, Fault::Throttle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_closing_connections_is_unavailable() {
    run_fault(Db::Sqlite, Fault::Close).await;
}

/// The same on PostgreSQL: a rotate stuck on a hanging endpoint holds no
/// pooled connection and no row lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_holds_up_nothing_else_on_postgres() {
    run_fault(Db::Postgres, Fault::Hang).await;
}

/// Deletes are slower to unwind than rotations: they call the provider
/// inside the transaction that locks the secret. Twelve of them into a
/// hanging vault at once (more than the pool's ten connections) take only
/// the few provider slots; the rest answer PROVIDER_BUSY promptly, and a
/// local secret keeps resolving and rotating meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_vault_cannot_take_every_connection_on_postgres() {
    const DELETES: usize = 12;
    let Some(server) = TestServer::start(Db::Postgres).await else {
        return;
    };
    let moto = MotoServer::start();
    create_aws_vault(&server, &moto, "aws", "faulty").await;
    for n in 0..DELETES {
        create_secret(&server, &format!("doomed-{n}"), VAULT, b"remote").await;
    }
    create_secret(&server, "local-key", "", b"local v1").await;
    let fault = FaultServer::start(Fault::Hang).await;
    point_faulty_vault_at(&server, &moto, fault.endpoint()).await;

    let deletes: Vec<_> = (0..DELETES)
        .map(|n| {
            let mut client = server.secrets();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = client
                    .delete_secret(v1::DeleteSecretRequest {
                        name: format!("{PARENT}/secrets/doomed-{n}"),
                        ..Default::default()
                    })
                    .await;
                (result, started.elapsed())
            })
        })
        .collect();
    let bystander = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        for round in 0..3 {
            let started = Instant::now();
            assert_eq!(resolve(&server, "local-key").await.unwrap(), b"local v1");
            rotate(&server, "local-key", b"local v1").await.unwrap();
            let elapsed = started.elapsed();
            assert!(elapsed < PROMPT, "round {round}: {elapsed:?}");
        }
    };
    bystander.await;
    let mut busy = 0;
    for delete in deletes {
        let (result, elapsed) = delete.await.unwrap();
        let status = result.unwrap_err();
        match reason(&status).as_str() {
            "PROVIDER_BUSY" => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(elapsed < PROMPT, "busy after {elapsed:?}");
                busy += 1;
            }
            "PROVIDER_UNAVAILABLE" => {
                assert!(elapsed < OPERATION_TIMEOUT + MARGIN, "{elapsed:?}")
            }
            other => panic!("{other}: {status:?}"),
        }
    }
    assert!(
        busy >= DELETES / 2,
        "only {busy} of {DELETES} were turned away"
    );
    for n in 0..DELETES {
        let secret = stored_secret(&server, &format!("doomed-{n}")).await;
        assert_eq!(secret.state, coffer_core::record::SecretState::Active);
    }
}
