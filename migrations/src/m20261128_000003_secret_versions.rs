//! The `secret_versions` table. `material` is the provider's opaque, already
//! protected form and becomes NULL once a version is destroyed or purged.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum SecretVersions {
    Table,
    SecretUid,
    Version,
    State,
    ProviderVersionRef,
    Material,
    Fingerprint,
    CreateTime,
    CreatedBy,
    DestroyTime,
    Revision,
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
                    .table(SecretVersions::Table)
                    .col(ColumnDef::new(SecretVersions::SecretUid).text().not_null())
                    .col(
                        ColumnDef::new(SecretVersions::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(SecretVersions::State).text().not_null())
                    .col(
                        ColumnDef::new(SecretVersions::ProviderVersionRef)
                            .text()
                            .not_null(),
                    )
                    .col(ColumnDef::new(SecretVersions::Material).text().null())
                    .col(
                        ColumnDef::new(SecretVersions::Fingerprint)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SecretVersions::CreateTime)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(SecretVersions::CreatedBy).text().not_null())
                    .col(
                        ColumnDef::new(SecretVersions::DestroyTime)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(SecretVersions::Revision)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(SecretVersions::SecretUid)
                            .col(SecretVersions::Version),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_secret_versions_secret")
                            .from(SecretVersions::Table, SecretVersions::SecretUid)
                            .to(Secrets::Table, Secrets::Uid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SecretVersions::Table).to_owned())
            .await
    }
}
