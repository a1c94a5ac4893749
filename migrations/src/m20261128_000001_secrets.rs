//! The `secrets` table. A purged secret stays as a tombstone (`purged_time`
//! set) so audit history keeps pointing at its uid; the partial unique indexes
//! only cover live rows, so purging frees the key and the display name.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Secrets {
    Table,
    Uid,
    Tenant,
    Key,
    DisplayName,
    Description,
    Mode,
    Provider,
    Vault,
    ExternalRef,
    State,
    CurrentVersion,
    LatestVersion,
    CreateTime,
    UpdateTime,
    RotateTime,
    LastResolveTime,
    DeleteTime,
    PurgeTime,
    PurgedTime,
    Revision,
}

// Partial indexes: the schema builder has no portable WHERE clause for them,
// and this exact text is valid on both SQLite and PostgreSQL.
const PARTIAL_INDEXES: [&str; 2] = [
    "CREATE UNIQUE INDEX ux_secrets_tenant_key ON secrets (tenant, key) WHERE purged_time IS NULL",
    "CREATE UNIQUE INDEX ux_secrets_tenant_display_name ON secrets (tenant, display_name) WHERE purged_time IS NULL",
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
        let mut key = ColumnDef::new(Secrets::Key);
        key.text().not_null();
        // Keys page in byte order on every backend (SQLite compares bytes), not
        // in whatever locale the PostgreSQL cluster was initialised with.
        if manager.get_database_backend() == DbBackend::Postgres {
            key.extra("COLLATE \"C\"");
        }
        manager
            .create_table(
                Table::create()
                    .table(Secrets::Table)
                    .col(ColumnDef::new(Secrets::Uid).text().not_null().primary_key())
                    .col(ColumnDef::new(Secrets::Tenant).text().not_null())
                    .col(&mut key)
                    .col(ColumnDef::new(Secrets::DisplayName).text().not_null())
                    .col(ColumnDef::new(Secrets::Description).text().not_null())
                    .col(ColumnDef::new(Secrets::Mode).text().not_null())
                    .col(ColumnDef::new(Secrets::Provider).text().not_null())
                    .col(ColumnDef::new(Secrets::Vault).text().not_null())
                    .col(ColumnDef::new(Secrets::ExternalRef).text().not_null())
                    .col(ColumnDef::new(Secrets::State).text().not_null())
                    .col(
                        ColumnDef::new(Secrets::CurrentVersion)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Secrets::LatestVersion)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Secrets::CreateTime).big_integer().not_null())
                    .col(ColumnDef::new(Secrets::UpdateTime).big_integer().not_null())
                    .col(ColumnDef::new(Secrets::RotateTime).big_integer().null())
                    .col(
                        ColumnDef::new(Secrets::LastResolveTime)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(Secrets::DeleteTime).big_integer().null())
                    .col(ColumnDef::new(Secrets::PurgeTime).big_integer().null())
                    .col(ColumnDef::new(Secrets::PurgedTime).big_integer().null())
                    .col(ColumnDef::new(Secrets::Revision).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for sql in PARTIAL_INDEXES {
            db.execute_unprepared(sql).await?;
        }
        // The reaper scans deleted secrets by due time.
        manager
            .create_index(
                Index::create()
                    .name("ix_secrets_state_purge_time")
                    .table(Secrets::Table)
                    .col(Secrets::State)
                    .col(Secrets::PurgeTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Secrets::Table).to_owned())
            .await
    }
}
