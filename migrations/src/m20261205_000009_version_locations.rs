//! Where each version lives: `provider` and `vault` on `secret_versions`, so a
//! secret moved to another vault keeps resolving its older versions from where
//! they were written. Existing versions are backfilled from their secret, the
//! only place their location was recorded until now.
//!
//! Also indexes `secrets` by (tenant, external_ref) for the duplicate checks of
//! remote import.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum SecretVersions {
    Table,
    Provider,
    Vault,
}

// A correlated subquery: standard SQL on every backend, where `UPDATE … FROM`
// is an extension with differing forms.
// COALESCE keeps the NOT NULL promise for an orphaned version, possible where
// SQLite ran without foreign-key enforcement (e.g. an older migration CLI).
const BACKFILL: &str = "UPDATE secret_versions SET \
     provider = COALESCE((SELECT s.provider FROM secrets s WHERE s.uid = secret_versions.secret_uid), ''), \
     vault = COALESCE((SELECT s.vault FROM secrets s WHERE s.uid = secret_versions.secret_uid), '')";

// An expression index on a bounded prefix, not on the whole reference: a
// PostgreSQL btree entry may not exceed 2704 bytes, and an external_ref may
// be 2048 characters of up to 4 bytes each. 256 characters are at most 1 KiB,
// select well, and both backends count substr positions in characters. The
// store's lookup repeats this exact expression so that both planners use it.
const EXTERNAL_REF_INDEX: &str =
    "CREATE INDEX ix_secrets_tenant_external_ref ON secrets (tenant, substr(external_ref, 1, 256))";
const DROP_EXTERNAL_REF_INDEX: &str = "DROP INDEX ix_secrets_tenant_external_ref";

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
        // One column per statement: SQLite's ALTER TABLE takes a single change.
        for column in [SecretVersions::Provider, SecretVersions::Vault] {
            manager
                .alter_table(
                    Table::alter()
                        .table(SecretVersions::Table)
                        .add_column(ColumnDef::new(column).text().not_null().default(""))
                        .to_owned(),
                )
                .await?;
        }
        let db = manager.get_connection();
        db.execute_unprepared(BACKFILL).await?;
        db.execute_unprepared(EXTERNAL_REF_INDEX).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(DROP_EXTERNAL_REF_INDEX)
            .await?;
        // DROP COLUMN needs SQLite 3.35 or later; the bundled one is newer.
        for column in [SecretVersions::Provider, SecretVersions::Vault] {
            manager
                .alter_table(
                    Table::alter()
                        .table(SecretVersions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
