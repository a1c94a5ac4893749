//! SQLite's writers, one at a time and in arrival order: the write turn,
//! and the audit writer's own connection that it guards.
//!
//! SQLite lets one connection write at a time; another that tries waits in
//! SQLite's busy handler, which sleeps (1, 2, 5, 10… ms) and retries
//! instead of queueing. A store on a SQLite file has two writing
//! connections: the write pool's one ([`Store::begin`]: mutations, stamps,
//! sweeps) and the audit writer's own ([`Store::append_audit_batch`]), kept
//! open between batches so that a batch is one trip to SQLite's worker
//! thread, not seven (docs/PERFORMANCE.md, seventh run). Every write first
//! takes the store's turn, a FIFO async mutex: in one process SQLite's lock
//! is then never contended, and its busy handler only arbitrates between
//! processes (a migration CLI, a second replica on the same file).
//!
//! An in-memory database has no connection of its own for the audit
//! writer (a second connection would open a second, empty database): its
//! batches borrow the write pool's connection, under the same turn.
//!
//! [`Store::begin`]: crate::Store::begin
//! [`Store::append_audit_batch`]: crate::Store::append_audit_batch

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use coffer_core::{Error, Result};
use sea_orm::sqlx::sqlite::SqliteConnectOptions;
use sea_orm::sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::{db_err, sqlx_err};

/// The store's SQLite write turn. Cheap to clone: clones share the turn.
#[derive(Clone)]
pub(crate) struct SqliteWriter {
    turn: Arc<Mutex<AuditConnection>>,
    /// How long a writer waits for its turn before it answers
    /// `Unavailable`, as it waited for the write pool's connection before.
    wait: Duration,
}

impl fmt::Debug for SqliteWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteWriter")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// Held while it is one writer's turn; dropping it passes the turn on.
pub(crate) type WriteTurn = OwnedMutexGuard<AuditConnection>;

/// The audit writer's connection, opened on first use and again after a
/// failed batch closed it.
#[derive(Debug)]
pub(crate) struct AuditConnection {
    conn: Option<SqliteConnection>,
    /// How to open it; `None` for an in-memory database (batches borrow
    /// the write pool's connection).
    options: Option<Arc<SqliteConnectOptions>>,
    /// Set by [`SqliteWriter::close`]: no connection is opened again.
    closed: bool,
}

impl SqliteWriter {
    /// `options`: how the audit writer opens its own connection (the write
    /// pool's settings), or `None` for an in-memory database.
    pub(crate) fn new(options: Option<Arc<SqliteConnectOptions>>, wait: Duration) -> Self {
        SqliteWriter {
            turn: Arc::new(Mutex::new(AuditConnection {
                conn: None,
                options,
                closed: false,
            })),
            wait,
        }
    }

    /// Waits for this writer's turn, behind every writer that asked first.
    pub(crate) async fn turn(&self) -> Result<WriteTurn> {
        tokio::time::timeout(self.wait, self.turn.clone().lock_owned())
            .await
            .map_err(|_| Error::database_unavailable("timed out waiting for SQLite's write turn"))
    }

    /// Closes the audit writer's connection for good (the store is closing).
    pub(crate) async fn close(&self) {
        let mut turn = self.turn.lock().await;
        turn.closed = true;
        if let Some(conn) = turn.conn.take() {
            let _ = conn.close().await;
        }
    }
}

impl AuditConnection {
    /// The audit writer's own connection, opened if it is not open; `None`
    /// for an in-memory database.
    pub(crate) async fn get(&mut self) -> Result<Option<&mut SqliteConnection>> {
        let Some(options) = &self.options else {
            return Ok(None);
        };
        if self.closed {
            return Err(Error::database_unavailable("the store is closed"));
        }
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => options.connect().await.map_err(|e| db_err(sqlx_err(e)))?,
        };
        Ok(Some(self.conn.insert(conn)))
    }

    /// Closes the connection after a failed batch: whatever transaction it
    /// was left in rolls back, and the next batch opens a fresh one. Waits
    /// until SQLite has let go of the file, so the next writer does not meet
    /// the lock of a connection on its way out.
    pub(crate) async fn discard(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}
