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
//! - On a SQLite file, other processes' commits arrive through their change
//!   marks, polled four times a second (`coffer_store::change_marks`).
//! - Every record also expires after `ttl` (60 s unless configured): the
//!   fallback for writers that send no notice (raw SQL). A notice lost on a
//!   half-open connection is caught by the listener's heartbeat within
//!   seconds (`coffer_store::notify`), which drops every record.
//!
//! Only the resolve path reads through this cache; every write and every
//! Get/List reads the database. Records hold no secret values. Records are
//! shared (`Arc`), so a hit costs a reference count, not a copy. The cache
//! is bounded by an estimate of the heap its records take; when full it
//! starts over.

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use coffer_core::record::{BindingRecord, SecretRecord, VaultRecord, VersionRecord};
use coffer_core::{Result, SecretKey, SecretName, TenantId};
use coffer_store::{CommitNotice, Store};
use tokio::sync::broadcast::{self, error::TryRecvError};

use super::{Coffer, secret_not_found};
use crate::observe::metrics::{
    METADATA_CACHE_BYTES, METADATA_CACHE_ENTRIES, METADATA_CACHE_HITS,
    METADATA_CACHE_INVALIDATIONS, METADATA_CACHE_MISSES,
};

/// Settings of the metadata cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataCacheOptions {
    /// Off: every resolve reads its records from the database.
    pub enabled: bool,
    /// How long a record may be served without a notice dropping it: the
    /// bound for writers that send no notice. Every `Store` sends them (to
    /// other replicas through LISTEN/NOTIFY, to other processes on a SQLite
    /// file through change marks), and a PostgreSQL listener either hears
    /// or, within a few seconds, knows it does not (`coffer_store::notify`'s
    /// heartbeat), so only raw SQL writers are left to the TTL.
    pub ttl: Duration,
    /// The most heap the records (and their keys) may take, by the
    /// estimate of [`entry_cost`]; a full cache is emptied and starts over.
    pub max_bytes: usize,
}

impl MetadataCacheOptions {
    /// With records re-read every 10 s, about one resolve in four of a warm
    /// `resolve-many` over 10 000 secrets read the database
    /// (docs/PERFORMANCE.md, seventh and eighth runs).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
    /// About 20 000 secrets with their current versions (some 1.6 KB each).
    pub const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;

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
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// What the cache holds and has done, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataCacheStats {
    pub entries: usize,
    /// The estimated heap the entries take (see [`entry_cost`]).
    pub bytes: usize,
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
    /// (consumer kind, consumer id, config path); boxed, like the next,
    /// so that the common keys keep every table slot small.
    Binding(Box<[String; 3]>),
    /// A consumer's bindings under a config path prefix: (kind, id, prefix).
    ConsumerBindings(Box<[String; 3]>),
    /// The vault id.
    Vault(String),
}

#[derive(Debug, Clone)]
enum Record {
    Secret(Arc<SecretRecord>),
    Version(Arc<VersionRecord>),
    Binding(Arc<BindingRecord>),
    ConsumerBindings(Arc<[BindingRecord]>),
    Vault(Arc<VaultRecord>),
}

struct Entry {
    record: Record,
    loaded: Instant,
    /// What [`entry_cost`] charged for this entry.
    cost: usize,
}

/// The estimated heap an entry takes: its table slot and `Arc` header, the
/// key's and the record's text, plus a little per allocation for the
/// allocator's rounding. An estimate, but a version's material and a
/// secret's labels (the large parts) are counted exactly.
fn entry_cost(key: &Key, record: &Record) -> usize {
    /// Table slot (key, entry, control byte, load factor) and `Arc` counts.
    const SLOT: usize = 2 * (size_of::<Key>() + size_of::<Entry>()) + 16;
    let key_bytes = match key {
        Key::Secret(key) => text(key.as_str()),
        Key::Version(uid, _) | Key::Vault(uid) => text(uid),
        Key::Binding(parts) | Key::ConsumerBindings(parts) => {
            size_of::<[String; 3]>() + parts.iter().map(|part| text(part)).sum::<usize>()
        }
    };
    let record_bytes = match record {
        Record::Secret(secret) => secret_cost(secret),
        Record::Version(version) => version_cost(version),
        Record::Binding(binding) => binding_cost(binding),
        Record::ConsumerBindings(bindings) => bindings.iter().map(binding_cost).sum(),
        Record::Vault(vault) => vault_cost(vault),
    };
    SLOT + key_bytes + record_bytes
}

/// A string's heap: its bytes, rounded up by the allocator.
fn text(s: &str) -> usize {
    if s.is_empty() { 0 } else { s.len() + 16 }
}

/// The heap of a record's strings.
fn texts(fields: &[&str]) -> usize {
    fields.iter().map(|field| text(field)).sum()
}

fn secret_cost(secret: &SecretRecord) -> usize {
    let labels: usize = secret
        .labels
        .iter()
        .map(|(key, value)| 2 * size_of::<String>() + text(key) + text(value))
        .sum();
    size_of::<SecretRecord>()
        + texts(&[
            secret.uid.as_str(),
            secret.tenant.as_str(),
            secret.key.as_str(),
            &secret.display_name,
            &secret.description,
            &secret.provider,
            &secret.vault,
            &secret.external_ref,
        ])
        + labels
}

fn version_cost(version: &VersionRecord) -> usize {
    size_of::<VersionRecord>()
        + texts(&[
            version.secret_uid.as_str(),
            &version.provider,
            &version.vault,
            &version.provider_version_ref,
            version.material.as_deref().unwrap_or_default(),
            &version.fingerprint,
            &version.created_by,
        ])
}

fn binding_cost(binding: &BindingRecord) -> usize {
    size_of::<BindingRecord>()
        + texts(&[
            binding.id.as_str(),
            binding.tenant.as_str(),
            &binding.secret_uid,
            binding.secret_key.as_str(),
            &binding.consumer_kind,
            &binding.consumer_id,
            &binding.config_path,
            &binding.version_selector,
            &binding.label,
        ])
}

fn vault_cost(vault: &VaultRecord) -> usize {
    size_of::<VaultRecord>()
        + texts(&[
            vault.uid.as_str(),
            vault.tenant.as_str(),
            &vault.vault_id,
            &vault.provider,
            &vault.display_name,
            &vault.config,
            &vault.health_status,
            &vault.health_message,
        ])
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
    /// The sum of the entries' costs.
    bytes: usize,
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
            self.bytes -= records.values().map(|entry| entry.cost).sum::<usize>();
        }
        self.invalidated.insert(tenant, self.clock);
        self.stats.invalidations += 1;
        metrics::counter!(METADATA_CACHE_INVALIDATIONS, "scope" => "tenant").increment(1);
        self.publish_size();
    }

    fn publish_size(&self) {
        metrics::gauge!(METADATA_CACHE_ENTRIES).set(self.entries as f64);
        metrics::gauge!(METADATA_CACHE_BYTES).set(self.bytes as f64);
    }

    fn clear(&mut self) {
        self.clock += 1;
        self.floor = self.clock;
        self.tenants.clear();
        self.invalidated.clear();
        self.entries = 0;
        self.bytes = 0;
        self.stats.invalidations += 1;
        metrics::counter!(METADATA_CACHE_INVALIDATIONS, "scope" => "all").increment(1);
        self.publish_size();
    }
}

impl MetadataCache {
    pub(crate) fn new(store: Store, options: MetadataCacheOptions) -> Self {
        let state = State {
            notices: store.subscribe_commits(),
            tenants: HashMap::new(),
            entries: 0,
            bytes: 0,
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
            bytes: state.bytes,
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
        let cost = entry_cost(&key, &record);
        if cost > self.options.max_bytes {
            return;
        }
        if state.bytes + cost > self.options.max_bytes {
            state.clear();
        }
        let entry = Entry {
            record,
            loaded: Instant::now(),
            cost,
        };
        let replaced = state
            .tenants
            .entry(tenant.clone())
            .or_default()
            .insert(key, entry);
        match replaced {
            Some(old) => state.bytes -= old.cost,
            None => state.entries += 1,
        }
        state.bytes += cost;
        state.publish_size();
    }
}

impl MetadataCache {
    /// The record under `key`, from the cache or else from `load` (kept if
    /// no invalidation raced the read). `unwrap` takes the record out of
    /// its [`Record`] variant; `wrap` puts it back.
    async fn read_through<T: ?Sized>(
        &self,
        tenant: &TenantId,
        key: Key,
        unwrap: fn(Record) -> Option<Arc<T>>,
        wrap: fn(Arc<T>) -> Record,
        load: impl Future<Output = Result<Option<Arc<T>>>>,
    ) -> Result<Option<Arc<T>>> {
        let ticket = match self.get(tenant, &key) {
            Ok(record) => match unwrap(record) {
                Some(hit) => return Ok(Some(hit)),
                None => None,
            },
            Err(ticket) => ticket,
        };
        let loaded = load.await?;
        if let (Some(record), Some(ticket)) = (&loaded, ticket) {
            self.fill(tenant, key, wrap(Arc::clone(record)), ticket);
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
    pub(crate) async fn cached_secret(&self, name: &SecretName) -> Result<Arc<SecretRecord>> {
        let load = async {
            let secret = self.store().get_secret(&name.tenant, &name.key).await?;
            Ok(secret.map(Arc::new))
        };
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
                load,
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
                Some(Record::Secret(secret)) => {
                    current.push((secret.uid.clone(), secret.current_version));
                }
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
                            Record::Secret(Arc::new(secret)),
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
                    cache.fill(tenant, key, Record::Version(Arc::new(version)), ticket);
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
    ) -> Result<Option<Arc<VersionRecord>>> {
        let load = async {
            let version = self.store().get_version(&secret.uid, number).await?;
            Ok(version.map(Arc::new))
        };
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
                load,
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
    ) -> Result<Option<Arc<BindingRecord>>> {
        let load = async {
            let binding = self
                .store()
                .find_binding(tenant, kind, id, config_path)
                .await?;
            Ok(binding.map(Arc::new))
        };
        self.inner
            .metadata
            .read_through(
                tenant,
                Key::Binding(Box::new([
                    kind.to_owned(),
                    id.to_owned(),
                    config_path.to_owned(),
                ])),
                |record| match record {
                    Record::Binding(binding) => Some(binding),
                    _ => None,
                },
                Record::Binding,
                load,
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
    ) -> Result<Arc<[BindingRecord]>> {
        let load = async {
            let bindings = self
                .store()
                .consumer_bindings(tenant, kind, id, prefix)
                .await?;
            Ok(Some(Arc::from(bindings)))
        };
        let bindings = self
            .inner
            .metadata
            .read_through(
                tenant,
                Key::ConsumerBindings(Box::new([
                    kind.to_owned(),
                    id.to_owned(),
                    prefix.to_owned(),
                ])),
                |record| match record {
                    Record::ConsumerBindings(bindings) => Some(bindings),
                    _ => None,
                },
                Record::ConsumerBindings,
                load,
            )
            .await?;
        Ok(bindings.unwrap_or_else(|| Arc::from([])))
    }

    /// A vault record, through the metadata cache.
    pub(crate) async fn cached_vault(
        &self,
        tenant: &TenantId,
        vault_id: &str,
    ) -> Result<Option<Arc<VaultRecord>>> {
        let load = async {
            let vault = self.store().get_vault(tenant, vault_id).await?;
            Ok(vault.map(Arc::new))
        };
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
                load,
            )
            .await
    }
}
