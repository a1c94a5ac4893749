//! Where secret values live. One object-safe async trait,
//! [`SecretProvider`], that every backend implements; a [`ProviderRegistry`]
//! built once at start; the built-in [`local_encrypted`] provider; and a
//! [`conformance`] suite that every provider's tests run.
//!
//! Providers see values only as bytes in a [`SecretValue`] (zeroized on drop,
//! never printed). What a provider stores about a version is its opaque
//! [`StoredVersion`]; Coffer's database keeps it and hands it back on resolve.

pub mod conformance;
mod error;
pub mod local_encrypted;
mod provider;
pub mod registry;
mod types;

pub use error::{ProviderError, ProviderErrorKind};
pub use local_encrypted::LocalEncryptedProvider;
pub use provider::SecretProvider;
pub use registry::{ProviderRegistry, ProviderRegistryBuilder, RegistryError};
pub use types::{
    ProviderDescriptor, ProviderHealth, RemoveMode, SecretValue, StoredVersion, VersionContext,
};
