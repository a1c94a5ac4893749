//! Coffer's database schema, one migration per table or later change, applied
//! by the server on start (`Store::migrate_up`) or by the `coffer-migration`
//! CLI. The same migrations run on SQLite and PostgreSQL; the few statements
//! that the schema builder cannot express (partial unique indexes, an
//! expression index, a backfill) are plain SQL that both accept. Shipped
//! migrations are never edited: a change is a new migration.

pub use sea_orm_migration::MigrationStatus;
pub use sea_orm_migration::prelude::*;

mod m20261128_000001_secrets;
mod m20261128_000002_secret_labels;
mod m20261128_000003_secret_versions;
mod m20261128_000004_idempotency_keys;
mod m20261201_000005_bindings;
mod m20261201_000006_audit_events;
mod m20261201_000007_audit_heads;
mod m20261205_000008_vaults;
mod m20261205_000009_version_locations;
mod m20261210_000010_list_indexes;
mod m20261212_000011_change_marks;

/// Every migration, oldest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_secrets::Migration),
            Box::new(m20261128_000002_secret_labels::Migration),
            Box::new(m20261128_000003_secret_versions::Migration),
            Box::new(m20261128_000004_idempotency_keys::Migration),
            Box::new(m20261201_000005_bindings::Migration),
            Box::new(m20261201_000006_audit_events::Migration),
            Box::new(m20261201_000007_audit_heads::Migration),
            Box::new(m20261205_000008_vaults::Migration),
            Box::new(m20261205_000009_version_locations::Migration),
            Box::new(m20261210_000010_list_indexes::Migration),
            Box::new(m20261212_000011_change_marks::Migration),
        ]
    }
}
