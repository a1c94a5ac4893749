//! SeaORM entities, one per table created by the `coffer-migration` crate.
//! They mirror the schema column for column; conversion to and from the
//! domain records lives with the repositories.

pub(crate) mod audit_event;
pub(crate) mod audit_head;
pub(crate) mod binding;
pub(crate) mod idempotency_key;
pub(crate) mod secret;
pub(crate) mod secret_label;
pub(crate) mod secret_version;
pub(crate) mod vault;
