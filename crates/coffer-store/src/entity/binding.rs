//! The `bindings` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bindings")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: String,
    pub(crate) tenant: String,
    pub(crate) secret_uid: String,
    pub(crate) consumer_kind: String,
    pub(crate) consumer_id: String,
    pub(crate) config_path: String,
    pub(crate) version_selector: String,
    pub(crate) required: bool,
    pub(crate) label: String,
    pub(crate) create_time: i64,
    pub(crate) update_time: i64,
    pub(crate) revision: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {
    /// Every read joins the secret for its key.
    #[sea_orm(
        belongs_to = "super::secret::Entity",
        from = "Column::SecretUid",
        to = "super::secret::Column::Uid"
    )]
    Secret,
}

impl ActiveModelBehavior for ActiveModel {}
