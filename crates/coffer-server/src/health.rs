//! `grpc.health.v1`: SERVING only while the database serves Coffer's calls.
//! A watcher pings the store on an interval and flips the overall and
//! per-service statuses; shutdown sets NOT_SERVING before draining.
//!
//! A read ping is not enough: with a full disk or a read-only database file
//! reads still answer while every write — and every resolve, which is audited
//! and fails closed — is refused. So once the store has seen a write fail
//! for such a reason ([`Store::write_blocked`]) the watcher probes with a
//! small real write ([`Store::probe_write`]) instead, and reports SERVING
//! again only once that write commits. While nothing failed, the probe stays
//! a read: a healthy server does not write on every tick.

use std::time::Duration;

use coffer_core::Result;
use coffer_store::Store;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The services whose status is reported, besides the overall `""`.
pub const SERVICES: [&str; 2] = ["coffer.v1.SecretsService", "coffer.v1.VaultService"];

/// Sets the overall and every per-service status.
pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// The database answers reads and, after a write failed because it could
/// not be written, takes a write again.
async fn probe(store: &Store) -> Result<()> {
    store.ping().await?;
    if store.write_blocked() {
        store.probe_write().await?;
    }
    Ok(())
}

/// Probes the database every `interval` (bounded by a timeout of the same
/// length, at least 1 s) and reports SERVING or NOT_SERVING; logs
/// transitions only.
pub fn spawn_watcher(store: Store, reporter: HealthReporter, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<bool> = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let healthy =
                match tokio::time::timeout(interval.max(Duration::from_secs(1)), probe(&store))
                    .await
                {
                    Ok(Ok(())) => true,
                    Ok(Err(err)) => {
                        if last != Some(false) {
                            tracing::warn!(
                                cause = err.internal_cause().unwrap_or(""),
                                write_blocked = store.write_blocked(),
                                "database unreachable or cannot be written; health is NOT_SERVING"
                            );
                        }
                        false
                    }
                    Err(_) => {
                        if last != Some(false) {
                            tracing::warn!("database probe timed out; health is NOT_SERVING");
                        }
                        false
                    }
                };
            if last != Some(healthy) {
                if healthy && last.is_some() {
                    tracing::info!("database reachable and writable again; health is SERVING");
                }
                let status = if healthy {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                set_all(&reporter, status).await;
                last = Some(healthy);
            }
        }
    })
}
