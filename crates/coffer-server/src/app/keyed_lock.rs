//! In-process locks by name: callers holding the same key run one at a
//! time, callers with different keys never wait on each other. Used where a
//! use case must serialize on a secret without holding a database lock or
//! connection (a rotation writing to a slow vault). Entries live only while
//! someone holds or waits for them, so memory follows concurrency, not the
//! number of keys ever seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default)]
pub(crate) struct KeyedLocks {
    /// Short critical sections only; never held across an await.
    entries: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Holds one key's lock until dropped.
#[derive(Debug)]
pub(crate) struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    entry: Arc<AsyncMutex<()>>,
    held: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits until no one else holds `key`, then holds it. Cancel-safe: a
    /// caller dropped while waiting leaves nothing behind.
    pub(crate) async fn lock(&self, key: String) -> KeyedGuard<'_> {
        let entry = Arc::clone(self.map().entry(key.clone()).or_default());
        let mut guard = KeyedGuard {
            locks: self,
            key,
            entry,
            held: None,
        };
        guard.held = Some(Arc::clone(&guard.entry).lock_owned().await);
        guard
    }

    /// How many keys are held or waited for now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AsyncMutex<()>>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        self.held = None;
        let mut map = self.locks.map();
        // The map's reference and ours: nobody else holds or waits. New
        // callers clone under the map lock, so this cannot race them.
        if Arc::strong_count(&self.entry) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let locks = KeyedLocks::default();
        let first = locks.lock("a".into()).await;
        let other = tokio::time::timeout(Duration::from_millis(100), locks.lock("b".into())).await;
        assert!(other.is_ok(), "a different key must not wait");
        drop(other);
        let same = tokio::time::timeout(Duration::from_millis(100), locks.lock("a".into())).await;
        assert!(same.is_err(), "the same key must wait");
        drop(first);
        let again = tokio::time::timeout(Duration::from_millis(100), locks.lock("a".into())).await;
        assert!(again.is_ok(), "released keys can be taken again");
    }

    #[tokio::test]
    async fn entries_go_when_nobody_holds_or_waits() {
        let locks = KeyedLocks::default();
        let held = locks.lock("a".into()).await;
        // A waiter cancelled by its timeout leaves no entry of its own.
        let _ = tokio::time::timeout(Duration::from_millis(20), locks.lock("a".into())).await;
        assert_eq!(locks.len(), 1);
        drop(held);
        assert_eq!(locks.len(), 0);
        drop(locks.lock("b".into()).await);
        assert_eq!(locks.len(), 0);
    }
}
