//! An open change stream: reads the tenant's change events after its
//! cursor, turns each into a [`ChangeEvent`] (reading the secret's current
//! state where the audit event does not say enough), applies the stream's
//! filter and hands out messages, waiting between polls for the poll
//! interval, a wake-up from this process, or shutdown.

use std::collections::{BTreeSet, HashMap, HashSet};

use coffer_core::record::{AuditEventRecord, SecretState};
use coffer_core::{Result, SecretKey, SecretName, TenantId, page};
use coffer_store::CommitNotice;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::{
    CHANGE_ACTIONS, ChangeBatch, ChangeEvent, ChangeKind, Filter, READ_BATCH, decode_token,
    shutting_down,
};
use crate::app::Coffer;
use crate::app::bindings::parse_binding_name;

/// An open WatchSecrets stream. Dropping it is how it ends when the client
/// goes away.
#[derive(Debug)]
pub struct ChangeStream {
    coffer: Coffer,
    tenant: TenantId,
    filter: Filter,
    scope: String,
    /// The last seq looked at.
    cursor: i64,
    /// The cursor when the last message was handed out.
    sent: i64,
    last_message: Instant,
    /// Whether the first (empty) message has been handed out.
    started: bool,
    /// Consumer streams: the secrets bound to the consumer, refreshed at
    /// each of its binding changes.
    bound: HashSet<SecretKey>,
    /// Secrets this stream last showed as disabled, to tell enabling one
    /// from another update.
    disabled: HashSet<SecretKey>,
    wake: broadcast::Receiver<CommitNotice>,
    closed: watch::Receiver<bool>,
}

impl ChangeStream {
    /// A stream of `tenant` at the chain's head, or right after the event
    /// of `resume_token`.
    pub(super) async fn open(
        coffer: Coffer,
        tenant: TenantId,
        filter: Filter,
        resume_token: &str,
    ) -> Result<ChangeStream> {
        let scope = filter.scope(&tenant);
        let hub = &coffer.inner.watch;
        if *hub.closed.borrow() {
            return Err(shutting_down());
        }
        // Subscribed before reading the head, so no wake-up is lost between.
        let wake = coffer.store().subscribe_commits();
        let closed = hub.closed.subscribe();
        let head = coffer.head_seq(&tenant).await?;
        let cursor = match decode_token(resume_token, &scope)? {
            None => head,
            Some(seq) => {
                coffer.check_replayable(&tenant, seq, head).await?;
                seq
            }
        };
        let bound = match &filter.consumer {
            Some(consumer) => coffer.bound_secrets(&tenant, consumer).await?,
            None => HashSet::new(),
        };
        Ok(ChangeStream {
            coffer,
            tenant,
            filter,
            scope,
            cursor,
            sent: cursor,
            last_message: Instant::now(),
            started: false,
            bound,
            disabled: HashSet::new(),
            wake,
            closed,
        })
    }

    /// The next message: first an empty one that marks the start, then
    /// changes as they are committed, and now and then an empty checkpoint.
    /// An error ends the stream; UNAVAILABLE when the server shuts down.
    pub async fn next(&mut self) -> Result<ChangeBatch> {
        if !self.started {
            self.started = true;
            return Ok(self.message(Vec::new()));
        }
        let checkpoint = self.coffer.inner.watch.options.checkpoint_interval;
        loop {
            if *self.closed.borrow() {
                return Err(shutting_down());
            }
            let (events, more) = self.read().await?;
            let stale = self.cursor > self.sent && self.last_message.elapsed() >= checkpoint;
            if !events.is_empty() || stale {
                return Ok(self.message(events));
            }
            if !more {
                self.wait().await;
            }
        }
    }

    fn message(&mut self, events: Vec<ChangeEvent>) -> ChangeBatch {
        self.sent = self.cursor;
        self.last_message = Instant::now();
        ChangeBatch {
            events,
            resume_token: page::encode(&self.scope, &self.cursor.to_string()),
        }
    }

    /// Until the poll interval passes, a change of the tenant commits (here,
    /// or on another replica of a PostgreSQL store), or the server shuts down.
    async fn wait(&mut self) {
        let poll = tokio::time::sleep(self.coffer.inner.watch.options.poll_interval);
        let tenant = &self.tenant;
        let wake = &mut self.wake;
        let woken = async {
            loop {
                match wake.recv().await {
                    Ok(CommitNotice::Tenant(changed)) if &changed == tenant => return,
                    // Notices were missed (a replica's listener reconnected).
                    Ok(CommitNotice::Lost) => return,
                    Ok(CommitNotice::Tenant(_)) => {}
                    // Missed wake-ups might have been ours: look now.
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        tokio::select! {
            () = poll => {}
            () = woken => {}
            _ = self.closed.changed() => {}
        }
    }

    /// Reads the next change events, converts and filters them, and moves
    /// the cursor past everything looked at. `more` says a full batch was
    /// read, so more may be waiting.
    async fn read(&mut self) -> Result<(Vec<ChangeEvent>, bool)> {
        let store = self.coffer.store();
        // Every seq up to the head is committed (appends hold the head's lock
        // until they commit), so the query below sees all of them.
        let head = self.coffer.head_seq(&self.tenant).await?;
        if head <= self.cursor {
            return Ok((Vec::new(), false));
        }
        let records = store
            .change_events(&self.tenant, self.cursor, CHANGE_ACTIONS, READ_BATCH)
            .await?;
        let more = records.len() == READ_BATCH;
        let states = self.secret_states(&records).await?;
        let mut events = Vec::new();
        for record in &records {
            if let Some(event) = self.event(record, &states).await? {
                events.push(event);
            }
        }
        let last = records.last().map_or(self.cursor, |r| r.seq);
        self.cursor = if more { last } else { last.max(head) };
        Ok((events, more))
    }

    /// The current state and current version of the secrets whose rotations
    /// and updates are in `records`: the audit event does not say whether a
    /// rotation was staged or what an update changed, so the type is read
    /// from the secret as it is now (exact for a live stream; see the ADR).
    async fn secret_states(
        &self,
        records: &[AuditEventRecord],
    ) -> Result<HashMap<SecretKey, (SecretState, i64)>> {
        let keys: BTreeSet<SecretKey> = records
            .iter()
            .filter(|r| matches!(r.event.action.as_str(), "secret.rotate" | "secret.update"))
            .filter_map(|r| SecretName::parse(&r.event.resource, "resource").ok())
            .map(|name| name.key)
            .collect();
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<SecretKey> = keys.into_iter().collect();
        let secrets = self
            .coffer
            .store()
            .secrets_by_keys(&self.tenant, &keys)
            .await?;
        Ok(secrets
            .into_iter()
            .map(|s| (s.key, (s.state, s.current_version)))
            .collect())
    }

    /// The event for one record, if this stream shows it.
    async fn event(
        &mut self,
        record: &AuditEventRecord,
        states: &HashMap<SecretKey, (SecretState, i64)>,
    ) -> Result<Option<ChangeEvent>> {
        let audit = &record.event;
        let mut event = ChangeEvent {
            kind: ChangeKind::BindingChanged,
            secret: None,
            version: audit.version,
            binding: String::new(),
            consumer: None,
            config_path: String::new(),
            time: audit.time,
            principal: if self.filter.consumer.is_some() {
                String::new()
            } else {
                audit.principal.clone()
            },
            seq: record.seq,
            resume_token: page::encode(&self.scope, &record.seq.to_string()),
        };
        if audit.action.starts_with("binding.") {
            let consumer = (audit.consumer_kind.clone(), audit.consumer_id.clone());
            match &self.filter.consumer {
                Some(watched) if *watched == consumer => {
                    // Later events of this batch are judged by the new bindings.
                    self.bound = self.coffer.bound_secrets(&self.tenant, watched).await?;
                }
                None if self.filter.secrets.is_none() => {}
                _ => return Ok(None),
            }
            if audit.action != "binding.sync" {
                event.binding = parse_binding_name(&audit.resource, "resource")
                    .map(|_| audit.resource.clone())
                    .unwrap_or_default();
            }
            event.consumer = Some(consumer);
            event.config_path = audit.config_path.clone();
            event.version = 0;
            return Ok(Some(event));
        }
        let Ok(name) = SecretName::parse(&audit.resource, "resource") else {
            tracing::warn!(seq = record.seq, "change event names no secret; skipped");
            return Ok(None);
        };
        if !self.filter.names(&name.key)
            || (self.filter.consumer.is_some() && !self.bound.contains(&name.key))
        {
            return Ok(None);
        }
        let state = states.get(&name.key).copied();
        event.kind = match audit.action.as_str() {
            "secret.create" | "secret.link" | "secret.import" => ChangeKind::Created,
            "secret.rotate" => rotation_kind(audit.version, state.map(|(_, current)| current)),
            "secret.promote" => ChangeKind::Rotated,
            "secret.update" => {
                update_kind(&mut self.disabled, &name.key, state.map(|(state, _)| state))
            }
            "secret.delete" => ChangeKind::SecretDeleted,
            "secret.undelete" => ChangeKind::SecretUndeleted,
            "secret.purge" => ChangeKind::SecretPurged,
            "version.disable" => ChangeKind::VersionDisabled,
            "version.enable" => ChangeKind::VersionEnabled,
            "version.destroy" => ChangeKind::VersionDestroyed,
            other => {
                tracing::warn!(
                    seq = record.seq,
                    action = other,
                    "unknown change action; skipped"
                );
                return Ok(None);
            }
        };
        if matches!(
            event.kind,
            ChangeKind::SecretDeleted | ChangeKind::SecretUndeleted | ChangeKind::SecretPurged
        ) {
            // Undelete always makes a secret ACTIVE; after a delete or purge
            // an earlier DISABLED is no longer what the watcher should undo.
            self.disabled.remove(&name.key);
        }
        event.secret = Some(name);
        Ok(Some(event))
    }
}

/// A rotation to `version` made it current unless the secret's current
/// version is still older (a staged rotation). A current version past it
/// means a later rotation, which most likely was not staged either.
fn rotation_kind(version: i64, current: Option<i64>) -> ChangeKind {
    match current {
        Some(current) if current < version => ChangeKind::VersionStaged,
        _ => ChangeKind::Rotated,
    }
}

/// An UpdateSecret is a disable when the secret is DISABLED now and this
/// stream has not shown it disabled yet, an enable when it is ACTIVE now
/// and the stream last showed it disabled, and otherwise a metadata update.
fn update_kind(
    disabled: &mut HashSet<SecretKey>,
    key: &SecretKey,
    state: Option<SecretState>,
) -> ChangeKind {
    match state {
        Some(SecretState::Disabled) if disabled.insert(key.clone()) => ChangeKind::SecretDisabled,
        Some(SecretState::Active) if disabled.remove(key) => ChangeKind::SecretEnabled,
        _ => ChangeKind::SecretUpdated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> SecretKey {
        SecretKey::parse(raw, "k").unwrap()
    }

    #[test]
    fn rotations_are_staged_only_while_an_older_version_is_current() {
        assert_eq!(rotation_kind(3, Some(3)), ChangeKind::Rotated);
        assert_eq!(rotation_kind(3, Some(2)), ChangeKind::VersionStaged);
        assert_eq!(rotation_kind(3, Some(4)), ChangeKind::Rotated);
        assert_eq!(rotation_kind(3, None), ChangeKind::Rotated);
    }

    #[test]
    fn updates_tell_disable_and_enable_from_metadata_changes() {
        let mut disabled = HashSet::new();
        let k = key("db");
        let mut kind = |state| update_kind(&mut disabled, &k, Some(state));
        assert_eq!(kind(SecretState::Active), ChangeKind::SecretUpdated);
        assert_eq!(kind(SecretState::Disabled), ChangeKind::SecretDisabled);
        assert_eq!(kind(SecretState::Disabled), ChangeKind::SecretUpdated);
        assert_eq!(kind(SecretState::Active), ChangeKind::SecretEnabled);
        assert_eq!(kind(SecretState::Active), ChangeKind::SecretUpdated);
        assert_eq!(
            update_kind(&mut disabled, &k, None),
            ChangeKind::SecretUpdated
        );
    }
}
