//! `grpc.health.v1`: SERVING only while the database answers. A watcher pings
//! the store on an interval and flips the overall and per-service statuses;
//! shutdown sets NOT_SERVING before draining.

use std::time::Duration;

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

/// Pings the database every `interval` (bounded by a timeout of the same
/// length) and reports SERVING or NOT_SERVING; logs transitions only.
pub fn spawn_watcher(store: Store, reporter: HealthReporter, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<bool> = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let healthy = match tokio::time::timeout(
                interval.max(Duration::from_secs(1)),
                store.ping(),
            )
            .await
            {
                Ok(Ok(())) => true,
                Ok(Err(err)) => {
                    if last != Some(false) {
                        tracing::warn!(
                            cause = err.internal_cause().unwrap_or(""),
                            "database unreachable; health is NOT_SERVING"
                        );
                    }
                    false
                }
                Err(_) => {
                    if last != Some(false) {
                        tracing::warn!("database ping timed out; health is NOT_SERVING");
                    }
                    false
                }
            };
            if last != Some(healthy) {
                if healthy && last.is_some() {
                    tracing::info!("database reachable again; health is SERVING");
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
