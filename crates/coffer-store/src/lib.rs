//! Coffer's persistence: SeaORM entities over the schema of the
//! `coffer-migration` crate, and repositories that speak the domain records of
//! `coffer-core`. Runs on SQLite (embedded default, WAL) and PostgreSQL.
//!
//! Reads go through [`Store`]; every write happens in a [`WriteTx`] from
//! [`Store::begin`]. Database errors become [`coffer_core::Error`]s by kind
//! (see `error.rs`), never carrying row values.

mod audit;
mod audit_sqlite;
mod bindings;
pub mod change_marks;
mod changes;
mod conn;
mod entity;
mod error;
mod idempotency;
mod labels;
pub mod notify;
mod prefix;
mod secrets;
mod secrets_tx;
mod spans;
mod sqlite_writer;
pub mod testing;
mod tx;
mod vaults;
mod versions;

pub use audit::AuditFilter;
pub use conn::{Backend, MigrationStatus, PoolUsage, Store, StoreOptions};
pub use idempotency::IdempotencyRecord;
pub use notify::CommitNotice;
pub use tx::WriteTx;
