//! A service that loads its configuration from its bindings and reloads it
//! when a bound secret rotates or its bindings change, without restarting
//! or polling. It prints config paths, versions and value lengths, never a
//! value.
//!
//! ```text
//! COFFER_SERVER=https://coffer.internal:50051 COFFER_TENANT=acme \
//! COFFER_CA=ca.pem COFFER_CERT=billing.pem COFFER_KEY=billing.key \
//! COFFER_CONSUMER=service:billing COFFER_PREFIX=env. \
//!   cargo run -p coffer-client --example reload_on_rotation
//! ```
//!
//! Against `coffer serve --dev`, leave out the three TLS variables
//! (the server defaults to `http://127.0.0.1:50051`).

use std::path::PathBuf;

use coffer_client::{
    CacheEvent, CacheOptions, CachedResolver, Client, ClientConfig, ResolvedBindings, proto,
};
use tokio::sync::broadcast::error::RecvError;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn config() -> Result<ClientConfig, Box<dyn std::error::Error>> {
    let server = env("COFFER_SERVER", "http://127.0.0.1:50051");
    let tenant = env("COFFER_TENANT", "default");
    let tls = ["COFFER_CA", "COFFER_CERT", "COFFER_KEY"].map(std::env::var_os);
    Ok(match tls {
        [Some(ca), Some(cert), Some(key)] => ClientConfig::from_files(
            server,
            tenant,
            &PathBuf::from(ca),
            &PathBuf::from(cert),
            &PathBuf::from(key),
        )?,
        [None, None, None] => ClientConfig::plaintext(server, tenant),
        _ => return Err("set all of COFFER_CA, COFFER_CERT and COFFER_KEY, or none".into()),
    })
}

/// What the service would hand to its components; here, only described.
fn apply(config: &ResolvedBindings) {
    println!("configuration loaded ({} entries)", config.entries.len());
    for entry in &config.entries {
        match &entry.value {
            Ok(value) => println!(
                "  {} <- {} v{} ({} bytes)",
                entry.config_path,
                entry.secret,
                value.version(),
                value.len()
            ),
            Err(err) => println!(
                "  {} <- {} unavailable: {:?}",
                entry.config_path, entry.secret, err.code
            ),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let consumer = env("COFFER_CONSUMER", "service:example");
    let (kind, id) = consumer
        .split_once(':')
        .ok_or("COFFER_CONSUMER must be KIND:ID, e.g. service:billing")?;
    let consumer = proto::Consumer {
        kind: kind.to_owned(),
        id: id.to_owned(),
    };
    let prefix = env("COFFER_PREFIX", "");

    let client = Client::connect(config()?).await?;
    let cache = CachedResolver::start(
        client,
        CacheOptions {
            consumer: Some(consumer.clone()),
            ..Default::default()
        },
    )
    .await?;
    // Subscribe before the first load, so no change can slip in between.
    let mut changes = cache.subscribe();
    apply(&cache.resolve_bindings(&consumer, &prefix).await?);

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            change = changes.recv() => {
                match change {
                    Ok(CacheEvent::Changed(event)) => {
                        let kind = proto::secret_change_event::Type::try_from(event.r#type)
                            .map(|t| t.as_str_name())
                            .unwrap_or("TYPE_UNKNOWN");
                        if event.secret.is_empty() {
                            println!("change: {kind} at {}", event.config_path);
                        } else {
                            println!("change: {kind} {} v{}", event.secret, event.version);
                        }
                    }
                    Ok(CacheEvent::Reset) | Err(RecvError::Lagged(_)) => {
                        println!("change feed restarted: reloading everything");
                    }
                    Ok(CacheEvent::Disconnected) => {
                        println!("watch stream lost: serving cached values until it is back");
                        continue;
                    }
                    Ok(CacheEvent::Reconnected) => {
                        println!("watch stream back");
                        continue;
                    }
                    Err(RecvError::Closed) => return Ok(()),
                }
                match cache.resolve_bindings(&consumer, &prefix).await {
                    Ok(config) => apply(&config),
                    // Keep running on the configuration already applied.
                    Err(err) => eprintln!("reload failed, keeping the current configuration: {err}"),
                }
            }
        }
    }
}
