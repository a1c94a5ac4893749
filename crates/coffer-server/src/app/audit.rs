//! Audit events: built here for every mutation and resolve. Mutations append
//! their event inside their own transaction (fail closed: no event, no
//! change). Resolves go through [`AuditWriter`], one task that group-commits
//! the events of many concurrent resolves at once
//! ([`Store::append_audit_batch`]: on PostgreSQL one statement per batch,
//! chained from the heads the task remembers; on SQLite one transaction);
//! each resolve waits until its event is durable before it returns a value,
//! and one whose event was not stored fails with AUDIT_UNAVAILABLE.
//! Afterwards `last_resolve_time` moves in a transaction of its own,
//! coalesced to one write per secret per minute.
//! Each batch's size and commit latency go to the audit metrics.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use coffer_core::audit::ChainHead;
use coffer_core::record::{AuditOutcome, NewAuditEvent, now_micros};
use coffer_core::{Error, ErrorCode, Principal, Reason, Result, TenantId};
use coffer_store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::observe::metrics::{AUDIT_BATCH_SIZE, AUDIT_FLUSH_DURATION};

/// Group-commit settings.
#[derive(Debug, Clone, Copy)]
pub struct AuditWriterOptions {
    /// Events per transaction at most.
    pub max_batch: usize,
    /// How long the first event of a batch waits for company. Zero (the
    /// default) commits as soon as the writer is free: events that arrive
    /// while a batch commits form the next one, so batches grow with load
    /// and a lone resolve does not wait for company that is not coming.
    pub max_delay: Duration,
    /// Pending events before callers wait for room.
    pub queue: usize,
}

impl Default for AuditWriterOptions {
    fn default() -> Self {
        AuditWriterOptions {
            max_batch: 512,
            max_delay: Duration::ZERO,
            queue: 8192,
        }
    }
}

/// One queued resolve event and who waits for it.
struct Pending {
    event: NewAuditEvent,
    waiter: Waiter,
}

/// Who waits for a queued event: kept by the writer while the event itself
/// moves into the store.
struct Waiter {
    /// The secret whose `last_resolve_time` moves, for successful resolves.
    resolved_uid: Option<String>,
    done: oneshot::Sender<Result<()>>,
}

/// The handle resolves use to record their events.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Queued>,
}

/// What the writer task receives: an event (boxed so the channel's slots
/// stay small), or a flush barrier answered once everything queued before it
/// is committed.
enum Queued {
    Event(Box<Pending>),
    Flush(oneshot::Sender<()>),
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queued::Event(pending) => f
                .debug_struct("Pending")
                .field("action", &pending.event.action)
                .finish(),
            Queued::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AuditWriter {
    /// Starts the writer task; it ends when every handle is dropped, after
    /// writing what was queued.
    pub fn spawn(store: Store, options: AuditWriterOptions) -> (AuditWriter, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(options.queue.max(1));
        let task = tokio::spawn(run(store, receiver, options));
        (AuditWriter { queue }, task)
    }

    /// Queues an event without waiting for it (for events whose call is
    /// refused either way); a full queue drops it with a warning.
    pub fn enqueue(&self, event: NewAuditEvent) {
        let (done, _ignored) = oneshot::channel();
        let pending = Queued::Event(Box::new(Pending {
            event,
            waiter: Waiter {
                resolved_uid: None,
                done,
            },
        }));
        if self.queue.try_send(pending).is_err() {
            tracing::warn!("audit queue full or closed; a denial event was dropped");
        }
    }

    /// Queues an event and waits until it is committed.
    pub async fn record(&self, event: NewAuditEvent, resolved_uid: Option<String>) -> Result<()> {
        let (done, wait) = oneshot::channel();
        let pending = Queued::Event(Box::new(Pending {
            event,
            waiter: Waiter { resolved_uid, done },
        }));
        self.queue
            .send(pending)
            .await
            .map_err(|_| audit_unavailable("the audit writer has stopped"))?;
        wait.await
            .map_err(|_| audit_unavailable("the audit writer dropped an event"))?
    }

    /// Waits until every event queued before this call is committed (or its
    /// batch failed): at shutdown, so that events queued without waiting
    /// (denials) are not lost with the process.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Queued::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(store: Store, mut receiver: mpsc::Receiver<Queued>, options: AuditWriterOptions) {
    let mut stamps = ResolveStamps::default();
    let stamper = spawn_stamper(store.clone());
    // Each tenant's chain head as this writer last committed it: the next
    // batch chains from it without reading it (Store::append_audit_batch).
    let mut heads = HashMap::new();
    while let Some(first) = receiver.recv().await {
        let first = match first {
            Queued::Event(pending) => pending,
            // Nothing was pending before this barrier.
            Queued::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let (mut events, mut waiters) = (Vec::new(), Vec::new());
        take(first, &mut events, &mut waiters);
        let mut flushes = Vec::new();
        let deadline = tokio::time::Instant::now() + options.max_delay;
        // A flush barrier ends the batch at once: whoever waits on it should
        // not wait for company.
        while events.len() < options.max_batch && flushes.is_empty() {
            let next = if options.max_delay.is_zero() {
                // What is queued now, and not a moment more: a timer, even
                // one already due, fires on the timer's next millisecond
                // tick, and that wait once doubled a lone resolve's latency
                // and idled the writer between batches under load.
                receiver.try_recv().ok()
            } else {
                tokio::time::timeout_at(deadline, receiver.recv())
                    .await
                    .ok()
                    .flatten()
            };
            match next {
                Some(Queued::Event(next)) => take(next, &mut events, &mut waiters),
                Some(Queued::Flush(done)) => flushes.push(done),
                None => break,
            }
        }
        let started = std::time::Instant::now();
        let count = events.len();
        let outcomes =
            write_batch(&store, events, &waiters, &mut heads, &mut stamps, &stamper).await;
        observe_batch(count, started.elapsed());
        let failed = outcomes.iter().filter(|o| o.is_err()).count();
        if let Some(Err(err)) = outcomes.iter().find(|o| o.is_err()) {
            tracing::error!(
                events = count,
                failed,
                cause = err.internal_cause().unwrap_or(err.message()),
                "audit batch failed; its resolves fail closed"
            );
        }
        let mut outcomes: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
        if failed > 0 {
            // The database just failed us: everything already queued would
            // wait for its own attempt (a pool timeout each, one after the
            // other) past the callers' deadlines. Fail it now; callers
            // retry, and the next event tries the database afresh.
            while waiters.len() < options.queue {
                match receiver.try_recv() {
                    Ok(Queued::Event(next)) => {
                        waiters.push(next.waiter);
                        outcomes.push(false);
                    }
                    Ok(Queued::Flush(done)) => flushes.push(done),
                    Err(_) => break,
                }
            }
        }
        for (waiter, stored) in waiters.into_iter().zip(outcomes) {
            let outcome = if stored {
                Ok(())
            } else {
                Err(audit_unavailable("writing the audit batch failed"))
            };
            let _ = waiter.done.send(outcome);
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Moves a queued event into the batch and its waiter beside it.
fn take(pending: Box<Pending>, events: &mut Vec<NewAuditEvent>, waiters: &mut Vec<Waiter>) {
    let Pending { event, waiter } = *pending;
    events.push(event);
    waiters.push(waiter);
}

/// Batch size and commit latency, failed batches included.
fn observe_batch(events: usize, took: Duration) {
    metrics::histogram!(AUDIT_BATCH_SIZE).record(events as f64);
    metrics::histogram!(AUDIT_FLUSH_DURATION).record(took.as_secs_f64());
}

/// How stale `last_resolve_time` may be: a secret's stamp is written at
/// most once per this interval by each replica, so a hot secret does not
/// rewrite its row in every batch (AWS Secrets Manager keeps its
/// LastAccessedDate to the day).
const RESOLVE_STAMP_INTERVAL_MICROS: i64 = 60 * 1_000_000;
/// Secrets remembered before old stamps are forgotten.
const MAX_REMEMBERED_STAMPS: usize = 100_000;

/// When this writer last moved each secret's `last_resolve_time`.
#[derive(Debug, Default)]
struct ResolveStamps(HashMap<String, i64>);

impl ResolveStamps {
    /// The resolved secrets (of the stored events given) whose stamp is due.
    fn due<'a>(&self, stored: impl IntoIterator<Item = &'a Waiter>, now: i64) -> Vec<String> {
        let mut due: Vec<String> = stored
            .into_iter()
            .filter_map(|p| p.resolved_uid.as_ref())
            .filter(|uid| {
                self.0
                    .get(uid.as_str())
                    .is_none_or(|at| now - at >= RESOLVE_STAMP_INTERVAL_MICROS)
            })
            .cloned()
            .collect();
        due.sort_unstable();
        due.dedup();
        due
    }

    fn written(&mut self, uids: Vec<String>, now: i64) {
        if self.0.len() + uids.len() > MAX_REMEMBERED_STAMPS {
            self.0
                .retain(|_, at| now - *at < RESOLVE_STAMP_INTERVAL_MICROS);
            if self.0.len() + uids.len() > MAX_REMEMBERED_STAMPS {
                self.0.clear();
            }
        }
        self.0.extend(uids.into_iter().map(|uid| (uid, now)));
    }
}

/// Stores the batch's events and answers, per event in batch order, whether
/// it is durable. Only the secrets of stored resolves get their stamp.
async fn write_batch(
    store: &Store,
    events: Vec<NewAuditEvent>,
    waiters: &[Waiter],
    heads: &mut HashMap<TenantId, ChainHead>,
    stamps: &mut ResolveStamps,
    stamper: &mpsc::Sender<(Vec<String>, i64)>,
) -> Vec<Result<()>> {
    let outcomes: Vec<Result<()>> = store
        .append_audit_batch(events, heads)
        .await
        .into_iter()
        .map(|stored| stored.map(|_| ()))
        .collect();
    let now = now_micros();
    let stored = waiters
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(waiter, _)| waiter);
    let due = stamps.due(stored, now);
    if !due.is_empty() {
        stamps.written(due.clone(), now);
        // A full queue drops the stamp: it is a hint, due again later.
        if stamper.try_send((due, now)).is_err() {
            tracing::debug!("resolve stamp queue full; a stamp was skipped");
        }
    }
    outcomes
}

/// How long the stamper gathers due stamps before it writes them together.
const STAMP_GATHER: Duration = Duration::from_millis(250);
/// Stamp messages (one per audit batch) queued at most.
const STAMP_QUEUE: usize = 1024;

/// Starts the task that writes `last_resolve_time` stamps: one transaction
/// at a time, each holding the stamps gathered over [`STAMP_GATHER`]. A
/// task per audit batch used to run them all at once: with many secrets
/// first resolved together (after a start, or a `resolve-many`), hundreds
/// of stamp transactions a second took pooled connections and commits from
/// the resolves themselves. The task ends when the writer does.
fn spawn_stamper(store: Store) -> mpsc::Sender<(Vec<String>, i64)> {
    let (sender, mut receiver) = mpsc::channel::<(Vec<String>, i64)>(STAMP_QUEUE);
    tokio::spawn(async move {
        while let Some((uids, now)) = receiver.recv().await {
            tokio::time::sleep(STAMP_GATHER).await;
            let mut gathered: std::collections::BTreeSet<String> = uids.into_iter().collect();
            let mut latest = now;
            while let Ok((uids, now)) = receiver.try_recv() {
                gathered.extend(uids);
                latest = latest.max(now);
            }
            stamp_last_resolve(&store, gathered.into_iter().collect(), latest).await;
        }
    });
    sender
}

/// Moves `last_resolve_time` in a transaction of its own, after the audit
/// batch committed and off the writer's path. Inside the batch's
/// transaction it took the secrets' row locks after the tenant's chain head,
/// while a rotation takes its secret's row and then the head: PostgreSQL
/// then killed one of them as a deadlock (found by crates/coffer/tests/soak.rs).
/// Alone, it only locks secret rows (in uid order), and a stamp that waits
/// on a long rotation holds up no resolve. A stamp is a hint: if it fails
/// the resolves it describes stand, and the next one is due a minute later.
async fn stamp_last_resolve(store: &Store, uids: Vec<String>, now: i64) {
    let stamped = async {
        let tx = store.begin().await?;
        tx.set_last_resolve_time(&uids, now).await?;
        tx.commit().await
    };
    if let Err(err) = stamped.await {
        tracing::warn!(
            secrets = uids.len(),
            cause = err.internal_cause().unwrap_or(err.message()),
            "could not move last_resolve_time; the resolves themselves are audited"
        );
    }
}

fn audit_unavailable(cause: &str) -> Error {
    Error::new(
        ErrorCode::Unavailable,
        Reason::AuditUnavailable,
        "the audit trail cannot be written; retry with backoff",
    )
    .with_internal(cause)
}

/// Text from the request as an audit field. Refused requests are audited
/// too, with what they asked for, which may hold control characters:
/// PostgreSQL refuses NUL in text, and one such event would fail its whole
/// group-commit batch — every concurrent resolve in it, whichever tenant.
/// Control characters become U+FFFD (which also keeps them out of exports).
fn caller_text(raw: String) -> String {
    if raw.chars().any(char::is_control) {
        raw.chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect()
    } else {
        raw
    }
}

/// Builds events with the fields every event shares.
#[derive(Debug, Clone)]
pub(crate) struct EventBuilder {
    event: NewAuditEvent,
}

impl EventBuilder {
    pub(crate) fn new(
        tenant: &TenantId,
        principal: &Principal,
        action: &str,
        resource: impl Into<String>,
    ) -> Self {
        EventBuilder {
            event: NewAuditEvent {
                tenant: tenant.clone(),
                time: now_micros(),
                principal: principal.as_str().to_owned(),
                action: action.to_owned(),
                resource: caller_text(resource.into()),
                version: 0,
                consumer_kind: String::new(),
                consumer_id: String::new(),
                config_path: String::new(),
                context: BTreeMap::new(),
                outcome: AuditOutcome::Success,
                reason: String::new(),
                request_id: String::new(),
            },
        }
    }

    pub(crate) fn version(mut self, version: i64) -> Self {
        self.event.version = version;
        self
    }

    pub(crate) fn consumer(
        mut self,
        consumer: Option<&(String, String)>,
        config_path: &str,
    ) -> Self {
        if let Some((kind, id)) = consumer {
            self.event.consumer_kind = caller_text(kind.clone());
            self.event.consumer_id = caller_text(id.clone());
        }
        self.event.config_path = caller_text(config_path.to_owned());
        self
    }

    pub(crate) fn context(mut self, context: &BTreeMap<String, String>) -> Self {
        self.event.context = context
            .iter()
            .map(|(k, v)| (caller_text(k.clone()), caller_text(v.clone())))
            .collect();
        self
    }

    pub(crate) fn request_id(mut self, request_id: &str) -> Self {
        self.event.request_id = caller_text(request_id.to_owned());
        self
    }

    /// A successful call.
    pub(crate) fn success(self) -> NewAuditEvent {
        self.event
    }

    /// The outcome of a call that may have failed: DENIED for authorization
    /// and binding refusals, FAILURE for everything else.
    pub(crate) fn outcome<T>(mut self, result: &Result<T>) -> NewAuditEvent {
        if let Err(err) = result {
            self.event.outcome = match (err.code(), err.reason()) {
                (ErrorCode::PermissionDenied | ErrorCode::Unauthenticated, _)
                | (_, Reason::NotBound) => AuditOutcome::Denied,
                _ => AuditOutcome::Failure,
            };
            self.event.reason = err.reason().as_str().to_owned();
        }
        self.event
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use coffer_core::record::AuditOutcome;

    use super::*;

    fn denial(tenant: &TenantId) -> NewAuditEvent {
        let principal = Principal::new("test:stranger");
        let mut event =
            EventBuilder::new(tenant, &principal, "authz.deny", "tenants/acme").success();
        event.outcome = AuditOutcome::Denied;
        event
    }

    #[test]
    fn caller_text_loses_its_control_characters() {
        let tenant = TenantId::parse("acme", "tenant").unwrap();
        let principal = Principal::new("test:caller");
        let consumer = ("agent".to_owned(), "a\u{0}b".to_owned());
        let context = BTreeMap::from([("k\u{7}".to_owned(), "line\nbreak".to_owned())]);
        let event = EventBuilder::new(&tenant, &principal, "secret.resolve", "x\u{1b}y")
            .consumer(Some(&consumer), "db.\u{0}")
            .context(&context)
            .success();
        assert_eq!(event.resource, "x\u{FFFD}y");
        assert_eq!(event.consumer_id, "a\u{FFFD}b");
        assert_eq!(event.config_path, "db.\u{FFFD}");
        assert_eq!(
            event.context.get("k\u{FFFD}").map(String::as_str),
            Some("line\u{FFFD}break")
        );
    }

    #[test]
    fn resolve_stamps_are_written_once_per_interval() {
        let waiter = |uid: Option<&str>| Waiter {
            resolved_uid: uid.map(str::to_owned),
            done: oneshot::channel().0,
        };
        let batch = [
            waiter(Some("b")),
            waiter(Some("a")),
            waiter(Some("b")),
            waiter(None),
        ];
        let mut stamps = ResolveStamps::default();
        let t0 = 1_000_000_000;
        assert_eq!(stamps.due(&batch, t0), ["a", "b"]);
        stamps.written(stamps.due(&batch, t0), t0);
        // Within the interval nothing is due; a new secret is.
        let later = t0 + RESOLVE_STAMP_INTERVAL_MICROS - 1;
        assert!(stamps.due(&batch, later).is_empty());
        assert_eq!(stamps.due([&waiter(Some("c"))], later), ["c"]);
        // Once the interval has passed, the stamps are due again.
        let due = stamps.due(&batch, t0 + RESOLVE_STAMP_INTERVAL_MICROS);
        assert_eq!(due, ["a", "b"]);
    }

    /// A flush commits what was queued without waiting, and does not wait
    /// for the batching delay to pass.
    #[tokio::test]
    async fn flush_commits_queued_events_at_once() {
        let (store, _dir) = coffer_store::testing::sqlite_store().await;
        let options = AuditWriterOptions {
            max_delay: Duration::from_secs(30),
            ..AuditWriterOptions::default()
        };
        let (writer, _task) = AuditWriter::spawn(store.clone(), options);
        let tenant = TenantId::parse("acme", "tenant").unwrap();
        writer.enqueue(denial(&tenant));
        writer.enqueue(denial(&tenant));
        tokio::time::timeout(Duration::from_secs(5), writer.flush())
            .await
            .expect("flush must not wait for the 30 s batching delay");
        let head = store.audit_head(&tenant).await.unwrap().unwrap();
        assert_eq!(head.seq, 2);
        // A flush with nothing queued answers at once too.
        tokio::time::timeout(Duration::from_secs(5), writer.flush())
            .await
            .unwrap();
    }
}
