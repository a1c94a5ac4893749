//! [`Instrumented`]: the wrapper every vault client from
//! [`crate::ProviderRegistry::client`] comes in. Each call runs in a
//! `provider.call` tracing span (provider, operation and vault uid; never a
//! value, a reference or a setting) and feeds two metrics:
//!
//! - `coffer_provider_call_duration_seconds{provider,operation}` (histogram)
//! - `coffer_provider_errors_total{provider,operation,kind}` (counter; `kind`
//!   is the [`crate::ProviderErrorKind`], or `unhealthy` for a failed health
//!   check; a batch counts each failed item)
//!
//! Labels are static strings, so recording allocates nothing and costs an
//! atomic load when no metrics recorder is installed.
//!
//! It also bounds how many calls run against one vault at once (the
//! [`crate::registry::ProviderLimits`] gate, one semaphore per vault shared by
//! every client revision of it): a call that cannot start within the queue
//! timeout fails with [`crate::ProviderErrorKind::Busy`] (RESOURCE_EXHAUSTED,
//! PROVIDER_BUSY, with a retry delay) instead of piling up behind a slow
//! remote while its request holds server resources. Health checks are not
//! gated: a busy vault is not an unhealthy one, and a check must not store
//! that it is.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::error::ProviderError;
use crate::provider::SecretProvider;
use crate::types::{
    LinkedExternal, ProviderDescriptor, ProviderHealth, RemotePage, RemoveMode, SecretValue,
    StoredVersion, VersionContext,
};

/// Histogram of provider call latency, by provider and operation.
pub const CALL_DURATION: &str = "coffer_provider_call_duration_seconds";
/// Counter of failed provider calls, by provider, operation and error kind.
pub const ERRORS: &str = "coffer_provider_errors_total";

/// The least retry delay a busy vault suggests: with a zero queue timeout a
/// zero delay would invite an immediate retry storm.
const MIN_BUSY_RETRY: Duration = Duration::from_millis(100);

/// The bound on concurrent calls to one vault.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    permits: Arc<Semaphore>,
    /// How long a call may wait for a permit.
    queue_timeout: Duration,
}

impl Gate {
    pub(crate) fn new(permits: Arc<Semaphore>, queue_timeout: Duration) -> Self {
        Gate {
            permits,
            queue_timeout,
        }
    }

    #[cfg(test)]
    pub(crate) fn permits_for_test(&self) -> Arc<Semaphore> {
        self.permits.clone()
    }

    async fn enter(&self) -> Result<OwnedSemaphorePermit, ProviderError> {
        let busy = || ProviderError::busy(self.queue_timeout.max(MIN_BUSY_RETRY));
        match tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Closed never happens (nothing closes it); treat it as busy.
            Ok(Err(_)) | Err(_) => Err(busy()),
        }
    }
}

/// A vault client that times and traces every call it delegates, and holds
/// each call to its vault's concurrency bound.
#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn SecretProvider>,
    provider: &'static str,
    /// The vault's uid (empty for the built-in store); in spans only, as a
    /// metric label it would grow with the number of vaults.
    vault: Arc<str>,
    /// `None`: calls are not bounded.
    gate: Option<Gate>,
}

impl Instrumented {
    /// Wraps `inner`, the client of the vault `vault_key`, without a bound
    /// on concurrent calls.
    pub fn wrap(inner: Arc<dyn SecretProvider>, vault_key: &str) -> Arc<dyn SecretProvider> {
        Self::wrap_gated(inner, vault_key, None)
    }

    pub(crate) fn wrap_gated(
        inner: Arc<dyn SecretProvider>,
        vault_key: &str,
        gate: Option<Gate>,
    ) -> Arc<dyn SecretProvider> {
        let provider = inner.descriptor().id;
        Arc::new(Instrumented {
            inner,
            provider,
            vault: Arc::from(vault_key),
            gate,
        })
    }

    /// Waits (at most the queue timeout) for the vault's permit; a busy
    /// vault is counted as an error of kind `busy`.
    async fn enter(
        &self,
        operation: &'static str,
    ) -> Result<Option<OwnedSemaphorePermit>, ProviderError> {
        let Some(gate) = &self.gate else {
            return Ok(None);
        };
        match gate.enter().await {
            Ok(permit) => Ok(Some(permit)),
            Err(err) => {
                tracing::warn!(
                    provider = self.provider,
                    operation,
                    vault = &*self.vault,
                    "provider call refused: the vault's concurrency bound is reached"
                );
                self.record_error(operation, err.kind.as_str());
                Err(err)
            }
        }
    }

    /// Runs one call in its span and records its latency and, on failure,
    /// its error kind.
    async fn observe<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let _permit = self.enter(operation).await?;
        let started = Instant::now();
        let result = call.instrument(self.span(operation)).await;
        self.record_duration(operation, started);
        if let Err(err) = &result {
            self.record_error(operation, err.kind.as_str());
        }
        result
    }

    fn span(&self, operation: &'static str) -> tracing::Span {
        tracing::info_span!(
            "provider.call",
            provider = self.provider,
            operation,
            vault = &*self.vault
        )
    }

    fn record_duration(&self, operation: &'static str, started: Instant) {
        metrics::histogram!(CALL_DURATION, "provider" => self.provider, "operation" => operation)
            .record(started.elapsed().as_secs_f64());
    }

    fn record_error(&self, operation: &'static str, kind: &'static str) {
        metrics::counter!(
            ERRORS,
            "provider" => self.provider,
            "operation" => operation,
            "kind" => kind
        )
        .increment(1);
    }
}

#[async_trait]
impl SecretProvider for Instrumented {
    fn descriptor(&self) -> ProviderDescriptor {
        self.inner.descriptor()
    }

    async fn put_value(
        &self,
        ctx: &VersionContext,
        value: &[u8],
    ) -> Result<StoredVersion, ProviderError> {
        self.observe("put_value", self.inner.put_value(ctx, value))
            .await
    }

    async fn link_external(
        &self,
        ctx: &VersionContext,
        external_ref: &str,
        version_ref: &str,
    ) -> Result<LinkedExternal, ProviderError> {
        self.observe(
            "link_external",
            self.inner.link_external(ctx, external_ref, version_ref),
        )
        .await
    }

    async fn resolve(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<SecretValue, ProviderError> {
        self.observe("resolve", self.inner.resolve(ctx, stored))
            .await
    }

    async fn resolve_many(
        &self,
        items: &[(VersionContext, StoredVersion)],
    ) -> Vec<Result<SecretValue, ProviderError>> {
        let operation = "resolve_many";
        let _permit = match self.enter(operation).await {
            Ok(permit) => permit,
            Err(err) => return items.iter().map(|_| Err(err.clone())).collect(),
        };
        let started = Instant::now();
        let results = self
            .inner
            .resolve_many(items)
            .instrument(self.span(operation))
            .await;
        self.record_duration(operation, started);
        for err in results.iter().filter_map(|r| r.as_ref().err()) {
            self.record_error(operation, err.kind.as_str());
        }
        results
    }

    async fn list_remote(
        &self,
        query: &str,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<RemotePage, ProviderError> {
        self.observe(
            "list_remote",
            self.inner.list_remote(query, page_size, page_token),
        )
        .await
    }

    async fn destroy_version(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<(), ProviderError> {
        self.observe("destroy_version", self.inner.destroy_version(ctx, stored))
            .await
    }

    async fn remove_secret(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
        mode: RemoveMode,
    ) -> Result<(), ProviderError> {
        self.observe("remove_secret", self.inner.remove_secret(ctx, stored, mode))
            .await
    }

    async fn restore_secret(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<(), ProviderError> {
        self.observe("restore_secret", self.inner.restore_secret(ctx, stored))
            .await
    }

    async fn health_check(&self) -> ProviderHealth {
        let operation = "health_check";
        let started = Instant::now();
        let health = self
            .inner
            .health_check()
            .instrument(self.span(operation))
            .await;
        self.record_duration(operation, started);
        if !health.ok {
            self.record_error(operation, "unhealthy");
        }
        health
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use coffer_crypto::Keyring;

    use super::*;
    use crate::local_encrypted::LocalEncryptedProvider;
    use crate::provider::ProviderFactory;
    use crate::{ProviderErrorKind, VaultConfig};

    async fn wrapped() -> Arc<dyn SecretProvider> {
        let factory = LocalEncryptedProvider::new(Arc::new(Keyring::generate().unwrap()));
        let inner = factory.connect(&VaultConfig::LocalEncrypted).await.unwrap();
        Instrumented::wrap(inner, "")
    }

    /// The wrapper passes every call and its result through unchanged,
    /// errors included, and keeps the inner client's descriptor.
    #[tokio::test]
    async fn delegates_values_and_errors() {
        let provider = wrapped().await;
        assert_eq!(provider.descriptor().id, "local_encrypted");
        let ctx = VersionContext::new("acme", "db", 1);
        let stored = provider.put_value(&ctx, b"hunter2").await.unwrap();
        let value = provider.resolve(&ctx, &stored).await.unwrap();
        assert_eq!(value.expose(), b"hunter2");
        let other = VersionContext::new("acme", "db", 2);
        let many = provider
            .resolve_many(&[(ctx.clone(), stored.clone()), (other, stored.clone())])
            .await;
        assert_eq!(many[0].as_ref().unwrap().expose(), b"hunter2");
        // Bound to version 1: decrypting it as version 2 fails.
        assert!(many[1].is_err());
        let err = provider.list_remote("", 10, None).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Unsupported);
        assert!(provider.health_check().await.ok);
    }
}
