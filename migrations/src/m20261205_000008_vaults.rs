//! The `vaults` table: each tenant's configured provider instances. Vaults are
//! never hard-deleted (secrets keep pointing at them), only disabled. The
//! database itself keeps the "one default per tenant and provider" rule with a
//! partial unique index, so two racing SetDefaultVault calls cannot both win.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Vaults {
    Table,
    Uid,
    Tenant,
    VaultId,
    Provider,
    DisplayName,
    State,
    IsDefault,
    Config,
    HealthStatus,
    HealthMessage,
    HealthCheckTime,
    CreateTime,
    UpdateTime,
    DisableTime,
    Revision,
}

// A partial index: the schema builder has no portable WHERE clause for it, and
// this exact text is valid on both SQLite and PostgreSQL (a boolean column is
// a predicate on both).
const DEFAULT_INDEX: &str =
    "CREATE UNIQUE INDEX ux_vaults_default ON vaults (tenant, provider) WHERE is_default";

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
        let mut vault_id = ColumnDef::new(Vaults::VaultId);
        vault_id.text().not_null();
        // Vaults page by id in byte order on every backend (SQLite compares
        // bytes), not in whatever locale the PostgreSQL cluster was initialised with.
        if manager.get_database_backend() == DbBackend::Postgres {
            vault_id.extra("COLLATE \"C\"");
        }
        manager
            .create_table(
                Table::create()
                    .table(Vaults::Table)
                    .col(ColumnDef::new(Vaults::Uid).text().not_null().primary_key())
                    .col(ColumnDef::new(Vaults::Tenant).text().not_null())
                    .col(&mut vault_id)
                    .col(ColumnDef::new(Vaults::Provider).text().not_null())
                    .col(ColumnDef::new(Vaults::DisplayName).text().not_null())
                    .col(ColumnDef::new(Vaults::State).text().not_null())
                    .col(ColumnDef::new(Vaults::IsDefault).boolean().not_null())
                    .col(ColumnDef::new(Vaults::Config).text().not_null())
                    .col(ColumnDef::new(Vaults::HealthStatus).text().not_null())
                    .col(ColumnDef::new(Vaults::HealthMessage).text().not_null())
                    .col(ColumnDef::new(Vaults::HealthCheckTime).big_integer().null())
                    .col(ColumnDef::new(Vaults::CreateTime).big_integer().not_null())
                    .col(ColumnDef::new(Vaults::UpdateTime).big_integer().not_null())
                    .col(ColumnDef::new(Vaults::DisableTime).big_integer().null())
                    .col(ColumnDef::new(Vaults::Revision).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // The identity of a vault, and the index behind paging and the
        // provider scan (tenant first).
        manager
            .create_index(
                Index::create()
                    .name("ux_vaults_tenant_vault_id")
                    .table(Vaults::Table)
                    .col(Vaults::Tenant)
                    .col(Vaults::VaultId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(DEFAULT_INDEX)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Vaults::Table).to_owned())
            .await
    }
}
