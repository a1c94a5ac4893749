//! Database spans. Every public operation of [`Store`] and [`WriteTx`] runs
//! in a `db.<operation>` span at DEBUG (the trace exporter takes coffer's
//! DEBUG spans; logs at INFO stay quiet) with `db.system`, `db.operation`
//! and the client span kind, and nothing else: no parameter and no row, so a
//! span can never carry a value.

use crate::conn::{Backend, Store};
use crate::tx::WriteTx;

impl Backend {
    /// The OpenTelemetry `db.system` name of the backend.
    fn db_system(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

impl Store {
    pub(crate) fn db_system(&self) -> &'static str {
        self.backend().db_system()
    }
}

impl WriteTx {
    pub(crate) fn db_system(&self) -> &'static str {
        self.backend.db_system()
    }
}
