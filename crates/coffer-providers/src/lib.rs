//! Where secret values live. Two object-safe async traits every backend
//! implements: [`ProviderFactory`] (validates a vault's settings and builds
//! its client) and [`SecretProvider`] (the client); a [`ProviderRegistry`]
//! built once at start that caches a client per vault; the built-in [`local_encrypted`] provider;
//! the [`aws_secrets_manager`] provider; and a [`conformance`] suite that every provider's tests
//! run (with the `testing` feature, `testing` starts the moto server the AWS tests use).
//!
//! Providers see values only as bytes in a [`SecretValue`] (zeroized on drop,
//! never printed). What a provider stores about a version is its opaque
//! [`StoredVersion`]; Coffer's database keeps it and hands it back on resolve.

pub mod aws_secrets_manager;
mod config;
pub mod conformance;
mod error;
pub mod instrumented;
pub mod local_encrypted;
mod provider;
pub mod registry;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use aws_secrets_manager::{AwsProviderOptions, AwsSecretsManagerFactory};
pub use config::{AwsSecretsManagerConfig, ConfigViolation, VaultConfig};
pub use error::{ProviderError, ProviderErrorKind};
pub use local_encrypted::LocalEncryptedProvider;
pub use provider::{ProviderFactory, SecretProvider};
pub use registry::{KNOWN_PROVIDERS, ProviderRegistry, ProviderRegistryBuilder, RegistryError};
pub use types::{
    LinkedExternal, ProviderDescriptor, ProviderHealth, RemotePage, RemoteSecret, RemoveMode,
    SecretValue, StoredVersion, VersionContext,
};
