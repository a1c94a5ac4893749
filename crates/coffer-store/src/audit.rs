//! The audit trail: appending chained events and reading them back
//! (filtered pages, the chain head).
//!
//! Two ways in, one chain per tenant:
//! - [`WriteTx::append_audit`], inside a mutation's own transaction: it
//!   locks the tenant's row in `audit_heads` (an upsert that creates the
//!   genesis row for a new tenant and returns the head; on PostgreSQL the
//!   upsert holds the row lock, SQLite's single writer serializes anyway),
//!   chains the events onto it and moves the head. An event is durable
//!   exactly when its mutation is.
//! - [`Store::append_audit_batch`], the resolve path's group commit (the
//!   server's audit writer). The writer remembers each tenant's head as it
//!   last committed it and chains the next batch from it, so it needs no
//!   lock read first: the head moves only if it still is what the writer
//!   remembers (`UPDATE … WHERE last_seq = $old AND last_hash = $old`), and
//!   the events are stored only for tenants whose head moved. On PostgreSQL
//!   that is one statement outside any explicit transaction (one round trip
//!   and one commit per batch); a head that another appender moved (a
//!   mutation, another replica) is read again and the batch re-chained.
//!   SQLite runs the batch on the audit writer's own connection as one
//!   transaction in one trip to its worker thread, with the same
//!   conditional head update (see [`crate::audit_sqlite`]).
//!
//! Either way seqs stay gapless per tenant under any mix of appenders: an
//! event row is only written by whoever moved the head over its seq, in the
//! same atomic statement or transaction. Mutations' and PostgreSQL's event
//! rows go in with one constant-text INSERT whose single parameter is the
//! rows as a JSON array (`jsonb_each` on SQLite, `jsonb_array_elements` on
//! PostgreSQL), so the statement is prepared once per connection whatever
//! the batch size. On PostgreSQL a batch is cut into statements of at most
//! [`PG_STATEMENT_BYTES`] (see there why), each chained from the head the
//! one before it leaves, all in one transaction (one commit per batch).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;

use coffer_core::audit::{ChainHead, event_hash};
use coffer_core::record::{AuditEventRecord, AuditOutcome, NewAuditEvent, UnixMicros};
use coffer_core::{Error, Result, TenantId};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, Order, QueryFilter, QueryOrder,
    QuerySelect, RuntimeErr, Statement, TransactionTrait, Value,
};

use crate::conn::{Backend, Store};
use crate::entity::{audit_event, audit_head};
use crate::error::{corrupt, db_err};
use crate::prefix::starts_with;
use crate::secrets::to_u64;
use crate::tx::WriteTx;

const TABLE: &str = "audit_events";

/// Which events [`Store::list_audit_events`] returns; `Default` is all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// A resource name exactly, or every resource under a prefix when it ends
    /// with `/*` (`tenants/acme/secrets/*`). Compared literally.
    pub resource: Option<String>,
    /// (kind, id).
    pub consumer: Option<(String, String)>,
    pub action: Option<String>,
    pub outcome: Option<AuditOutcome>,
    /// Inclusive.
    pub start_time: Option<UnixMicros>,
    /// Exclusive.
    pub end_time: Option<UnixMicros>,
}

impl Store {
    /// One page of a tenant's events in seq order, after `after_seq`.
    #[tracing::instrument(name = "db.list_audit_events", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "list_audit_events", otel.kind = "client"
    ))]
    pub async fn list_audit_events(
        &self,
        tenant: &TenantId,
        filter: &AuditFilter,
        after_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEventRecord>> {
        let mut query = audit_event::Entity::find()
            .filter(audit_event::Column::Tenant.eq(tenant.as_str()))
            .order_by(audit_event::Column::Seq, Order::Asc)
            .limit(to_u64(limit));
        if let Some(after) = after_seq {
            query = query.filter(audit_event::Column::Seq.gt(after));
        }
        if let Some(resource) = &filter.resource {
            query = match resource.strip_suffix('*').filter(|p| p.ends_with('/')) {
                Some(prefix) => query.filter(starts_with(
                    (audit_event::Entity, audit_event::Column::Resource),
                    prefix,
                )),
                None => query.filter(audit_event::Column::Resource.eq(resource.as_str())),
            };
        }
        if let Some((kind, id)) = &filter.consumer {
            query = query
                .filter(audit_event::Column::ConsumerKind.eq(kind.as_str()))
                .filter(audit_event::Column::ConsumerId.eq(id.as_str()));
        }
        if let Some(action) = &filter.action {
            query = query.filter(audit_event::Column::Action.eq(action.as_str()));
        }
        if let Some(outcome) = filter.outcome {
            query = query.filter(audit_event::Column::Outcome.eq(outcome.as_str()));
        }
        if let Some(start) = filter.start_time {
            query = query.filter(audit_event::Column::Time.gte(start));
        }
        if let Some(end) = filter.end_time {
            query = query.filter(audit_event::Column::Time.lt(end));
        }
        let rows = query.all(&self.read).await.map_err(db_err)?;
        rows.into_iter().map(to_record).collect()
    }

    /// The head of a tenant's chain; `None` before its first event.
    #[tracing::instrument(name = "db.audit_head", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "audit_head", otel.kind = "client"
    ))]
    pub async fn audit_head(&self, tenant: &TenantId) -> Result<Option<ChainHead>> {
        let row = audit_head::Entity::find_by_id(tenant.as_str().to_owned())
            .one(&self.read)
            .await
            .map_err(db_err)?;
        Ok(row.map(|row| ChainHead {
            seq: row.last_seq,
            hash: row.last_hash,
        }))
    }
}

/// The audit action of a resolve: a read, not a change.
const RESOLVE_ACTION: &str = "secret.resolve";

/// Tenants whose heads an audit writer remembers at most; past that the map
/// starts over (a forgotten head costs one read).
const MAX_REMEMBERED_HEADS: usize = 100_000;

/// Optimistic rounds per batch on PostgreSQL. A head that another appender
/// moved is read again and the batch re-chained; one that keeps moving (a
/// busy tenant written by several replicas) is locked instead of chased.
const OPTIMISTIC_ROUNDS: usize = 3;

/// Bytes of event rows per statement on PostgreSQL. sqlx 0.9 does not set
/// TCP_NODELAY on its PostgreSQL sockets, and a message larger than the
/// socket's initial 16 KiB send buffer leaves with its tail held back by
/// Nagle's algorithm until the server's delayed ACK, 40 ms later (measured:
/// a 16 000-byte statement took 0.4 ms, a 24 000-byte one 43 ms). So a
/// big batch goes out as several statements, each under this size.
const PG_STATEMENT_BYTES: usize = 12 * 1024;

/// Event rows of one JSON parameter (see [`row_json`]) into `audit_events`,
/// on SQLite. `jsonb_each` hands each row over parsed (`json_each` would
/// render it back to text for every `->>` to parse again).
const INSERT_EVENTS_SQLITE: &str = "INSERT INTO audit_events (tenant, seq, time, principal, \
    action, resource, version, consumer_kind, consumer_id, config_path, context, outcome, \
    reason, request_id, prev_hash, hash) \
    SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
    value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, \
    value ->> 12, value ->> 13, value ->> 14, value ->> 15 FROM jsonb_each(?1)";

/// The same on PostgreSQL (`jsonb`: parsed once, then each `->>` is a
/// lookup, not a scan of the text).
const INSERT_EVENTS_PG: &str = "INSERT INTO audit_events (tenant, seq, \"time\", principal, \
    action, resource, version, consumer_kind, consumer_id, config_path, context, outcome, \
    reason, request_id, prev_hash, hash) \
    SELECT e->>0, (e->>1)::bigint, (e->>2)::bigint, e->>3, e->>4, e->>5, (e->>6)::bigint, \
    e->>7, e->>8, e->>9, e->>10, e->>11, e->>12, e->>13, e->>14, e->>15 \
    FROM jsonb_array_elements($1::jsonb) AS e";

/// The writer's batch on PostgreSQL, in one atomic statement: moves each
/// tenant's head (`$1`: tenant, old and new seq and hash) only where it
/// still is the old one, stores the events (`$2`, as in [`INSERT_EVENTS_PG`])
/// of exactly those tenants, and names them. A head row that a concurrent
/// transaction holds makes the UPDATE wait and re-check it (READ COMMITTED),
/// so a head moved meanwhile is left alone, not overwritten. The tenants
/// are also given as an array (`= ANY (ARRAY(…))`): the planner then reads
/// `audit_heads` by its primary key; joined with the function scan alone
/// (estimated at 100 rows) it scanned the whole table.
const APPEND_IF_UNMOVED_PG: &str = "WITH moved AS ( \
    UPDATE audit_heads AS h SET last_seq = m.new_seq, last_hash = m.new_hash \
    FROM json_to_recordset($1::json) AS m(tenant text, old_seq bigint, old_hash text, \
    new_seq bigint, new_hash text) \
    WHERE h.tenant = ANY (ARRAY(SELECT json_array_elements($1::json) ->> 'tenant')) \
    AND h.tenant = m.tenant AND h.last_seq = m.old_seq AND h.last_hash = m.old_hash \
    RETURNING h.tenant), \
    stored AS ( \
    INSERT INTO audit_events (tenant, seq, \"time\", principal, action, resource, version, \
    consumer_kind, consumer_id, config_path, context, outcome, reason, request_id, prev_hash, \
    hash) \
    SELECT e->>0, (e->>1)::bigint, (e->>2)::bigint, e->>3, e->>4, e->>5, (e->>6)::bigint, \
    e->>7, e->>8, e->>9, e->>10, e->>11, e->>12, e->>13, e->>14, e->>15 \
    FROM jsonb_array_elements($2::jsonb) AS e \
    WHERE e->>0 IN (SELECT tenant FROM moved)) \
    SELECT tenant FROM moved";

/// The heads of the tenants in `$1` (a JSON array of strings), on
/// PostgreSQL (by primary key, as above).
const READ_HEADS_PG: &str = "SELECT tenant, last_seq, last_hash FROM audit_heads \
    WHERE tenant = ANY (ARRAY(SELECT json_array_elements_text($1::json)))";

/// The tenant's head, locked until the transaction ends (PostgreSQL's
/// upsert holds the row lock; SQLite's one writer holds the database); a new
/// tenant gets its genesis row first. Two first appenders race on the
/// INSERT: the loser waits for the winner to commit and then takes the
/// winner's committed row.
const LOCK_HEAD_SQLITE: &str = "INSERT INTO audit_heads (tenant, last_seq, last_hash) \
    VALUES (?1, ?2, ?3) ON CONFLICT (tenant) DO UPDATE SET tenant = excluded.tenant \
    RETURNING last_seq, last_hash";
const LOCK_HEAD_PG: &str = "INSERT INTO audit_heads (tenant, last_seq, last_hash) \
    VALUES ($1, $2, $3) ON CONFLICT (tenant) DO UPDATE SET tenant = excluded.tenant \
    RETURNING last_seq, last_hash";

/// Moves a head that this transaction holds.
const SET_HEAD_SQLITE: &str =
    "UPDATE audit_heads SET last_seq = ?1, last_hash = ?2 WHERE tenant = ?3";
const SET_HEAD_PG: &str = "UPDATE audit_heads SET last_seq = $1, last_hash = $2 WHERE tenant = $3";

/// Moves a head only if it still is the one the caller remembers.
const MOVE_HEAD_SQLITE: &str = "UPDATE audit_heads SET last_seq = ?1, last_hash = ?2 \
    WHERE tenant = ?3 AND last_seq = ?4 AND last_hash = ?5";
const MOVE_HEAD_PG: &str = "UPDATE audit_heads SET last_seq = $1, last_hash = $2 \
    WHERE tenant = $3 AND last_seq = $4 AND last_hash = $5";

/// Events grouped by tenant, each with its index in the caller's input.
pub(crate) type ByTenant = BTreeMap<TenantId, Vec<(usize, NewAuditEvent)>>;

fn by_tenant(events: Vec<NewAuditEvent>) -> ByTenant {
    let mut grouped = ByTenant::new();
    for (index, event) in events.into_iter().enumerate() {
        // Most batches hold one tenant: its id is cloned once, not per event.
        match grouped.get_mut(&event.tenant) {
            Some(events) => events.push((index, event)),
            None => {
                grouped.insert(event.tenant.clone(), vec![(index, event)]);
            }
        }
    }
    grouped
}

/// Where one event lands in its tenant's chain.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) seq: i64,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

/// Chains one tenant's events (in order) onto `head` exactly as
/// [`ChainHead::append`] does: their links, and the head after them.
pub(crate) fn chain(head: &ChainHead, events: &[(usize, NewAuditEvent)]) -> (Vec<Link>, ChainHead) {
    let mut seq = head.seq;
    let mut prev = head.hash.clone();
    let links = events
        .iter()
        .map(|(_, event)| {
            seq += 1;
            let hash = event_hash(&prev, seq, event);
            Link {
                seq,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            }
        })
        .collect();
    (links, ChainHead { seq, hash: prev })
}

pub(crate) fn records(
    events: Vec<(usize, NewAuditEvent)>,
    links: Vec<Link>,
) -> impl Iterator<Item = (usize, AuditEventRecord)> {
    events.into_iter().zip(links).map(|((index, event), link)| {
        (
            index,
            AuditEventRecord {
                seq: link.seq,
                event,
                prev_hash: link.prev_hash,
                hash: link.hash,
            },
        )
    })
}

/// One event row as a JSON array in column order (see
/// [`INSERT_EVENTS_PG`]). Strings go through serde_json, so they come back
/// byte for byte (the hashes cover them).
fn row_json(event: &NewAuditEvent, link: &Link) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    // A BTreeMap serializes with its keys sorted.
    let context = serde_json::to_string(&event.context).map_err(Error::internal)?;
    out.push(b'[');
    serde_json::to_writer(&mut out, event.tenant.as_str()).map_err(Error::internal)?;
    write!(out, ",{},{}", link.seq, event.time).map_err(Error::internal)?;
    for value in [&event.principal, &event.action, &event.resource] {
        out.push(b',');
        serde_json::to_writer(&mut out, value).map_err(Error::internal)?;
    }
    write!(out, ",{}", event.version).map_err(Error::internal)?;
    for value in [
        event.consumer_kind.as_str(),
        &event.consumer_id,
        &event.config_path,
        &context,
        event.outcome.as_str(),
        &event.reason,
        &event.request_id,
        &link.prev_hash,
        &link.hash,
    ] {
        out.push(b',');
        serde_json::to_writer(&mut out, value).map_err(Error::internal)?;
    }
    out.push(b']');
    Ok(out)
}

/// Rows gathered into JSON arrays of at most `budget` bytes each (a row
/// larger than that goes alone).
#[derive(Debug)]
struct JsonRows {
    budget: usize,
    done: Vec<String>,
    current: Vec<u8>,
}

impl JsonRows {
    fn new(budget: usize) -> Self {
        JsonRows {
            budget,
            done: Vec::new(),
            current: Vec::new(),
        }
    }

    /// Whether `row` fits in the array being built.
    fn fits(&self, row: &[u8]) -> bool {
        self.current.is_empty() || self.current.len() + row.len() + 2 <= self.budget
    }

    fn push(&mut self, row: &[u8]) {
        self.current
            .push(if self.current.is_empty() { b'[' } else { b',' });
        self.current.extend_from_slice(row);
    }

    /// Closes the array being built, if it has a row.
    fn close(&mut self) -> Result<()> {
        if !self.current.is_empty() {
            let mut array = std::mem::take(&mut self.current);
            array.push(b']');
            self.done
                .push(String::from_utf8(array).map_err(Error::internal)?);
        }
        Ok(())
    }
}

/// One tenant's events in one optimistic PostgreSQL statement: `count`
/// events from its `start`-th pending one, moving its head `from` → `to`.
#[derive(Debug)]
struct Piece {
    tenant: TenantId,
    start: usize,
    count: usize,
    from: ChainHead,
    to: ChainHead,
}

fn heads_json(pieces: &[Piece]) -> Result<String> {
    let mut out = Vec::with_capacity(256 * pieces.len());
    out.push(b'[');
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"tenant\":");
        serde_json::to_writer(&mut out, piece.tenant.as_str()).map_err(Error::internal)?;
        out.extend_from_slice(b",\"old_hash\":");
        serde_json::to_writer(&mut out, &piece.from.hash).map_err(Error::internal)?;
        out.extend_from_slice(b",\"new_hash\":");
        serde_json::to_writer(&mut out, &piece.to.hash).map_err(Error::internal)?;
        write!(
            out,
            ",\"old_seq\":{},\"new_seq\":{}}}",
            piece.from.seq, piece.to.seq
        )
        .map_err(Error::internal)?;
    }
    out.push(b']');
    String::from_utf8(out).map_err(Error::internal)
}

/// Runs [`APPEND_IF_UNMOVED_PG`] on `conn` (the pool, or the transaction of
/// a batch cut into several statements); the tenants whose heads moved.
async fn append_if_unmoved(
    conn: &impl ConnectionTrait,
    heads: String,
    rows: String,
) -> std::result::Result<BTreeSet<String>, DbErr> {
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            APPEND_IF_UNMOVED_PG,
            [Value::from(heads), Value::from(rows)],
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect()
}

/// A PostgreSQL deadlock or serialization failure: the statement did
/// nothing and may simply be tried again another way.
fn is_lock_conflict(err: &DbErr) -> bool {
    let code = match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned()),
        _ => None,
    };
    matches!(code.as_deref(), Some("40P01" | "40001"))
}

impl Store {
    /// The audit writer's group commit: stores a batch of events that change
    /// nothing (resolves, refusals: no commit notice is sent for them) and
    /// answers, per input event in input order, its stored record or why it
    /// was not stored. When this returns, every `Ok` event is durable.
    ///
    /// `heads` is the caller's memory of the tenants' chain heads as this
    /// method last left them; it reads and updates it. Each tenant's events
    /// are chained from the remembered head and stored only if the head in
    /// the database still is that one (see the module docs), so a stale or
    /// missing entry costs a read and a retry, never a broken chain. One
    /// map per writer task; several writers (replicas, [`Store`] handles)
    /// may append for one tenant at once, and mutations' own appends
    /// ([`WriteTx::append_audit`]) interleave with it.
    ///
    /// On PostgreSQL a tenant's events are stored atomically, but tenants of
    /// one batch may fare differently (one tenant's head row locked past
    /// the statement timeout fails only its events). On SQLite the batch is
    /// one transaction, all or nothing, except that tenants whose
    /// remembered heads were stale are stored by a second one.
    #[tracing::instrument(name = "db.append_audit_batch", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "append_audit_batch", otel.kind = "client"
    ))]
    pub async fn append_audit_batch(
        &self,
        events: Vec<NewAuditEvent>,
        heads: &mut HashMap<TenantId, ChainHead>,
    ) -> Vec<Result<AuditEventRecord>> {
        if heads.len() > MAX_REMEMBERED_HEADS {
            heads.clear();
        }
        let mut out: Vec<Option<Result<AuditEventRecord>>> =
            std::iter::repeat_with(|| None).take(events.len()).collect();
        let mut pending = by_tenant(events);
        let mut failure = match &self.sqlite_writer {
            Some(writer) => self
                .append_batch_sqlite(writer, &mut pending, heads, &mut out)
                .await
                .err(),
            None => self
                .append_optimistic(&mut pending, heads, &mut out)
                .await
                .err(),
        };
        if failure.is_none() && !pending.is_empty() {
            // PostgreSQL: new tenants (no head row yet) and heads that kept
            // moving, in one transaction that locks them.
            let tenants: Vec<TenantId> = pending.keys().cloned().collect();
            let stored: Result<Vec<(usize, AuditEventRecord)>> = async {
                let tx = self.begin().await?;
                let stored = tx
                    .append_grouped(std::mem::take(&mut pending), heads)
                    .await?;
                tx.commit().await?;
                Ok(stored)
            }
            .await;
            match stored {
                Ok(stored) => {
                    // Each tenant's records come in seq order: its last one
                    // is its new head.
                    let mut last_of_tenant = stored.iter().peekable();
                    while let Some((_, record)) = last_of_tenant.next() {
                        let tenant = &record.event.tenant;
                        if last_of_tenant
                            .peek()
                            .is_none_or(|(_, next)| next.event.tenant != *tenant)
                        {
                            heads.insert(
                                tenant.clone(),
                                ChainHead {
                                    seq: record.seq,
                                    hash: record.hash.clone(),
                                },
                            );
                        }
                    }
                    for (index, record) in stored {
                        if let Some(slot) = out.get_mut(index) {
                            *slot = Some(Ok(record));
                        }
                    }
                }
                Err(err) => {
                    // Whatever the database holds now, it is read afresh.
                    for tenant in &tenants {
                        heads.remove(tenant);
                    }
                    failure = Some(err);
                }
            }
        }
        out.into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| {
                    Err(failure.clone().unwrap_or_else(|| {
                        Error::internal("an audit event was neither stored nor failed")
                    }))
                })
            })
            .collect()
    }

    /// PostgreSQL's optimistic rounds (see [`APPEND_IF_UNMOVED_PG`]): stores
    /// what it can into `out` and takes it out of `pending`; what is left
    /// (new tenants, heads that kept moving) takes the locking path. A
    /// batch larger than [`PG_STATEMENT_BYTES`] goes out as several
    /// statements in one transaction, one after the other, each chained
    /// from the head the one before leaves: one whose head does not match
    /// stores nothing for that tenant, so what is stored of a tenant is
    /// always a prefix of its events, and a failed statement rolls the
    /// whole batch back.
    async fn append_optimistic(
        &self,
        pending: &mut ByTenant,
        heads: &mut HashMap<TenantId, ChainHead>,
        out: &mut [Option<Result<AuditEventRecord>>],
    ) -> Result<()> {
        for _ in 0..OPTIMISTIC_ROUNDS {
            let unknown: Vec<&TenantId> =
                pending.keys().filter(|t| !heads.contains_key(*t)).collect();
            if !unknown.is_empty() {
                let found = self.read_heads(&unknown).await?;
                heads.extend(found);
            }
            // Chain every tenant with a known head and cut the rows into
            // statements of at most PG_STATEMENT_BYTES.
            let mut links: BTreeMap<TenantId, Vec<Link>> = BTreeMap::new();
            let mut statements: Vec<Vec<Piece>> = Vec::new();
            let mut pieces: Vec<Piece> = Vec::new();
            let mut rows = JsonRows::new(PG_STATEMENT_BYTES);
            for (tenant, events) in pending.iter() {
                let Some(head) = heads.get(tenant) else {
                    // No head row yet: the locking path creates it.
                    continue;
                };
                let (chained, _) = chain(head, events);
                let mut piece = Piece {
                    tenant: tenant.clone(),
                    start: 0,
                    count: 0,
                    from: head.clone(),
                    to: head.clone(),
                };
                for ((_, event), link) in events.iter().zip(&chained) {
                    let row = row_json(event, link)?;
                    if !rows.fits(&row) {
                        rows.close()?;
                        let next = Piece {
                            tenant: tenant.clone(),
                            start: piece.start + piece.count,
                            count: 0,
                            from: piece.to.clone(),
                            to: piece.to.clone(),
                        };
                        if piece.count > 0 {
                            pieces.push(piece);
                        }
                        statements.push(std::mem::take(&mut pieces));
                        piece = next;
                    }
                    rows.push(&row);
                    piece.count += 1;
                    piece.to = ChainHead {
                        seq: link.seq,
                        hash: link.hash.clone(),
                    };
                }
                if piece.count > 0 {
                    pieces.push(piece);
                }
                links.insert(tenant.clone(), chained);
            }
            rows.close()?;
            if !pieces.is_empty() {
                statements.push(pieces);
            }
            if statements.is_empty() {
                return Ok(());
            }

            let moves = statements
                .iter()
                .map(|statement| heads_json(statement))
                .collect::<Result<Vec<String>>>()?;

            // Run them in order. Stored events of a tenant form a prefix.
            // Several statements share one transaction: one commit (one WAL
            // flush) for the batch instead of one per statement, and the
            // heads moved by the first stay locked for the rest.
            let mut stored: BTreeMap<TenantId, usize> = BTreeMap::new();
            let mut conflict = false;
            let mut failure = None;
            let tx = if statements.len() > 1 {
                Some(self.audit.begin().await.map_err(db_err)?)
            } else {
                None
            };
            for ((statement, moves), rows) in statements.iter().zip(moves).zip(rows.done) {
                let moved = match &tx {
                    Some(tx) => append_if_unmoved(tx, moves, rows).await,
                    None => append_if_unmoved(&self.audit, moves, rows).await,
                };
                let moved = match moved {
                    Ok(moved) => moved,
                    Err(err) => {
                        // The statement did nothing, or (a connection lost
                        // at the commit) maybe everything: the heads of
                        // whatever was not confirmed are read again.
                        conflict = is_lock_conflict(&err);
                        if !conflict {
                            failure = Some(db_err(err));
                        }
                        break;
                    }
                };
                for piece in statement {
                    if moved.contains(piece.tenant.as_str()) {
                        *stored.entry(piece.tenant.clone()).or_default() += piece.count;
                        heads.insert(piece.tenant.clone(), piece.to.clone());
                    } else {
                        // Another appender moved this head first.
                        heads.remove(&piece.tenant);
                    }
                }
            }
            if let Some(tx) = tx {
                let committed = if conflict || failure.is_some() {
                    // Dropped: rolled back, nothing of the batch is stored.
                    drop(tx);
                    false
                } else {
                    match tx.commit().await {
                        Ok(()) => true,
                        Err(err) => {
                            failure = Some(db_err(err));
                            false
                        }
                    }
                };
                if !committed {
                    // Not stored (or, a connection lost at the commit,
                    // maybe stored): every head of the batch is read again
                    // below, and its events are reported failed.
                    stored.clear();
                }
            }
            for (tenant, count) in stored {
                let (Some(events), Some(chained)) =
                    (pending.get_mut(&tenant), links.remove(&tenant))
                else {
                    continue;
                };
                let done: Vec<(usize, NewAuditEvent)> = events.drain(..count).collect();
                for (index, record) in records(done, chained) {
                    if let Some(slot) = out.get_mut(index) {
                        *slot = Some(Ok(record));
                    }
                }
                if events.is_empty() {
                    pending.remove(&tenant);
                } else {
                    // A later statement found the head moved: the rest
                    // is chained from a fresh read.
                    heads.remove(&tenant);
                }
            }
            if conflict || failure.is_some() {
                for tenant in pending.keys() {
                    heads.remove(tenant);
                }
            }
            if let Some(err) = failure {
                return Err(err);
            }
            if conflict || pending.is_empty() {
                // A deadlock between two multi-tenant statements: the
                // locking path takes the heads in tenant order.
                return Ok(());
            }
        }
        Ok(())
    }

    /// The current heads of `tenants` that have one (PostgreSQL).
    async fn read_heads(&self, tenants: &[&TenantId]) -> Result<Vec<(TenantId, ChainHead)>> {
        let names: Vec<&str> = tenants.iter().map(|t| t.as_str()).collect();
        let names = serde_json::to_string(&names).map_err(Error::internal)?;
        let rows = self
            .audit
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                READ_HEADS_PG,
                [Value::from(names)],
            ))
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let tenant: String = row.try_get_by_index(0).map_err(db_err)?;
                let tenant = TenantId::parse(&tenant, "tenant")
                    .map_err(|_| corrupt("audit_heads", "tenant"))?;
                Ok((
                    tenant,
                    ChainHead {
                        seq: row.try_get_by_index(1).map_err(db_err)?,
                        hash: row.try_get_by_index(2).map_err(db_err)?,
                    },
                ))
            })
            .collect()
    }
}

impl WriteTx {
    /// Chains and stores events, returning them in input order with their seq
    /// and hashes. Tenants' heads are locked in tenant order (not first-seen
    /// order), so two transactions appending for the same tenants cannot
    /// deadlock; each head stays locked until this transaction ends.
    #[tracing::instrument(name = "db.append_audit", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "append_audit", otel.kind = "client"
    ))]
    pub async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<Vec<AuditEventRecord>> {
        for event in &events {
            // Resolves and refusals are audited too but change nothing:
            // only successful mutations wake change watchers.
            if event.outcome == AuditOutcome::Success && event.action != RESOLVE_ACTION {
                self.note_change(&event.tenant);
            }
        }
        let mut chained = self
            .append_grouped(by_tenant(events), &HashMap::new())
            .await?;
        chained.sort_unstable_by_key(|(index, _)| *index);
        Ok(chained.into_iter().map(|(_, record)| record).collect())
    }

    /// Chains and stores grouped events, tenant by tenant in tenant order.
    /// A tenant whose head is in `known` is chained from it and its head
    /// moved only if it still is that one (no lock read first); otherwise,
    /// or when it moved meanwhile, the head is locked and read. Answers the
    /// records with their input indexes, each tenant's in seq order.
    async fn append_grouped(
        &self,
        grouped: ByTenant,
        known: &HashMap<TenantId, ChainHead>,
    ) -> Result<Vec<(usize, AuditEventRecord)>> {
        let total = grouped.values().map(Vec::len).sum();
        let mut planned = Vec::with_capacity(grouped.len());
        for (tenant, events) in grouped {
            let mut links = None;
            if let Some(head) = known.get(&tenant) {
                let (chained, to) = chain(head, &events);
                if self.set_head(&tenant, Some(head), &to).await? {
                    links = Some(chained);
                }
            }
            let links = match links {
                Some(links) => links,
                None => {
                    let head = self.lock_head(&tenant).await?;
                    let (chained, to) = chain(&head, &events);
                    if !self.set_head(&tenant, None, &to).await? {
                        return Err(
                            self.failed(Error::internal("audit head row missing after insert"))
                        );
                    }
                    chained
                }
            };
            planned.push((events, links));
        }
        // SQLite takes any size at once; PostgreSQL in pieces (see
        // PG_STATEMENT_BYTES).
        let (sql, budget) = match self.backend {
            Backend::Sqlite => (INSERT_EVENTS_SQLITE, usize::MAX),
            Backend::Postgres => (INSERT_EVENTS_PG, PG_STATEMENT_BYTES),
        };
        let mut rows = JsonRows::new(budget);
        for (events, links) in &planned {
            for ((_, event), link) in events.iter().zip(links) {
                let row = row_json(event, link).map_err(|e| self.failed(e))?;
                if !rows.fits(&row) {
                    rows.close().map_err(|e| self.failed(e))?;
                }
                rows.push(&row);
            }
        }
        rows.close().map_err(|e| self.failed(e))?;
        for array in rows.done {
            self.txn
                .execute_raw(Statement::from_sql_and_values(
                    self.db_backend(),
                    sql,
                    [Value::from(array)],
                ))
                .await
                .map_err(|e| self.failed(db_err(e)))?;
        }
        let mut chained = Vec::with_capacity(total);
        for (events, links) in planned {
            chained.extend(records(events, links));
        }
        Ok(chained)
    }

    /// Moves the tenant's head to `to`: only if it is `expected` (then
    /// `false` says another appender moved it first), or unconditionally
    /// when the caller holds it (then `false` says the row is missing).
    async fn set_head(
        &self,
        tenant: &TenantId,
        expected: Option<&ChainHead>,
        to: &ChainHead,
    ) -> Result<bool> {
        let mut values = vec![
            Value::from(to.seq),
            Value::from(to.hash.clone()),
            Value::from(tenant.as_str()),
        ];
        let sql = match (expected, self.backend) {
            (Some(from), backend) => {
                values.push(Value::from(from.seq));
                values.push(Value::from(from.hash.clone()));
                match backend {
                    Backend::Sqlite => MOVE_HEAD_SQLITE,
                    Backend::Postgres => MOVE_HEAD_PG,
                }
            }
            (None, Backend::Sqlite) => SET_HEAD_SQLITE,
            (None, Backend::Postgres) => SET_HEAD_PG,
        };
        let done = self
            .txn
            .execute_raw(Statement::from_sql_and_values(
                self.db_backend(),
                sql,
                values,
            ))
            .await
            .map_err(|e| self.failed(db_err(e)))?;
        Ok(done.rows_affected() == 1)
    }

    /// The tenant's chain head, locked until this transaction ends (see
    /// [`LOCK_HEAD_PG`]).
    async fn lock_head(&self, tenant: &TenantId) -> Result<ChainHead> {
        let genesis = ChainHead::genesis();
        let sql = match self.backend {
            Backend::Sqlite => LOCK_HEAD_SQLITE,
            Backend::Postgres => LOCK_HEAD_PG,
        };
        let row = self
            .txn
            .query_one_raw(Statement::from_sql_and_values(
                self.db_backend(),
                sql,
                [
                    Value::from(tenant.as_str()),
                    Value::from(genesis.seq),
                    Value::from(genesis.hash),
                ],
            ))
            .await
            .map_err(|e| self.failed(db_err(e)))?
            .ok_or_else(|| self.failed(Error::internal("audit head upsert returned no row")))?;
        Ok(ChainHead {
            seq: row
                .try_get_by_index(0)
                .map_err(|e| self.failed(db_err(e)))?,
            hash: row
                .try_get_by_index(1)
                .map_err(|e| self.failed(db_err(e)))?,
        })
    }

    fn db_backend(&self) -> DbBackend {
        match self.backend {
            Backend::Sqlite => DbBackend::Sqlite,
            Backend::Postgres => DbBackend::Postgres,
        }
    }
}

pub(crate) fn to_record(row: audit_event::Model) -> Result<AuditEventRecord> {
    Ok(AuditEventRecord {
        seq: row.seq,
        event: NewAuditEvent {
            tenant: TenantId::parse(&row.tenant, "tenant").map_err(|_| corrupt(TABLE, "tenant"))?,
            time: row.time,
            principal: row.principal,
            action: row.action,
            resource: row.resource,
            version: row.version,
            consumer_kind: row.consumer_kind,
            consumer_id: row.consumer_id,
            config_path: row.config_path,
            context: serde_json::from_str(&row.context).map_err(|_| corrupt(TABLE, "context"))?,
            outcome: AuditOutcome::parse(&row.outcome).ok_or_else(|| corrupt(TABLE, "outcome"))?,
            reason: row.reason,
            request_id: row.request_id,
        },
        prev_hash: row.prev_hash,
        hash: row.hash,
    })
}
