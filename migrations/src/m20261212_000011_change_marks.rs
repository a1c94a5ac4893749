//! The `change_marks` table: for each tenant, the generation of the last
//! committed write that changed it. SQLite only writes it (PostgreSQL
//! replicas hear each other through LISTEN/NOTIFY): another process on the
//! same SQLite file sends this one no notice, so each process polls the
//! marks newer than the last it saw and drops the caches of the tenants
//! another process changed (ADR 0010). Generations are global and rise with
//! each write (SQLite writers are serialized), so the poll is an index range.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ChangeMarks {
    Table,
    Tenant,
    Generation,
}

// The trait is declared with an elided lifetime (`&SchemaManager`) and
// async_trait needs the impl to match it exactly.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChangeMarks::Table)
                    .col(
                        ColumnDef::new(ChangeMarks::Tenant)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ChangeMarks::Generation)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_change_marks_generation")
                    .table(ChangeMarks::Table)
                    .col(ChangeMarks::Generation)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChangeMarks::Table).to_owned())
            .await
    }
}
