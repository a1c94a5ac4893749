//! The decrypted-value cache of the resolve path (DESIGN §8): it owns the
//! plaintext of recently resolved versions, keyed by (secret uid, version
//! number), so a hot secret is decrypted or fetched once rather than on every
//! resolve.
//!
//! Why it is never stale, and why it never bypasses a check:
//! - Versions are immutable, so the value cached for a key is the value the
//!   provider would return for it. The cache only replaces the provider
//!   call: every metadata check of DESIGN §5 (secret ACTIVE, binding, version
//!   ENABLED, vault not disabled) still runs against the database first, so
//!   a disable, binding change or vault disable takes effect on the next
//!   resolve by construction, and every resolve is audited as before.
//! - Only versions whose value cannot change remotely are cached: those of
//!   the built-in `local_encrypted` provider, and any version with a
//!   non-empty `provider_version_ref` (an AWS `VersionId`, an external
//!   reference pinned to a version). An external reference that follows the
//!   remote current version has an empty ref and is fetched every time.
//! - Disabling or destroying a version evicts it, and purging a secret evicts
//!   all its versions, after the change commits (a soft-deleted secret keeps
//!   its entries, unserved, since an undelete brings the same values back).
//!   A resolve that read the metadata before that commit could still be
//!   fetching the old value; so each resolve takes the cache's invalidation
//!   epoch before its metadata reads, and a fill whose epoch is out of date
//!   is dropped.
//! - Other replicas do not hear of an eviction; their entry for a destroyed
//!   or purged version is never served, because the version (DESTROYED) or
//!   the secret (gone) fails the metadata check first, and it ages out under
//!   the byte bound.
//!
//! The cache is bounded by the bytes of the values it holds (plus a small
//! per-entry overhead) and evicts the least recently used entry first.
//! Values are held as [`SecretValue`], so eviction and drop zeroize them;
//! `Debug` shows sizes and counts, never a value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use coffer_core::record::VersionRecord;
use coffer_providers::SecretValue;

use super::LOCAL_PROVIDER;
use crate::observe::metrics::{
    VALUE_CACHE_BYTES, VALUE_CACHE_EVICTIONS, VALUE_CACHE_HITS, VALUE_CACHE_MISSES,
};

/// Bookkeeping charged per entry on top of the value's and uid's bytes: the
/// map slot, the shared uid's and the version list's allocations, the LRU
/// index's node share and the allocator's rounding (about 220 bytes in
/// all). Counted so that the bound holds for small values, which are most
/// secrets, and not only for the values' own bytes.
const ENTRY_OVERHEAD: usize = 224;

/// Settings of the decrypted-value cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueCacheOptions {
    /// Off: every resolve calls its provider.
    pub enabled: bool,
    /// The most bytes the cached values (and their keys) may take.
    pub max_bytes: usize,
}

impl ValueCacheOptions {
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

    pub fn disabled() -> Self {
        ValueCacheOptions {
            enabled: false,
            ..Self::default()
        }
    }
}

impl Default for ValueCacheOptions {
    fn default() -> Self {
        ValueCacheOptions {
            enabled: true,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// What the cache holds and has done, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValueCacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped for space or by an invalidation.
    pub evictions: u64,
}

/// Whether a version's value can be cached: it can never change remotely.
pub(crate) fn cacheable(version: &VersionRecord) -> bool {
    version.provider == LOCAL_PROVIDER || !version.provider_version_ref.is_empty()
}

pub(crate) struct ValueCache {
    options: ValueCacheOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// uid → its cached versions (usually one); nested so a purge finds a
    /// secret's versions. The uid is shared with `order`.
    entries: HashMap<Arc<str>, Vec<(i64, Entry)>>,
    /// Last-use tick → key; the first is the least recently used.
    order: BTreeMap<u64, (Arc<str>, i64)>,
    tick: u64,
    /// Bumped by every invalidation; see the module doc.
    epoch: u64,
    stats: ValueCacheStats,
}

struct Entry {
    value: SecretValue,
    last_used: u64,
    cost: usize,
}

impl ValueCache {
    pub(crate) fn new(options: ValueCacheOptions) -> Self {
        ValueCache {
            options,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic between statements
        // (no partial update spans an await or a user callback).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The invalidation epoch to pass to [`ValueCache::insert`]; take it
    /// before reading the metadata that allows the resolve.
    pub(crate) fn epoch(&self) -> u64 {
        if !self.options.enabled {
            return 0;
        }
        self.state().epoch
    }

    /// A copy of the cached value, counted as a hit or a miss.
    pub(crate) fn get(&self, uid: &str, version: i64) -> Option<SecretValue> {
        if !self.options.enabled {
            return None;
        }
        let mut state = self.state();
        state.tick += 1;
        let tick = state.tick;
        let found = state
            .entries
            .get_mut(uid)
            .and_then(|versions| versions.iter_mut().find(|(number, _)| *number == version))
            .map(|(_, entry)| {
                let previous = entry.last_used;
                entry.last_used = tick;
                (previous, entry.value.clone())
            });
        match found {
            Some((previous, value)) => {
                if let Some(key) = state.order.remove(&previous) {
                    state.order.insert(tick, key);
                }
                state.stats.hits += 1;
                metrics::counter!(VALUE_CACHE_HITS).increment(1);
                Some(value)
            }
            None => {
                state.stats.misses += 1;
                metrics::counter!(VALUE_CACHE_MISSES).increment(1);
                None
            }
        }
    }

    /// Caches a value the provider just returned, unless an invalidation
    /// happened since `epoch` was taken or it alone exceeds the bound.
    pub(crate) fn insert(&self, uid: &str, version: i64, value: &SecretValue, epoch: u64) {
        if !self.options.enabled {
            return;
        }
        let cost = value.len() + uid.len() + ENTRY_OVERHEAD;
        if cost > self.options.max_bytes {
            return;
        }
        let mut state = self.state();
        if state.epoch != epoch {
            return;
        }
        state.remove(uid, version);
        state.tick += 1;
        let tick = state.tick;
        let uid: Arc<str> = match state.entries.get_key_value(uid) {
            Some((shared, _)) => Arc::clone(shared),
            None => Arc::from(uid),
        };
        state.order.insert(tick, (Arc::clone(&uid), version));
        state.entries.entry(uid).or_default().push((
            version,
            Entry {
                value: value.clone(),
                last_used: tick,
                cost,
            },
        ));
        state.stats.bytes += cost;
        let mut evicted = 0;
        while state.stats.bytes > self.options.max_bytes {
            let Some((_, (oldest_uid, oldest_version))) = state.order.pop_first() else {
                break;
            };
            state.remove(&oldest_uid, oldest_version);
            evicted += 1;
        }
        state.stats.evictions += evicted;
        state.publish(evicted);
    }

    /// Drops one version (disabled or destroyed).
    pub(crate) fn evict_version(&self, uid: &str, version: i64) {
        if !self.options.enabled {
            return;
        }
        let mut state = self.state();
        state.epoch += 1;
        let evicted = u64::from(state.remove(uid, version));
        state.stats.evictions += evicted;
        state.publish(evicted);
    }

    /// Drops every version of a secret (purged).
    pub(crate) fn evict_secret(&self, uid: &str) {
        if !self.options.enabled {
            return;
        }
        let mut state = self.state();
        state.epoch += 1;
        let versions: Vec<i64> = state
            .entries
            .get(uid)
            .map(|versions| versions.iter().map(|(number, _)| *number).collect())
            .unwrap_or_default();
        let mut evicted = 0;
        for version in versions {
            evicted += u64::from(state.remove(uid, version));
        }
        state.stats.evictions += evicted;
        state.publish(evicted);
    }

    pub(crate) fn stats(&self) -> ValueCacheStats {
        self.state().stats
    }
}

impl State {
    /// Removes one entry (its value zeroizes on drop); true if it was there.
    fn remove(&mut self, uid: &str, version: i64) -> bool {
        let Some(versions) = self.entries.get_mut(uid) else {
            return false;
        };
        let Some(position) = versions.iter().position(|(number, _)| *number == version) else {
            return false;
        };
        let (_, entry) = versions.swap_remove(position);
        if versions.is_empty() {
            self.entries.remove(uid);
        }
        self.order.remove(&entry.last_used);
        self.stats.bytes -= entry.cost;
        true
    }

    /// Brings the entry count and the gauges up to date after a change.
    fn publish(&mut self, evicted: u64) {
        self.stats.entries = self.order.len();
        if evicted > 0 {
            metrics::counter!(VALUE_CACHE_EVICTIONS).increment(evicted);
        }
        metrics::gauge!(VALUE_CACHE_BYTES).set(self.stats.bytes as f64);
    }
}

impl fmt::Debug for ValueCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("ValueCache")
            .field("options", &self.options)
            .field("stats", &stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: &[u8]) -> SecretValue {
        SecretValue::new(bytes.to_vec())
    }

    fn small(max_bytes: usize) -> ValueCache {
        ValueCache::new(ValueCacheOptions {
            enabled: true,
            max_bytes,
        })
    }

    #[test]
    fn hit_after_insert_and_miss_otherwise() {
        let cache = small(1 << 20);
        assert!(cache.get("u1", 1).is_none());
        cache.insert("u1", 1, &value(b"one"), cache.epoch());
        assert_eq!(cache.get("u1", 1).unwrap().expose(), b"one");
        assert!(cache.get("u1", 2).is_none());
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.hits, stats.misses), (1, 1, 2));
        assert_eq!(stats.bytes, 3 + 2 + ENTRY_OVERHEAD);
    }

    #[test]
    fn least_recently_used_goes_first_and_bytes_stay_bounded() {
        let cost = 100 + 2 + ENTRY_OVERHEAD;
        let cache = small(cost * 2);
        cache.insert("u1", 1, &value(&[1; 100]), cache.epoch());
        cache.insert("u2", 1, &value(&[2; 100]), cache.epoch());
        // Touch u1 so u2 is the least recently used.
        assert!(cache.get("u1", 1).is_some());
        cache.insert("u3", 1, &value(&[3; 100]), cache.epoch());
        assert!(cache.get("u2", 1).is_none());
        assert!(cache.get("u1", 1).is_some());
        assert!(cache.get("u3", 1).is_some());
        let stats = cache.stats();
        assert_eq!(
            (stats.entries, stats.bytes, stats.evictions),
            (2, cost * 2, 1)
        );
        // A value larger than the whole bound is not cached at all.
        cache.insert("u4", 1, &value(&[4; 1000]), cache.epoch());
        assert!(cache.get("u4", 1).is_none());
        assert_eq!(cache.stats().entries, 2);
    }

    #[test]
    fn evictions_drop_versions_and_secrets() {
        let cache = small(1 << 20);
        for version in 1..=3 {
            cache.insert("u1", version, &value(b"v"), cache.epoch());
        }
        cache.insert("u2", 1, &value(b"w"), cache.epoch());
        cache.evict_version("u1", 2);
        assert!(cache.get("u1", 2).is_none());
        assert!(cache.get("u1", 1).is_some());
        cache.evict_secret("u1");
        assert!(cache.get("u1", 1).is_none() && cache.get("u1", 3).is_none());
        assert!(cache.get("u2", 1).is_some());
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.evictions), (1, 3));
        assert_eq!(stats.bytes, 1 + 2 + ENTRY_OVERHEAD);
    }

    #[test]
    fn a_fill_started_before_an_invalidation_is_dropped() {
        let cache = small(1 << 20);
        let epoch = cache.epoch();
        cache.evict_version("u1", 1);
        cache.insert("u1", 1, &value(b"old"), epoch);
        assert!(cache.get("u1", 1).is_none());
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        let cache = ValueCache::new(ValueCacheOptions::disabled());
        cache.insert("u1", 1, &value(b"v"), cache.epoch());
        assert!(cache.get("u1", 1).is_none());
        assert_eq!(cache.stats(), ValueCacheStats::default());
    }

    #[test]
    fn debug_never_shows_a_value() {
        let cache = small(1 << 20);
        cache.insert("u1", 1, &value(b"hunter2-secret"), cache.epoch());
        let debug = format!("{cache:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("entries: 1"), "{debug}");
    }
}
