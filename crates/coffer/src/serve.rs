//! `coffer serve`: reads the config (defaults → file → `COFFER_<SECTION>__<KEY>`
//! env → flags), sets up logs and trace export, loads the keyring, connects
//! and migrates the database, binds the listeners (API, and optionally health
//! and metrics) and runs the server until SIGINT or SIGTERM: the first signal
//! drains in-flight calls within `[server] shutdown_grace_secs`, a second
//! exits at once. With mTLS, SIGHUP reloads the certificates and the policy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use coffer_crypto::Keyring;
use coffer_providers::ProviderRegistry;
use coffer_providers::aws_secrets_manager::{AwsProviderOptions, AwsSecretsManagerFactory};
use coffer_providers::local_encrypted::LocalEncryptedProvider;
use coffer_providers::registry::ProviderLimits;
use coffer_server::app::CofferOptions;
use coffer_server::telemetry::{self, TelemetrySettings};
use coffer_server::{Coffer, Mtls, MtlsFiles, ServeOptions, TlsFiles};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::{Config, LogFormat, ProvidersSection};
use crate::storage::StorageArgs;

/// Where `coffer serve` listens when neither the flag nor the config says.
const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Development mode: plaintext gRPC on a loopback address, every caller is
    /// the implicit admin, state under ./.coffer/. Never use it in production.
    #[arg(long)]
    pub(crate) dev: bool,
    /// TOML config file (`coffer config example` prints every key; env vars
    /// `COFFER_<SECTION>__<KEY>` override it).
    #[arg(long, env = "COFFER_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: the config's, else 127.0.0.1:50051].
    #[arg(long, env = "COFFER_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// Do not apply pending database migrations at start.
    #[arg(long)]
    pub(crate) no_migrate: bool,
    /// Seconds between reaper passes (purging expired deletions).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) reaper_interval_secs: u64,
    #[command(flatten)]
    pub(crate) storage: StorageArgs,
}

/// What the server will run with, after flags, env and config are merged.
#[derive(Debug)]
struct Plan {
    listen: SocketAddr,
    storage: StorageArgs,
    /// `None` in dev mode.
    mtls: Option<MtlsFiles>,
    config: Config,
}

fn plan(args: &ServeArgs) -> anyhow::Result<Plan> {
    let config = Config::load(args.config.as_deref())?;
    let default_listen: SocketAddr = DEFAULT_LISTEN.parse()?;
    let listen = args
        .listen
        .or(config.server.listen)
        .unwrap_or(default_listen);
    let mut storage = args.storage.clone();
    if storage.database_url.is_none() {
        storage.database_url = config.database.url.clone();
    }
    if storage.keyring.is_none() {
        storage.keyring = config.keys.keyring_file.clone();
    }
    config
        .keys
        .keyring_env_name()
        .clone_into(&mut storage.keyring_env);
    let mtls = match (args.dev, config.tls.clone(), config.authz.clone()) {
        (true, None, None) => {
            if !listen.ip().is_loopback() {
                bail!(
                    "--dev serves plaintext and only binds loopback addresses (127.0.0.1 or ::1), not {listen}"
                );
            }
            None
        }
        (true, _, _) => bail!(
            "--dev serves plaintext with an implicit admin; remove --dev to use the config's [tls] and [authz] sections"
        ),
        (false, None, _) => bail!(
            "coffer serve needs a config file with a [tls] section (--config FILE); for a local plaintext server on loopback use `coffer serve --dev`"
        ),
        (false, Some(_), None) => bail!(
            "the config has [tls] but no [authz] policy_file; without a policy nobody could call"
        ),
        (false, Some(tls), Some(authz)) => Some(MtlsFiles {
            tls: TlsFiles {
                cert_file: tls.cert_file,
                key_file: tls.key_file,
                client_ca_file: tls.client_ca_file,
            },
            policy_file: authz.policy_file,
        }),
    };
    Ok(Plan {
        listen,
        storage,
        mtls,
        config,
    })
}

/// The providers this deployment offers: the built-in store always, AWS
/// Secrets Manager unless `[providers.aws_secrets_manager] enabled = false`.
fn registry(
    keyring: &Arc<Keyring>,
    config: &ProvidersSection,
    limits: ProviderLimits,
) -> anyhow::Result<ProviderRegistry> {
    let mut builder = ProviderRegistry::builder()
        .limits(limits)
        .register(Arc::new(LocalEncryptedProvider::new(keyring.clone())))?;
    let aws = &config.aws_secrets_manager;
    if aws.enabled {
        builder = builder.register(Arc::new(AwsSecretsManagerFactory::new(
            AwsProviderOptions {
                connect_timeout: Duration::from_millis(aws.connect_timeout_ms),
                operation_timeout: Duration::from_millis(aws.operation_timeout_ms),
                max_attempts: aws.max_attempts,
                static_credentials: None,
            },
        )))?;
    }
    Ok(builder.build())
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let config = &plan.config;
    let telemetry = telemetry::init(&TelemetrySettings {
        log_level: config.log.level.clone(),
        log_format: match config.log.format {
            LogFormat::Json => telemetry::LogFormat::Json,
            LogFormat::Pretty => telemetry::LogFormat::Pretty,
        },
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
        service_name: config.telemetry.service_name.clone(),
        sample_ratio: config.telemetry.sample_ratio,
    })?;
    let result = serve(&args, plan).await;
    // Spans of the last calls (and of the drain) reach the collector.
    telemetry.shutdown();
    result
}

async fn serve(args: &ServeArgs, plan: Plan) -> anyhow::Result<()> {
    let config = plan.config;
    // Load TLS and the policy before touching storage: a bad certificate
    // should fail fast, not after migrations.
    let mtls = plan
        .mtls
        .map(|files| Mtls::load(files).context("loading the tls settings and policy"))
        .transpose()?;
    let keyring = plan.storage.load_or_create_keyring()?;
    let store = plan
        .storage
        .connect_with(config.database.store_options())
        .await?;
    if config.database.auto_migrate && !args.no_migrate {
        store.migrate_up().await.map_err(|err| {
            anyhow::anyhow!(
                "database migration failed: {err} ({})",
                err.internal_cause().unwrap_or("")
            )
        })?;
    }
    // Read before anything is served: a bad overrides file fails the start.
    let rate_limits = config.limits.rate_limits()?;
    let providers = registry(&keyring, &config.providers, config.limits.provider_limits())?;
    let coffer = Coffer::configured(
        store,
        providers,
        keyring,
        CofferOptions {
            audit: config.audit.writer(),
            value_cache: config.cache.value_cache(),
            metadata_cache: config.cache.metadata_cache(),
            ..CofferOptions::default()
        },
    );

    let listener = TcpListener::bind(plan.listen)
        .await
        .with_context(|| format!("binding {}", plan.listen))?;
    let local = listener.local_addr()?;
    // Installed before the server announces itself: a signal sent right after
    // the "listening on" line must be handled, not kill the process.
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut options = match &mtls {
        None => {
            tracing::info!(listen = %local, dev = true, "coffer is serving");
            eprintln!(
                "coffer (dev mode) listening on {local}; try:\n  grpcurl -plaintext {local} list\n  grpcurl -plaintext -d '{{\"parent\":\"tenants/default\"}}' {local} coffer.v1.SecretsService/ListSecrets"
            );
            ServeOptions::dev()
        }
        Some(mtls) => {
            let grants = mtls.policy().current().len();
            tracing::info!(listen = %local, grants, "coffer is serving with mtls");
            eprintln!(
                "coffer (mtls) listening on {local}; {grants} grants; SIGHUP reloads certificates and policy; try:\n  grpcurl -cacert ca.pem -cert client-NAME.pem -key client-NAME.key {local} list"
            );
            tokio::spawn(reload_on_sighup(mtls.clone(), hangup));
            ServeOptions::mtls(mtls)
        }
    };
    options.reaper_interval = Duration::from_secs(args.reaper_interval_secs);
    options.max_decoding_message_size = config.server.max_request_bytes;
    options.max_encoding_message_size = config.server.max_response_bytes;
    options.request_timeout = Duration::from_secs(config.server.request_timeout_secs);
    options.shutdown_grace = Duration::from_secs(config.server.shutdown_grace_secs);
    options.rate_limits = rate_limits;
    if let Some(addr) = config.metrics.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        tracing::info!(listen = %listener.local_addr()?, "serving prometheus metrics at /metrics");
        options.metrics_listener = Some(listener);
    }
    if let Some(addr) = config.server.health_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the health listener {addr}"))?;
        tracing::info!(listen = %listener.local_addr()?, "serving grpc.health.v1 in plaintext");
        options.health_listener = Some(listener);
    }
    // The first SIGTERM/SIGINT starts a graceful shutdown; a second one
    // (an impatient operator, or an orchestrator's escalation) exits at once.
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
            eprintln!("coffer: second signal, exiting without waiting for in-flight calls");
            std::process::exit(1);
        });
    };
    coffer_server::serve(listener, coffer, options, shutdown).await?;
    Ok(())
}

/// Reloads certificates and policy on each SIGHUP; a failed reload keeps
/// everything as it was and says why. (In dev mode SIGHUP is caught and
/// ignored: there is nothing to reload.)
async fn reload_on_sighup(mtls: Mtls, mut hangup: Signal) {
    while hangup.recv().await.is_some() {
        match mtls.reload() {
            Ok(summary) => tracing::info!(
                grants = summary.grants,
                "reloaded tls certificates and policy"
            ),
            Err(err) => tracing::error!(
                error = %err,
                "reload failed; keeping the previous certificates and policy"
            ),
        }
    }
}
