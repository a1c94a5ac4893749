//! The scenarios: what each seeds in the bench tenant before the clock
//! starts, and the one call a caller makes per iteration. A call counts as
//! failed when the RPC fails or when any item of a batch or binding set
//! carries an error, so "zero errors" means every value came back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_proto::v1::secrets_service_client::SecretsServiceClient;
use coffer_proto::v1::{
    BatchResolveSecretsRequest, Binding, Consumer, CreateSecretRequest, ResolveBindingsRequest,
    ResolveSecretRequest, RotateSecretRequest, SyncBindingsRequest, create_secret_request,
    rotate_secret_request,
};
use futures::{StreamExt, TryStreamExt};
use rand::Rng;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Bytes of each seeded or rotated value: random, never printed.
const VALUE_BYTES: usize = 32;
/// Attempts per seeding call, and the first backoff (doubling after each).
const SEED_ATTEMPTS: u32 = 6;
const SEED_BACKOFF: Duration = Duration::from_millis(100);
/// The consumer whose bindings `resolve-bindings` resolves.
const CONSUMER_KIND: &str = "agent";
const CONSUMER_ID: &str = "bench";
const BINDING_PREFIX: &str = "env.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// grpc.health.v1 Check: the framework's ceiling on this server and transport.
    Health,
    /// ResolveSecret of one hot secret.
    Resolve,
    /// ResolveSecret uniformly over --secrets secrets.
    ResolveMany,
    /// BatchResolveSecrets of --batch secrets drawn from --secrets.
    BatchResolve,
    /// ResolveBindings of one consumer with --bindings bindings.
    ResolveBindings,
    /// RotateSecret: each caller rotates its own secret.
    Write,
    /// 90 % ResolveSecret over --secrets, 10 % RotateSecret of one of them
    /// (caller i rotates secret i mod --secrets).
    Mixed,
    /// Rotate on this server, then resolve on --replica until the new
    /// version shows: the latency reported is the propagation lag.
    ReplicaLag,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::Resolve => "resolve",
            Scenario::ResolveMany => "resolve-many",
            Scenario::BatchResolve => "batch-resolve",
            Scenario::ResolveBindings => "resolve-bindings",
            Scenario::Write => "write",
            Scenario::Mixed => "mixed",
            Scenario::ReplicaLag => "replica-lag",
        }
    }
}

/// The sizes a scenario seeds and draws from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) secrets: usize,
    pub(crate) batch: usize,
    pub(crate) bindings: usize,
    pub(crate) callers: usize,
}

/// A seeded scenario, ready to be driven.
#[derive(Debug)]
pub(crate) struct Workload {
    tenant: String,
    sizes: Sizes,
}

/// A caller's clients on its channel.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    secrets: SecretsServiceClient<Channel>,
    health: HealthClient<Channel>,
}

impl Clients {
    pub(crate) fn new(channel: Channel) -> Self {
        Clients {
            secrets: SecretsServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
        }
    }
}

impl Workload {
    /// Creates what `scenario` needs under `tenant`, `parallel` calls at a
    /// time over `channels`. Secrets that already exist (a rerun with the
    /// same --tenant) are reused; bindings are synced, so reruns are stable.
    pub(crate) async fn seed(
        scenario: Scenario,
        tenant: String,
        sizes: Sizes,
        channels: &[Channel],
        parallel: usize,
    ) -> anyhow::Result<Arc<Self>> {
        let workload = Arc::new(Workload { tenant, sizes });
        let keys: Vec<String> = match scenario {
            Scenario::Health => Vec::new(),
            Scenario::Resolve | Scenario::ReplicaLag => vec![workload.hot_key()],
            Scenario::ResolveMany | Scenario::BatchResolve | Scenario::Mixed => {
                (0..sizes.secrets).map(|i| workload.many_key(i)).collect()
            }
            Scenario::ResolveBindings => (0..sizes.bindings)
                .map(|i| workload.binding_key(i))
                .collect(),
            Scenario::Write => (0..sizes.callers).map(|i| workload.own_key(i)).collect(),
        };
        futures::stream::iter(keys.into_iter().enumerate())
            .map(|(i, key)| {
                let mut client = SecretsServiceClient::new(channels[i % channels.len()].clone());
                let workload = Arc::clone(&workload);
                async move { workload.create(&mut client, key).await }
            })
            .buffer_unordered(parallel.max(1))
            .try_collect::<()>()
            .await?;
        if scenario == Scenario::ResolveBindings {
            workload.sync_bindings(&channels[0]).await?;
        }
        Ok(workload)
    }

    async fn create(
        &self,
        client: &mut SecretsServiceClient<Channel>,
        key: String,
    ) -> anyhow::Result<()> {
        let req = CreateSecretRequest {
            parent: self.parent(),
            secret_id: key.clone(),
            secret: None,
            source: Some(create_secret_request::Source::Value(random_value())),
            request_id: String::new(),
        };
        let created = seed_call(|| {
            let mut client = client.clone();
            let req = req.clone();
            async move { client.create_secret(req).await }
        })
        .await;
        match created {
            Ok(_) => Ok(()),
            // Seeded by an earlier run, or by an attempt whose answer was lost.
            Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(status) => {
                Err(anyhow::Error::from(status).context(format!("seeding secret {key}")))
            }
        }
    }

    async fn sync_bindings(&self, channel: &Channel) -> anyhow::Result<()> {
        let bindings = (0..self.sizes.bindings)
            .map(|i| Binding {
                secret: self.secret_name(&self.binding_key(i)),
                config_path: format!("{BINDING_PREFIX}BENCH_{i:05}"),
                required: Some(true),
                ..Binding::default()
            })
            .collect();
        let req = SyncBindingsRequest {
            parent: self.parent(),
            consumer: Some(consumer()),
            config_path_prefix: BINDING_PREFIX.to_owned(),
            bindings,
        };
        let client = SecretsServiceClient::new(channel.clone());
        seed_call(|| {
            let mut client = client.clone();
            let req = req.clone();
            async move { client.sync_bindings(req).await }
        })
        .await
        .map_err(|status| anyhow::Error::from(status).context("seeding bindings"))?;
        Ok(())
    }

    /// One measured call of `scenario` (the seeded one, or `Health` for
    /// --compare) by caller number `caller`.
    pub(crate) async fn call(
        &self,
        clients: &mut Clients,
        caller: usize,
        scenario: Scenario,
    ) -> Result<(), tonic::Code> {
        match scenario {
            Scenario::Health => {
                clients
                    .health
                    .check(HealthCheckRequest::default())
                    .await
                    .map_err(|s| s.code())?;
                Ok(())
            }
            Scenario::Resolve => self.resolve(clients, self.hot_key()).await,
            Scenario::ResolveMany => self.resolve(clients, self.random_many_key()).await,
            Scenario::BatchResolve => self.batch_resolve(clients).await,
            Scenario::ResolveBindings => self.resolve_bindings(clients).await,
            Scenario::Write => self.rotate(clients, self.own_key(caller)).await,
            // Measured by `replica_lag`, with a second server's clients.
            Scenario::ReplicaLag => Err(tonic::Code::InvalidArgument),
            Scenario::Mixed => {
                if rand::rng().random_ratio(1, 10) {
                    // Rotates inside the resolved set, so resolves meet new
                    // versions; callers share a secret only past --secrets.
                    let key = self.many_key(caller % self.sizes.secrets);
                    self.rotate(clients, key).await
                } else {
                    self.resolve(clients, self.random_many_key()).await
                }
            }
        }
    }

    /// One round of `replica-lag`: rotates the hot secret through `primary`,
    /// then resolves it through `replica` until the new version shows (at
    /// most `limit`); returns the time from the rotation's answer to that.
    pub(crate) async fn replica_lag(
        &self,
        primary: &mut Clients,
        replica: &mut Clients,
        limit: Duration,
    ) -> Result<Duration, tonic::Code> {
        let req = RotateSecretRequest {
            name: self.secret_name(&self.hot_key()),
            source: Some(rotate_secret_request::Source::Value(random_value())),
            ..RotateSecretRequest::default()
        };
        let rotated = primary
            .secrets
            .rotate_secret(req)
            .await
            .map_err(|s| s.code())?
            .into_inner()
            .version;
        let start = Instant::now();
        loop {
            let seen = replica
                .secrets
                .resolve_secret(self.resolve_request(&self.hot_key()))
                .await
                .map_err(|s| s.code())?
                .into_inner()
                .version;
            if seen >= rotated {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(tonic::Code::DeadlineExceeded);
            }
        }
    }

    async fn resolve(&self, clients: &mut Clients, key: String) -> Result<(), tonic::Code> {
        clients
            .secrets
            .resolve_secret(self.resolve_request(&key))
            .await
            .map_err(|s| s.code())?;
        Ok(())
    }

    async fn batch_resolve(&self, clients: &mut Clients) -> Result<(), tonic::Code> {
        let requests = (0..self.sizes.batch)
            .map(|_| self.resolve_request(&self.random_many_key()))
            .collect();
        let resp = clients
            .secrets
            .batch_resolve_secrets(BatchResolveSecretsRequest {
                parent: self.parent(),
                requests,
            })
            .await
            .map_err(|s| s.code())?
            .into_inner();
        use coffer_proto::v1::batch_resolve_result::Result as Item;
        for result in resp.results {
            match result.result {
                Some(Item::Resolved(_)) => {}
                Some(Item::Error(status)) => return Err(tonic::Code::from_i32(status.code)),
                None => return Err(tonic::Code::Unknown),
            }
        }
        Ok(())
    }

    async fn resolve_bindings(&self, clients: &mut Clients) -> Result<(), tonic::Code> {
        let resp = clients
            .secrets
            .resolve_bindings(ResolveBindingsRequest {
                parent: self.parent(),
                consumer: Some(consumer()),
                config_path_prefix: String::new(),
                context: Default::default(),
            })
            .await
            .map_err(|s| s.code())?
            .into_inner();
        if let Some(status) = resp.entries.iter().find_map(|e| e.error.as_ref()) {
            return Err(tonic::Code::from_i32(status.code));
        }
        // A binding that silently went missing is a failure too.
        if resp.entries.len() != self.sizes.bindings {
            return Err(tonic::Code::NotFound);
        }
        Ok(())
    }

    async fn rotate(&self, clients: &mut Clients, key: String) -> Result<(), tonic::Code> {
        let req = RotateSecretRequest {
            name: self.secret_name(&key),
            source: Some(rotate_secret_request::Source::Value(random_value())),
            ..RotateSecretRequest::default()
        };
        clients
            .secrets
            .rotate_secret(req)
            .await
            .map_err(|s| s.code())?;
        Ok(())
    }

    fn resolve_request(&self, key: &str) -> ResolveSecretRequest {
        ResolveSecretRequest {
            name: self.secret_name(key),
            ..ResolveSecretRequest::default()
        }
    }

    fn random_many_key(&self) -> String {
        self.many_key(rand::rng().random_range(0..self.sizes.secrets))
    }

    fn parent(&self) -> String {
        format!("tenants/{}", self.tenant)
    }

    fn secret_name(&self, key: &str) -> String {
        format!("tenants/{}/secrets/{key}", self.tenant)
    }

    fn hot_key(&self) -> String {
        "bench-hot".to_owned()
    }

    fn many_key(&self, i: usize) -> String {
        format!("bench-many-{i:06}")
    }

    fn binding_key(&self, i: usize) -> String {
        format!("bench-bound-{i:05}")
    }

    fn own_key(&self, caller: usize) -> String {
        format!("bench-caller-{caller:05}")
    }
}

fn consumer() -> Consumer {
    Consumer {
        kind: CONSUMER_KIND.to_owned(),
        id: CONSUMER_ID.to_owned(),
    }
}

fn random_value() -> Vec<u8> {
    let mut value = vec![0u8; VALUE_BYTES];
    rand::rng().fill(&mut value[..]);
    value
}

/// Runs a seeding call, retrying what the server could not take just then:
/// UNAVAILABLE (on a loaded machine a create can wait past the database
/// pool's acquire timeout) and RESOURCE_EXHAUSTED (a rate limit). Seeding
/// is set-up, not measurement; its callers treat ALREADY_EXISTS, which a
/// retried create may meet, as done.
async fn seed_call<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = SEED_BACKOFF;
    for _ in 1..SEED_ATTEMPTS {
        match call().await {
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                ) =>
            {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            result => return result,
        }
    }
    call().await
}
