//! Indexes for the list filters and the purge, found missing by the query
//! plan test (`crates/coffer-store/tests/query_plans.rs`) on PostgreSQL:
//!
//! - ListSecrets filtered by state, provider, vault or mode read the tenant's
//!   secrets in key order and dropped the rows that did not match, or (for a
//!   rare value) scanned and sorted the whole table. One index per filter,
//!   `(tenant, <column>, key)` over live rows like `ux_secrets_tenant_key`,
//!   makes each page a range scan that starts at the page token and stops
//!   after one page.
//! - ListBindings of a whole tenant walked the primary key (`id` alone) and
//!   skipped other tenants' rows: `(tenant, id)`.
//! - ListBindings of one secret sorted all of the secret's bindings for every
//!   page, and a purge's `DELETE FROM bindings WHERE secret_uid = …` scanned
//!   the table (the old `(tenant, secret_uid)` index cannot serve a query
//!   without the tenant). `(secret_uid, id)` serves both and replaces it.
//!
//! The partial indexes are plain SQL that both SQLite and PostgreSQL accept,
//! like those of migration 1.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const UP: [&str; 7] = [
    "CREATE INDEX ix_secrets_tenant_state_key ON secrets (tenant, state, key) WHERE purged_time IS NULL",
    "CREATE INDEX ix_secrets_tenant_provider_key ON secrets (tenant, provider, key) WHERE purged_time IS NULL",
    "CREATE INDEX ix_secrets_tenant_vault_key ON secrets (tenant, vault, key) WHERE purged_time IS NULL",
    "CREATE INDEX ix_secrets_tenant_mode_key ON secrets (tenant, mode, key) WHERE purged_time IS NULL",
    "CREATE INDEX ix_bindings_tenant_id ON bindings (tenant, id)",
    "CREATE INDEX ix_bindings_secret_id ON bindings (secret_uid, id)",
    "DROP INDEX ix_bindings_tenant_secret",
];

const DOWN: [&str; 7] = [
    "CREATE INDEX ix_bindings_tenant_secret ON bindings (tenant, secret_uid)",
    "DROP INDEX ix_bindings_secret_id",
    "DROP INDEX ix_bindings_tenant_id",
    "DROP INDEX ix_secrets_tenant_mode_key",
    "DROP INDEX ix_secrets_tenant_vault_key",
    "DROP INDEX ix_secrets_tenant_provider_key",
    "DROP INDEX ix_secrets_tenant_state_key",
];

// The trait is declared with an elided lifetime (`&SchemaManager`) and
// async_trait needs the impl to match it exactly.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// SQLite has transactional DDL too: a failed migration leaves nothing behind.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in UP {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in DOWN {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
