//! The reaper: purges soft-deleted secrets whose recovery window has passed
//! and forgets expired request ids. Safe to run on several replicas at once:
//! each purge re-checks the secret under its row lock, so a secret is purged
//! once and an undelete that won the race is respected.

use std::time::Duration;

use coffer_core::record::{SecretState, now_micros};
use coffer_core::{Principal, Result};
use tokio::task::JoinHandle;

use super::Coffer;
use super::idempotency::RETENTION_MICROS;
use super::secrets::audit_in;

/// The principal recorded on purges the reaper makes.
pub(crate) const REAPER_PRINCIPAL: &str = "system:reaper";

/// What one reaper pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReaperReport {
    pub purged: usize,
    pub forgotten_request_ids: u64,
}

const BATCH: usize = 100;

impl Coffer {
    /// One pass: purge every due secret, then drop expired request ids.
    pub async fn reap_once(&self) -> Result<ReaperReport> {
        let mut report = ReaperReport::default();
        loop {
            let now = now_micros();
            let due = self.store().secrets_due_for_purge(now, BATCH).await?;
            if due.is_empty() {
                break;
            }
            let mut progressed = false;
            for candidate in due {
                let name = candidate.name();
                let tx = self.store().begin().await?;
                let Some(secret) = tx.get_secret_for_update(&name.tenant, &name.key).await? else {
                    continue;
                };
                let still_due = secret.uid == candidate.uid
                    && secret.state == SecretState::Deleted
                    && secret.purge_time.is_some_and(|t| t <= now);
                if !still_due {
                    continue;
                }
                self.purge_locked(&tx, &secret, now).await?;
                audit_in(
                    &tx,
                    &Principal::new(REAPER_PRINCIPAL),
                    "secret.purge",
                    &secret,
                    0,
                )
                .await?;
                tx.commit().await?;
                tracing::info!(secret = %name, uid = %secret.uid, "purged deleted secret");
                report.purged += 1;
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        report.forgotten_request_ids = self
            .store()
            .delete_idempotency_older_than(now_micros() - RETENTION_MICROS)
            .await?;
        Ok(report)
    }
}

/// Runs the reaper every `interval` until the returned handle is aborted.
pub fn spawn_reaper(coffer: Coffer, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match coffer.reap_once().await {
                Ok(report) if report.purged > 0 => {
                    tracing::debug!(purged = report.purged, "reaper pass")
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(
                    error = %err,
                    cause = err.internal_cause().unwrap_or(""),
                    "reaper pass failed; retrying on the next tick"
                ),
            }
        }
    })
}
