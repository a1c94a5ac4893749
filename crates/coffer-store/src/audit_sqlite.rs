//! The audit writer's group commit on SQLite ([`Store::append_audit_batch`]).
//!
//! A batch runs on the audit writer's own connection during the store's
//! write turn (see [`crate::sqlite_writer`]), and goes to SQLite's worker
//! thread as one multi-statement query: `BEGIN IMMEDIATE`, then per tenant
//! the conditional head move (`… WHERE last_seq = old AND last_hash = old
//! RETURNING tenant`) and its event rows, then `COMMIT`. Each trip to that
//! thread cost ~200 µs under load, and the pooled path made about seven per
//! batch (docs/PERFORMANCE.md, sixth and seventh runs).
//!
//! A tenant's rows are stored only if its head now is the one this batch
//! moved it to (`WHERE EXISTS`), so a tenant whose remembered head was stale
//! (a mutation appended meanwhile, or another process) stores nothing;
//! those tenants are then chained again in a second transaction that reads
//! their heads first, under SQLite's write lock. Rows go in as bound values
//! with `INSERT OR ROLLBACK` and no SQL function: SQLite then keeps no
//! statement journal (a JSON parameter's `->>` forced one, spilled to a
//! temporary file per batch), and a constraint failure rolls the whole
//! transaction back. Row counts are padded to a power of two with NULL rows
//! (filtered out), so the statement text, which sqlx prepares once per
//! connection and text, takes few shapes.

use std::collections::HashMap;

use coffer_core::audit::ChainHead;
use coffer_core::record::{AuditEventRecord, NewAuditEvent};
use coffer_core::{Error, Result, TenantId};
use sea_orm::sqlx::sqlite::{SqliteArguments, SqliteRow};
use sea_orm::sqlx::{Arguments as _, AssertSqlSafe, Row as _, SqliteConnection};

use crate::audit::{ByTenant, Link, chain, records};
use crate::conn::Store;
use crate::error::{corrupt, db_err, sqlx_err};
use crate::sqlite_writer::SqliteWriter;

/// Event rows per INSERT at most (16 parameters each).
const ROWS_PER_INSERT: usize = 64;

const MOVE_HEAD: &str = "UPDATE audit_heads SET last_seq = ?, last_hash = ? \
    WHERE tenant = ? AND last_seq = ? AND last_hash = ? RETURNING tenant;";

const INSERT_ROWS: &str = "INSERT OR ROLLBACK INTO audit_events (tenant, seq, time, principal, \
    action, resource, version, consumer_kind, consumer_id, config_path, context, outcome, \
    reason, request_id, prev_hash, hash) SELECT * FROM (VALUES ";

const ROW: &str = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

/// Closes [`INSERT_ROWS`]: drops the padding rows, and stores the rest only
/// if the tenant's head is the one they lead to.
const INSERT_IF_MOVED: &str = ") WHERE column1 IS NOT NULL AND EXISTS (SELECT 1 FROM audit_heads \
    WHERE tenant = ? AND last_seq = ? AND last_hash = ?);";

/// One multi-statement query and its parameters, in order.
struct Trip {
    sql: String,
    args: SqliteArguments,
}

impl Trip {
    fn new(sql: &str) -> Self {
        Trip {
            sql: sql.to_owned(),
            args: SqliteArguments::default(),
        }
    }

    fn bind<T>(&mut self, value: T) -> Result<()>
    where
        T: sea_orm::sqlx::Encode<'static, sea_orm::sqlx::Sqlite>
            + sea_orm::sqlx::Type<sea_orm::sqlx::Sqlite>
            + 'static,
    {
        self.args.add(value).map_err(Error::internal)
    }

    /// Runs every statement; the rows they returned.
    async fn run(self, conn: &mut SqliteConnection) -> Result<Vec<SqliteRow>> {
        sea_orm::sqlx::query_with(AssertSqlSafe(self.sql), self.args)
            .fetch_all(conn)
            .await
            .map_err(|e| db_err(sqlx_err(e)))
    }
}

/// One tenant's events chained onto its head, which they move to `to`.
struct Planned {
    tenant: TenantId,
    to: ChainHead,
    links: Vec<Link>,
}

impl Store {
    /// Stores `pending` (every tenant's events, taken out as they are
    /// stored) into `out` and moves `heads` along, in the store's write
    /// turn. On an error the connection is closed, which rolls back what
    /// was not committed; the caller fails what is left in `pending`.
    pub(crate) async fn append_batch_sqlite(
        &self,
        writer: &SqliteWriter,
        pending: &mut ByTenant,
        heads: &mut HashMap<TenantId, ChainHead>,
        out: &mut [Option<Result<AuditEventRecord>>],
    ) -> Result<()> {
        let mut turn = writer.turn().await?;
        let mut borrowed = None;
        let conn = match turn.get().await? {
            Some(own) => own,
            None => &mut **borrowed.insert(
                self.write
                    .get_sqlite_connection_pool()
                    .acquire()
                    .await
                    .map_err(|e| db_err(sqlx_err(e)))?,
            ),
        };
        let stored = store_batch(conn, pending, heads, out).await;
        if let Err(err) = &stored {
            // Whatever the database holds now, it is read afresh.
            for tenant in pending.keys() {
                heads.remove(tenant);
            }
            match borrowed.as_mut() {
                // The write pool's connection is the in-memory database:
                // it is rolled back, not closed.
                Some(shared) => {
                    let _ = sea_orm::sqlx::query("ROLLBACK")
                        .execute(&mut **shared)
                        .await;
                }
                None => turn.discard().await,
            }
            if err.code() == coffer_core::ErrorCode::Unavailable {
                // As for a failed statement of a WriteTx: health probes
                // with a write until one works.
                self.write_blocked
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        stored
    }
}

/// The batch in at most three trips: one when every head is remembered
/// and still current; otherwise the tenants left over are chained from
/// heads read inside their transaction (two more).
async fn store_batch(
    conn: &mut SqliteConnection,
    pending: &mut ByTenant,
    heads: &mut HashMap<TenantId, ChainHead>,
    out: &mut [Option<Result<AuditEventRecord>>],
) -> Result<()> {
    if pending.keys().all(|tenant| heads.contains_key(tenant)) {
        let (mut trip, planned) = plan(Trip::new("BEGIN IMMEDIATE;"), pending, heads)?;
        trip.sql.push_str("COMMIT");
        let moved = trip.run(conn).await?;
        settle(planned, &moved, pending, heads, out)?;
        if pending.is_empty() {
            return Ok(());
        }
    }
    // Heads not remembered, or stale: read them under the write lock.
    let mut read = Trip::new("BEGIN IMMEDIATE;");
    let genesis = ChainHead::genesis();
    read.sql
        .push_str("INSERT OR IGNORE INTO audit_heads (tenant, last_seq, last_hash) VALUES ");
    for (i, tenant) in pending.keys().enumerate() {
        read.sql
            .push_str(if i == 0 { "(?,?,?)" } else { ",(?,?,?)" });
        read.bind(tenant.as_str().to_owned())?;
        read.bind(genesis.seq)?;
        read.bind(genesis.hash.clone())?;
    }
    read.sql
        .push_str("; SELECT tenant, last_seq, last_hash FROM audit_heads WHERE tenant IN (");
    for (i, tenant) in pending.keys().enumerate() {
        read.sql.push_str(if i == 0 { "?" } else { ",?" });
        read.bind(tenant.as_str().to_owned())?;
    }
    read.sql.push(')');
    for row in read.run(conn).await? {
        let tenant: String = row.try_get(0).map_err(|e| db_err(sqlx_err(e)))?;
        let tenant =
            TenantId::parse(&tenant, "tenant").map_err(|_| corrupt("audit_heads", "tenant"))?;
        let head = ChainHead {
            seq: row.try_get(1).map_err(|e| db_err(sqlx_err(e)))?,
            hash: row.try_get(2).map_err(|e| db_err(sqlx_err(e)))?,
        };
        heads.insert(tenant, head);
    }
    let (mut trip, planned) = plan(Trip::new(""), pending, heads)?;
    trip.sql.push_str("COMMIT");
    let moved = trip.run(conn).await?;
    settle(planned, &moved, pending, heads, out)?;
    if pending.is_empty() {
        Ok(())
    } else {
        Err(Error::internal(
            "an audit head moved while the batch held SQLite's write lock",
        ))
    }
}

/// Chains every pending tenant from its remembered head and appends its
/// head move and rows to `trip`.
fn plan(
    mut trip: Trip,
    pending: &ByTenant,
    heads: &HashMap<TenantId, ChainHead>,
) -> Result<(Trip, Vec<Planned>)> {
    let mut planned = Vec::with_capacity(pending.len());
    for (tenant, events) in pending {
        let from = heads
            .get(tenant)
            .cloned()
            .ok_or_else(|| Error::internal("an audit head was neither remembered nor read"))?;
        let (links, to) = chain(&from, events);
        trip.sql.push_str(MOVE_HEAD);
        trip.bind(to.seq)?;
        trip.bind(to.hash.clone())?;
        trip.bind(tenant.as_str().to_owned())?;
        trip.bind(from.seq)?;
        trip.bind(from.hash.clone())?;
        for rows in events
            .chunks(ROWS_PER_INSERT)
            .zip(links.chunks(ROWS_PER_INSERT))
        {
            let (events, links) = rows;
            trip.sql.push_str(INSERT_ROWS);
            let padded = events.len().next_power_of_two();
            for i in 0..padded {
                if i > 0 {
                    trip.sql.push(',');
                }
                trip.sql.push_str(ROW);
                match (events.get(i), links.get(i)) {
                    (Some((_, event)), Some(link)) => bind_row(&mut trip, event, link)?,
                    _ => {
                        for _ in 0..16 {
                            trip.bind(None::<i64>)?;
                        }
                    }
                }
            }
            trip.sql.push_str(INSERT_IF_MOVED);
            trip.bind(tenant.as_str().to_owned())?;
            trip.bind(to.seq)?;
            trip.bind(to.hash.clone())?;
        }
        planned.push(Planned {
            tenant: tenant.clone(),
            to,
            links,
        });
    }
    Ok((trip, planned))
}

/// One event's 16 columns, in [`INSERT_ROWS`]'s order.
fn bind_row(trip: &mut Trip, event: &NewAuditEvent, link: &Link) -> Result<()> {
    // A BTreeMap serializes with its keys sorted (the hash covers this text).
    let context = serde_json::to_string(&event.context).map_err(Error::internal)?;
    trip.bind(event.tenant.as_str().to_owned())?;
    trip.bind(link.seq)?;
    trip.bind(event.time)?;
    trip.bind(event.principal.clone())?;
    trip.bind(event.action.clone())?;
    trip.bind(event.resource.clone())?;
    trip.bind(event.version)?;
    trip.bind(event.consumer_kind.as_str().to_owned())?;
    trip.bind(event.consumer_id.clone())?;
    trip.bind(event.config_path.clone())?;
    trip.bind(context)?;
    trip.bind(event.outcome.as_str().to_owned())?;
    trip.bind(event.reason.clone())?;
    trip.bind(event.request_id.clone())?;
    trip.bind(link.prev_hash.clone())?;
    trip.bind(link.hash.clone())
}

/// Takes the tenants whose heads moved (the rows of the trip's head
/// updates) out of `pending` into `out`, and remembers their new heads;
/// the others' heads are forgotten (stale).
fn settle(
    planned: Vec<Planned>,
    moved: &[SqliteRow],
    pending: &mut ByTenant,
    heads: &mut HashMap<TenantId, ChainHead>,
    out: &mut [Option<Result<AuditEventRecord>>],
) -> Result<()> {
    let mut moved_tenants = Vec::with_capacity(moved.len());
    for row in moved {
        let tenant: String = row.try_get(0).map_err(|e| db_err(sqlx_err(e)))?;
        moved_tenants.push(tenant);
    }
    for planned in planned {
        if !moved_tenants.iter().any(|t| t == planned.tenant.as_str()) {
            heads.remove(&planned.tenant);
            continue;
        }
        let Some(events) = pending.remove(&planned.tenant) else {
            continue;
        };
        for (index, record) in records(events, planned.links) {
            if let Some(slot) = out.get_mut(index) {
                *slot = Some(Ok(record));
            }
        }
        heads.insert(planned.tenant, planned.to);
    }
    Ok(())
}
