//! The metadata cache of the resolve path (DESIGN §8, ADR 0010): the secret,
//! version, binding and vault records a resolve checks, and a consumer's
//! binding set for ResolveBindings, so that a hot resolve reads nothing from
//! the database.
//!
//! Why it is never staler than a commit notice:
//! - Every mutation audits itself in its own transaction, and every such
//!   commit sends a [`CommitNotice`] for its tenant before `commit()`
//!   returns (`coffer_store::notify`). The cache drains those notices under
//!   its lock at the start of every lookup and drops the tenant's records,
//!   so a resolve that follows a write in this process sees the write.
//! - On PostgreSQL other replicas' commits arrive through LISTEN/NOTIFY, a
//!   few milliseconds after they commit. While the listener is not
//!   connected ([`Store::commit_notices_live`] is false) the cache neither
//!   serves nor fills, and when it (re)connects every record is dropped.
//! - A lookup takes a ticket (the invalidation clock) before it reads the
//!   database, and its result is only kept if the tenant was not
//!   invalidated since: a read that raced a commit is never cached.
//! - Every record also expires after `ttl`: the fallback for writers that
//!   send no notice (another process on the same SQLite file, a notice lost
//!   on a half-open connection).
//!
//! Only the resolve path reads through this cache; every write and every
//! Get/List reads the database. Records hold no secret values. The cache is
//! bounded by a number of records; when full it starts over.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use coffer_core::record::{BindingRecord, SecretRecord, VaultRecord, VersionRecord};
use coffer_core::{Result, SecretKey, SecretName, TenantId};
use coffer_store::{CommitNotice, Store};
use tokio::sync::broadcast::{self, error::TryRecvError};

use super::{Coffer, secret_not_found};
use crate::observe::metrics::{
    METADATA_CACHE_ENTRIES, METADATA_CACHE_HITS, METADATA_CACHE_INVALIDATIONS,
    METADATA_CACHE_MISSES,
};

/// Settings of the metadata cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataCacheOptions {
    /// Off: every resolve reads its records from the database.
    pub enabled: bool,
    /// How long a record may be served without a notice dropping it.
    pub ttl: Duration,
    /// The most records held; a full cache is emptied and starts over.
    pub max_entries: usize,
}

impl MetadataCacheOptions {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

    pub fn disabled() -> Self {
        MetadataCacheOptions {
            enabled: false,
            ..Self::default()
        }
    }
}

impl Default for MetadataCacheOptions {
    fn default() -> Self {
        MetadataCacheOptions {
            enabled: true,
            ttl: Self::DEFAULT_TTL,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
        }
    }
}

/// What the cache holds and has done, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataCacheStats {
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    /// Tenants dropped by a commit notice, plus whole-cache drops.
    pub invalidations: u64,
}

/// A record's identity within its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Secret(SecretKey),
    /// (secret uid, version number).
    Version(String, i64),
    /// (consumer kind, consumer id, config path).
    Binding(String, String, String),
    /// A consumer's bindings under a config path prefix: (kind, id, prefix).
    ConsumerBindings(String, String, String),
    /// The vault id.
    Vault(String),
}

#[derive(Debug, Clone)]
enum Record {
    Secret(SecretRecord),
    Version(VersionRecord),
    Binding(BindingRecord),
    ConsumerBindings(Vec<BindingRecord>),
    Vault(VaultRecord),
}

struct Entry {
    record: Record,
    loaded: Instant,
}

/// The invalidation clock when a lookup started reading the database.
#[derive(Debug, Clone, Copy)]
struct Ticket(u64);

pub(crate) struct MetadataCache {
    options: MetadataCacheOptions,
    store: Store,
    state: Mutex<State>,
}

impl std::fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataCache")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish()
    }
}

struct State {
    notices: broadcast::Receiver<CommitNotice>,
    tenants: HashMap<TenantId, HashMap<Key, Entry>>,
    entries: usize,
    /// Bumped by every invalidation.
    clock: u64,
    /// The clock at each tenant's last invalidation (since `floor`).
    invalidated: HashMap<TenantId, u64>,
    /// The clock at the last whole-cache drop.
    floor: u64,
    stats: MetadataCacheStats,
}

/// Tenants remembered in `invalidated` before the cache starts over.
const MAX_INVALIDATED_TENANTS: usize = 10_000;

impl State {
    /// Applies every commit notice sent so far.
    fn drain(&mut self) {
        loop {
            match self.notices.try_recv() {
                Ok(CommitNotice::Tenant(tenant)) => self.invalidate(tenant),
                Ok(CommitNotice::Lost) | Err(TryRecvError::Lagged(_)) => self.clear(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    fn invalidate(&mut self, tenant: TenantId) {
        if self.invalidated.len() >= MAX_INVALIDATED_TENANTS {
            self.clear();
            return;
        }
        self.clock += 1;
        if let Some(records) = self.tenants.remove(&tenant) {
            self.entries -= records.len();
        }
        self.invalidated.insert(tenant, self.clock);
        self.stats.invalidations += 1;
        metrics::counter!(METADATA_CACHE_INVALIDATIONS, "scope" => "tenant").increment(1);
        metrics::gauge!(METADATA_CACHE_ENTRIES).set(self.entries as f64);
    }

    fn clear(&mut self) {
        self.clock += 1;
        self.floor = self.clock;
        self.tenants.clear();
        self.invalidated.clear();
        self.entries = 0;
        self.stats.invalidations += 1;
        metrics::counter!(METADATA_CACHE_INVALIDATIONS, "scope" => "all").increment(1);
        metrics::gauge!(METADATA_CACHE_ENTRIES).set(0.0);
    }
}

impl MetadataCache {
    pub(crate) fn new(store: Store, options: MetadataCacheOptions) -> Self {
        let state = State {
            notices: store.subscribe_commits(),
            tenants: HashMap::new(),
            entries: 0,
            clock: 0,
            invalidated: HashMap::new(),
            floor: 0,
            stats: MetadataCacheStats::default(),
        };
        MetadataCache {
            options,
            store,
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No update spans an await or a callback: the state stays
        // consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stats(&self) -> MetadataCacheStats {
        let mut state = self.state();
        state.drain();
        MetadataCacheStats {
            entries: state.entries,
            ..state.stats
        }
    }

    fn usable(&self) -> bool {
        self.options.enabled && self.store.commit_notices_live()
    }

    /// A fresh copy of the record, or `None` (a miss) with the ticket the
    /// caller takes to [`MetadataCache::fill`] it after reading.
    fn get(&self, tenant: &TenantId, key: &Key) -> std::result::Result<Record, Option<Ticket>> {
        if !self.usable() {
            return Err(None);
        }
        let mut state = self.state();
        state.drain();
        let ttl = self.options.ttl;
        let hit = state
            .tenants
            .get(tenant)
            .and_then(|records| records.get(key))
            .filter(|entry| entry.loaded.elapsed() < ttl)
            .map(|entry| entry.record.clone());
        match hit {
            Some(record) => {
                state.stats.hits += 1;
                metrics::counter!(METADATA_CACHE_HITS).increment(1);
                Ok(record)
            }
            None => {
                state.stats.misses += 1;
                metrics::counter!(METADATA_CACHE_MISSES).increment(1);
                Err(Some(Ticket(state.clock)))
            }
        }
    }

    /// The ticket a bulk read takes before it reads, or `None` while the
    /// cache is not in use.
    fn ticket(&self) -> Option<Ticket> {
        if !self.usable() {
            return None;
        }
        let mut state = self.state();
        state.drain();
        Some(Ticket(state.clock))
    }

    /// A fresh copy of the record if it is cached, without counting a hit
    /// or a miss (a prefetch deciding what to read).
    fn peek(&self, tenant: &TenantId, key: &Key) -> Option<Record> {
        if !self.usable() {
            return None;
        }
        let mut state = self.state();
        state.drain();
        let ttl = self.options.ttl;
        state
            .tenants
            .get(tenant)
            .and_then(|records| records.get(key))
            .filter(|entry| entry.loaded.elapsed() < ttl)
            .map(|entry| entry.record.clone())
    }

    /// Keeps a record read after `ticket` was taken, unless its tenant was
    /// invalidated since.
    fn fill(&self, tenant: &TenantId, key: Key, record: Record, ticket: Ticket) {
        if !self.usable() {
            return;
        }
        let mut state = self.state();
        state.drain();
        let last = state
            .invalidated
            .get(tenant)
            .copied()
            .unwrap_or(0)
            .max(state.floor);
        if last > ticket.0 {
            return;
        }
        if state.entries >= self.options.max_entries {
            state.clear();
        }
        let entry = Entry {
            record,
            loaded: Instant::now(),
        };
        if state
            .tenants
            .entry(tenant.clone())
            .or_default()
            .insert(key, entry)
            .is_none()
        {
            state.entries += 1;
        }
        metrics::gauge!(METADATA_CACHE_ENTRIES).set(state.entries as f64);
    }
}

impl MetadataCache {
    /// The record under `key`, from the cache or else from `load` (kept if
    /// no invalidation raced the read). `unwrap` takes the record out of
    /// its [`Record`] variant; `wrap` puts it back.
    async fn read_through<T: Clone>(
        &self,
        tenant: &TenantId,
        key: Key,
        unwrap: fn(Record) -> Option<T>,
        wrap: fn(T) -> Record,
        load: impl Future<Output = Result<Option<T>>>,
    ) -> Result<Option<T>> {
        let ticket = match self.get(tenant, &key) {
            Ok(record) => match unwrap(record) {
                Some(hit) => return Ok(Some(hit)),
                None => None,
            },
            Err(ticket) => ticket,
        };
        let loaded = load.await?;
        if let (Some(record), Some(ticket)) = (&loaded, ticket) {
            self.fill(tenant, key, wrap(record.clone()), ticket);
        }
        Ok(loaded)
    }
}

impl Coffer {
    /// What the metadata cache holds and has done (tests, diagnostics).
    #[doc(hidden)]
    pub fn metadata_cache_stats(&self) -> MetadataCacheStats {
        self.inner.metadata.stats()
    }

    /// [`Coffer::load_secret`] through the metadata cache.
    pub(crate) async fn cached_secret(&self, name: &SecretName) -> Result<SecretRecord> {
        self.inner
            .metadata
            .read_through(
                &name.tenant,
                Key::Secret(name.key.clone()),
                |record| match record {
                    Record::Secret(secret) => Some(secret),
                    _ => None,
                },
                Record::Secret,
                self.store().get_secret(&name.tenant, &name.key),
            )
            .await?
            .ok_or_else(|| secret_not_found(name))
    }

    /// Reads, in two statements, the secrets named by `keys` and their
    /// current versions that the cache does not hold, and caches them, so
    /// that the per-item lookups of a BatchResolve or ResolveBindings that
    /// follow are hits instead of three reads each. Only an optimization:
    /// a failed read is left to those lookups, which report it per item.
    pub(crate) async fn prefetch_for_resolve<'k>(
        &self,
        tenant: &TenantId,
        keys: impl IntoIterator<Item = &'k SecretKey>,
    ) {
        let cache = &self.inner.metadata;
        let Some(ticket) = cache.ticket() else {
            return;
        };
        let keys: std::collections::BTreeSet<&SecretKey> = keys.into_iter().collect();
        let mut current = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for key in keys {
            match cache.peek(tenant, &Key::Secret(key.clone())) {
                Some(Record::Secret(secret)) => current.push((secret.uid, secret.current_version)),
                _ => missing.push(key.clone()),
            }
        }
        if !missing.is_empty() {
            match self.store().secrets_by_keys(tenant, &missing).await {
                Ok(secrets) => {
                    for secret in secrets {
                        current.push((secret.uid.clone(), secret.current_version));
                        cache.fill(
                            tenant,
                            Key::Secret(secret.key.clone()),
                            Record::Secret(secret),
                            ticket,
                        );
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "resolve prefetch of secrets failed");
                    return;
                }
            }
        }
        current.retain(|(uid, number)| {
            *number > 0
                && cache
                    .peek(tenant, &Key::Version(uid.clone(), *number))
                    .is_none()
        });
        if current.is_empty() {
            return;
        }
        match self.store().versions_by_ids(&current).await {
            Ok(versions) => {
                for version in versions {
                    let key = Key::Version(version.secret_uid.clone(), version.version);
                    cache.fill(tenant, key, Record::Version(version), ticket);
                }
            }
            Err(err) => tracing::debug!(error = %err, "resolve prefetch of versions failed"),
        }
    }

    /// One version of a secret, through the metadata cache.
    pub(crate) async fn cached_version(
        &self,
        secret: &SecretRecord,
        number: i64,
    ) -> Result<Option<VersionRecord>> {
        self.inner
            .metadata
            .read_through(
                &secret.tenant,
                Key::Version(secret.uid.clone(), number),
                |record| match record {
                    Record::Version(version) => Some(version),
                    _ => None,
                },
                Record::Version,
                self.store().get_version(&secret.uid, number),
            )
            .await
    }

    /// The binding of a consumer's config path, through the metadata cache
    /// (an absent binding is not cached).
    pub(crate) async fn cached_binding(
        &self,
        tenant: &TenantId,
        kind: &str,
        id: &str,
        config_path: &str,
    ) -> Result<Option<BindingRecord>> {
        self.inner
            .metadata
            .read_through(
                tenant,
                Key::Binding(kind.to_owned(), id.to_owned(), config_path.to_owned()),
                |record| match record {
                    Record::Binding(binding) => Some(binding),
                    _ => None,
                },
                Record::Binding,
                self.store().find_binding(tenant, kind, id, config_path),
            )
            .await
    }

    /// A consumer's bindings under `prefix` (ResolveBindings), through the
    /// metadata cache.
    pub(crate) async fn cached_consumer_bindings(
        &self,
        tenant: &TenantId,
        kind: &str,
        id: &str,
        prefix: &str,
    ) -> Result<Vec<BindingRecord>> {
        let load = async {
            self.store()
                .consumer_bindings(tenant, kind, id, prefix)
                .await
                .map(Some)
        };
        let bindings = self
            .inner
            .metadata
            .read_through(
                tenant,
                Key::ConsumerBindings(kind.to_owned(), id.to_owned(), prefix.to_owned()),
                |record| match record {
                    Record::ConsumerBindings(bindings) => Some(bindings),
                    _ => None,
                },
                Record::ConsumerBindings,
                load,
            )
            .await?;
        Ok(bindings.unwrap_or_default())
    }

    /// A vault record, through the metadata cache.
    pub(crate) async fn cached_vault(
        &self,
        tenant: &TenantId,
        vault_id: &str,
    ) -> Result<Option<VaultRecord>> {
        self.inner
            .metadata
            .read_through(
                tenant,
                Key::Vault(vault_id.to_owned()),
                |record| match record {
                    Record::Vault(vault) => Some(vault),
                    _ => None,
                },
                Record::Vault,
                self.store().get_vault(tenant, vault_id),
            )
            .await
    }
}
