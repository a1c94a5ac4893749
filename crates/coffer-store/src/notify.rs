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
//!
//! A connection can also die without a word (a half-open TCP connection: a
//! peer or a middlebox gone, no FIN, no RST): LISTEN then hears nothing and
//! reports nothing. So the listener proves it still hears the channel: every
//! [`HEARTBEAT_EVERY`] it notifies itself over a second connection of its
//! own (not the shared pool, which a busy server may keep from it), and
//! [`HEARTBEAT_DEADLINE`] without hearing one back counts as a lost
//! connection (not live, `Lost`, reconnect). A notice a live listener
//! misses is thus noticed within a few seconds, which is what lets the
//! metadata cache keep records longer on PostgreSQL than on SQLite.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// How often the listener notifies itself to prove it still hears.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long the listener may go without hearing its own heartbeat before
/// its connection counts as lost.
pub const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(3);

/// What a subscriber of [`Store::subscribe_commits`] hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitNotice {
    /// A committed transaction changed something in this tenant.
    Tenant(TenantId),
    /// Notices may have been missed: treat every tenant as changed.
    Lost,
}

/// The listener side of a PostgreSQL store, and whether it is listening
/// right now. Each LISTEN connection and its heartbeat sender come from a
/// two-connection pool of their own, never from the shared pool; `pool`
/// (which opens none) carries the connection settings and the store's
/// lifetime: closing it stops the listener.
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

/// A heartbeat's payload: `<instance>:~<n>` (`~` starts no tenant id, so
/// other replicas ignore it).
fn heartbeat_payload(instance: &str, n: u64) -> String {
    format!("{instance}:~{n}")
}

/// The number of one of our own heartbeats.
fn own_heartbeat(payload: &str, instance: &str) -> Option<u64> {
    let (from, beat) = payload.split_once(':')?;
    if from != instance {
        return None;
    }
    beat.strip_prefix('~')?.parse().ok()
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
    /// (other processes on the same file are heard through change marks
    /// within a poll, [`crate::change_marks`], and the caches' TTL bounds the
    /// rest). PostgreSQL: while the listener of
    /// [`Store::spawn_commit_listener`] is connected.
    pub fn commit_notices_live(&self) -> bool {
        match &self.remote {
            None => true,
            Some(remote) => remote.live.load(Ordering::Acquire),
        }
    }

    /// Starts the task that forwards other writers' commits to
    /// [`Store::subscribe_commits`]. On PostgreSQL it LISTENs on
    /// [`COMMIT_CHANNEL`], reconnects with backoff and sends
    /// [`CommitNotice::Lost`] whenever it (re)connects; on a SQLite file it
    /// polls other processes' change marks ([`crate::change_marks`]); an
    /// in-memory database has no other writer (`None`). The task ends when
    /// the store is closed. Only the first call on a store (or its clones)
    /// starts one; later calls return `None`.
    pub fn spawn_commit_listener(&self) -> Option<JoinHandle<()>> {
        if let Some(marks) = &self.marks {
            return marks.spawn_poller(self.read.clone(), self.commits.clone());
        }
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
        // A fresh pool per LISTEN connection (and its heartbeat sender): a
        // connection given up as deaf may hang on its way back to its pool
        // (its UNLISTEN is never answered), and must not keep the next one
        // from connecting.
        let connections = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .connect_lazy_with((*remote.pool.connect_options()).clone());
        let listener = match subscribe(&connections).await {
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
        let heard = Arc::new(AtomicU64::new(0));
        let mut receiving = tokio::spawn(receive(
            listener,
            instance.clone(),
            commits.clone(),
            heard.clone(),
        ));
        let ended = supervise(&remote, &connections, &instance, &heard, &mut receiving).await;
        // The receiving task is abandoned with its connection (it may be
        // waiting on a half-open one); nothing of it is reused.
        receiving.abort();
        remote.live.store(false, Ordering::Release);
        let _ = commits.send(CommitNotice::Lost);
        match ended {
            Ended::PoolClosed => return,
            Ended::Failed(err) => {
                tracing::warn!(error = %err, "lost the listener for other replicas' commits; reconnecting");
            }
            Ended::Deaf => {
                tracing::warn!(
                    deadline = ?HEARTBEAT_DEADLINE,
                    "the listener for other replicas' commits stopped hearing its own heartbeat; reconnecting"
                );
            }
        }
    }
}

/// Why a listener's connection was given up.
enum Ended {
    /// The store was closed.
    PoolClosed,
    /// Receiving failed.
    Failed(sea_orm::sqlx::Error),
    /// No heartbeat was heard back in time.
    Deaf,
}

/// Sends a heartbeat every [`HEARTBEAT_EVERY`] and returns when none has
/// been heard back by `receiving` for [`HEARTBEAT_DEADLINE`], when
/// receiving ends, or when the store closes. Heartbeats go out over
/// `connections`, the listener's own pool. A heartbeat that cannot be sent
/// (the database out of reach) counts as not heard: a replica cut off from
/// PostgreSQL cannot tell whether others wrote, so its caches stop serving.
async fn supervise(
    remote: &RemoteCommits,
    connections: &PgPool,
    instance: &str,
    heard: &AtomicU64,
    receiving: &mut tokio::task::JoinHandle<std::result::Result<(), sea_orm::sqlx::Error>>,
) -> Ended {
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0_u64;
    let (mut last_heard, mut heard_at) = (0_u64, Instant::now());
    loop {
        tokio::select! {
            () = remote.pool.close_event() => return Ended::PoolClosed,
            ended = &mut *receiving => {
                return match ended {
                    Ok(Err(sea_orm::sqlx::Error::PoolClosed)) => Ended::PoolClosed,
                    Ok(Err(err)) => Ended::Failed(err),
                    // The task never ends otherwise; a panic is a failure.
                    Ok(Ok(())) | Err(_) => Ended::Failed(sea_orm::sqlx::Error::WorkerCrashed),
                };
            }
            _ = beat.tick() => {
                let now_heard = heard.load(Ordering::Acquire);
                if now_heard > last_heard {
                    (last_heard, heard_at) = (now_heard, Instant::now());
                } else if heard_at.elapsed() >= HEARTBEAT_DEADLINE {
                    return Ended::Deaf;
                }
                sent += 1;
                let notified = tokio::time::timeout(
                    HEARTBEAT_EVERY,
                    sea_orm::sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(COMMIT_CHANNEL)
                        .bind(heartbeat_payload(instance, sent))
                        .execute(connections),
                )
                .await;
                match notified {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => tracing::debug!(error = %err, "could not send the listener's heartbeat"),
                    Err(_) => tracing::debug!("sending the listener's heartbeat timed out"),
                }
            }
        }
    }
}

/// Forwards other replicas' notices and records our own heartbeats in
/// `heard`, until receiving fails.
async fn receive(
    mut listener: PgListener,
    instance: Arc<str>,
    commits: broadcast::Sender<CommitNotice>,
    heard: Arc<AtomicU64>,
) -> std::result::Result<(), sea_orm::sqlx::Error> {
    loop {
        match listener.try_recv().await? {
            Some(notification) => {
                let payload = notification.payload();
                if let Some(n) = own_heartbeat(payload, &instance) {
                    heard.fetch_max(n, Ordering::AcqRel);
                } else if let Some(tenant) = remote_tenant(payload, &instance) {
                    let _ = commits.send(CommitNotice::Tenant(tenant));
                }
            }
            // The connection dropped and was re-established (LISTEN
            // again); notices in between are gone.
            None => {
                let _ = commits.send(CommitNotice::Lost);
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

    #[test]
    fn heartbeats_are_ours_alone_and_no_tenant() {
        let beat = heartbeat_payload("a1", 7);
        assert_eq!(own_heartbeat(&beat, "a1"), Some(7));
        assert_eq!(own_heartbeat(&beat, "b2"), None);
        assert_eq!(remote_tenant(&beat, "b2"), None);
        let tenant = TenantId::parse("acme", "tenant").unwrap();
        assert_eq!(own_heartbeat(&payload("a1", &tenant), "a1"), None);
    }
}
