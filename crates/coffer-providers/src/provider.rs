//! The [`SecretProvider`] trait every backend implements.

use async_trait::async_trait;

use crate::error::ProviderError;
use crate::types::{
    ProviderDescriptor, ProviderHealth, RemoveMode, SecretValue, StoredVersion, VersionContext,
};

/// A backend that keeps secret values. Object-safe: the server holds
/// providers as `Arc<dyn SecretProvider>`.
///
/// Implementations never log or put a value in an error, and classify every
/// failure into a [`crate::ProviderErrorKind`] (not everything as `Provider`).
#[async_trait]
pub trait SecretProvider: Send + Sync + std::fmt::Debug {
    /// Identity and capabilities.
    fn descriptor(&self) -> ProviderDescriptor;

    /// Writes a new managed version and returns what to store for it.
    async fn put_value(
        &self,
        ctx: &VersionContext,
        value: &[u8],
    ) -> Result<StoredVersion, ProviderError>;

    /// Points a version at a secret that already exists in the provider,
    /// without reading its value.
    async fn link_external(
        &self,
        ctx: &VersionContext,
        external_ref: &str,
        version_ref: &str,
    ) -> Result<StoredVersion, ProviderError> {
        let _ = (ctx, external_ref, version_ref);
        Err(ProviderError::unsupported(
            self.descriptor().id,
            "external references",
        ))
    }

    /// Reads the value of one stored version.
    async fn resolve(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<SecretValue, ProviderError>;

    /// Reads several versions; one result per item, in request order.
    /// The default resolves them one by one.
    async fn resolve_many(
        &self,
        items: &[(VersionContext, StoredVersion)],
    ) -> Vec<Result<SecretValue, ProviderError>> {
        let mut results = Vec::with_capacity(items.len());
        for (ctx, stored) in items {
            results.push(self.resolve(ctx, stored).await);
        }
        results
    }

    /// Removes a stored version from the provider.
    async fn remove(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
        mode: RemoveMode,
    ) -> Result<(), ProviderError>;

    /// Checks that the provider is reachable and usable.
    async fn health_check(&self) -> ProviderHealth;
}
