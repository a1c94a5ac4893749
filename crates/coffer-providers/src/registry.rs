//! [`ProviderRegistry`]: the providers this deployment offers, keyed by
//! descriptor id. Built once at start; duplicate ids are refused.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use coffer_crypto::Keyring;

use crate::local_encrypted::LocalEncryptedProvider;
use crate::provider::SecretProvider;
use crate::types::ProviderDescriptor;

/// A failure to build a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("provider {0} is registered twice")]
    DuplicateProvider(&'static str),
}

/// The configured providers, by id. Cheap to clone.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    providers: Arc<BTreeMap<&'static str, Arc<dyn SecretProvider>>>,
}

/// Collects providers for a [`ProviderRegistry`].
#[derive(Default)]
pub struct ProviderRegistryBuilder {
    providers: BTreeMap<&'static str, Arc<dyn SecretProvider>>,
}

impl ProviderRegistry {
    pub fn builder() -> ProviderRegistryBuilder {
        ProviderRegistryBuilder::default()
    }

    /// A registry with only `local_encrypted`, over a fresh in-memory keyring.
    /// For tests: panics if the system random generator fails.
    pub fn for_test() -> ProviderRegistry {
        let keyring = Keyring::generate().expect("generate a test keyring");
        let local: Arc<dyn SecretProvider> =
            Arc::new(LocalEncryptedProvider::new(Arc::new(keyring)));
        ProviderRegistry::builder()
            .register(local)
            .expect("one provider cannot be a duplicate")
            .build()
    }

    /// The provider with this id, if configured.
    pub fn get(&self, id: &str) -> Option<Arc<dyn SecretProvider>> {
        self.providers.get(id).cloned()
    }

    /// Descriptors of every configured provider, sorted by id.
    pub fn descriptors(&self) -> Vec<ProviderDescriptor> {
        self.providers.values().map(|p| p.descriptor()).collect()
    }

    /// Ids of every configured provider, sorted.
    pub fn ids(&self) -> Vec<&'static str> {
        self.providers.keys().copied().collect()
    }
}

impl ProviderRegistryBuilder {
    /// Adds a provider; fails if one with the same id is already registered.
    pub fn register(mut self, provider: Arc<dyn SecretProvider>) -> Result<Self, RegistryError> {
        let id = provider.descriptor().id;
        if self.providers.contains_key(id) {
            return Err(RegistryError::DuplicateProvider(id));
        }
        self.providers.insert(id, provider);
        Ok(self)
    }

    pub fn build(self) -> ProviderRegistry {
        ProviderRegistry {
            providers: Arc::new(self.providers),
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
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn local() -> Arc<dyn SecretProvider> {
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
    fn get_and_descriptors() {
        let registry = ProviderRegistry::for_test();
        let provider = registry.get("local_encrypted").unwrap();
        assert_eq!(provider.descriptor().id, "local_encrypted");
        assert!(registry.get("aws_secrets_manager").is_none());
        let descriptors = registry.descriptors();
        assert_eq!(descriptors.len(), 1);
        assert_eq!(descriptors[0].label, "Built-in encrypted store");
        assert!(descriptors[0].supports_managed_values);
        assert!(!descriptors[0].supports_external_references);
        assert_eq!(
            format!("{registry:?}"),
            "ProviderRegistry { providers: [\"local_encrypted\"] }"
        );
    }
}
