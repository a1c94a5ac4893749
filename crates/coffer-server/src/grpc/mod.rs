//! The gRPC edge: tonic service implementations that parse and validate
//! request messages, call the use cases in [`crate::app`] and map results.

mod audit;
pub mod auth;
pub mod authz;
mod bindings;
pub mod convert;
mod messages;
mod secrets;
pub mod status;
mod vault_messages;
mod vaults;
mod watch;

pub use secrets::SecretsApi;
pub use vaults::VaultsApi;
