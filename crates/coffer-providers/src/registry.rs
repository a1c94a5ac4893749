//! [`ProviderRegistry`]: the providers this deployment offers, keyed by
//! descriptor id, and the client of each vault. Built once at start;
//! duplicate ids are refused. Clients are cached per vault and settings
//! revision, so an AWS client (its connection pool, its credentials) is
//! built once per vault change, not per call. Clients come wrapped in
//! [`Instrumented`], which times and traces every call.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use coffer_crypto::Keyring;

use crate::aws_secrets_manager;
use crate::config::VaultConfig;
use crate::error::ProviderError;
use crate::instrumented::Instrumented;
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

/// The configured providers, by id, and the cached vault clients. Cheap to
/// clone; clones share the cache.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    factories: Arc<BTreeMap<&'static str, Arc<dyn ProviderFactory>>>,
    clients: Arc<Mutex<HashMap<String, CachedClient>>>,
}

struct CachedClient {
    revision: i64,
    client: Arc<dyn SecretProvider>,
}

/// Collects providers for a [`ProviderRegistry`].
#[derive(Default)]
pub struct ProviderRegistryBuilder {
    factories: BTreeMap<&'static str, Arc<dyn ProviderFactory>>,
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
        let client = Instrumented::wrap(factory.connect(config).await?, vault_key);
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

    pub fn build(self) -> ProviderRegistry {
        ProviderRegistry {
            factories: Arc::new(self.factories),
            clients: Arc::default(),
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

    #[tokio::test]
    async fn an_unconfigured_provider_is_refused() {
        let registry = ProviderRegistry::for_test();
        let config = VaultConfig::AwsSecretsManager(Default::default());
        let err = registry.client("vault-b", 1, &config).await.unwrap_err();
        assert_eq!(err.kind, crate::ProviderErrorKind::Unsupported);
    }
}
