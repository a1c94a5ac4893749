//! [`ProviderRegistry`]: the providers this deployment offers, keyed by
//! descriptor id, and the client of each vault. Built once at start;
//! duplicate ids are refused. Clients are cached per vault and settings
//! revision, so an AWS client (its connection pool, its credentials) is
//! built once per vault change, not per call. Clients come wrapped in
//! [`Instrumented`], which times and traces every call and holds it to the
//! vault's concurrency bound ([`ProviderLimits`]; one semaphore per vault,
//! kept across client revisions so a settings change cannot reset it).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use coffer_crypto::Keyring;
use tokio::sync::Semaphore;

use crate::aws_secrets_manager;
use crate::config::VaultConfig;
use crate::error::ProviderError;
use crate::instrumented::{Gate, Instrumented};
use crate::local_encrypted::{self, LocalEncryptedProvider};
use crate::provider::{ProviderFactory, SecretProvider};
use crate::types::ProviderDescriptor;

/// Every provider Coffer knows, configured in this deployment or not (what
/// `ListProviders` reports).
pub const KNOWN_PROVIDERS: [ProviderDescriptor; 2] =
    [local_encrypted::DESCRIPTOR, aws_secrets_manager::DESCRIPTOR];

/// A failure to build a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("provider {0} is registered twice")]
    DuplicateProvider(&'static str),
}

/// How many calls may run against one vault (the built-in store counts as
/// one vault) at once, and how long a call waits for its turn before it
/// fails with PROVIDER_BUSY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderLimits {
    /// `None`: unbounded.
    pub concurrency_per_vault: Option<usize>,
    pub queue_timeout: Duration,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        ProviderLimits {
            concurrency_per_vault: Some(64),
            queue_timeout: Duration::from_millis(100),
        }
    }
}

/// The configured providers, by id, and the cached vault clients. Cheap to
/// clone; clones share the cache.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    factories: Arc<BTreeMap<&'static str, Arc<dyn ProviderFactory>>>,
    clients: Arc<Mutex<HashMap<String, CachedClient>>>,
    limits: ProviderLimits,
    /// One semaphore per vault key; as many entries as vaults ever called.
    permits: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

struct CachedClient {
    revision: i64,
    client: Arc<dyn SecretProvider>,
}

/// Collects providers for a [`ProviderRegistry`].
#[derive(Default)]
pub struct ProviderRegistryBuilder {
    factories: BTreeMap<&'static str, Arc<dyn ProviderFactory>>,
    limits: ProviderLimits,
}

impl ProviderRegistry {
    pub fn builder() -> ProviderRegistryBuilder {
        ProviderRegistryBuilder::default()
    }

    /// A registry with only `local_encrypted`, over a fresh in-memory keyring.
    /// For tests: panics if the system random generator fails.
    pub fn for_test() -> ProviderRegistry {
        let keyring = Keyring::generate().expect("generate a test keyring");
        ProviderRegistry::builder()
            .register(Arc::new(LocalEncryptedProvider::new(Arc::new(keyring))))
            .expect("one provider cannot be a duplicate")
            .build()
    }

    /// The provider with this id, if configured.
    pub fn get(&self, id: &str) -> Option<Arc<dyn ProviderFactory>> {
        self.factories.get(id).cloned()
    }

    /// Descriptors of every configured provider, sorted by id.
    pub fn descriptors(&self) -> Vec<ProviderDescriptor> {
        self.factories.values().map(|p| p.descriptor()).collect()
    }

    /// Every known provider and whether this deployment configured it.
    pub fn catalog(&self) -> Vec<(ProviderDescriptor, bool)> {
        KNOWN_PROVIDERS
            .iter()
            .map(|d| (*d, self.factories.contains_key(d.id)))
            .collect()
    }

    /// Ids of every configured provider, sorted.
    pub fn ids(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// The client of one vault: cached under `vault_key` (the vault's uid, or
    /// empty for the built-in local store) until `revision` changes. Every
    /// call on it is timed and traced ([`Instrumented`]).
    pub async fn client(
        &self,
        vault_key: &str,
        revision: i64,
        config: &VaultConfig,
    ) -> Result<Arc<dyn SecretProvider>, ProviderError> {
        if let Some(cached) = self.lock_clients().get(vault_key)
            && cached.revision == revision
        {
            return Ok(cached.client.clone());
        }
        let provider_id = config.provider_id();
        let factory = self.get(provider_id).ok_or_else(|| {
            ProviderError::unsupported(provider_id, "this deployment (it is not configured)")
        })?;
        // Built outside the lock: connecting may wait on the network (AWS
        // credential discovery). Two racing callers both build; one wins.
        let client = Instrumented::wrap_gated(
            factory.connect(config).await?,
            vault_key,
            self.gate(vault_key),
        );
        self.lock_clients().insert(
            vault_key.to_owned(),
            CachedClient {
                revision,
                client: client.clone(),
            },
        );
        Ok(client)
    }

    /// The built-in local store (secrets without a vault).
    pub async fn builtin(&self) -> Result<Arc<dyn SecretProvider>, ProviderError> {
        self.client("", 0, &VaultConfig::LocalEncrypted).await
    }

    /// The bounds vault clients are built with.
    pub fn limits(&self) -> ProviderLimits {
        self.limits
    }

    /// The vault's concurrency gate, shared by all its client revisions.
    fn gate(&self, vault_key: &str) -> Option<Gate> {
        let permits = self.limits.concurrency_per_vault?;
        let mut map = self.permits.lock().unwrap_or_else(PoisonError::into_inner);
        let semaphore = map
            .entry(vault_key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))))
            .clone();
        Some(Gate::new(semaphore, self.limits.queue_timeout))
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedClient>> {
        // The map holds no invariant a panicking writer could break.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ProviderRegistryBuilder {
    /// Adds a provider; fails if one with the same id is already registered.
    pub fn register(mut self, provider: Arc<dyn ProviderFactory>) -> Result<Self, RegistryError> {
        let id = provider.descriptor().id;
        if self.factories.contains_key(id) {
            return Err(RegistryError::DuplicateProvider(id));
        }
        self.factories.insert(id, provider);
        Ok(self)
    }

    /// Sets the per-vault concurrency bound (default: [`ProviderLimits::default`]).
    pub fn limits(mut self, limits: ProviderLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn build(self) -> ProviderRegistry {
        ProviderRegistry {
            factories: Arc::new(self.factories),
            clients: Arc::default(),
            limits: self.limits,
            permits: Arc::default(),
        }
    }
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("providers", &self.ids())
            .finish()
    }
}

impl fmt::Debug for ProviderRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistryBuilder")
            .field("providers", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn local() -> Arc<dyn ProviderFactory> {
        Arc::new(LocalEncryptedProvider::new(Arc::new(
            Keyring::generate().unwrap(),
        )))
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let err = ProviderRegistry::builder()
            .register(local())
            .unwrap()
            .register(local())
            .unwrap_err();
        assert_eq!(err, RegistryError::DuplicateProvider("local_encrypted"));
        assert_eq!(
            err.to_string(),
            "provider local_encrypted is registered twice"
        );
    }

    #[test]
    fn get_descriptors_and_catalog() {
        let registry = ProviderRegistry::for_test();
        let provider = registry.get("local_encrypted").unwrap();
        assert_eq!(provider.descriptor().id, "local_encrypted");
        assert!(registry.get("aws_secrets_manager").is_none());
        let descriptors = registry.descriptors();
        assert_eq!(descriptors.len(), 1);
        assert_eq!(descriptors[0].label, "Built-in encrypted store");
        assert!(descriptors[0].supports_managed_values);
        assert!(!descriptors[0].supports_external_references);
        let catalog = registry.catalog();
        assert_eq!(catalog[0], (local_encrypted::DESCRIPTOR, true));
        assert_eq!(catalog[1], (aws_secrets_manager::DESCRIPTOR, false));
        assert_eq!(
            format!("{registry:?}"),
            "ProviderRegistry { providers: [\"local_encrypted\"] }"
        );
    }

    #[tokio::test]
    async fn clients_are_cached_per_vault_revision() {
        let registry = ProviderRegistry::for_test();
        let a1 = registry
            .client("vault-a", 1, &VaultConfig::LocalEncrypted)
            .await
            .unwrap();
        let a1_again = registry
            .client("vault-a", 1, &VaultConfig::LocalEncrypted)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&a1, &a1_again));
        let a2 = registry
            .client("vault-a", 2, &VaultConfig::LocalEncrypted)
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&a1, &a2), "a new revision builds a new client");
        let builtin = registry.builtin().await.unwrap();
        assert_eq!(builtin.descriptor().id, "local_encrypted");
    }

    /// A vault's bound holds across client revisions and does not touch
    /// other vaults; a call that cannot get a permit in time is BUSY.
    #[tokio::test]
    async fn concurrent_calls_per_vault_are_bounded() {
        use crate::types::VersionContext;
        let registry = ProviderRegistry::builder()
            .register(local())
            .unwrap()
            .limits(ProviderLimits {
                concurrency_per_vault: Some(1),
                queue_timeout: Duration::from_millis(20),
            })
            .build();
        let ctx = VersionContext::new("acme", "db", 1);
        let v1 = registry
            .client("vault-a", 1, &VaultConfig::LocalEncrypted)
            .await
            .unwrap();
        let stored = v1.put_value(&ctx, b"hunter2").await.unwrap();
        // Hold vault-a's only permit as a running call would.
        let held = registry
            .gate("vault-a")
            .unwrap()
            .permits_for_test()
            .acquire_owned()
            .await
            .unwrap();
        let v2 = registry
            .client("vault-a", 2, &VaultConfig::LocalEncrypted)
            .await
            .unwrap();
        for client in [&v1, &v2] {
            let err = client.resolve(&ctx, &stored).await.unwrap_err();
            assert_eq!(err.kind, crate::ProviderErrorKind::Busy);
            assert_eq!(err.retry_after, Some(Duration::from_millis(100)));
            let many = client.resolve_many(&[(ctx.clone(), stored.clone())]).await;
            assert_eq!(
                many[0].as_ref().unwrap_err().kind,
                crate::ProviderErrorKind::Busy
            );
        }
        // Health checks are not gated.
        assert!(v1.health_check().await.ok);
        // Another vault has its own permits.
        let other = registry
            .client("vault-b", 1, &VaultConfig::LocalEncrypted)
            .await
            .unwrap();
        other.put_value(&ctx, b"x").await.unwrap();
        drop(held);
        let value = v2.resolve(&ctx, &stored).await.unwrap();
        assert_eq!(value.expose(), b"hunter2");
        assert_eq!(
            ProviderRegistry::for_test().limits(),
            ProviderLimits::default()
        );
    }

    #[tokio::test]
    async fn an_unconfigured_provider_is_refused() {
        let registry = ProviderRegistry::for_test();
        let config = VaultConfig::AwsSecretsManager(Default::default());
        let err = registry.client("vault-b", 1, &config).await.unwrap_err();
        assert_eq!(err.kind, crate::ProviderErrorKind::Unsupported);
    }
}
