//! Writing secrets inside a [`WriteTx`]: the locked read that serializes
//! rotations, uniqueness checks, insert, optimistic update, purge and the
//! last-resolve-time stamp.

use coffer_core::record::{SecretRecord, UnixMicros};
use coffer_core::{Error, Reason, Result, SecretKey, TenantId};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter};

use crate::bindings;
use crate::entity::{secret, secret_version};
use crate::error::{db_err, secret_exists};
use crate::labels;
use crate::secrets::{find_visible, mutable_columns, new_row, visible};

/// Secrets stamped per statement by [`WriteTx::set_last_resolve_time`].
const STAMP_CHUNK: usize = 200;
use crate::tx::WriteTx;

impl WriteTx {
    /// The visible secret `tenant/key`, locked until commit on PostgreSQL
    /// (`SELECT … FOR UPDATE`), so concurrent rotations of one secret queue up.
    /// SQLite has a single writer, which already serializes this transaction.
    #[tracing::instrument(name = "db.get_secret_for_update", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "get_secret_for_update", otel.kind = "client"
    ))]
    pub async fn get_secret_for_update(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> Result<Option<SecretRecord>> {
        find_visible(&self.txn, tenant, key, true)
            .await
            .map_err(|e| self.failed(e))
    }

    /// The visible secret holding this key, in any state (a deleted secret
    /// keeps its key until it is purged).
    #[tracing::instrument(name = "db.secret_key_taken", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "secret_key_taken", otel.kind = "client"
    ))]
    pub async fn secret_key_taken(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> Result<Option<SecretRecord>> {
        find_visible(&self.txn, tenant, key, false)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Whether another visible secret of the tenant uses this display name.
    #[tracing::instrument(name = "db.display_name_taken", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "display_name_taken", otel.kind = "client"
    ))]
    pub async fn display_name_taken(
        &self,
        tenant: &TenantId,
        display_name: &str,
        except_uid: Option<&str>,
    ) -> Result<bool> {
        let mut query = visible()
            .filter(secret::Column::Tenant.eq(tenant.as_str()))
            .filter(secret::Column::DisplayName.eq(display_name));
        if let Some(uid) = except_uid {
            query = query.filter(secret::Column::Uid.ne(uid));
        }
        let count = query
            .count(&self.txn)
            .await
            .map_err(|e| self.failed(db_err(e)))?;
        Ok(count > 0)
    }

    /// Inserts a secret and its labels. A taken key or display name answers
    /// `AlreadyExists` (the partial unique indexes decide, also under a race).
    #[tracing::instrument(name = "db.insert_secret", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "insert_secret", otel.kind = "client"
    ))]
    pub async fn insert_secret(&self, rec: &SecretRecord) -> Result<()> {
        secret::Entity::insert(new_row(rec))
            .exec_without_returning(&self.txn)
            .await
            .map_err(|e| self.failed(secret_exists(e)))?;
        labels::insert(&self.txn, &rec.uid, &rec.labels)
            .await
            .map_err(|e| self.failed(db_err(e)))
    }

    /// Writes every mutable column of `rec` and replaces its labels, if the
    /// stored revision is still `expected_revision`; otherwise `Aborted`.
    /// The caller sets `rec.revision` to the new revision.
    #[tracing::instrument(name = "db.update_secret", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "update_secret", otel.kind = "client"
    ))]
    pub async fn update_secret(&self, rec: &SecretRecord, expected_revision: i64) -> Result<()> {
        let result = secret::Entity::update_many()
            .set(mutable_columns(rec))
            .filter(secret::Column::Uid.eq(rec.uid.as_str()))
            .filter(secret::Column::Revision.eq(expected_revision))
            .filter(secret::Column::PurgedTime.is_null())
            .exec(&self.txn)
            .await
            .map_err(|e| self.failed(secret_exists(e)))?;
        if result.rows_affected == 0 {
            return Err(Error::etag_mismatch(&rec.name().to_string()));
        }
        labels::replace(&self.txn, &rec.uid, &rec.labels)
            .await
            .map_err(|e| self.failed(db_err(e)))
    }

    /// Purges a secret: its versions (and their material), labels and
    /// bindings are deleted, and the row becomes a tombstone (`purged_time = now`), which
    /// frees its key and display name. `NotFound` if it is already purged.
    #[tracing::instrument(name = "db.purge_secret", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "purge_secret", otel.kind = "client"
    ))]
    pub async fn purge_secret(&self, uid: &str, now: UnixMicros) -> Result<()> {
        let result = secret::Entity::update_many()
            .col_expr(secret::Column::PurgedTime, Expr::val(now))
            .col_expr(
                secret::Column::Revision,
                Expr::col(secret::Column::Revision).add(1),
            )
            .filter(secret::Column::Uid.eq(uid))
            .filter(secret::Column::PurgedTime.is_null())
            .exec(&self.txn)
            .await
            .map_err(|e| self.failed(db_err(e)))?;
        if result.rows_affected == 0 {
            return Err(Error::new(
                coffer_core::ErrorCode::NotFound,
                Reason::SecretNotFound,
                "secret not found or already purged",
            ));
        }
        secret_version::Entity::delete_many()
            .filter(secret_version::Column::SecretUid.eq(uid))
            .exec(&self.txn)
            .await
            .map_err(|e| self.failed(db_err(e)))?;
        // Explicit rather than left to ON DELETE CASCADE: the secret row
        // stays (a tombstone), so the cascade would never fire.
        bindings::delete_for_secret(&self.txn, uid)
            .await
            .map_err(|e| self.failed(db_err(e)))?;
        labels::delete(&self.txn, uid)
            .await
            .map_err(|e| self.failed(db_err(e)))
    }

    /// Stamps `time` as the last resolve of these secrets, only moving it
    /// forward (a late, older stamp is ignored). Not a change of the secret:
    /// no revision bump, so etags stay valid.
    #[tracing::instrument(name = "db.set_last_resolve_time", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "set_last_resolve_time", otel.kind = "client"
    ))]
    pub async fn set_last_resolve_time(
        &self,
        secret_uids: &[String],
        time: UnixMicros,
    ) -> Result<()> {
        // Small statements: sqlx leaves Nagle on, and a statement of more
        // than ~16 KiB waits for the server's delayed ACK (~40 ms) on
        // PostgreSQL. 200 uids are about 8 KiB.
        for chunk in secret_uids.chunks(STAMP_CHUNK) {
            secret::Entity::update_many()
                .col_expr(secret::Column::LastResolveTime, Expr::val(time))
                .filter(secret::Column::Uid.is_in(chunk.iter().map(String::as_str)))
                .filter(
                    Condition::any()
                        .add(secret::Column::LastResolveTime.is_null())
                        .add(secret::Column::LastResolveTime.lt(time)),
                )
                .exec(&self.txn)
                .await
                .map_err(|e| self.failed(db_err(e)))?;
        }
        Ok(())
    }
}
