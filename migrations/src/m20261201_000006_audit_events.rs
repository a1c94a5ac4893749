//! The `audit_events` table: each tenant's append-only, hash-chained audit
//! trail, keyed by (tenant, seq). No foreign key to `secrets`: events outlive
//! the purge of the secret they name. `context` is a JSON object with sorted keys.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Tenant,
    Seq,
    Time,
    Principal,
    Action,
    Resource,
    Version,
    ConsumerKind,
    ConsumerId,
    ConfigPath,
    Context,
    Outcome,
    Reason,
    RequestId,
    PrevHash,
    Hash,
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
        let text = |col: AuditEvents| ColumnDef::new(col).text().not_null().to_owned();
        let int = |col: AuditEvents| ColumnDef::new(col).big_integer().not_null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(text(AuditEvents::Tenant))
                    .col(int(AuditEvents::Seq))
                    .col(int(AuditEvents::Time))
                    .col(text(AuditEvents::Principal))
                    .col(text(AuditEvents::Action))
                    .col(text(AuditEvents::Resource))
                    .col(int(AuditEvents::Version))
                    .col(text(AuditEvents::ConsumerKind))
                    .col(text(AuditEvents::ConsumerId))
                    .col(text(AuditEvents::ConfigPath))
                    .col(text(AuditEvents::Context))
                    .col(text(AuditEvents::Outcome))
                    .col(text(AuditEvents::Reason))
                    .col(text(AuditEvents::RequestId))
                    .col(text(AuditEvents::PrevHash))
                    .col(text(AuditEvents::Hash))
                    .primary_key(
                        Index::create()
                            .col(AuditEvents::Tenant)
                            .col(AuditEvents::Seq),
                    )
                    .to_owned(),
            )
            .await?;
        // ListAuditEvents filters by time range, resource and action.
        for (name, col) in [
            ("ix_audit_events_tenant_time", AuditEvents::Time),
            ("ix_audit_events_tenant_resource", AuditEvents::Resource),
            ("ix_audit_events_tenant_action", AuditEvents::Action),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditEvents::Table)
                        .col(AuditEvents::Tenant)
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await
    }
}
