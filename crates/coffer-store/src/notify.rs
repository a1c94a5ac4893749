//! Commit notices: "a committed transaction changed tenant T", for this
//! process's writes and, on PostgreSQL, for every replica's (ADR 0010).
//!
//! A [`WriteTx`](crate::WriteTx) that audited a successful mutation sends
//! [`CommitNotice::Tenant`] on the store's broadcast channel right after its
//! commit, before `commit()` returns — so a caller that reads the channel
//! synchronously (the metadata cache does) sees its own writes. On
//! PostgreSQL the same transaction also runs `pg_notify` on
//! [`COMMIT_CHANNEL`], which the server delivers to every listener when the
//! transaction commits; [`Store::spawn_commit_listener`] turns other
//! replicas' notices into the same `CommitNotice`s. Notifications carry only
//! a store instance id and a tenant id, never anything of a secret.
//!
//! When notices may have been missed (the listener's connection dropped and
//! came back, or it just connected), [`CommitNotice::Lost`] says "anything
//! may have changed"; while the listener is down, [`Store::commit_notices_live`]
//! is false and caches must not serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coffer_core::TenantId;
use sea_orm::sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::conn::Store;

/// The PostgreSQL channel every replica notifies and listens on.
pub const COMMIT_CHANNEL: &str = "coffer_commits";

/// Backoff bounds between attempts to (re)connect the listener.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// What a subscriber of [`Store::subscribe_commits`] hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitNotice {
    /// A committed transaction changed something in this tenant.
    Tenant(TenantId),
    /// Notices may have been missed: treat every tenant as changed.
    Lost,
}

/// The listener side of a PostgreSQL store: a pool of its own (one
/// connection, opened lazily) so LISTEN never takes a connection from the
/// shared pool, and whether it is listening right now.
#[derive(Debug, Clone)]
pub(crate) struct RemoteCommits {
    pub(crate) pool: PgPool,
    pub(crate) live: Arc<AtomicBool>,
    /// Set by the first [`Store::spawn_commit_listener`]: one listener per store.
    started: Arc<AtomicBool>,
}

impl RemoteCommits {
    pub(crate) fn new(pool: &PgPool) -> RemoteCommits {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .connect_lazy_with((*pool.connect_options()).clone());
        RemoteCommits {
            pool,
            live: Arc::new(AtomicBool::new(false)),
            started: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The `pg_notify` payload: `<instance>:<tenant>`. The instance id lets a
/// replica skip its own notices, which it already sent locally.
pub(crate) fn payload(instance: &str, tenant: &TenantId) -> String {
    format!("{instance}:{}", tenant.as_str())
}

/// The tenant of another instance's payload; `None` for our own or a
/// payload that is not ours to read.
fn remote_tenant(payload: &str, instance: &str) -> Option<TenantId> {
    let (from, tenant) = payload.split_once(':')?;
    if from == instance {
        return None;
    }
    TenantId::parse(tenant, "tenant").ok()
}

impl Store {
    /// Whether commit notices cover every writer right now. SQLite: always
    /// (only this process's notices exist; other processes on the same file
    /// are covered by the caches' TTL). PostgreSQL: while the listener of
    /// [`Store::spawn_commit_listener`] is connected.
    pub fn commit_notices_live(&self) -> bool {
        match &self.remote {
            None => true,
            Some(remote) => remote.live.load(Ordering::Acquire),
        }
    }

    /// On PostgreSQL, starts the task that LISTENs on [`COMMIT_CHANNEL`] and
    /// forwards other replicas' notices to [`Store::subscribe_commits`];
    /// `None` on SQLite. The task reconnects with backoff, sends
    /// [`CommitNotice::Lost`] whenever it (re)connects, and ends when the
    /// store is closed. Only the first call on a store (or its clones)
    /// starts one; later calls return `None`.
    pub fn spawn_commit_listener(&self) -> Option<JoinHandle<()>> {
        let remote = self.remote.clone()?;
        if remote.started.swap(true, Ordering::AcqRel) {
            return None;
        }
        let commits = self.commits.clone();
        let instance = self.instance.clone();
        Some(tokio::spawn(listen(remote, instance, commits)))
    }
}

async fn listen(
    remote: RemoteCommits,
    instance: Arc<str>,
    commits: broadcast::Sender<CommitNotice>,
) {
    let mut backoff = RECONNECT_MIN;
    loop {
        if remote.pool.is_closed() {
            return;
        }
        let mut listener = match subscribe(&remote.pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "cannot listen for other replicas' commits; caches are off until it can");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        backoff = RECONNECT_MIN;
        // Listening from here on; whatever committed before was not heard.
        remote.live.store(true, Ordering::Release);
        let _ = commits.send(CommitNotice::Lost);
        tracing::debug!(
            channel = COMMIT_CHANNEL,
            "listening for other replicas' commits"
        );
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Some(tenant) = remote_tenant(notification.payload(), &instance) {
                        let _ = commits.send(CommitNotice::Tenant(tenant));
                    }
                }
                // The connection dropped and was re-established (LISTEN
                // again); notices in between are gone.
                Ok(None) => {
                    let _ = commits.send(CommitNotice::Lost);
                }
                Err(err) => {
                    remote.live.store(false, Ordering::Release);
                    let _ = commits.send(CommitNotice::Lost);
                    if matches!(err, sea_orm::sqlx::Error::PoolClosed) {
                        return;
                    }
                    tracing::warn!(error = %err, "lost the listener for other replicas' commits; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(COMMIT_CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_for_other_instances_only() {
        let tenant = TenantId::parse("acme", "tenant").unwrap();
        let sent = payload("a1", &tenant);
        assert_eq!(remote_tenant(&sent, "b2"), Some(tenant));
        assert_eq!(remote_tenant(&sent, "a1"), None);
        assert_eq!(remote_tenant("garbage", "b2"), None);
        assert_eq!(remote_tenant("x:NOT A TENANT!", "b2"), None);
    }
}
