//! SIGKILL mid-flight against the real binary: `coffer serve --dev` on
//! SQLite in a temp dir (and on a fresh PostgreSQL database when
//! COFFER_TEST_DATABASE_URL is set) takes concurrent rotations and
//! SyncBindings calls, is killed with SIGKILL at a random point, and is
//! restarted on the same data, several times. After each restart: every
//! rotation that returned OK resolves to its value; every version up to
//! `latest_version` exists and, unless destroyed, resolves (no version row
//! without material); `current_version` names an enabled version; each
//! consumer's bindings are exactly one whole SyncBindings generation, no
//! older than the last acknowledged one; every acknowledged import row is
//! there and every imported secret is whole (an import commit into an AWS
//! vault on a moto server runs alongside); and `coffer audit verify` passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Server processes are reaped by `Drop for Server` once started.
#![allow(clippy::zombie_processes)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_proto::v1;
use coffer_proto::v1::secrets_service_client::SecretsServiceClient;
use coffer_proto::v1::vault_service_client::VaultServiceClient;
use coffer_providers::testing::MotoServer;
use common::Server;
use rand::Rng;
use tonic::transport::Channel;

const PARENT: &str = "tenants/default";
const SECRETS: usize = 6;
const CONSUMERS: usize = 2;
const PATHS_PER_SYNC: usize = 4;
const ROUNDS: usize = 4;
/// Every gRPC call is bounded: a dead server must not hang the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts `coffer serve --dev` on `dir` (and `database_url` when given);
/// the log of start `n` is `server-n.log`.
fn start(dir: &Path, database_url: Option<&str>, n: usize) -> Server {
    use coffer_providers::testing::{TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY};
    common::start_dev(dir, &format!("server-{n}.log"), database_url, |command| {
        command
            .env("RUST_LOG", "info")
            // moto's dummy credentials, never the machine's.
            .env("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)
            .env("AWS_REGION", TEST_REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
    })
}

async fn client(server: &Server) -> SecretsServiceClient<Channel> {
    SecretsServiceClient::new(channel(server).await)
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT)
        .connect()
        .await
        .unwrap()
}

fn key(n: usize) -> String {
    format!("kill-{n}")
}

fn secret_name(key: &str) -> String {
    format!("{PARENT}/secrets/{key}")
}

fn consumer(n: usize) -> Option<v1::Consumer> {
    Some(v1::Consumer {
        kind: "agent".into(),
        id: format!("killer-{n}"),
    })
}

/// The bindings of SyncBindings generation `generation`: the config paths
/// name the generation, so a mix of two generations shows.
fn generation_bindings(generation: u64) -> Vec<v1::Binding> {
    (0..PATHS_PER_SYNC)
        .map(|i| v1::Binding {
            secret: secret_name(&key((generation as usize + i) % SECRETS)),
            config_path: format!("env.G{generation}_{i}"),
            ..Default::default()
        })
        .collect()
}

/// What the clients were told: acknowledged rotations (key → version →
/// value) and, per consumer, the last acknowledged and the last attempted
/// SyncBindings generation.
#[derive(Default)]
struct Acknowledged {
    rotations: BTreeMap<String, BTreeMap<i64, Vec<u8>>>,
    attempted: BTreeMap<String, Vec<Vec<u8>>>,
    synced: BTreeMap<usize, u64>,
    sync_attempted: BTreeMap<usize, u64>,
    /// Import rows acknowledged as imported or skipped: key → remote index.
    imported: BTreeMap<String, usize>,
    import_commits: u64,
    calls: u64,
    failed_calls: u64,
}

/// Drives load until the server dies: rotators and syncers each loop until
/// a call fails (the server was killed under it).
async fn drive(server_addr: String, state: Arc<Mutex<Acknowledged>>, round: usize) {
    let channel = Channel::from_shared(format!("http://{server_addr}"))
        .unwrap()
        .timeout(CALL_TIMEOUT)
        .connect_lazy();
    let mut tasks = Vec::new();
    for worker in 0..3 {
        let mut client = SecretsServiceClient::new(channel.clone());
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0.. {
                let key = key((worker * 2 + seq) % SECRETS);
                let value = format!("{key}#r{round}w{worker}s{seq}").into_bytes();
                state
                    .lock()
                    .unwrap()
                    .attempted
                    .entry(key.clone())
                    .or_default()
                    .push(value.clone());
                let result = client
                    .rotate_secret(v1::RotateSecretRequest {
                        name: secret_name(&key),
                        source: Some(v1::rotate_secret_request::Source::Value(value.clone())),
                        ..Default::default()
                    })
                    .await;
                let mut state = state.lock().unwrap();
                state.calls += 1;
                match result {
                    Ok(version) => {
                        let version = version.into_inner().version;
                        state
                            .rotations
                            .entry(key)
                            .or_default()
                            .insert(version, value);
                    }
                    Err(_) => {
                        state.failed_calls += 1;
                        return;
                    }
                }
            }
        }));
    }
    for n in 0..CONSUMERS {
        let mut client = SecretsServiceClient::new(channel.clone());
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let generation = {
                    let mut state = state.lock().unwrap();
                    let next = state.sync_attempted.get(&n).copied().unwrap_or(0) + 1;
                    state.sync_attempted.insert(n, next);
                    next
                };
                let result = client
                    .sync_bindings(v1::SyncBindingsRequest {
                        parent: PARENT.into(),
                        consumer: consumer(n),
                        config_path_prefix: "env.".into(),
                        bindings: generation_bindings(generation),
                    })
                    .await;
                let mut state = state.lock().unwrap();
                state.calls += 1;
                match result {
                    Ok(_) => {
                        state.synced.insert(n, generation);
                    }
                    Err(_) => {
                        state.failed_calls += 1;
                        return;
                    }
                }
            }
        }));
    }
    // One importer: commits the remote secrets in chunks, from where the
    // acknowledged ones end (a re-commit of an imported row is skipped).
    {
        let channel = channel.clone();
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut vaults = VaultServiceClient::new(channel);
            let start = state.lock().unwrap().imported.len();
            for chunk in (start..REMOTE_SECRETS)
                .collect::<Vec<_>>()
                .chunks(IMPORT_CHUNK)
            {
                let rows = chunk
                    .iter()
                    .map(|n| v1::ImportRow {
                        external_ref: remote_name(*n),
                        key: imported_key(*n),
                        ..Default::default()
                    })
                    .collect();
                let result = vaults
                    .commit_remote_import(v1::CommitRemoteImportRequest {
                        vault: VAULT.into(),
                        rows,
                    })
                    .await;
                let mut state = state.lock().unwrap();
                state.calls += 1;
                match result {
                    Ok(response) => {
                        let response = response.into_inner();
                        assert_eq!(response.failed, 0, "{response:?}");
                        state.import_commits += 1;
                        for n in chunk {
                            state.imported.insert(imported_key(*n), *n);
                        }
                    }
                    Err(_) => {
                        state.failed_calls += 1;
                        return;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

const VAULT: &str = "tenants/default/vaults/aws";
const REMOTE_SECRETS: usize = 300;
const IMPORT_CHUNK: usize = 10;

fn remote_name(n: usize) -> String {
    format!("team/app-{n:04}")
}

fn imported_key(n: usize) -> String {
    format!("imp-{n:04}")
}

/// Checks every invariant against a freshly restarted server.
async fn check(server: &Server, state: &Acknowledged) -> (usize, usize) {
    let mut client = client(server).await;
    let mut versions_checked = 0;
    for n in 0..SECRETS {
        let key = key(n);
        let secret = client
            .get_secret(v1::GetSecretRequest {
                name: secret_name(&key),
            })
            .await
            .unwrap()
            .into_inner();
        let versions = client
            .list_secret_versions(v1::ListSecretVersionsRequest {
                parent: secret_name(&key),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            versions.next_page_token.is_empty(),
            "{key}: more versions than one page"
        );
        let by_number: BTreeMap<i64, &v1::SecretVersion> =
            versions.versions.iter().map(|v| (v.version, v)).collect();
        let numbers: Vec<i64> = by_number.keys().copied().collect();
        let expected: Vec<i64> = (1..=secret.latest_version).collect();
        assert_eq!(numbers, expected, "{key}: version numbers with a gap");
        let current = by_number
            .get(&secret.current_version)
            .unwrap_or_else(|| panic!("{key}: current version {} missing", secret.current_version));
        assert_eq!(
            current.state,
            v1::secret_version::State::Enabled as i32,
            "{key}: current version not enabled"
        );
        let attempted = state.attempted.get(&key);
        for (number, version) in &by_number {
            if version.state == v1::secret_version::State::Destroyed as i32 {
                continue;
            }
            let value = client
                .resolve_secret(v1::ResolveSecretRequest {
                    name: secret_name(&key),
                    version: number.to_string(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|status| panic!("{key} v{number}: no material: {status:?}"))
                .into_inner()
                .value;
            versions_checked += 1;
            if *number == 1 {
                assert_eq!(value, format!("{key}#initial").into_bytes(), "{key} v1");
            } else {
                assert!(
                    attempted.is_some_and(|a| a.contains(&value)),
                    "{key} v{number}: a value nobody wrote"
                );
            }
            if let Some(acked) = state.rotations.get(&key).and_then(|r| r.get(number)) {
                assert!(
                    *acked == value,
                    "{key} v{number}: not the acknowledged value"
                );
            }
        }
        // Every acknowledged rotation is there.
        for number in state.rotations.get(&key).into_iter().flat_map(|r| r.keys()) {
            assert!(
                by_number.contains_key(number),
                "{key}: acknowledged version {number} lost"
            );
        }
    }
    for n in 0..CONSUMERS {
        let bindings = client
            .list_bindings(v1::ListBindingsRequest {
                parent: PARENT.into(),
                consumer: consumer(n),
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .bindings;
        let generations: std::collections::BTreeSet<u64> = bindings
            .iter()
            .map(|b| {
                let rest = b.config_path.strip_prefix("env.G").unwrap();
                rest.split('_').next().unwrap().parse().unwrap()
            })
            .collect();
        let acked = state.synced.get(&n).copied().unwrap_or(0);
        let attempted = state.sync_attempted.get(&n).copied().unwrap_or(0);
        if attempted == 0 {
            assert!(bindings.is_empty());
            continue;
        }
        if bindings.is_empty() {
            // Only an unacknowledged first sync, killed before it
            // committed, may leave nothing behind.
            assert_eq!(acked, 0, "consumer {n}: acknowledged bindings lost");
            continue;
        }
        assert_eq!(generations.len(), 1, "consumer {n}: a partial binding set");
        let generation = *generations.first().unwrap();
        assert_eq!(bindings.len(), PATHS_PER_SYNC, "consumer {n}: {bindings:?}");
        assert!(
            (acked..=attempted).contains(&generation),
            "consumer {n}: generation {generation}, acknowledged {acked}, attempted {attempted}"
        );
        let expected: Vec<(String, String)> = generation_bindings(generation)
            .into_iter()
            .map(|b| (b.config_path, b.secret))
            .collect();
        let mut got: Vec<(String, String)> = bindings
            .into_iter()
            .map(|b| (b.config_path, b.secret))
            .collect();
        got.sort();
        assert_eq!(got, expected, "consumer {n}");
    }
    // Imports: every acknowledged row is there, and every imported secret
    // (acknowledged or not) is whole: one enabled current version that
    // resolves to the remote value.
    let mut imported_found = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_secrets(v1::ListSecretsRequest {
                parent: PARENT.into(),
                page_size: 500,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for secret in &page.secrets {
            let Some(key) = secret
                .name
                .rsplit('/')
                .next()
                .filter(|k| k.starts_with("imp-"))
            else {
                continue;
            };
            let n: usize = key.trim_start_matches("imp-").parse().unwrap();
            assert_eq!(secret.current_version, 1, "{key}: {secret:?}");
            let value = client
                .resolve_secret(v1::ResolveSecretRequest {
                    name: secret.name.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|status| panic!("{key}: half imported: {status:?}"))
                .into_inner()
                .value;
            assert!(
                value == format!("seed value {n}").into_bytes(),
                "{key}: not the remote value"
            );
            imported_found += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    for key in state.imported.keys() {
        client
            .get_secret(v1::GetSecretRequest {
                name: secret_name(key),
            })
            .await
            .unwrap_or_else(|status| panic!("acknowledged import {key} lost: {status:?}"));
    }
    assert!(imported_found >= state.imported.len());
    (imported_found, versions_checked)
}

fn audit_verify(server: &Server) {
    let out = common::coffer()
        .args(["audit", "verify", "--tenant", "default", "--server"])
        .arg(format!("http://{}", server.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn run(database_url: Option<&str>) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start();
    moto.seed_secrets("team/app-", REMOTE_SECRETS).await;
    let mut server = start(dir.path(), database_url, 0);
    {
        let config = moto.vault_config("kill");
        VaultServiceClient::new(channel(&server).await)
            .create_vault(v1::CreateVaultRequest {
                parent: PARENT.into(),
                vault_id: "aws".into(),
                vault: Some(v1::Vault {
                    provider: "aws_secrets_manager".into(),
                    config: Some(v1::vault::Config::AwsSecretsManager(
                        v1::AwsSecretsManagerConfig {
                            region: config.region,
                            endpoint_url: config.endpoint_url,
                            namespace: config.namespace,
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        let mut client = client(&server).await;
        for n in 0..SECRETS {
            let key = key(n);
            client
                .create_secret(v1::CreateSecretRequest {
                    parent: PARENT.into(),
                    secret_id: key.clone(),
                    source: Some(v1::create_secret_request::Source::Value(
                        format!("{key}#initial").into_bytes(),
                    )),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    let state = Arc::new(Mutex::new(Acknowledged::default()));
    let mut kills = Vec::new();
    let mut imports_found = 0;
    for round in 1..=ROUNDS {
        let load = tokio::spawn(drive(server.addr.clone(), state.clone(), round));
        let delay = Duration::from_millis(rand::rng().random_range(150..700));
        tokio::time::sleep(delay).await;
        // SIGKILL: no shutdown hook, no drain, no flush.
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        kills.push(delay);
        tokio::time::timeout(Duration::from_secs(10), load)
            .await
            .expect("the load did not notice the kill")
            .unwrap();
        server = start(dir.path(), database_url, round);
        let snapshot = {
            let state = state.lock().unwrap();
            Acknowledged {
                rotations: state.rotations.clone(),
                attempted: state.attempted.clone(),
                synced: state.synced.clone(),
                sync_attempted: state.sync_attempted.clone(),
                imported: state.imported.clone(),
                import_commits: state.import_commits,
                calls: state.calls,
                failed_calls: state.failed_calls,
            }
        };
        let (imported_found, _) = check(&server, &snapshot).await;
        imports_found = imported_found;
        audit_verify(&server);
    }
    let state = state.lock().unwrap();
    let acked: usize = state.rotations.values().map(BTreeMap::len).sum();
    eprintln!(
        "{}: {ROUNDS} SIGKILLs at {kills:?} into the load; calls {} (failed by the kill {}), \
         rotations acknowledged {acked} found {acked} (lost 0), syncs acknowledged {:?} of attempted {:?}, \
         import commits acknowledged {} ({} rows), imported secrets found whole {imports_found}, total {:?}",
        if database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        state.calls,
        state.failed_calls,
        state.synced,
        state.sync_attempted,
        state.import_commits,
        state.imported.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flight_on_sqlite_loses_no_acknowledged_write() {
    run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flight_on_postgres_loses_no_acknowledged_write() {
    let Some(url) = coffer_store::testing::fresh_postgres_url().await else {
        eprintln!("SKIPPED: COFFER_TEST_DATABASE_URL is not set");
        return;
    };
    run(Some(&url)).await;
    coffer_store::testing::drop_postgres_database(&url).await;
}
