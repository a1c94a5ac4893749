//! `coffer serve`: reads the config file, loads the keyring, connects and
//! migrates the database, binds the listener and runs the server until SIGINT
//! or SIGTERM. With mTLS, SIGHUP reloads the certificates and the policy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use coffer_crypto::Keyring;
use coffer_providers::ProviderRegistry;
use coffer_providers::aws_secrets_manager::{AwsProviderOptions, AwsSecretsManagerFactory};
use coffer_providers::local_encrypted::LocalEncryptedProvider;
use coffer_server::{Coffer, Mtls, MtlsFiles, ServeOptions, TlsFiles};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ProvidersSection};
use crate::storage::StorageArgs;

/// Where `coffer serve` listens when neither the flag nor the config says.
const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Development mode: plaintext gRPC on a loopback address, every caller is
    /// the implicit admin, state under ./.coffer/. Never use it in production.
    #[arg(long)]
    pub(crate) dev: bool,
    /// TOML config file: [server] listen, [tls] cert_file key_file
    /// client_ca_file, [authz] policy_file, [database] url, [keys] keyring_file.
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
    providers: ProvidersSection,
}

fn plan(args: &ServeArgs) -> anyhow::Result<Plan> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
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
    let providers = config.providers;
    let mtls = match (args.dev, config.tls, config.authz) {
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
        providers,
    })
}

/// The providers this deployment offers: the built-in store always, AWS
/// Secrets Manager unless `[providers.aws_secrets_manager] enabled = false`.
fn registry(keyring: &Arc<Keyring>, config: &ProvidersSection) -> anyhow::Result<ProviderRegistry> {
    let mut builder = ProviderRegistry::builder()
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
    init_logging();
    let plan = plan(&args)?;
    // Load TLS and the policy before touching storage: a bad certificate
    // should fail fast, not after migrations.
    let mtls = plan
        .mtls
        .map(|files| Mtls::load(files).context("loading the tls settings and policy"))
        .transpose()?;
    let keyring = plan.storage.load_or_create_keyring()?;
    let store = plan.storage.connect().await?;
    if !args.no_migrate {
        store.migrate_up().await.map_err(|err| {
            anyhow::anyhow!(
                "database migration failed: {err} ({})",
                err.internal_cause().unwrap_or("")
            )
        })?;
    }
    let providers = registry(&keyring, &plan.providers)?;
    let coffer = Coffer::new(store, providers, keyring);

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
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
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

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
