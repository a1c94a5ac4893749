//! The `audit_events` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) tenant: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) seq: i64,
    pub(crate) time: i64,
    pub(crate) principal: String,
    pub(crate) action: String,
    pub(crate) resource: String,
    pub(crate) version: i64,
    pub(crate) consumer_kind: String,
    pub(crate) consumer_id: String,
    pub(crate) config_path: String,
    /// A JSON object, keys sorted.
    pub(crate) context: String,
    pub(crate) outcome: String,
    pub(crate) reason: String,
    pub(crate) request_id: String,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
