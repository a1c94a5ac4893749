//! Labels of secrets, kept in `secret_labels`: loaded for a whole page in one
//! query and replaced wholesale on every write of a secret.

use std::collections::{BTreeMap, HashMap};

use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use crate::entity::secret_label;
use crate::secrets::IN_CHUNK;

/// The labels of every given secret, in one `IN` query per chunk of uids.
pub(crate) async fn load(
    conn: &impl ConnectionTrait,
    uids: &[&str],
) -> Result<HashMap<String, BTreeMap<String, String>>, DbErr> {
    let mut out: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    if uids.is_empty() {
        return Ok(out);
    }
    for chunk in uids.chunks(IN_CHUNK) {
        let rows = secret_label::Entity::find()
            .filter(secret_label::Column::SecretUid.is_in(chunk.iter().copied()))
            .all(conn)
            .await?;
        for row in rows {
            out.entry(row.secret_uid)
                .or_default()
                .insert(row.key, row.value);
        }
    }
    Ok(out)
}

/// Inserts the labels of a secret that has none yet.
pub(crate) async fn insert(
    conn: &impl ConnectionTrait,
    uid: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), DbErr> {
    if labels.is_empty() {
        return Ok(());
    }
    let rows = labels.iter().map(|(key, value)| secret_label::ActiveModel {
        secret_uid: Set(uid.to_owned()),
        key: Set(key.clone()),
        value: Set(value.clone()),
    });
    secret_label::Entity::insert_many(rows)
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Removes every label of a secret.
pub(crate) async fn delete(conn: &impl ConnectionTrait, uid: &str) -> Result<(), DbErr> {
    secret_label::Entity::delete_many()
        .filter(secret_label::Column::SecretUid.eq(uid))
        .exec(conn)
        .await?;
    Ok(())
}

/// Replaces a secret's labels with `labels`.
pub(crate) async fn replace(
    conn: &impl ConnectionTrait,
    uid: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), DbErr> {
    delete(conn, uid).await?;
    insert(conn, uid, labels).await
}
