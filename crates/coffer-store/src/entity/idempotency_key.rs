//! The `idempotency_keys` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) tenant: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) request_id: String,
    pub(crate) operation: String,
    pub(crate) request_hash: String,
    pub(crate) secret_uid: String,
    pub(crate) version: i64,
    pub(crate) create_time: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
