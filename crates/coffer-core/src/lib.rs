//! Coffer's domain, independent of transport and storage: resource names and
//! their validation, lifecycle states, the records the store keeps, list
//! filters and page tokens, and the one error type every layer speaks.
//!
//! Nothing here knows tonic or SeaORM; the server maps [`ErrorCode`] to gRPC
//! codes and the store maps database errors into [`Error`].

pub mod audit;
pub mod authz;
pub mod error;
pub mod filter;
pub mod name;
pub mod page;
pub mod principal;
pub mod record;
pub mod validate;

pub use error::{Error, ErrorCode, FieldViolation, Reason, Result};
pub use name::{SecretKey, SecretName, TenantId, VaultName, VersionName};
pub use principal::Principal;
