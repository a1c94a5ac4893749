//! Reading secrets: lookups by name and uid, the batch lookups behind remote
//! import's duplicate checks, the ListSecrets page query and the reaper's
//! scan, plus the conversions between rows and [`SecretRecord`]s. "Visible"
//! means not purged (`purged_time IS NULL`); purged rows remain as
//! tombstones, reachable only by uid.

use std::collections::{BTreeMap, BTreeSet};

use coffer_core::filter::SecretFilter;
use coffer_core::record::{SecretMode, SecretRecord, SecretState, UnixMicros};
use coffer_core::{Result, SecretKey, TenantId};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, Order, QueryFilter, QueryOrder,
    QuerySelect, Select,
};

use crate::conn::Store;
use crate::entity::{secret, secret_label};
use crate::error::{corrupt, db_err};
use crate::labels;

const TABLE: &str = "secrets";

/// Values per `IN (…)`: well below every backend's bound-parameter limit.
pub(crate) const IN_CHUNK: usize = 500;

/// The indexed expression of `ix_secrets_tenant_external_ref` (migration 9),
/// verbatim: both planners use an expression index only for the same text,
/// with literal arguments.
const EXTERNAL_REF_PREFIX: &str = "substr(external_ref, 1, 256)";
const EXTERNAL_REF_PREFIX_CHARS: usize = 256;

impl Store {
    /// The visible secret `tenant/key`, with its labels.
    #[tracing::instrument(name = "db.get_secret", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "get_secret", otel.kind = "client"
    ))]
    pub async fn get_secret(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> Result<Option<SecretRecord>> {
        find_visible(&self.read, tenant, key, false).await
    }

    /// The secret with this uid, with its labels, including a purged tombstone.
    #[tracing::instrument(name = "db.get_secret_by_uid", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "get_secret_by_uid", otel.kind = "client"
    ))]
    pub async fn get_secret_by_uid(&self, uid: &str) -> Result<Option<SecretRecord>> {
        let row = secret::Entity::find_by_id(uid.to_owned())
            .one(&self.read)
            .await
            .map_err(db_err)?;
        match row {
            Some(row) => Ok(with_labels(&self.read, vec![row]).await?.pop()),
            None => Ok(None),
        }
    }

    /// One page of a tenant's visible secrets, ordered by key, starting after
    /// `after_key`. Deleted secrets are hidden unless `show_deleted` or the
    /// filter asks for state DELETED. Filter values reach SQL only as bound
    /// parameters; labels for the page come from one extra query.
    #[tracing::instrument(name = "db.list_secrets", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "list_secrets", otel.kind = "client"
    ))]
    pub async fn list_secrets(
        &self,
        tenant: &TenantId,
        filter: &SecretFilter,
        show_deleted: bool,
        after_key: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SecretRecord>> {
        let mut query = visible()
            .filter(secret::Column::Tenant.eq(tenant.as_str()))
            .order_by(secret::Column::Key, Order::Asc)
            .limit(to_u64(limit));
        if let Some(after) = after_key {
            query = query.filter(secret::Column::Key.gt(after));
        }
        match filter.state {
            Some(state) => query = query.filter(secret::Column::State.eq(state.as_str())),
            None if !show_deleted => {
                query = query.filter(secret::Column::State.ne(SecretState::Deleted.as_str()));
            }
            None => {}
        }
        if let Some(mode) = filter.mode {
            query = query.filter(secret::Column::Mode.eq(mode.as_str()));
        }
        if let Some(provider) = &filter.provider {
            query = query.filter(secret::Column::Provider.eq(provider.as_str()));
        }
        if let Some(vault) = &filter.vault {
            query = query.filter(secret::Column::Vault.eq(vault.as_str()));
        }
        for (key, value) in &filter.labels {
            query = query.filter(Expr::exists(label_match(key, value)));
        }
        let rows = query.all(&self.read).await.map_err(db_err)?;
        with_labels(&self.read, rows).await
    }

    /// The tenant's visible secrets (soft-deleted included) whose external
    /// reference is one of `refs`, in key order: remote import's check for
    /// references that are already imported.
    #[tracing::instrument(name = "db.secrets_by_external_refs", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "secrets_by_external_refs", otel.kind = "client"
    ))]
    pub async fn secrets_by_external_refs(
        &self,
        tenant: &TenantId,
        refs: &[String],
    ) -> Result<Vec<SecretRecord>> {
        find_any_of(&self.read, tenant, refs, |chunk| {
            // The prefix condition lets the expression index seek; the exact
            // comparison decides. Rust and both databases count characters alike.
            let prefixes = chunk.iter().map(|r| {
                r.chars()
                    .take(EXTERNAL_REF_PREFIX_CHARS)
                    .collect::<String>()
            });
            Condition::all()
                .add(Expr::cust(EXTERNAL_REF_PREFIX).is_in(prefixes))
                .add(secret::Column::ExternalRef.is_in(chunk.iter().copied()))
        })
        .await
    }

    /// The tenant's visible secrets (soft-deleted included) holding one of
    /// `keys`, in key order.
    #[tracing::instrument(name = "db.secrets_by_keys", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "secrets_by_keys", otel.kind = "client"
    ))]
    pub async fn secrets_by_keys(
        &self,
        tenant: &TenantId,
        keys: &[SecretKey],
    ) -> Result<Vec<SecretRecord>> {
        let keys: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
        find_any_of(&self.read, tenant, &keys, |chunk| {
            Condition::all().add(secret::Column::Key.is_in(chunk.iter().copied()))
        })
        .await
    }

    /// The tenant's visible secrets (soft-deleted included) using one of
    /// `names` as display name, in key order.
    #[tracing::instrument(name = "db.secrets_by_display_names", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "secrets_by_display_names", otel.kind = "client"
    ))]
    pub async fn secrets_by_display_names(
        &self,
        tenant: &TenantId,
        names: &[String],
    ) -> Result<Vec<SecretRecord>> {
        find_any_of(&self.read, tenant, names, |chunk| {
            Condition::all().add(secret::Column::DisplayName.is_in(chunk.iter().copied()))
        })
        .await
    }

    /// Deleted secrets whose purge time has come, soonest first.
    #[tracing::instrument(name = "db.secrets_due_for_purge", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "secrets_due_for_purge", otel.kind = "client"
    ))]
    pub async fn secrets_due_for_purge(
        &self,
        now: UnixMicros,
        limit: usize,
    ) -> Result<Vec<SecretRecord>> {
        let rows = visible()
            .filter(secret::Column::State.eq(SecretState::Deleted.as_str()))
            .filter(secret::Column::PurgeTime.lte(now))
            .order_by(secret::Column::PurgeTime, Order::Asc)
            .order_by(secret::Column::Uid, Order::Asc)
            .limit(to_u64(limit))
            .all(&self.read)
            .await
            .map_err(db_err)?;
        with_labels(&self.read, rows).await
    }
}

/// `SELECT 1 FROM secret_labels WHERE secret_uid = secrets.uid AND key = ? AND value = ?`.
fn label_match(key: &str, value: &str) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .expr(Expr::val(1))
        .from(secret_label::Entity)
        .and_where(
            Expr::col((secret_label::Entity, secret_label::Column::SecretUid))
                .equals((secret::Entity, secret::Column::Uid)),
        )
        .and_where(Expr::col((secret_label::Entity, secret_label::Column::Key)).eq(key))
        .and_where(Expr::col((secret_label::Entity, secret_label::Column::Value)).eq(value))
        .to_owned()
}

/// Secrets that are not purged.
pub(crate) fn visible() -> Select<secret::Entity> {
    secret::Entity::find().filter(secret::Column::PurgedTime.is_null())
}

/// The visible secret `tenant/key`; `lock` adds `FOR UPDATE` (PostgreSQL only:
/// SQLite has one writer, which already serializes write transactions).
pub(crate) async fn find_visible(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    key: &SecretKey,
    lock: bool,
) -> Result<Option<SecretRecord>> {
    let mut query = visible()
        .filter(secret::Column::Tenant.eq(tenant.as_str()))
        .filter(secret::Column::Key.eq(key.as_str()));
    if lock && crate::conn::is_postgres(conn) {
        query = query.lock_exclusive();
    }
    let row = query.one(conn).await.map_err(db_err)?;
    match row {
        Some(row) => Ok(with_labels(conn, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

/// The tenant's visible secrets matching `matches` for any of `values`, in
/// key order. Values are deduplicated, so each row matches in one chunk only.
async fn find_any_of<F>(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    values: &[String],
    matches: F,
) -> Result<Vec<SecretRecord>>
where
    F: Fn(&[&str]) -> Condition,
{
    let values: Vec<&str> = values
        .iter()
        .map(String::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rows = Vec::new();
    for chunk in values.chunks(IN_CHUNK) {
        let found = visible()
            .filter(secret::Column::Tenant.eq(tenant.as_str()))
            .filter(matches(chunk))
            .all(conn)
            .await
            .map_err(db_err)?;
        rows.extend(found);
    }
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    with_labels(conn, rows).await
}

/// Converts rows into records, loading their labels in one query per
/// [`IN_CHUNK`] rows.
pub(crate) async fn with_labels(
    conn: &impl ConnectionTrait,
    rows: Vec<secret::Model>,
) -> Result<Vec<SecretRecord>> {
    let uids: Vec<&str> = rows.iter().map(|r| r.uid.as_str()).collect();
    let mut labels = labels::load(conn, &uids).await.map_err(db_err)?;
    rows.into_iter()
        .map(|row| {
            let row_labels = labels.remove(&row.uid).unwrap_or_default();
            to_record(row, row_labels)
        })
        .collect()
}

fn to_record(row: secret::Model, labels: BTreeMap<String, String>) -> Result<SecretRecord> {
    Ok(SecretRecord {
        tenant: TenantId::parse(&row.tenant, "tenant").map_err(|_| corrupt(TABLE, "tenant"))?,
        key: SecretKey::parse(&row.key, "key").map_err(|_| corrupt(TABLE, "key"))?,
        mode: SecretMode::parse(&row.mode).ok_or_else(|| corrupt(TABLE, "mode"))?,
        state: SecretState::parse(&row.state).ok_or_else(|| corrupt(TABLE, "state"))?,
        uid: row.uid,
        display_name: row.display_name,
        description: row.description,
        labels,
        provider: row.provider,
        vault: row.vault,
        external_ref: row.external_ref,
        current_version: row.current_version,
        latest_version: row.latest_version,
        create_time: row.create_time,
        update_time: row.update_time,
        rotate_time: row.rotate_time,
        last_resolve_time: row.last_resolve_time,
        delete_time: row.delete_time,
        purge_time: row.purge_time,
        revision: row.revision,
    })
}

/// Every mutable column of a record; identity columns (uid, tenant, key,
/// create_time) and the tombstone marker are left unset.
pub(crate) fn mutable_columns(rec: &SecretRecord) -> secret::ActiveModel {
    secret::ActiveModel {
        uid: NotSet,
        tenant: NotSet,
        key: NotSet,
        display_name: Set(rec.display_name.clone()),
        description: Set(rec.description.clone()),
        mode: Set(rec.mode.as_str().to_owned()),
        provider: Set(rec.provider.clone()),
        vault: Set(rec.vault.clone()),
        external_ref: Set(rec.external_ref.clone()),
        state: Set(rec.state.as_str().to_owned()),
        current_version: Set(rec.current_version),
        latest_version: Set(rec.latest_version),
        create_time: NotSet,
        update_time: Set(rec.update_time),
        rotate_time: Set(rec.rotate_time),
        last_resolve_time: Set(rec.last_resolve_time),
        delete_time: Set(rec.delete_time),
        purge_time: Set(rec.purge_time),
        purged_time: NotSet,
        revision: Set(rec.revision),
    }
}

/// A full new row for `rec`.
pub(crate) fn new_row(rec: &SecretRecord) -> secret::ActiveModel {
    secret::ActiveModel {
        uid: Set(rec.uid.clone()),
        tenant: Set(rec.tenant.as_str().to_owned()),
        key: Set(rec.key.as_str().to_owned()),
        create_time: Set(rec.create_time),
        purged_time: Set(None),
        ..mutable_columns(rec)
    }
}

/// Page sizes are small; saturate rather than fail on absurd values.
pub(crate) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
