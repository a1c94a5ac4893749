//! The `idempotency_keys` table: the first result of a create or rotation per
//! (tenant, request_id), kept at least a day and expired by `create_time`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Tenant,
    RequestId,
    Operation,
    RequestHash,
    SecretUid,
    Version,
    CreateTime,
}

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
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(ColumnDef::new(IdempotencyKeys::Tenant).text().not_null())
                    .col(ColumnDef::new(IdempotencyKeys::RequestId).text().not_null())
                    .col(ColumnDef::new(IdempotencyKeys::Operation).text().not_null())
                    .col(
                        ColumnDef::new(IdempotencyKeys::RequestHash)
                            .text()
                            .not_null(),
                    )
                    .col(ColumnDef::new(IdempotencyKeys::SecretUid).text().not_null())
                    .col(
                        ColumnDef::new(IdempotencyKeys::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::CreateTime)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Tenant)
                            .col(IdempotencyKeys::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_idempotency_keys_create_time")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreateTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}
