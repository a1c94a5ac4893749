//! [`WriteTx`]: one transaction on the write pool. Its methods live with the
//! repository of the table they touch (`secrets_tx.rs`, `versions.rs`,
//! `idempotency.rs`, `bindings.rs`, `audit.rs`, `vaults.rs`); a dropped
//! `WriteTx` rolls back.
//!
//! A statement that fails inside a PostgreSQL transaction aborts it, and a
//! later COMMIT silently rolls back. So a `WriteTx` remembers that one of its
//! statements failed and refuses to commit, on both backends alike: SQLite
//! tests then catch the misuse that would lose writes on PostgreSQL.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use coffer_core::{Error, Result};
use sea_orm::DatabaseTransaction;

use crate::conn::Backend;
use crate::error::db_err;

/// A write transaction. Commit with [`WriteTx::commit`]; dropping it rolls back.
pub struct WriteTx {
    pub(crate) txn: DatabaseTransaction,
    pub(crate) backend: Backend,
    failed: AtomicBool,
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
    pub(crate) fn new(txn: DatabaseTransaction, backend: Backend) -> Self {
        WriteTx {
            txn,
            backend,
            failed: AtomicBool::new(false),
        }
    }

    /// Marks the transaction as failed (a statement errored) and passes the
    /// error on. Used on every database error of a `WriteTx` method.
    pub(crate) fn failed<E>(&self, err: E) -> E {
        self.failed.store(true, Ordering::Relaxed);
        err
    }

    /// Commits. Refused (and rolled back) if any statement of this
    /// transaction failed: drop the transaction after an error and start anew.
    pub async fn commit(self) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            self.txn.rollback().await.map_err(db_err)?;
            return Err(Error::internal(
                "write transaction committed after one of its statements failed; rolled back",
            ));
        }
        self.txn.commit().await.map_err(db_err)
    }

    /// Rolls back explicitly (dropping the transaction does the same).
    pub async fn rollback(self) -> Result<()> {
        self.txn.rollback().await.map_err(db_err)
    }
}
