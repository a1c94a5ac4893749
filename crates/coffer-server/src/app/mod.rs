//! Coffer's use cases, independent of gRPC: each public method takes a
//! validated request and the calling principal, talks to the store and the
//! providers, and returns records or a [`coffer_core::Error`]. The gRPC layer
//! in [`crate::grpc`] only converts messages and maps errors.

mod audit;
mod audit_query;
mod bindings;
mod idempotency;
mod import;
mod keyed_lock;
mod metadata_cache;
mod placement;
mod reaper;
mod resolve;
mod secrets;
mod value_cache;
mod vaults;
mod versions;
mod watch;

use std::sync::Arc;

use coffer_core::record::SecretRecord;
use coffer_core::{Error, Result, SecretName};
use coffer_crypto::Keyring;
use coffer_providers::{ProviderRegistry, StoredVersion, VersionContext};
use coffer_store::Store;

pub use audit::{AuditWriter, AuditWriterOptions};
pub use audit_query::{AuditPage, ChainReport};
pub use bindings::{
    BindingPage, BindingSpec, ResolvedBindingEntry, SyncOutcome, parse_binding_name,
};
pub use import::{
    CandidateStatus, ImportCandidateView, ImportConflict, ImportOutcome, ImportPreview,
    ImportRowResult, ImportRowSpec,
};
pub use metadata_cache::{MetadataCacheOptions, MetadataCacheStats};
pub use reaper::{ReaperReport, spawn_reaper};
pub use resolve::{ResolveRequest, ResolvedValue};
pub use secrets::{CreateSecret, SecretPage, SecretPatch, SecretSource};
pub use value_cache::{ValueCacheOptions, ValueCacheStats};
pub use vaults::{CreateVault, VaultPage, VaultPatch, vault_not_found};
pub use versions::{RotateSecret, VersionPage, VersionView};
pub use watch::{ChangeBatch, ChangeEvent, ChangeKind, ChangeStream, WatchOptions, WatchRequest};

/// The provider id of the built-in encrypted store.
pub const LOCAL_PROVIDER: &str = coffer_providers::local_encrypted::PROVIDER_ID;

/// Everything a use case needs: the store, the providers, the keyring (for
/// value fingerprints) and what open change streams share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Coffer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    providers: ProviderRegistry,
    keyring: Arc<Keyring>,
    audit: AuditWriter,
    watch: watch::WatchHub,
    values: value_cache::ValueCache,
    metadata: metadata_cache::MetadataCache,
    /// Rotations of one secret in this process, one at a time (see
    /// `rotate_secret`).
    rotations: keyed_lock::KeyedLocks,
    /// Slots for provider calls made inside a database transaction (see
    /// `Coffer::provider_slot`).
    provider_slots: Arc<tokio::sync::Semaphore>,
}

/// Every tunable of [`Coffer`], each defaulting to what [`Coffer::new`] uses.
#[derive(Debug, Clone, Default)]
pub struct CofferOptions {
    pub audit: AuditWriterOptions,
    pub watch: WatchOptions,
    pub value_cache: ValueCacheOptions,
    pub metadata_cache: MetadataCacheOptions,
}

impl Coffer {
    /// Builds the use cases and starts the audit writer task (so it must be
    /// called inside a Tokio runtime).
    pub fn new(store: Store, providers: ProviderRegistry, keyring: Arc<Keyring>) -> Self {
        Self::with_audit_options(store, providers, keyring, AuditWriterOptions::default())
    }

    pub fn with_audit_options(
        store: Store,
        providers: ProviderRegistry,
        keyring: Arc<Keyring>,
        audit: AuditWriterOptions,
    ) -> Self {
        Self::with_options(store, providers, keyring, audit, WatchOptions::default())
    }

    /// Builds the use cases with explicit audit group-commit and change
    /// stream settings.
    pub fn with_options(
        store: Store,
        providers: ProviderRegistry,
        keyring: Arc<Keyring>,
        audit: AuditWriterOptions,
        watch: WatchOptions,
    ) -> Self {
        let options = CofferOptions {
            audit,
            watch,
            ..CofferOptions::default()
        };
        Self::configured(store, providers, keyring, options)
    }

    /// Builds the use cases with every setting explicit, and starts the
    /// tasks they need: the audit writer and, on PostgreSQL, the listener
    /// for other replicas' commits.
    pub fn configured(
        store: Store,
        providers: ProviderRegistry,
        keyring: Arc<Keyring>,
        options: CofferOptions,
    ) -> Self {
        let (audit, _task) = AuditWriter::spawn(store.clone(), options.audit);
        // Subscribed before the listener starts, so its first notice is heard.
        let metadata = metadata_cache::MetadataCache::new(store.clone(), options.metadata_cache);
        let _listener = store.spawn_commit_listener();
        let provider_slots = placement::provider_slots(&store);
        Coffer {
            inner: Arc::new(Inner {
                metadata,
                store,
                providers,
                keyring,
                audit,
                watch: watch::WatchHub::new(options.watch),
                values: value_cache::ValueCache::new(options.value_cache),
                rotations: keyed_lock::KeyedLocks::default(),
                provider_slots: Arc::new(tokio::sync::Semaphore::new(provider_slots)),
            }),
        }
    }

    /// What the decrypted-value cache holds and has done (tests, diagnostics).
    #[doc(hidden)]
    pub fn value_cache_stats(&self) -> ValueCacheStats {
        self.inner.values.stats()
    }

    /// A handle on the audit writer (for the gRPC edge's denials).
    pub fn audit_writer(&self) -> AuditWriter {
        self.inner.audit.clone()
    }

    /// The group-commit writer for resolve events.
    fn audit(&self) -> &AuditWriter {
        &self.inner.audit
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn fingerprint(&self, value: &[u8]) -> String {
        self.inner.keyring.fingerprint(value)
    }

    /// Loads a visible (not purged) secret or answers NOT_FOUND.
    async fn load_secret(&self, name: &SecretName) -> Result<SecretRecord> {
        self.store()
            .get_secret(&name.tenant, &name.key)
            .await?
            .ok_or_else(|| secret_not_found(name))
    }
}

fn secret_not_found(name: &SecretName) -> Error {
    Error::not_found(coffer_core::Reason::SecretNotFound, &name.to_string())
}

/// The provider's view of one version: where its ciphertext is bound.
fn version_context(secret: &SecretRecord, version: i64) -> VersionContext {
    VersionContext::new(secret.tenant.as_str(), secret.key.as_str(), version)
        .with_secret_uid(secret.uid.as_str())
}

fn stored_version(material: &str, provider_version_ref: &str) -> StoredVersion {
    StoredVersion {
        material: material.to_owned(),
        provider_version_ref: provider_version_ref.to_owned(),
    }
}
