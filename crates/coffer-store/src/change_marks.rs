//! Change marks: how a process on a SQLite file learns that another process
//! on the same file changed a tenant (ADR 0010).
//!
//! PostgreSQL replicas tell each other through LISTEN/NOTIFY
//! ([`crate::notify`]); SQLite has no such channel. So every SQLite write
//! transaction that changed a tenant also moves that tenant's row of
//! `change_marks` to a new generation (one more than the highest; writers
//! are serialized, so generations are unique and rise), and remembers the
//! generations it wrote once they are committed. A poller reads the marks
//! newer than the last it saw every [`POLL_EVERY`] and sends
//! [`CommitNotice::Tenant`] for each one this process did not write, so the
//! metadata cache drops another process's changes within a poll instead of
//! a TTL. A mark this process wrote but had not yet remembered when the
//! poller read it counts as foreign: the tenant is dropped once more,
//! which costs a few cache misses and is never stale.
//!
//! An in-memory database has no other process, and so no marks.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use coffer_core::{Result, TenantId};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::error::db_err;
use crate::notify::CommitNotice;

/// How often the poller looks for other processes' marks.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long the poller waits before trying again after a failed read.
const RETRY_AFTER: Duration = Duration::from_secs(1);

const MARK: &str = "INSERT INTO change_marks (tenant, generation) \
     VALUES (?1, (SELECT coalesce(max(generation), 0) + 1 FROM change_marks)) \
     ON CONFLICT (tenant) DO UPDATE SET generation = excluded.generation \
     RETURNING generation";
const NEWEST: &str = "SELECT coalesce(max(generation), 0) FROM change_marks";
const NEWER: &str =
    "SELECT tenant, generation FROM change_marks WHERE generation > ?1 ORDER BY generation";

/// A file-backed SQLite store's marks: the generations it wrote that the
/// poller has not passed yet.
#[derive(Debug, Default)]
pub(crate) struct ChangeMarks {
    own: Mutex<BTreeSet<i64>>,
    /// Set by the first poller: one per store.
    polling: AtomicBool,
}

impl ChangeMarks {
    /// Moves `tenant`'s mark to a new generation inside `txn`; returns it.
    pub(crate) async fn mark(txn: &DatabaseTransaction, tenant: &TenantId) -> Result<i64> {
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                MARK,
                [tenant.as_str().into()],
            ))
            .await
            .map_err(db_err)?
            .ok_or_else(|| coffer_core::Error::internal("change mark returned no row"))?;
        row.try_get_by_index(0).map_err(db_err)
    }

    /// Remembers generations this process committed.
    pub(crate) fn committed(&self, generations: impl IntoIterator<Item = i64>) {
        self.own_marks().extend(generations);
    }

    fn own_marks(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.own.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the poller on `read` (once per store); it ends when the pool
    /// closes.
    pub(crate) fn spawn_poller(
        self: &Arc<Self>,
        read: DatabaseConnection,
        commits: broadcast::Sender<CommitNotice>,
    ) -> Option<JoinHandle<()>> {
        if self.polling.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(tokio::spawn(poll(Arc::clone(self), read, commits)))
    }

    /// The tenants of `marks` (newest last) that another process wrote;
    /// forgets this process's generations up to the newest.
    fn foreign(&self, marks: Vec<(String, i64)>) -> Vec<TenantId> {
        let Some(&(_, newest)) = marks.last() else {
            return Vec::new();
        };
        let mut own = self.own_marks();
        let foreign = marks
            .into_iter()
            .filter(|(_, generation)| !own.contains(generation))
            // Only this crate writes marks; a row it cannot read as a
            // tenant is nothing a cache holds.
            .filter_map(|(tenant, _)| TenantId::parse(&tenant, "tenant").ok())
            .collect();
        // Generations up to the newest are read (a tenant's older marks were
        // overwritten and will never be).
        own.retain(|generation| *generation > newest);
        foreign
    }
}

async fn poll(
    marks: Arc<ChangeMarks>,
    read: DatabaseConnection,
    commits: broadcast::Sender<CommitNotice>,
) {
    let pool = read.get_sqlite_connection_pool().clone();
    let mut seen = None;
    loop {
        let wait = match read_marks(&read, seen).await {
            Ok((newest, changed)) => {
                for tenant in marks.foreign(changed) {
                    let _ = commits.send(CommitNotice::Tenant(tenant));
                }
                seen = Some(newest);
                POLL_EVERY
            }
            Err(err) => {
                if pool.is_closed() {
                    return;
                }
                // Whatever changed meanwhile is read once the database
                // answers again; until then writes here fail too.
                tracing::debug!(error = %err, "could not read other processes' change marks");
                RETRY_AFTER
            }
        };
        tokio::select! {
            () = pool.close_event() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The newest generation and, after `seen`, the marks newer than it
/// (oldest first). Without `seen` (at start) only the newest: what was
/// written before this process looked is in no cache.
async fn read_marks(
    read: &DatabaseConnection,
    seen: Option<i64>,
) -> std::result::Result<(i64, Vec<(String, i64)>), sea_orm::DbErr> {
    let Some(seen) = seen else {
        let row = read
            .query_one_raw(Statement::from_string(DbBackend::Sqlite, NEWEST))
            .await?;
        let newest = match row {
            Some(row) => row.try_get_by_index(0)?,
            None => 0,
        };
        return Ok((newest, Vec::new()));
    };
    let rows = read
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            NEWER,
            [seen.into()],
        ))
        .await?;
    let marks = rows
        .iter()
        .map(|row| Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?)))
        .collect::<std::result::Result<Vec<(String, i64)>, sea_orm::DbErr>>()?;
    let newest = marks.last().map_or(seen, |(_, generation)| *generation);
    Ok((newest, marks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_generations_are_skipped_and_forgotten_once_passed() {
        let marks = ChangeMarks::default();
        marks.committed([3, 5, 9]);
        let tenants = marks.foreign(vec![
            ("acme".to_owned(), 3),
            ("globex".to_owned(), 4),
            ("initech".to_owned(), 5),
        ]);
        assert_eq!(tenants, [TenantId::parse("globex", "tenant").unwrap()]);
        // 3 and 5 are passed; 9 is still ahead.
        assert_eq!(*marks.own_marks(), BTreeSet::from([9]));
        assert!(marks.foreign(Vec::new()).is_empty());
    }
}
