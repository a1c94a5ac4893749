//! Bindings: reads on the store (by id, pages by secret or consumer, the
//! consumer's bindings under a config-path prefix) and writes inside a
//! [`WriteTx`]. Every read joins `secrets` for the bound secret's key; a
//! purged secret takes its bindings with it, so the join always finds it.

use coffer_core::record::BindingRecord;
use coffer_core::{Error, Result, SecretKey, TenantId};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, JoinType, Order, QueryFilter,
    QueryOrder, QuerySelect, RelationTrait, Select,
};

use crate::conn::Store;
use crate::entity::{binding, secret};
use crate::error::{binding_write_err, corrupt, db_err};
use crate::prefix::starts_with;
use crate::secrets::to_u64;
use crate::tx::WriteTx;

const TABLE: &str = "bindings";

impl Store {
    /// The binding `tenants/{tenant}/bindings/{id}`.
    #[tracing::instrument(name = "db.get_binding", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "get_binding", otel.kind = "client"
    ))]
    pub async fn get_binding(&self, tenant: &TenantId, id: &str) -> Result<Option<BindingRecord>> {
        find_by_id(&self.read, tenant, id).await
    }

    /// One page of a tenant's bindings in id order, after `after_id`,
    /// optionally only those of one secret (by uid) and/or one consumer
    /// (kind, id).
    #[tracing::instrument(name = "db.list_bindings", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "list_bindings", otel.kind = "client"
    ))]
    pub async fn list_bindings(
        &self,
        tenant: &TenantId,
        secret_uid: Option<&str>,
        consumer: Option<(&str, &str)>,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BindingRecord>> {
        let mut query = of_tenant(tenant)
            .order_by(binding::Column::Id, Order::Asc)
            .limit(to_u64(limit));
        if let Some(uid) = secret_uid {
            query = query.filter(binding::Column::SecretUid.eq(uid));
        }
        if let Some((kind, id)) = consumer {
            query = query
                .filter(binding::Column::ConsumerKind.eq(kind))
                .filter(binding::Column::ConsumerId.eq(id));
        }
        if let Some(after) = after_id {
            query = query.filter(binding::Column::Id.gt(after));
        }
        fetch(&self.read, query).await
    }

    /// The binding of one consumer at exactly `config_path`: the resolution check.
    #[tracing::instrument(name = "db.find_binding", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "find_binding", otel.kind = "client"
    ))]
    pub async fn find_binding(
        &self,
        tenant: &TenantId,
        consumer_kind: &str,
        consumer_id: &str,
        config_path: &str,
    ) -> Result<Option<BindingRecord>> {
        let query = of_consumer(tenant, consumer_kind, consumer_id)
            .filter(binding::Column::ConfigPath.eq(config_path));
        Ok(fetch(&self.read, query).await?.pop())
    }

    /// Every binding of one consumer whose config path starts with
    /// `config_path_prefix` (taken literally; empty means all), by config path.
    #[tracing::instrument(name = "db.consumer_bindings", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "consumer_bindings", otel.kind = "client"
    ))]
    pub async fn consumer_bindings(
        &self,
        tenant: &TenantId,
        consumer_kind: &str,
        consumer_id: &str,
        config_path_prefix: &str,
    ) -> Result<Vec<BindingRecord>> {
        under_prefix(
            &self.read,
            tenant,
            consumer_kind,
            consumer_id,
            config_path_prefix,
        )
        .await
    }
}

impl WriteTx {
    /// Inserts a binding. Another binding of the same consumer at the same
    /// config path answers `AlreadyExists`; a secret uid that does not exist
    /// answers `NotFound`.
    #[tracing::instrument(name = "db.insert_binding", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "insert_binding", otel.kind = "client"
    ))]
    pub async fn insert_binding(&self, b: &BindingRecord) -> Result<()> {
        let row = binding::ActiveModel {
            id: Set(b.id.clone()),
            tenant: Set(b.tenant.as_str().to_owned()),
            consumer_kind: Set(b.consumer_kind.clone()),
            consumer_id: Set(b.consumer_id.clone()),
            config_path: Set(b.config_path.clone()),
            create_time: Set(b.create_time),
            ..mutable_columns(b)
        };
        binding::Entity::insert(row)
            .exec_without_returning(&self.txn)
            .await
            .map_err(|e| self.failed(binding_write_err(e)))?;
        Ok(())
    }

    /// Writes secret_uid, version_selector, required, label, update_time and
    /// revision if the stored revision is still `expected_revision`; otherwise
    /// `Aborted`. The caller sets `b.revision` to the new revision.
    #[tracing::instrument(name = "db.update_binding", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "update_binding", otel.kind = "client"
    ))]
    pub async fn update_binding(&self, b: &BindingRecord, expected_revision: i64) -> Result<()> {
        let result = binding::Entity::update_many()
            .set(mutable_columns(b))
            .filter(binding::Column::Tenant.eq(b.tenant.as_str()))
            .filter(binding::Column::Id.eq(b.id.as_str()))
            .filter(binding::Column::Revision.eq(expected_revision))
            .exec(&self.txn)
            .await
            .map_err(|e| self.failed(binding_write_err(e)))?;
        if result.rows_affected == 0 {
            return Err(Error::etag_mismatch(&b.name()));
        }
        Ok(())
    }

    /// Deletes a binding; whether it existed.
    #[tracing::instrument(name = "db.delete_binding", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "delete_binding", otel.kind = "client"
    ))]
    pub async fn delete_binding(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        let result = binding::Entity::delete_many()
            .filter(binding::Column::Tenant.eq(tenant.as_str()))
            .filter(binding::Column::Id.eq(id))
            .exec(&self.txn)
            .await
            .map_err(|e| self.failed(db_err(e)))?;
        Ok(result.rows_affected > 0)
    }

    /// The binding as this transaction sees it (for etag checks before a write).
    #[tracing::instrument(name = "db.get_binding", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "get_binding", otel.kind = "client"
    ))]
    pub async fn get_binding(&self, tenant: &TenantId, id: &str) -> Result<Option<BindingRecord>> {
        find_by_id(&self.txn, tenant, id)
            .await
            .map_err(|e| self.failed(e))
    }

    /// [`Store::consumer_bindings`] inside this transaction (SyncBindings diffs
    /// the desired set against it).
    #[tracing::instrument(name = "db.consumer_bindings", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "consumer_bindings", otel.kind = "client"
    ))]
    pub async fn consumer_bindings(
        &self,
        tenant: &TenantId,
        consumer_kind: &str,
        consumer_id: &str,
        config_path_prefix: &str,
    ) -> Result<Vec<BindingRecord>> {
        under_prefix(
            &self.txn,
            tenant,
            consumer_kind,
            consumer_id,
            config_path_prefix,
        )
        .await
        .map_err(|e| self.failed(e))
    }
}

/// Removes every binding of a secret (part of its purge).
pub(crate) async fn delete_for_secret(
    conn: &impl ConnectionTrait,
    secret_uid: &str,
) -> std::result::Result<(), sea_orm::DbErr> {
    binding::Entity::delete_many()
        .filter(binding::Column::SecretUid.eq(secret_uid))
        .exec(conn)
        .await?;
    Ok(())
}

/// A binding row with its secret's key, as every read returns it.
#[derive(Debug, FromQueryResult)]
struct Row {
    id: String,
    tenant: String,
    secret_uid: String,
    secret_key: String,
    consumer_kind: String,
    consumer_id: String,
    config_path: String,
    version_selector: String,
    required: bool,
    label: String,
    create_time: i64,
    update_time: i64,
    revision: i64,
}

fn of_tenant(tenant: &TenantId) -> Select<binding::Entity> {
    binding::Entity::find().filter(binding::Column::Tenant.eq(tenant.as_str()))
}

fn of_consumer(tenant: &TenantId, kind: &str, id: &str) -> Select<binding::Entity> {
    of_tenant(tenant)
        .filter(binding::Column::ConsumerKind.eq(kind))
        .filter(binding::Column::ConsumerId.eq(id))
}

async fn find_by_id(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<BindingRecord>> {
    let query = of_tenant(tenant).filter(binding::Column::Id.eq(id));
    Ok(fetch(conn, query).await?.pop())
}

async fn under_prefix(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    kind: &str,
    id: &str,
    prefix: &str,
) -> Result<Vec<BindingRecord>> {
    let mut query = of_consumer(tenant, kind, id).order_by(binding::Column::ConfigPath, Order::Asc);
    if !prefix.is_empty() {
        // The range bound lets the unique index seek (byte order on both
        // backends: COLLATE "C" on PostgreSQL); `starts_with` decides.
        query = query
            .filter(binding::Column::ConfigPath.gte(prefix))
            .filter(starts_with(
                (binding::Entity, binding::Column::ConfigPath),
                prefix,
            ));
    }
    fetch(conn, query).await
}

/// Runs a binding query joined with the secret's key.
async fn fetch(
    conn: &impl ConnectionTrait,
    query: Select<binding::Entity>,
) -> Result<Vec<BindingRecord>> {
    let rows = query
        .join(JoinType::InnerJoin, binding::Relation::Secret.def())
        .column_as(secret::Column::Key, "secret_key")
        .into_model::<Row>()
        .all(conn)
        .await
        .map_err(db_err)?;
    rows.into_iter().map(to_record).collect()
}

fn to_record(row: Row) -> Result<BindingRecord> {
    Ok(BindingRecord {
        tenant: TenantId::parse(&row.tenant, "tenant").map_err(|_| corrupt(TABLE, "tenant"))?,
        secret_key: SecretKey::parse(&row.secret_key, "key")
            .map_err(|_| corrupt("secrets", "key"))?,
        id: row.id,
        secret_uid: row.secret_uid,
        consumer_kind: row.consumer_kind,
        consumer_id: row.consumer_id,
        config_path: row.config_path,
        version_selector: row.version_selector,
        required: row.required,
        label: row.label,
        create_time: row.create_time,
        update_time: row.update_time,
        revision: row.revision,
    })
}

/// The columns [`WriteTx::update_binding`] may change.
fn mutable_columns(b: &BindingRecord) -> binding::ActiveModel {
    binding::ActiveModel {
        id: NotSet,
        tenant: NotSet,
        secret_uid: Set(b.secret_uid.clone()),
        consumer_kind: NotSet,
        consumer_id: NotSet,
        config_path: NotSet,
        version_selector: Set(b.version_selector.clone()),
        required: Set(b.required),
        label: Set(b.label.clone()),
        create_time: NotSet,
        update_time: Set(b.update_time),
        revision: Set(b.revision),
    }
}
