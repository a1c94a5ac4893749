//! `coffer serve`: loads the keyring, connects and migrates the database,
//! binds the listener and runs the server until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use coffer_providers::ProviderRegistry;
use coffer_providers::local_encrypted::LocalEncryptedProvider;
use coffer_server::{Coffer, ServeOptions};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::storage::StorageArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Development mode: plaintext gRPC on a loopback address, every caller is
    /// the implicit admin, state under ./.coffer/. Never use it in production.
    #[arg(long)]
    pub(crate) dev: bool,
    /// Address to listen on.
    #[arg(long, env = "COFFER_LISTEN", default_value = "127.0.0.1:50051")]
    pub(crate) listen: SocketAddr,
    /// Do not apply pending database migrations at start.
    #[arg(long)]
    pub(crate) no_migrate: bool,
    /// Seconds between reaper passes (purging expired deletions).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) reaper_interval_secs: u64,
    #[command(flatten)]
    pub(crate) storage: StorageArgs,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    if !args.dev {
        bail!(
            "coffer serve needs TLS settings (mTLS arrives with the config file); for a local plaintext server on loopback use `coffer serve --dev`"
        );
    }
    if !args.listen.ip().is_loopback() {
        bail!(
            "--dev serves plaintext and only binds loopback addresses (127.0.0.1 or ::1), not {}",
            args.listen
        );
    }
    let keyring = args.storage.load_or_create_keyring()?;
    let store = args.storage.connect().await?;
    if !args.no_migrate {
        store.migrate_up().await.map_err(|err| {
            anyhow::anyhow!(
                "database migration failed: {err} ({})",
                err.internal_cause().unwrap_or("")
            )
        })?;
    }
    let providers = ProviderRegistry::builder()
        .register(std::sync::Arc::new(LocalEncryptedProvider::new(
            keyring.clone(),
        )))?
        .build();
    let coffer = Coffer::new(store, providers, keyring);

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, dev = true, "coffer is serving");
    eprintln!(
        "coffer (dev mode) listening on {local}; try:\n  grpcurl -plaintext {local} list\n  grpcurl -plaintext -d '{{\"parent\":\"tenants/default\"}}' {local} coffer.v1.SecretsService/ListSecrets"
    );
    let mut options = ServeOptions::dev();
    options.reaper_interval = Duration::from_secs(args.reaper_interval_secs);
    coffer_server::serve(listener, coffer, options, shutdown_signal()).await?;
    Ok(())
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
