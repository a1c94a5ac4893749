//! What every churn run shares: records, the writes the use cases make
//! (create, soft delete, purge, update, rotate, …) and the background churn
//! task.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coffer_core::record::{
    BindingRecord, SecretMode, SecretRecord, SecretState, VersionRecord, VersionState,
};
use coffer_core::{SecretKey, TenantId};
use coffer_store::Store;
use tokio::sync::watch;

pub(crate) const TENANT: &str = "acme";
pub(crate) const T0: i64 = 1_764_000_000_000_000;
/// Small pages, so a listing takes many round trips for the churn to hit.
pub(crate) const PAGE: usize = 7;
/// How long a page waits for the background churn to make progress.
pub(crate) const CHURN_WAIT: Duration = Duration::from_secs(10);

pub(crate) fn tenant() -> TenantId {
    TenantId::parse(TENANT, "tenant").unwrap()
}

/// A random key: uniformly spread, so new keys land before and after the cursor.
pub(crate) fn random_key(prefix: char) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

pub(crate) fn secret(key: &str, labels: &[(&str, &str)]) -> SecretRecord {
    SecretRecord {
        uid: uuid::Uuid::new_v4().to_string(),
        tenant: tenant(),
        key: SecretKey::parse(key, "key").unwrap(),
        display_name: format!("Display {key}"),
        description: String::new(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        mode: SecretMode::Managed,
        provider: "local_encrypted".to_owned(),
        vault: String::new(),
        external_ref: String::new(),
        state: SecretState::Active,
        current_version: 0,
        latest_version: 0,
        create_time: T0,
        update_time: T0,
        rotate_time: None,
        last_resolve_time: None,
        delete_time: None,
        purge_time: None,
        revision: 1,
    }
}

pub(crate) fn version(secret_uid: &str, n: i64) -> VersionRecord {
    VersionRecord {
        secret_uid: secret_uid.to_owned(),
        version: n,
        state: VersionState::Enabled,
        provider: "local_encrypted".to_owned(),
        vault: String::new(),
        provider_version_ref: format!("ref-{n}"),
        material: Some(format!("{{\"scheme\":\"test\",\"n\":{n}}}")),
        fingerprint: format!("fp{n}"),
        create_time: T0 + n,
        created_by: "spiffe://test/admin".to_owned(),
        destroy_time: None,
        revision: 1,
    }
}

pub(crate) fn binding(rec: &SecretRecord, consumer_id: &str) -> BindingRecord {
    BindingRecord {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: rec.tenant.clone(),
        secret_uid: rec.uid.clone(),
        secret_key: rec.key.clone(),
        consumer_kind: "agent".to_owned(),
        consumer_id: consumer_id.to_owned(),
        config_path: format!("env.{}", uuid::Uuid::new_v4().simple()),
        version_selector: String::new(),
        required: true,
        label: String::new(),
        create_time: T0,
        update_time: T0,
        revision: 1,
    }
}

pub(crate) async fn create(store: &Store, rec: &SecretRecord) {
    let tx = store.begin().await.unwrap();
    tx.insert_secret(rec).await.unwrap();
    tx.commit().await.unwrap();
}

/// DeleteSecret without `force`: the secret stays, in state DELETED.
pub(crate) async fn soft_delete(store: &Store, key: &str) {
    let tx = store.begin().await.unwrap();
    let mut rec = tx
        .get_secret_for_update(&tenant(), &SecretKey::parse(key, "key").unwrap())
        .await
        .unwrap()
        .expect("secret to soft-delete");
    let expected = rec.revision;
    rec.state = SecretState::Deleted;
    rec.delete_time = Some(T0 + 1);
    rec.purge_time = Some(T0 + 30 * 86_400_000_000);
    rec.revision += 1;
    tx.update_secret(&rec, expected).await.unwrap();
    tx.commit().await.unwrap();
}

/// DeleteSecret with `force`: the secret is purged, its key freed.
pub(crate) async fn purge(store: &Store, uid: &str) {
    let tx = store.begin().await.unwrap();
    tx.purge_secret(uid, T0 + 2).await.unwrap();
    tx.commit().await.unwrap();
}

/// UpdateSecret: new description, labels rewritten (deleted and inserted
/// again) with the same values, which a label-filtered page must not miss.
pub(crate) async fn touch(store: &Store, key: &str) {
    let tx = store.begin().await.unwrap();
    let mut rec = tx
        .get_secret_for_update(&tenant(), &SecretKey::parse(key, "key").unwrap())
        .await
        .unwrap()
        .expect("secret to update");
    let expected = rec.revision;
    rec.description = format!("touched {}", rec.revision);
    rec.revision += 1;
    tx.update_secret(&rec, expected).await.unwrap();
    tx.commit().await.unwrap();
}

/// Background churn: counts its completed operations and stops when told.
pub(crate) struct Churn {
    ops: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Churn {
    pub(crate) fn start<F, Fut>(mut step: F) -> Churn
    where
        F: FnMut(usize) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let ops = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let counter = ops.clone();
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !*stopped.borrow_and_update() {
                step(n).await;
                n += 1;
                counter.store(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        });
        Churn { ops, stop, task }
    }

    /// Waits until the churn has completed an operation after `since`, so
    /// every page is fetched with at least one concurrent change behind it.
    pub(crate) async fn progress(&self, since: usize) -> usize {
        let deadline = tokio::time::Instant::now() + CHURN_WAIT;
        loop {
            let now = self.ops.load(Ordering::SeqCst);
            if now > since {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the background churn made no progress"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub(crate) async fn finish(self) -> usize {
        self.stop.send(true).unwrap();
        self.task.await.expect("churn task panicked");
        self.ops.load(Ordering::SeqCst)
    }
}

pub(crate) async fn insert_binding(store: &Store, b: &BindingRecord) {
    let tx = store.begin().await.unwrap();
    tx.insert_binding(b).await.unwrap();
    tx.commit().await.unwrap();
}

pub(crate) async fn delete_binding(store: &Store, id: &str) {
    let tx = store.begin().await.unwrap();
    assert!(tx.delete_binding(&tenant(), id).await.unwrap());
    tx.commit().await.unwrap();
}

/// RotateSecret: the next version, made current, under the secret's lock.
pub(crate) async fn rotate(store: &Store, key: &SecretKey) -> i64 {
    let tx = store.begin().await.unwrap();
    let mut rec = tx
        .get_secret_for_update(&tenant(), key)
        .await
        .unwrap()
        .expect("secret to rotate");
    let expected = rec.revision;
    rec.latest_version += 1;
    rec.current_version = rec.latest_version;
    rec.revision += 1;
    tx.insert_version(&version(&rec.uid, rec.latest_version))
        .await
        .unwrap();
    tx.update_secret(&rec, expected).await.unwrap();
    tx.commit().await.unwrap();
    rec.latest_version
}

/// Moves a version to `state` (DisableSecretVersion, DestroySecretVersion, …).
pub(crate) async fn set_version_state(store: &Store, uid: &str, n: i64, state: VersionState) {
    let tx = store.begin().await.unwrap();
    let mut v = tx.get_version(uid, n).await.unwrap().expect("version");
    if v.state == VersionState::Destroyed {
        return tx.commit().await.unwrap();
    }
    let expected = v.revision;
    v.state = state;
    if state == VersionState::Destroyed {
        v.material = None;
        v.destroy_time = Some(T0 + 3);
    }
    v.revision += 1;
    tx.update_version(&v, expected).await.unwrap();
    tx.commit().await.unwrap();
}
