//! The `bindings` table: which consumer may resolve which secret, at which
//! config path. One binding per (tenant, consumer kind, consumer id, config
//! path); bindings go with their secret when it is purged.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Bindings {
    Table,
    Id,
    Tenant,
    SecretUid,
    ConsumerKind,
    ConsumerId,
    ConfigPath,
    VersionSelector,
    Required,
    Label,
    CreateTime,
    UpdateTime,
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
        let postgres = manager.get_database_backend() == DbBackend::Postgres;
        // Bindings page by id and list by config path in byte order on every
        // backend (SQLite compares bytes), whatever the cluster's locale.
        let mut id = ColumnDef::new(Bindings::Id);
        id.text().not_null().primary_key();
        let mut config_path = ColumnDef::new(Bindings::ConfigPath);
        config_path.text().not_null();
        if postgres {
            id.extra("COLLATE \"C\"");
            config_path.extra("COLLATE \"C\"");
        }
        manager
            .create_table(
                Table::create()
                    .table(Bindings::Table)
                    .col(&mut id)
                    .col(ColumnDef::new(Bindings::Tenant).text().not_null())
                    .col(ColumnDef::new(Bindings::SecretUid).text().not_null())
                    .col(ColumnDef::new(Bindings::ConsumerKind).text().not_null())
                    .col(ColumnDef::new(Bindings::ConsumerId).text().not_null())
                    .col(&mut config_path)
                    .col(ColumnDef::new(Bindings::VersionSelector).text().not_null())
                    .col(ColumnDef::new(Bindings::Required).boolean().not_null())
                    .col(ColumnDef::new(Bindings::Label).text().not_null())
                    .col(
                        ColumnDef::new(Bindings::CreateTime)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Bindings::UpdateTime)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Bindings::Revision).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_bindings_secret")
                            .from(Bindings::Table, Bindings::SecretUid)
                            .to(Secrets::Table, Secrets::Uid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The uniqueness rule, and the index behind consumer lookups and
        // prefix scans (the config path is its last column).
        manager
            .create_index(
                Index::create()
                    .name("ux_bindings_consumer_config_path")
                    .table(Bindings::Table)
                    .col(Bindings::Tenant)
                    .col(Bindings::ConsumerKind)
                    .col(Bindings::ConsumerId)
                    .col(Bindings::ConfigPath)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_bindings_tenant_secret")
                    .table(Bindings::Table)
                    .col(Bindings::Tenant)
                    .col(Bindings::SecretUid)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Bindings::Table).to_owned())
            .await
    }
}
