//! The `secret_versions` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "secret_versions")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) secret_uid: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) version: i64,
    pub(crate) state: String,
    /// Where the value lives; fixed when the version is written.
    pub(crate) provider: String,
    /// Vault resource name; empty for the built-in local vault.
    pub(crate) vault: String,
    pub(crate) provider_version_ref: String,
    /// The provider's opaque material; NULL once destroyed or purged.
    pub(crate) material: Option<String>,
    pub(crate) fingerprint: String,
    pub(crate) create_time: i64,
    pub(crate) created_by: String,
    pub(crate) destroy_time: Option<i64>,
    pub(crate) revision: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
