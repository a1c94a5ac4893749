//! The `secret_labels` table: one row per label of a secret, indexed by
//! (key, value) so label filters are index lookups.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum SecretLabels {
    Table,
    SecretUid,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum Secrets {
    Table,
    Uid,
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
                    .table(SecretLabels::Table)
                    .col(ColumnDef::new(SecretLabels::SecretUid).text().not_null())
                    .col(ColumnDef::new(SecretLabels::Key).text().not_null())
                    .col(ColumnDef::new(SecretLabels::Value).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(SecretLabels::SecretUid)
                            .col(SecretLabels::Key),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_secret_labels_secret")
                            .from(SecretLabels::Table, SecretLabels::SecretUid)
                            .to(Secrets::Table, Secrets::Uid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_secret_labels_key_value")
                    .table(SecretLabels::Table)
                    .col(SecretLabels::Key)
                    .col(SecretLabels::Value)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SecretLabels::Table).to_owned())
            .await
    }
}
