//! [`WriteTx`]: one transaction on the write pool. Its methods live with the
//! repository of the table they touch (`secrets_tx.rs`, `versions.rs`,
//! `idempotency.rs`, `bindings.rs`, `audit.rs`, `vaults.rs`); a dropped
//! `WriteTx` rolls back.
//!
//! A statement that fails inside a PostgreSQL transaction aborts it, and a
//! later COMMIT silently rolls back. So a `WriteTx` remembers that one of its
//! statements failed and refuses to commit, on both backends alike: SQLite
//! tests then catch the misuse that would lose writes on PostgreSQL.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use coffer_core::{Error, ErrorCode, Result, TenantId};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};
use tokio::sync::broadcast;

use crate::change_marks::ChangeMarks;
use crate::conn::Backend;
use crate::error::{db_err, is_cannot_write};
use crate::notify::{COMMIT_CHANNEL, CommitNotice, payload};
use crate::sqlite_writer::WriteTurn;

/// An error a `WriteTx` statement fails with, mapped or not yet mapped.
pub(crate) trait TxFailure {
    /// Whether it maps to `Unavailable`.
    fn is_unavailable(&self) -> bool;
}

impl TxFailure for Error {
    fn is_unavailable(&self) -> bool {
        self.code() == ErrorCode::Unavailable
    }
}

impl TxFailure for sea_orm::DbErr {
    fn is_unavailable(&self) -> bool {
        crate::error::is_unavailable(self)
    }
}

/// A write transaction. Commit with [`WriteTx::commit`]; dropping it rolls back.
pub struct WriteTx {
    pub(crate) txn: DatabaseTransaction,
    pub(crate) backend: Backend,
    failed: AtomicBool,
    /// Tenants this transaction changed (it audited a successful mutation);
    /// announced on `commits` once the commit succeeded.
    changed: Mutex<BTreeSet<TenantId>>,
    commits: broadcast::Sender<CommitNotice>,
    /// The store's id in PostgreSQL commit notices.
    instance: Arc<str>,
    /// SQLite on a file: where the changed tenants' marks are remembered.
    marks: Option<Arc<ChangeMarks>>,
    /// The store's "cannot write" flag (see `Store::write_blocked`), set
    /// when COMMIT fails for a full disk or a read-only database, or a
    /// statement fails with an `Unavailable` error (see [`WriteTx::failed`]).
    write_blocked: Arc<AtomicBool>,
    /// SQLite: the store's write turn, held until the transaction ends.
    /// Declared after `txn`, so it is passed on only after the transaction
    /// is dropped (a dropped transaction's rollback is queued first).
    _turn: Option<WriteTurn>,
}

impl fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTx")
            .field("backend", &self.backend)
            .field("failed", &self.failed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl WriteTx {
    pub(crate) fn new(
        txn: DatabaseTransaction,
        backend: Backend,
        commits: broadcast::Sender<CommitNotice>,
        instance: Arc<str>,
        marks: Option<Arc<ChangeMarks>>,
        write_blocked: Arc<AtomicBool>,
        turn: Option<WriteTurn>,
    ) -> Self {
        WriteTx {
            txn,
            backend,
            failed: AtomicBool::new(false),
            changed: Mutex::default(),
            commits,
            instance,
            marks,
            write_blocked,
            _turn: turn,
        }
    }

    /// Remembers that this transaction changed something in `tenant`.
    pub(crate) fn note_change(&self, tenant: &TenantId) {
        self.changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.clone());
    }

    /// Marks the transaction as failed (a statement errored) and passes the
    /// error on. Used on every database error of a `WriteTx` method. An
    /// `Unavailable` failure (full disk, read-only file, I/O error, timeout)
    /// also raises the store's "cannot write" flag: SQLite reports a
    /// read-only file at the first write statement, not at BEGIN or
    /// COMMIT. Health then probes with a write, which clears it if writes
    /// work after all.
    pub(crate) fn failed<E: TxFailure>(&self, err: E) -> E {
        self.failed.store(true, Ordering::Relaxed);
        if err.is_unavailable() {
            self.write_blocked.store(true, Ordering::Relaxed);
        }
        err
    }

    /// Commits. Refused (and rolled back) if any statement of this
    /// transaction failed: drop the transaction after an error and start anew.
    #[tracing::instrument(name = "db.commit", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "commit", otel.kind = "client"
    ))]
    pub async fn commit(self) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            self.txn.rollback().await.map_err(db_err)?;
            return Err(Error::internal(
                "write transaction committed after one of its statements failed; rolled back",
            ));
        }
        let changed =
            std::mem::take(&mut *self.changed.lock().unwrap_or_else(PoisonError::into_inner));
        if self.backend == Backend::Postgres {
            // Delivered to other replicas' listeners when (and only if) this
            // transaction commits.
            for tenant in &changed {
                self.txn
                    .execute_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        "SELECT pg_notify($1, $2)",
                        [
                            COMMIT_CHANNEL.into(),
                            payload(&self.instance, tenant).into(),
                        ],
                    ))
                    .await
                    .map_err(db_err)?;
            }
        }
        // SQLite: other processes on the file learn of the change from its
        // mark (crate::change_marks).
        let mut generations = Vec::new();
        if self.marks.is_some() {
            for tenant in &changed {
                let marked = ChangeMarks::mark(&self.txn, tenant).await;
                generations.push(marked.map_err(|err| self.failed(err))?);
            }
        }
        let write_blocked = self.write_blocked;
        self.txn.commit().await.map_err(|err| {
            // SQLite mostly learns of a full disk or a read-only file here,
            // when the WAL is appended.
            if is_cannot_write(&err) {
                write_blocked.store(true, Ordering::Relaxed);
            }
            db_err(err)
        })?;
        if let Some(marks) = &self.marks {
            marks.committed(generations);
        }
        for tenant in changed {
            // An error only means that nobody is listening.
            let _ = self.commits.send(CommitNotice::Tenant(tenant));
        }
        Ok(())
    }

    /// Rolls back explicitly (dropping the transaction does the same).
    #[tracing::instrument(name = "db.rollback", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "rollback", otel.kind = "client"
    ))]
    pub async fn rollback(self) -> Result<()> {
        self.txn.rollback().await.map_err(db_err)
    }
}
