//! Idempotency keys: the first result of a create or rotation per
//! (tenant, request_id), so a replayed request returns it and writes nothing.

use coffer_core::record::UnixMicros;
use coffer_core::{Reason, Result, TenantId};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::conn::Store;
use crate::entity::idempotency_key;
use crate::error::{db_err, on_unique};
use crate::tx::WriteTx;

/// One remembered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub tenant: String,
    pub request_id: String,
    /// Which RPC it was, e.g. `secret.create`.
    pub operation: String,
    /// Hash of the request, to tell a replay from a different request reusing the id.
    pub request_hash: String,
    pub secret_uid: String,
    pub version: i64,
    pub create_time: i64,
}

impl Store {
    #[tracing::instrument(name = "db.find_idempotency", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "find_idempotency", otel.kind = "client"
    ))]
    pub async fn find_idempotency(
        &self,
        tenant: &TenantId,
        request_id: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        let row = idempotency_key::Entity::find_by_id((
            tenant.as_str().to_owned(),
            request_id.to_owned(),
        ))
        .one(&self.read)
        .await
        .map_err(db_err)?;
        Ok(row.map(|row| IdempotencyRecord {
            tenant: row.tenant,
            request_id: row.request_id,
            operation: row.operation,
            request_hash: row.request_hash,
            secret_uid: row.secret_uid,
            version: row.version,
            create_time: row.create_time,
        }))
    }

    /// Forgets requests recorded before `cutoff`; returns how many.
    #[tracing::instrument(name = "db.delete_idempotency_older_than", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "delete_idempotency_older_than", otel.kind = "client"
    ))]
    pub async fn delete_idempotency_older_than(&self, cutoff: UnixMicros) -> Result<u64> {
        let _turn = self.write_turn().await?;
        let result = idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::CreateTime.lt(cutoff))
            .exec(&self.write)
            .await
            .map_err(db_err)?;
        Ok(result.rows_affected)
    }
}

impl WriteTx {
    /// Records a request. A (tenant, request_id) already recorded answers
    /// `AlreadyExists` with `REQUEST_ID_REUSED`.
    #[tracing::instrument(name = "db.insert_idempotency", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "insert_idempotency", otel.kind = "client"
    ))]
    pub async fn insert_idempotency(&self, rec: &IdempotencyRecord) -> Result<()> {
        let row = idempotency_key::ActiveModel {
            tenant: Set(rec.tenant.clone()),
            request_id: Set(rec.request_id.clone()),
            operation: Set(rec.operation.clone()),
            request_hash: Set(rec.request_hash.clone()),
            secret_uid: Set(rec.secret_uid.clone()),
            version: Set(rec.version),
            create_time: Set(rec.create_time),
        };
        idempotency_key::Entity::insert(row)
            .exec_without_returning(&self.txn)
            .await
            .map_err(|err| {
                on_unique(
                    self.failed(err),
                    Reason::RequestIdReused,
                    "this request_id was already used; use a new request_id for a new request",
                )
            })?;
        Ok(())
    }
}
