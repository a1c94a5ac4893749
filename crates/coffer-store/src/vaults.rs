//! Vaults: reads on the store (by id, pages in id order, a provider's default)
//! and writes inside a [`WriteTx`] (insert, locked reads, optimistic update).
//!
//! "One default per tenant and provider" is kept by the database (the partial
//! unique index `ux_vaults_default`), so a write that would make a second
//! default fails even when two transactions race. Changing which vault is the
//! default, or disabling one, first takes [`WriteTx::lock_provider_vaults`]:
//! every such change locks the same rows in the same order, so they queue up
//! instead of deadlocking.

use coffer_core::record::{VaultRecord, VaultState};
use coffer_core::{Error, ErrorCode, Reason, Result, TenantId};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    Select, SqlErr,
};

use crate::conn::{Store, is_postgres};
use crate::entity::vault;
use crate::error::{corrupt, db_err};
use crate::secrets::to_u64;
use crate::tx::WriteTx;

const TABLE: &str = "vaults";

impl Store {
    /// The vault `tenants/{tenant}/vaults/{vault_id}`, in any state.
    #[tracing::instrument(name = "db.get_vault", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "get_vault", otel.kind = "client"
    ))]
    pub async fn get_vault(
        &self,
        tenant: &TenantId,
        vault_id: &str,
    ) -> Result<Option<VaultRecord>> {
        find(&self.read, tenant, vault_id).await
    }

    /// One page of a tenant's vaults in vault id order, after
    /// `after_vault_id`; disabled vaults included.
    #[tracing::instrument(name = "db.list_vaults", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "list_vaults", otel.kind = "client"
    ))]
    pub async fn list_vaults(
        &self,
        tenant: &TenantId,
        after_vault_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<VaultRecord>> {
        let mut query = of_tenant(tenant)
            .order_by(vault::Column::VaultId, Order::Asc)
            .limit(to_u64(limit));
        if let Some(after) = after_vault_id {
            query = query.filter(vault::Column::VaultId.gt(after));
        }
        let rows = query.all(&self.read).await.map_err(db_err)?;
        rows.into_iter().map(to_record).collect()
    }

    /// The tenant's default vault for `provider`, if one is set.
    #[tracing::instrument(name = "db.default_vault", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "default_vault", otel.kind = "client"
    ))]
    pub async fn default_vault(
        &self,
        tenant: &TenantId,
        provider: &str,
    ) -> Result<Option<VaultRecord>> {
        of_tenant(tenant)
            .filter(vault::Column::Provider.eq(provider))
            .filter(vault::Column::IsDefault.eq(true))
            .one(&self.read)
            .await
            .map_err(db_err)?
            .map(to_record)
            .transpose()
    }
}

impl WriteTx {
    /// Inserts a vault. A taken vault id answers `AlreadyExists`
    /// (VAULT_ALREADY_EXISTS); a second default for the tenant and provider,
    /// which only a concurrent writer can cause, answers `Aborted`.
    #[tracing::instrument(name = "db.insert_vault", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "insert_vault", otel.kind = "client"
    ))]
    pub async fn insert_vault(&self, rec: &VaultRecord) -> Result<()> {
        let row = vault::ActiveModel {
            uid: Set(rec.uid.clone()),
            tenant: Set(rec.tenant.as_str().to_owned()),
            vault_id: Set(rec.vault_id.clone()),
            provider: Set(rec.provider.clone()),
            create_time: Set(rec.create_time),
            ..mutable_columns(rec)
        };
        // ON CONFLICT names the id index only, so a taken id is told apart from
        // a second default (the other unique index; the uid is a fresh UUID)
        // by what the database did, not by its error text. A taken id leaves
        // the statement, and so the transaction, successful.
        let inserted = vault::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([vault::Column::Tenant, vault::Column::VaultId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.txn)
            .await
            .map_err(|e| self.failed(default_conflict(e)))?;
        if inserted == 0 {
            return Err(Error::new(
                ErrorCode::AlreadyExists,
                Reason::VaultAlreadyExists,
                format!("vault {} already exists", rec.name()),
            )
            .with_metadata("resource", rec.name()));
        }
        Ok(())
    }

    /// Every vault of the tenant for `provider`, locked until commit in vault
    /// id order (PostgreSQL; SQLite's single writer serializes anyway). Every
    /// change of which vault is the default, or whether one is enabled, takes
    /// this lock first, so such changes run one after another and, locking in
    /// one order, cannot deadlock.
    #[tracing::instrument(name = "db.lock_provider_vaults", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "lock_provider_vaults", otel.kind = "client"
    ))]
    pub async fn lock_provider_vaults(
        &self,
        tenant: &TenantId,
        provider: &str,
    ) -> Result<Vec<VaultRecord>> {
        let mut query = of_tenant(tenant)
            .filter(vault::Column::Provider.eq(provider))
            .order_by(vault::Column::VaultId, Order::Asc);
        if is_postgres(&self.txn) {
            query = query.lock_exclusive();
        }
        let rows = query
            .all(&self.txn)
            .await
            .map_err(|e| self.failed(db_err(e)))?;
        rows.into_iter().map(to_record).collect()
    }

    /// Writes every mutable column of `rec` if the stored revision is still
    /// `expected_revision`; otherwise `Aborted` (ETAG_MISMATCH). Making it a
    /// second default of its provider also answers `Aborted`: another default
    /// was set concurrently. The caller sets `rec.revision` to the new revision.
    #[tracing::instrument(name = "db.update_vault", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "update_vault", otel.kind = "client"
    ))]
    pub async fn update_vault(&self, rec: &VaultRecord, expected_revision: i64) -> Result<()> {
        let result = vault::Entity::update_many()
            .set(mutable_columns(rec))
            .filter(vault::Column::Uid.eq(rec.uid.as_str()))
            .filter(vault::Column::Revision.eq(expected_revision))
            .exec(&self.txn)
            .await
            .map_err(|e| self.failed(default_conflict(e)))?;
        if result.rows_affected == 0 {
            return Err(Error::etag_mismatch(&rec.name()));
        }
        Ok(())
    }
}

/// A unique violation where the only index a write can break is
/// `ux_vaults_default`: a concurrent writer made another vault the default.
fn default_conflict(err: DbErr) -> Error {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => Error::new(
            ErrorCode::Aborted,
            Reason::EtagMismatch,
            "another default vault was set concurrently; retry",
        ),
        _ => db_err(err),
    }
}

fn of_tenant(tenant: &TenantId) -> Select<vault::Entity> {
    vault::Entity::find().filter(vault::Column::Tenant.eq(tenant.as_str()))
}

async fn find(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    vault_id: &str,
) -> Result<Option<VaultRecord>> {
    of_tenant(tenant)
        .filter(vault::Column::VaultId.eq(vault_id))
        .one(conn)
        .await
        .map_err(db_err)?
        .map(to_record)
        .transpose()
}

fn to_record(row: vault::Model) -> Result<VaultRecord> {
    Ok(VaultRecord {
        tenant: TenantId::parse(&row.tenant, "tenant").map_err(|_| corrupt(TABLE, "tenant"))?,
        state: VaultState::parse(&row.state).ok_or_else(|| corrupt(TABLE, "state"))?,
        uid: row.uid,
        vault_id: row.vault_id,
        provider: row.provider,
        display_name: row.display_name,
        is_default: row.is_default,
        config: row.config,
        health_status: row.health_status,
        health_message: row.health_message,
        health_check_time: row.health_check_time,
        create_time: row.create_time,
        update_time: row.update_time,
        disable_time: row.disable_time,
        revision: row.revision,
    })
}

/// The columns [`WriteTx::update_vault`] may change. Identity (uid, tenant,
/// vault id), the provider (secrets stored through the vault depend on it)
/// and the create time are fixed.
fn mutable_columns(rec: &VaultRecord) -> vault::ActiveModel {
    vault::ActiveModel {
        uid: NotSet,
        tenant: NotSet,
        vault_id: NotSet,
        provider: NotSet,
        display_name: Set(rec.display_name.clone()),
        state: Set(rec.state.as_str().to_owned()),
        is_default: Set(rec.is_default),
        config: Set(rec.config.clone()),
        health_status: Set(rec.health_status.clone()),
        health_message: Set(rec.health_message.clone()),
        health_check_time: Set(rec.health_check_time),
        create_time: NotSet,
        update_time: Set(rec.update_time),
        disable_time: Set(rec.disable_time),
        revision: Set(rec.revision),
    }
}
