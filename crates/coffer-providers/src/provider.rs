//! The two traits every backend implements: [`ProviderFactory`] (one per
//! provider: its descriptor, config validation, and a client per vault) and
//! [`SecretProvider`] (that client: values in and out of one vault).

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{ConfigViolation, VaultConfig};
use crate::error::ProviderError;
use crate::types::{
    LinkedExternal, ProviderDescriptor, ProviderHealth, RemotePage, RemoveMode, SecretValue,
    StoredVersion, VersionContext,
};

/// One provider of this deployment. Registered once in a
/// [`crate::ProviderRegistry`], which asks it for a client per vault.
#[async_trait]
pub trait ProviderFactory: Send + Sync + std::fmt::Debug {
    /// Identity and capabilities.
    fn descriptor(&self) -> ProviderDescriptor;

    /// Checks a vault's settings beyond their shape (which
    /// [`VaultConfig::from_json`] already checked). `Ok` carries warnings
    /// worth showing to an admin; `Err` every refused setting.
    fn validate_config(&self, config: &VaultConfig) -> Result<Vec<String>, Vec<ConfigViolation>>;

    /// A client for one vault's (validated) settings. The registry caches it
    /// per vault and settings revision, so this runs once per change.
    async fn connect(&self, config: &VaultConfig)
    -> Result<Arc<dyn SecretProvider>, ProviderError>;
}

/// A client of one vault. Object-safe: the server holds clients as
/// `Arc<dyn SecretProvider>`.
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
    /// without reading its value. Refuses references inside the provider's
    /// own managed namespace (kind `Guardrail`).
    async fn link_external(
        &self,
        ctx: &VersionContext,
        external_ref: &str,
        version_ref: &str,
    ) -> Result<LinkedExternal, ProviderError> {
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

    /// One page of the remote secrets that could be imported by reference
    /// (never reading a value). `page_token` is the previous page's
    /// `next_page_token`.
    async fn list_remote(
        &self,
        query: &str,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<RemotePage, ProviderError> {
        let _ = (query, page_size, page_token);
        Err(ProviderError::unsupported(
            self.descriptor().id,
            "listing remote secrets",
        ))
    }

    /// Destroys one version's value where the provider can (called when a
    /// version is destroyed; Coffer drops the material either way). A no-op
    /// for external references, which Coffer never changes remotely.
    async fn destroy_version(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<(), ProviderError>;

    /// Removes the remote secret a version belongs to: recoverably when the
    /// secret is soft-deleted ([`RemoveMode::Archive`]), for good when it is
    /// purged. Idempotent (already gone is success) and a no-op for external
    /// references.
    async fn remove_secret(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
        mode: RemoveMode,
    ) -> Result<(), ProviderError>;

    /// Undoes an `Archive` removal (the secret was undeleted). Idempotent.
    async fn restore_secret(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<(), ProviderError> {
        let _ = (ctx, stored);
        Ok(())
    }

    /// Checks that the vault is reachable and usable.
    async fn health_check(&self) -> ProviderHealth;
}
