//! Secret versions: reads on the store (newest-first pages, the rewrap scan)
//! and writes inside a [`WriteTx`] (insert, optimistic state change, material
//! replacement for rewrap). A version's provider and vault are written once,
//! at insert: a secret moved to another vault leaves its older versions where
//! they are.

use std::collections::BTreeSet;

use coffer_core::record::{VersionRecord, VersionState};
use coffer_core::{Error, ErrorCode, Reason, Result};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, Order, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::conn::Store;
use crate::entity::secret_version;
use crate::error::{corrupt, db_err, on_unique};
use crate::secrets::{IN_CHUNK, to_u64};
use crate::tx::WriteTx;

impl Store {
    #[tracing::instrument(name = "db.get_version", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "get_version", otel.kind = "client"
    ))]
    pub async fn get_version(
        &self,
        secret_uid: &str,
        version: i64,
    ) -> Result<Option<VersionRecord>> {
        find(&self.read, secret_uid, version).await
    }

    /// The versions named by `(secret uid, version)` that exist, in no
    /// particular order: one statement per [`IN_CHUNK`] ids instead of one
    /// per version (a batch of resolves that missed the metadata cache).
    #[tracing::instrument(name = "db.versions_by_ids", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "versions_by_ids", otel.kind = "client"
    ))]
    pub async fn versions_by_ids(&self, ids: &[(String, i64)]) -> Result<Vec<VersionRecord>> {
        let wanted: BTreeSet<(&str, i64)> = ids.iter().map(|(uid, v)| (uid.as_str(), *v)).collect();
        let wanted: Vec<(&str, i64)> = wanted.into_iter().collect();
        let mut records = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(IN_CHUNK) {
            let uids: BTreeSet<&str> = chunk.iter().map(|(uid, _)| *uid).collect();
            let numbers: BTreeSet<i64> = chunk.iter().map(|(_, v)| *v).collect();
            // Both lists match a superset of the pairs (uid a's version of
            // uid b's number); the exact pairs are kept below.
            let rows = secret_version::Entity::find()
                .filter(secret_version::Column::SecretUid.is_in(uids))
                .filter(secret_version::Column::Version.is_in(numbers))
                .all(&self.read)
                .await
                .map_err(db_err)?;
            for row in rows {
                if chunk
                    .binary_search(&(row.secret_uid.as_str(), row.version))
                    .is_ok()
                {
                    records.push(to_record(row)?);
                }
            }
        }
        Ok(records)
    }

    /// Versions of a secret, newest first, below `before_version` if given.
    #[tracing::instrument(name = "db.list_versions", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "list_versions", otel.kind = "client"
    ))]
    pub async fn list_versions(
        &self,
        secret_uid: &str,
        before_version: Option<i64>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>> {
        let mut query = secret_version::Entity::find()
            .filter(secret_version::Column::SecretUid.eq(secret_uid))
            .order_by(secret_version::Column::Version, Order::Desc)
            .limit(to_u64(limit));
        if let Some(before) = before_version {
            query = query.filter(secret_version::Column::Version.lt(before));
        }
        let rows = query.all(&self.read).await.map_err(db_err)?;
        rows.into_iter().map(to_record).collect()
    }

    /// Versions that still hold material, in (secret_uid, version) order after
    /// the `after` cursor: the scan behind `coffer keys rewrap`.
    #[tracing::instrument(name = "db.versions_with_material", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "versions_with_material", otel.kind = "client"
    ))]
    pub async fn versions_with_material(
        &self,
        after: Option<(String, i64)>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>> {
        let mut query = secret_version::Entity::find()
            .filter(secret_version::Column::Material.is_not_null())
            .order_by(secret_version::Column::SecretUid, Order::Asc)
            .order_by(secret_version::Column::Version, Order::Asc)
            .limit(to_u64(limit));
        if let Some((uid, version)) = after {
            query = query.filter(
                Condition::any()
                    .add(secret_version::Column::SecretUid.gt(uid.as_str()))
                    .add(
                        Condition::all()
                            .add(secret_version::Column::SecretUid.eq(uid.as_str()))
                            .add(secret_version::Column::Version.gt(version)),
                    ),
            );
        }
        let rows = query.all(&self.read).await.map_err(db_err)?;
        rows.into_iter().map(to_record).collect()
    }
}

impl WriteTx {
    /// Inserts a new version. A number that already exists means another
    /// writer allocated it concurrently: `Aborted`, so the caller retries.
    #[tracing::instrument(name = "db.insert_version", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "insert_version", otel.kind = "client"
    ))]
    pub async fn insert_version(&self, v: &VersionRecord) -> Result<()> {
        let row = secret_version::ActiveModel {
            secret_uid: Set(v.secret_uid.clone()),
            version: Set(v.version),
            create_time: Set(v.create_time),
            created_by: Set(v.created_by.clone()),
            fingerprint: Set(v.fingerprint.clone()),
            provider: Set(v.provider.clone()),
            vault: Set(v.vault.clone()),
            ..mutable_columns(v)
        };
        secret_version::Entity::insert(row)
            .exec_without_returning(&self.txn)
            .await
            .map_err(|err| {
                let err = on_unique(
                    self.failed(err),
                    Reason::EtagMismatch,
                    "the secret was changed concurrently; read it again and retry",
                );
                if err.code() == ErrorCode::AlreadyExists {
                    Error::new(ErrorCode::Aborted, err.reason(), err.message())
                } else {
                    err
                }
            })?;
        Ok(())
    }

    #[tracing::instrument(name = "db.get_version", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "get_version", otel.kind = "client"
    ))]
    pub async fn get_version(
        &self,
        secret_uid: &str,
        version: i64,
    ) -> Result<Option<VersionRecord>> {
        find(&self.txn, secret_uid, version)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Writes state, material, destroy time, provider version ref and revision
    /// if the stored revision is still `expected_revision`; otherwise `Aborted`.
    #[tracing::instrument(name = "db.update_version", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "update_version", otel.kind = "client"
    ))]
    pub async fn update_version(&self, v: &VersionRecord, expected_revision: i64) -> Result<()> {
        let result = secret_version::Entity::update_many()
            .set(mutable_columns(v))
            .filter(secret_version::Column::SecretUid.eq(v.secret_uid.as_str()))
            .filter(secret_version::Column::Version.eq(v.version))
            .filter(secret_version::Column::Revision.eq(expected_revision))
            .exec(&self.txn)
            .await
            .map_err(|e| self.failed(db_err(e)))?;
        if result.rows_affected == 0 {
            return Err(Error::etag_mismatch(&format!("version {}", v.version)));
        }
        Ok(())
    }

    /// Every version of a secret, oldest first.
    #[tracing::instrument(name = "db.list_all_versions", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "list_all_versions", otel.kind = "client"
    ))]
    pub async fn list_all_versions(&self, secret_uid: &str) -> Result<Vec<VersionRecord>> {
        let rows = secret_version::Entity::find()
            .filter(secret_version::Column::SecretUid.eq(secret_uid))
            .order_by(secret_version::Column::Version, Order::Asc)
            .all(&self.txn)
            .await
            .map_err(|e| self.failed(db_err(e)))?;
        rows.into_iter().map(to_record).collect()
    }

    /// Replaces a version's material without a revision bump (for `coffer keys
    /// rewrap`), but only while it still holds `expected`: a version destroyed
    /// or re-wrapped since it was read is left alone. Returns whether it changed.
    #[tracing::instrument(name = "db.set_version_material", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "set_version_material", otel.kind = "client"
    ))]
    pub async fn set_version_material(
        &self,
        secret_uid: &str,
        version: i64,
        expected: &str,
        material: &str,
    ) -> Result<bool> {
        let result = secret_version::Entity::update_many()
            .set(secret_version::ActiveModel {
                material: Set(Some(material.to_owned())),
                ..Default::default()
            })
            .filter(secret_version::Column::SecretUid.eq(secret_uid))
            .filter(secret_version::Column::Version.eq(version))
            .filter(secret_version::Column::Material.eq(expected))
            .exec(&self.txn)
            .await
            .map_err(|e| self.failed(db_err(e)))?;
        Ok(result.rows_affected == 1)
    }
}

async fn find(
    conn: &impl ConnectionTrait,
    secret_uid: &str,
    version: i64,
) -> Result<Option<VersionRecord>> {
    // `all`, not `one`: `one` adds a LIMIT, and with a LIMIT PostgreSQL may
    // bet that a sequential scan soon meets one of the many rows it expects
    // for an old version number of a much-rotated secret (both values are
    // frequent on their own), reading much of the table instead of one
    // primary-key entry. The key makes the row unique either way
    // (tests/query_plans.rs).
    secret_version::Entity::find_by_id((secret_uid.to_owned(), version))
        .all(conn)
        .await
        .map_err(db_err)?
        .pop()
        .map(to_record)
        .transpose()
}

/// The columns [`WriteTx::update_version`] may change.
fn mutable_columns(v: &VersionRecord) -> secret_version::ActiveModel {
    secret_version::ActiveModel {
        secret_uid: NotSet,
        version: NotSet,
        state: Set(v.state.as_str().to_owned()),
        provider: NotSet,
        vault: NotSet,
        provider_version_ref: Set(v.provider_version_ref.clone()),
        material: Set(v.material.clone()),
        fingerprint: NotSet,
        create_time: NotSet,
        created_by: NotSet,
        destroy_time: Set(v.destroy_time),
        revision: Set(v.revision),
    }
}

fn to_record(row: secret_version::Model) -> Result<VersionRecord> {
    Ok(VersionRecord {
        state: VersionState::parse(&row.state)
            .ok_or_else(|| corrupt("secret_versions", "state"))?,
        secret_uid: row.secret_uid,
        version: row.version,
        provider: row.provider,
        vault: row.vault,
        provider_version_ref: row.provider_version_ref,
        material: row.material,
        fingerprint: row.fingerprint,
        create_time: row.create_time,
        created_by: row.created_by,
        destroy_time: row.destroy_time,
        revision: row.revision,
    })
}
