//! Request rate limits and the per-vault bound on concurrent provider calls,
//! against a real server: a principal over its rate gets RESOURCE_EXHAUSTED
//! (RATE_LIMITED, RetryInfo, `retry-after`) while another is unaffected and
//! health is never limited; a role's rate holds the principals granted that
//! role (in any tenant, following policy reloads) and nobody else; a vault
//! whose concurrency bound is reached answers PROVIDER_BUSY while calls that
//! need no provider still answer.
//!
//! The slow provider is a real `SecretProvider` (the built-in encrypted
//! store) whose resolves take longer, registered in the server's registry:
//! it stands for a remote vault that answers slowly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coffer_core::authz::Role;
use coffer_crypto::Keyring;
use coffer_proto::v1;
use coffer_proto::v1::secrets_service_client::SecretsServiceClient;
use coffer_providers::local_encrypted::LocalEncryptedProvider;
use coffer_providers::registry::ProviderLimits;
use coffer_providers::{
    ConfigViolation, ProviderError, ProviderFactory, ProviderRegistry, SecretProvider, VaultConfig,
};
use coffer_providers::{
    ProviderDescriptor, ProviderHealth, RemoveMode, SecretValue, StoredVersion, VersionContext,
};
use coffer_server::app::{CofferOptions, ValueCacheOptions};
use coffer_server::{Coffer, Mtls, MtlsFiles, Rate, RateLimits, ServeOptions, TlsFiles};
use coffer_store::{Store, StoreOptions};
use coffer_tests::{pki, reason, tls_channel};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

const TENANT: &str = "acme";
const LIMITED: &str = "spiffe://test/limited";
const OTHER: &str = "spiffe://test/other";
const POLICY: &str = r#"
[[grant]]
principal = "spiffe://test/limited"
tenants = ["acme"]
roles = ["admin"]

[[grant]]
principal = "spiffe://test/other"
tenants = ["acme"]
roles = ["admin"]
"#;

/// A server started with explicit limits and providers (SQLite).
struct Server {
    addr: SocketAddr,
    health_addr: SocketAddr,
    metrics_addr: SocketAddr,
    tls: Option<(pki::TestPki, tempfile::TempDir)>,
    /// The mTLS settings and policy the server runs with, for reloads.
    mtls: Option<Mtls>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _db: tempfile::TempDir,
}

struct Setup {
    mtls: bool,
    /// The policy file's text (mTLS only).
    policy: &'static str,
    rate_limits: RateLimits,
    provider_limits: ProviderLimits,
    /// How long each resolve of the built-in store takes.
    resolve_delay: Duration,
    pool_size: u32,
}

impl Server {
    async fn start(setup: Setup) -> Server {
        let db = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            db.path().join("coffer.db").display()
        );
        let store = Store::connect(
            &url,
            StoreOptions {
                max_connections: setup.pool_size,
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        store.migrate_up().await.unwrap();
        let keyring = Arc::new(Keyring::generate().unwrap());
        let providers = ProviderRegistry::builder()
            .limits(setup.provider_limits)
            .register(Arc::new(SlowFactory {
                inner: LocalEncryptedProvider::new(keyring.clone()),
                delay: setup.resolve_delay,
            }))
            .unwrap()
            .build();
        let coffer = Coffer::configured(
            store,
            providers,
            keyring,
            CofferOptions {
                // Every resolve must reach the provider.
                value_cache: ValueCacheOptions {
                    enabled: false,
                    ..ValueCacheOptions::default()
                },
                ..CofferOptions::default()
            },
        );
        let (mut options, tls) = if setup.mtls {
            let pki = pki::TestPki::new("rate limit test ca");
            let dir = tempfile::tempdir().unwrap();
            let server = pki.server(&["localhost"]);
            let path = |name: &str| dir.path().join(name);
            std::fs::write(path("server.pem"), &server.cert).unwrap();
            std::fs::write(path("server.key"), &server.key).unwrap();
            std::fs::write(path("ca.pem"), &pki.ca_pem).unwrap();
            std::fs::write(path("policy.toml"), setup.policy).unwrap();
            let mtls = Mtls::load(MtlsFiles {
                tls: TlsFiles {
                    cert_file: path("server.pem"),
                    key_file: path("server.key"),
                    client_ca_file: path("ca.pem"),
                },
                policy_file: path("policy.toml"),
            })
            .unwrap();
            (ServeOptions::mtls(&mtls), Some((pki, dir, mtls)))
        } else {
            (ServeOptions::dev(), None)
        };
        let (tls, mtls) = match tls {
            Some((pki, dir, mtls)) => (Some((pki, dir)), Some(mtls)),
            None => (None, None),
        };
        options.rate_limits = setup.rate_limits;
        let health_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let health_addr = health_listener.local_addr().unwrap();
        options.health_listener = Some(health_listener);
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics_listener.local_addr().unwrap();
        options.metrics_listener = Some(metrics_listener);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            coffer_server::serve(listener, coffer, options, async {
                let _ = rx.await;
            })
            .await
            .expect("server failed");
        });
        let server = Server {
            addr,
            health_addr,
            metrics_addr,
            tls,
            mtls,
            shutdown: Some(tx),
            task: Some(task),
            _db: db,
        };
        let mut health = HealthClient::new(plain_channel(health_addr));
        coffer_tests::wait_until(Duration::from_secs(10), || {
            let mut health = health.clone();
            async move { health_status(&mut health).await == Some(ServingStatus::Serving) }
        })
        .await
        .expect("server did not become SERVING");
        health_status(&mut health).await;
        server
    }

    /// A channel as `principal` (mTLS), or the dev admin's (plaintext).
    fn channel(&self, principal: &str) -> Channel {
        match &self.tls {
            Some((pki, _)) => tls_channel(
                self.addr,
                &pki.ca_pem,
                Some(&pki.client(principal)),
                "localhost",
            ),
            None => plain_channel(self.addr),
        }
    }

    fn secrets(&self, principal: &str) -> SecretsServiceClient<Channel> {
        SecretsServiceClient::new(self.channel(principal))
    }

    /// Rewrites the policy file and reloads it, as SIGHUP does.
    fn reload_policy(&self, policy: &str) {
        let (Some((_, dir)), Some(mtls)) = (&self.tls, &self.mtls) else {
            panic!("only an mTLS server has a policy file");
        };
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        mtls.reload().unwrap();
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// The text of `/metrics`.
async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    String::from_utf8(raw).unwrap()
}

fn plain_channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

async fn health_status(client: &mut HealthClient<Channel>) -> Option<ServingStatus> {
    let response = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

fn list() -> v1::ListSecretsRequest {
    v1::ListSecretsRequest {
        parent: format!("tenants/{TENANT}"),
        ..Default::default()
    }
}

/// The RetryInfo delay and the `retry-after` header of a refused call.
fn retry_hints(status: &tonic::Status) -> (Duration, u64) {
    let delay = status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo delay");
    let after = status
        .metadata()
        .get("retry-after")
        .expect("a retry-after header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (delay, after)
}

fn rate(per_second: f64, burst: u32) -> Rate {
    Rate::new(per_second, burst).unwrap()
}

fn no_provider_bound() -> ProviderLimits {
    ProviderLimits {
        concurrency_per_vault: None,
        queue_timeout: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_rate_is_refused_others_and_health_are_not() {
    let mut overrides = HashMap::new();
    // An explicit override wins over the default, here a higher one.
    overrides.insert(OTHER.to_owned(), rate(1000.0, 1000));
    let server = Server::start(Setup {
        mtls: true,
        policy: POLICY,
        rate_limits: RateLimits {
            default: Some(rate(4.0, 3)),
            principals: overrides,
            ..RateLimits::default()
        },
        provider_limits: no_provider_bound(),
        resolve_delay: Duration::ZERO,
        pool_size: 4,
    })
    .await;
    let mut limited = server.secrets(LIMITED);
    // The burst passes, the next call does not.
    for _ in 0..3 {
        limited.list_secrets(list()).await.unwrap();
    }
    let refused = limited.list_secrets(list()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "RATE_LIMITED");
    assert_eq!(
        refused.get_error_details().error_info().unwrap().domain,
        "coffer"
    );
    let (delay, after) = retry_hints(&refused);
    // One token at 4/s takes at most 250 ms; the header rounds up.
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_millis(250),
        "{delay:?}"
    );
    assert_eq!(after, 1);
    // Every service of the API port counts against the same bucket.
    let mut vaults =
        coffer_proto::v1::vault_service_client::VaultServiceClient::new(server.channel(LIMITED));
    let err = vaults
        .list_vaults(v1::ListVaultsRequest {
            parent: format!("tenants/{TENANT}"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");

    // Another principal has its own bucket (and a generous override).
    let mut other = server.secrets(OTHER);
    for _ in 0..20 {
        other.list_secrets(list()).await.unwrap();
    }

    // Health is never limited, on the API port (as the limited principal)
    // or the health port, however often it is called.
    let mut api_health = HealthClient::new(server.channel(LIMITED));
    let mut probe_health = HealthClient::new(plain_channel(server.health_addr));
    for _ in 0..50 {
        assert_eq!(
            health_status(&mut api_health).await,
            Some(ServingStatus::Serving)
        );
        assert_eq!(
            health_status(&mut probe_health).await,
            Some(ServingStatus::Serving)
        );
    }

    // The limit recovers after the advertised delay. The flood above took
    // some time and refilled the bucket, so first spend what it holds (at
    // most the burst) until a call is refused with a fresh delay.
    let mut delay = None;
    for _ in 0..=3 {
        if let Err(err) = limited.list_secrets(list()).await {
            assert_eq!(reason(&err), "RATE_LIMITED");
            delay = Some(retry_hints(&err).0);
            break;
        }
    }
    let delay = delay.expect("a burst of 3 is spent within 4 calls");
    tokio::time::sleep(delay).await;
    limited.list_secrets(list()).await.unwrap();
    server.stop().await;
}

/// LIMITED is a viewer, OTHER an admin, both of acme.
const ROLE_POLICY: &str = r#"
[[grant]]
principal = "spiffe://test/limited"
tenants = ["acme"]
roles = ["viewer"]

[[grant]]
principal = "spiffe://test/other"
tenants = ["acme"]
roles = ["admin"]
"#;

/// ROLE_POLICY, and OTHER is also a viewer of another tenant.
const ROLE_POLICY_RELOADED: &str = r#"
[[grant]]
principal = "spiffe://test/limited"
tenants = ["acme"]
roles = ["viewer"]

[[grant]]
principal = "spiffe://test/other"
tenants = ["acme"]
roles = ["admin"]

[[grant]]
principal = "spiffe://test/other"
tenants = ["globex"]
roles = ["viewer"]
"#;

/// Calls `list` until one is refused; the number that passed, and the
/// refusal (at most `max` calls).
async fn calls_until_refused(
    client: &mut SecretsServiceClient<Channel>,
    max: usize,
) -> (usize, Option<tonic::Status>) {
    for passed in 0..max {
        if let Err(err) = client.list_secrets(list()).await {
            return (passed, Some(err));
        }
    }
    (max, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roles_rate_limits_its_holders_only_and_follows_reloads() {
    // Only the viewer role has a rate; no default. One token per 5 s, so
    // nothing refills while a test call or two runs.
    let server = Server::start(Setup {
        mtls: true,
        policy: ROLE_POLICY,
        rate_limits: RateLimits {
            roles: BTreeMap::from([(Role::Viewer, rate(0.2, 2))]),
            ..RateLimits::default()
        },
        provider_limits: no_provider_bound(),
        resolve_delay: Duration::ZERO,
        pool_size: 4,
    })
    .await;

    // The viewer gets the viewer burst, then RATE_LIMITED.
    let mut limited = server.secrets(LIMITED);
    let (passed, refused) = calls_until_refused(&mut limited, 10).await;
    assert_eq!(passed, 2, "the viewer role's burst");
    let refused = refused.expect("the viewer is limited");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "RATE_LIMITED");
    let (delay, after) = retry_hints(&refused);
    // One token at 0.2/s is at most 5 s away.
    assert!(
        delay > Duration::from_secs(4) && delay <= Duration::from_secs(5),
        "{delay:?}"
    );
    assert_eq!(after, 5);

    // The admin holds no rated role and there is no default: unlimited.
    let mut other = server.secrets(OTHER);
    let (passed, refused) = calls_until_refused(&mut other, 30).await;
    assert_eq!(passed, 30, "the admin was limited: {refused:?}");

    // A reload that makes OTHER a viewer of another tenant puts it under
    // the viewer rate on every call (the limiter cannot know the tenant),
    // with a fresh bucket of the viewer's burst.
    server.reload_policy(ROLE_POLICY_RELOADED);
    let (passed, refused) = calls_until_refused(&mut other, 10).await;
    assert_eq!(passed, 2, "the reload did not reach the limiter");
    assert_eq!(reason(&refused.unwrap()), "RATE_LIMITED");
    // The viewer's bucket was not refilled by the reload.
    let err = limited.list_secrets(list()).await.unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");

    // And back: without the viewer grant OTHER is unlimited again.
    server.reload_policy(ROLE_POLICY);
    let (passed, _) = calls_until_refused(&mut other, 30).await;
    assert_eq!(passed, 30);
    server.stop().await;
}

/// In dev mode the implicit admin is a principal like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_admin_is_limited_when_configured() {
    let server = Server::start(Setup {
        mtls: false,
        policy: POLICY,
        rate_limits: RateLimits {
            default: Some(rate(0.5, 1)),
            ..RateLimits::default()
        },
        provider_limits: no_provider_bound(),
        resolve_delay: Duration::ZERO,
        pool_size: 4,
    })
    .await;
    let mut client = server.secrets("");
    client.list_secrets(list()).await.unwrap();
    let refused = client.list_secrets(list()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "RATE_LIMITED");
    let (delay, after) = retry_hints(&refused);
    // 0.5 tokens per second: about 2 s until the next one.
    assert!(
        delay > Duration::from_millis(1_500) && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    assert_eq!(after, 2);
    // Counted by method.
    let metrics = scrape(server.metrics_addr).await;
    assert!(
        metrics.contains(
            "coffer_rate_limited_total{method=\"/coffer.v1.SecretsService/ListSecrets\"} 1\n"
        ),
        "{metrics}"
    );
    server.stop().await;
}

/// No limits configured (the default): nobody is limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_limits_nobody_is_limited() {
    let server = Server::start(Setup {
        mtls: false,
        policy: POLICY,
        rate_limits: RateLimits::default(),
        provider_limits: no_provider_bound(),
        resolve_delay: Duration::ZERO,
        pool_size: 4,
    })
    .await;
    let mut client = server.secrets("");
    for _ in 0..100 {
        client.list_secrets(list()).await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_vault_answers_provider_busy_and_the_rest_keeps_answering() {
    let server = Server::start(Setup {
        mtls: false,
        policy: POLICY,
        rate_limits: RateLimits::default(),
        provider_limits: ProviderLimits {
            concurrency_per_vault: Some(1),
            queue_timeout: Duration::from_millis(50),
        },
        resolve_delay: Duration::from_millis(1_500),
        // Fewer connections than concurrent resolves: a refused call must
        // not hold one.
        pool_size: 2,
    })
    .await;
    let mut client = server.secrets("");
    client
        .create_secret(v1::CreateSecretRequest {
            parent: format!("tenants/{TENANT}"),
            secret_id: "slow".into(),
            source: Some(v1::create_secret_request::Source::Value(b"v".to_vec())),
            ..Default::default()
        })
        .await
        .unwrap();
    let resolver = client.clone();
    let resolve = || {
        let mut client = resolver.clone();
        tokio::spawn(async move {
            client
                .resolve_secret(v1::ResolveSecretRequest {
                    name: format!("tenants/{TENANT}/secrets/slow"),
                    ..Default::default()
                })
                .await
        })
    };
    // One resolve takes the vault's only permit...
    let first = resolve();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so those arriving while it runs are refused after the queue
    // timeout, not queued behind it.
    let others: Vec<_> = (0..6).map(|_| resolve()).collect();
    // Calls that need no provider answer meanwhile.
    client.list_secrets(list()).await.unwrap();
    client
        .get_secret(v1::GetSecretRequest {
            name: format!("tenants/{TENANT}/secrets/slow"),
        })
        .await
        .unwrap();
    assert!(
        !first.is_finished(),
        "metadata calls waited for the slow provider call"
    );
    for other in others {
        let err = other.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert_eq!(reason(&err), "PROVIDER_BUSY");
        let (delay, after) = retry_hints(&err);
        assert_eq!(delay, Duration::from_millis(100));
        assert_eq!(after, 1);
    }
    assert!(
        !first.is_finished(),
        "busy answers waited for the slow provider call"
    );
    let value = first.await.unwrap().unwrap().into_inner().value;
    assert_eq!(value, b"v");
    // With the permit back, the vault answers again.
    let again = resolve().await.unwrap().unwrap().into_inner().value;
    assert_eq!(again, b"v");
    server.stop().await;
}

/// The built-in encrypted store, with resolves that take `delay`.
#[derive(Debug)]
struct SlowFactory {
    inner: LocalEncryptedProvider,
    delay: Duration,
}

#[async_trait]
impl ProviderFactory for SlowFactory {
    fn descriptor(&self) -> ProviderDescriptor {
        ProviderFactory::descriptor(&self.inner)
    }

    fn validate_config(&self, config: &VaultConfig) -> Result<Vec<String>, Vec<ConfigViolation>> {
        self.inner.validate_config(config)
    }

    async fn connect(
        &self,
        config: &VaultConfig,
    ) -> Result<Arc<dyn SecretProvider>, ProviderError> {
        Ok(Arc::new(SlowProvider {
            inner: self.inner.connect(config).await?,
            delay: self.delay,
        }))
    }
}

#[derive(Debug)]
struct SlowProvider {
    inner: Arc<dyn SecretProvider>,
    delay: Duration,
}

#[async_trait]
impl SecretProvider for SlowProvider {
    fn descriptor(&self) -> ProviderDescriptor {
        self.inner.descriptor()
    }

    async fn put_value(
        &self,
        ctx: &VersionContext,
        value: &[u8],
    ) -> Result<StoredVersion, ProviderError> {
        self.inner.put_value(ctx, value).await
    }

    async fn resolve(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<SecretValue, ProviderError> {
        tokio::time::sleep(self.delay).await;
        self.inner.resolve(ctx, stored).await
    }

    async fn destroy_version(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<(), ProviderError> {
        self.inner.destroy_version(ctx, stored).await
    }

    async fn remove_secret(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
        mode: RemoveMode,
    ) -> Result<(), ProviderError> {
        self.inner.remove_secret(ctx, stored, mode).await
    }

    async fn health_check(&self) -> ProviderHealth {
        self.inner.health_check().await
    }
}
