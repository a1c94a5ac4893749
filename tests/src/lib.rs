//! The end-to-end harness: starts a real Coffer server (real migrations, real
//! keyring, real providers) on a pre-bound `127.0.0.1:0` listener against
//! SQLite or a fresh PostgreSQL database, and hands out gRPC clients.
//! Tests poll health for readiness instead of sleeping. [`TestServer::start_mtls`]
//! serves mutual TLS with a role policy and a test CA ([`pki`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod pki;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coffer_crypto::Keyring;
use coffer_proto::v1::secrets_service_client::SecretsServiceClient;
use coffer_proto::v1::vault_service_client::VaultServiceClient;
use coffer_providers::ProviderRegistry;
use coffer_providers::local_encrypted::LocalEncryptedProvider;
use coffer_server::app::{CofferOptions, WatchOptions};
use coffer_server::{Coffer, Mtls, MtlsFiles, ServeOptions, TlsFiles};
use coffer_store::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A running server and what it was started with.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub channel: Channel,
    /// A second handle on the server's database, for checking what was stored.
    pub store: Store,
    pub keyring: Arc<Keyring>,
    /// The database URL the server uses.
    pub database_url: String,
    /// Set when the server runs mutual TLS.
    pub mtls: Option<MtlsSetup>,
    /// The server's use cases (e.g. to close its watch streams).
    pub coffer: Coffer,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// Shared with replicas, so the SQLite file outlives whichever stops first.
    _dir: Option<Arc<tempfile::TempDir>>,
}

/// The TLS side of a test server: its CA, its files and its reload handle.
#[derive(Debug)]
pub struct MtlsSetup {
    pub pki: pki::TestPki,
    pub handle: Mtls,
    pub policy_file: std::path::PathBuf,
    /// The first host of the server certificate; clients verify against it.
    pub server_name: String,
    pub dir: tempfile::TempDir,
}

/// The principal the harness's own channel (`TestServer::channel`) uses
/// under mTLS; it holds no grant unless a test's policy gives it one.
pub const HARNESS_PRINCIPAL: &str = "test:harness";

/// A client channel over mutual TLS: `identity` is presented when given; the
/// server's certificate must chain to `ca_pem` and be valid for `domain`.
pub fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&pki::Pem>,
    domain: &str,
) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(domain);
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy()
}

impl TestServer {
    /// Starts a server on `db`, or returns None when PostgreSQL is not
    /// available and not required (the store harness decides and says so).
    pub async fn start(db: Db) -> Option<TestServer> {
        Self::start_with(db, ServeOptions::dev()).await
    }

    pub async fn start_with(db: Db, options: ServeOptions) -> Option<TestServer> {
        Self::start_inner(db, options, None).await
    }

    /// Starts a server with mutual TLS (a fresh test CA, a server certificate
    /// for localhost and 127.0.0.1) and `policy` as the policy file.
    pub async fn start_mtls(db: Db, policy: &str) -> Option<TestServer> {
        Self::start_mtls_for_hosts(db, policy, &["localhost", "127.0.0.1"]).await
    }

    /// Like [`Self::start_mtls`] with a server certificate for `hosts`.
    pub async fn start_mtls_for_hosts(db: Db, policy: &str, hosts: &[&str]) -> Option<TestServer> {
        let pki = pki::TestPki::new("coffer test ca");
        let dir = tempfile::tempdir().unwrap();
        let server = pki.server(hosts);
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("server.pem"), &server.cert).unwrap();
        std::fs::write(path("server.key"), &server.key).unwrap();
        std::fs::write(path("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(path("policy.toml"), policy).unwrap();
        let handle = Mtls::load(MtlsFiles {
            tls: TlsFiles {
                cert_file: path("server.pem"),
                key_file: path("server.key"),
                client_ca_file: path("ca.pem"),
            },
            policy_file: path("policy.toml"),
        })
        .unwrap();
        let options = ServeOptions::mtls(&handle);
        let setup = MtlsSetup {
            pki,
            handle,
            policy_file: path("policy.toml"),
            server_name: hosts[0].to_owned(),
            dir,
        };
        Self::start_inner(db, options, Some(setup)).await
    }

    async fn start_inner(
        db: Db,
        options: ServeOptions,
        mtls: Option<MtlsSetup>,
    ) -> Option<TestServer> {
        let (database_url, dir) = match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("coffer.db").display()
                );
                (url, Some(dir))
            }
            Db::Postgres => (coffer_store::testing::fresh_postgres_url().await?, None),
        };
        let keyring = Arc::new(Keyring::generate().unwrap());
        let store = Store::connect(&database_url, Default::default())
            .await
            .unwrap();
        store.migrate_up().await.unwrap();
        let db = Database {
            url: database_url,
            dir: dir.map(Arc::new),
            keyring,
            store,
        };
        Some(Self::launch(db, options, mtls, CofferOptions::default()).await)
    }

    /// Starts another (plaintext, dev-mode) server on this server's database
    /// and keyring, with `watch` as its change-stream settings: a second
    /// replica, or, once this one has stopped, the same deployment restarted.
    pub async fn start_replica(&self, watch: WatchOptions) -> TestServer {
        self.start_replica_with(CofferOptions {
            watch,
            ..CofferOptions::default()
        })
        .await
    }

    /// Like [`Self::start_replica`], with every use-case setting explicit.
    pub async fn start_replica_with(&self, options: CofferOptions) -> TestServer {
        let store = Store::connect(&self.database_url, Default::default())
            .await
            .unwrap();
        let db = Database {
            url: self.database_url.clone(),
            dir: self._dir.clone(),
            keyring: self.keyring.clone(),
            store,
        };
        Self::launch(db, ServeOptions::dev(), None, options).await
    }

    async fn launch(
        db: Database,
        options: ServeOptions,
        mtls: Option<MtlsSetup>,
        coffer_options: CofferOptions,
    ) -> TestServer {
        let Database {
            url: database_url,
            dir,
            keyring,
            store,
        } = db;
        // AWS Secrets Manager with moto's dummy credentials and short
        // timeouts; tests that use it start their own moto server.
        let providers = ProviderRegistry::builder()
            .register(Arc::new(LocalEncryptedProvider::new(keyring.clone())))
            .unwrap()
            .register(Arc::new(coffer_providers::testing::MotoServer::factory()))
            .unwrap()
            .build();
        let coffer = Coffer::configured(store.clone(), providers, keyring.clone(), coffer_options);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let served = coffer.clone();
        let task = tokio::spawn(async move {
            coffer_server::serve(listener, served, options, async {
                let _ = rx.await;
            })
            .await
            .expect("server failed");
        });
        let channel = match &mtls {
            None => Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_lazy(),
            Some(setup) => tls_channel(
                addr,
                &setup.pki.ca_pem,
                Some(&setup.pki.client(HARNESS_PRINCIPAL)),
                &setup.server_name,
            ),
        };
        let server = TestServer {
            addr,
            channel,
            store,
            keyring,
            database_url,
            mtls,
            coffer,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        };
        server.wait_serving().await;
        server
    }

    /// A channel presenting a client certificate for `principal` from the
    /// server's test CA. Panics on a server without mTLS.
    pub fn channel_as(&self, principal: &str) -> Channel {
        let setup = self.mtls.as_ref().expect("an mtls test server");
        tls_channel(
            self.addr,
            &setup.pki.ca_pem,
            Some(&setup.pki.client(principal)),
            &setup.server_name,
        )
    }

    /// SecretsService as `principal` (mTLS servers only).
    pub fn secrets_as(&self, principal: &str) -> SecretsServiceClient<Channel> {
        SecretsServiceClient::new(self.channel_as(principal))
    }

    /// VaultService as `principal` (mTLS servers only).
    pub fn vaults_as(&self, principal: &str) -> VaultServiceClient<Channel> {
        VaultServiceClient::new(self.channel_as(principal))
    }

    /// Writes a new policy file and reloads certificates and policy, as SIGHUP does.
    pub fn set_policy(&self, policy: &str) {
        let setup = self.mtls.as_ref().expect("an mtls test server");
        std::fs::write(&setup.policy_file, policy).unwrap();
        setup.handle.reload().expect("reload");
    }

    pub fn secrets(&self) -> SecretsServiceClient<Channel> {
        SecretsServiceClient::new(self.channel.clone())
    }

    pub fn vaults(&self) -> VaultServiceClient<Channel> {
        VaultServiceClient::new(self.channel.clone())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// The overall health status.
    pub async fn health_status(&self, service: &str) -> Option<ServingStatus> {
        let response = self
            .health()
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(response.into_inner().status).ok()
    }

    /// Polls health until SERVING (at most 10 s).
    pub async fn wait_serving(&self) {
        wait_until(Duration::from_secs(10), || async {
            self.health_status("").await == Some(ServingStatus::Serving)
        })
        .await
        .expect("server did not become SERVING");
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Fires the server's shutdown future and returns at once; the server
    /// drains on its own (see [`Self::wait_stopped`]).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits at most `timeout` for `serve` to return: `Ok` when it returned
    /// `Ok`, else why not (still running, or it failed).
    pub async fn wait_stopped(&mut self, timeout: Duration) -> Result<(), String> {
        let task = self.task.as_mut().ok_or("the server was already stopped")?;
        let joined = tokio::time::timeout(timeout, task)
            .await
            .map_err(|_| format!("serve did not return within {timeout:?}"))?;
        self.task = None;
        joined.map_err(|err| format!("serve failed: {err}"))
    }
}

/// A migrated database a server starts on.
struct Database {
    url: String,
    dir: Option<Arc<tempfile::TempDir>>,
    keyring: Arc<Keyring>,
    store: Store,
}

/// Polls `predicate` every 20 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut predicate: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if predicate().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ErrorInfo reason of a status, if any.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// The fields named by a status's BadRequest violations.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a test body on SQLite and on PostgreSQL: `e2e_test!(name, |server| async move { … })`.
#[macro_export]
macro_rules! e2e_test {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let server = $crate::TestServer::start($crate::Db::Sqlite)
                    .await
                    .expect("sqlite server");
                ($body)(server).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(server) = $crate::TestServer::start($crate::Db::Postgres).await else {
                    return;
                };
                ($body)(server).await;
            }
        }
    };
}

impl TestServer {
    /// Starts a dev-mode server on a SQLite file at `path` (created and
    /// migrated if new), e.g. on a filesystem a fault test controls. The
    /// caller owns the file's directory.
    pub async fn start_sqlite_at(path: &std::path::Path, options: CofferOptions) -> TestServer {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::start_on_url(&url, options).await
    }

    /// Starts a dev-mode server on the database at `url` (migrated first),
    /// e.g. a private PostgreSQL cluster a fault test stops and starts.
    pub async fn start_on_url(url: &str, options: CofferOptions) -> TestServer {
        Self::start_on_url_with(url, coffer_store::StoreOptions::default(), options).await
    }

    /// Like [`Self::start_on_url`] with explicit pool settings for the server.
    pub async fn start_on_url_with(
        url: &str,
        store_options: coffer_store::StoreOptions,
        options: CofferOptions,
    ) -> TestServer {
        let url = url.to_owned();
        let keyring = Arc::new(Keyring::generate().unwrap());
        let store = Store::connect(&url, store_options).await.unwrap();
        store.migrate_up().await.unwrap();
        let db = Database {
            url,
            dir: None,
            keyring,
            store,
        };
        Self::launch(db, ServeOptions::dev(), None, options).await
    }
}
