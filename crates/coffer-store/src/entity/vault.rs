//! The `vaults` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "vaults")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) uid: String,
    pub(crate) tenant: String,
    pub(crate) vault_id: String,
    pub(crate) provider: String,
    pub(crate) display_name: String,
    pub(crate) state: String,
    /// At most one per (tenant, provider): the partial index `ux_vaults_default`.
    pub(crate) is_default: bool,
    /// The provider's settings, a JSON object.
    pub(crate) config: String,
    pub(crate) health_status: String,
    pub(crate) health_message: String,
    pub(crate) health_check_time: Option<i64>,
    pub(crate) create_time: i64,
    pub(crate) update_time: i64,
    pub(crate) disable_time: Option<i64>,
    pub(crate) revision: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
