//! The `secrets` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "secrets")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) uid: String,
    pub(crate) tenant: String,
    pub(crate) key: String,
    pub(crate) display_name: String,
    pub(crate) description: String,
    pub(crate) mode: String,
    pub(crate) provider: String,
    pub(crate) vault: String,
    pub(crate) external_ref: String,
    pub(crate) state: String,
    pub(crate) current_version: i64,
    pub(crate) latest_version: i64,
    pub(crate) create_time: i64,
    pub(crate) update_time: i64,
    pub(crate) rotate_time: Option<i64>,
    pub(crate) last_resolve_time: Option<i64>,
    pub(crate) delete_time: Option<i64>,
    pub(crate) purge_time: Option<i64>,
    /// Set when the secret was purged; the row stays as a tombstone.
    pub(crate) purged_time: Option<i64>,
    pub(crate) revision: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
