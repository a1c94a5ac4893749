//! Concurrent rotations of one secret: on PostgreSQL the `FOR UPDATE` lock,
//! on SQLite the single writer, must serialize them so every version number
//! is allocated exactly once.

use coffer_store::store_test;

use crate::fixtures::{secret, version};

const TASKS: i64 = 20;

store_test!(
    concurrent_rotations_allocate_every_version_once,
    |store| async move {
        let rec = secret("acme", "hot");
        let tx = store.begin().await.unwrap();
        tx.insert_secret(&rec).await.unwrap();
        tx.commit().await.unwrap();

        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let store = store.clone();
            let (tenant, key) = (rec.tenant.clone(), rec.key.clone());
            tasks.push(tokio::spawn(async move {
                let tx = store.begin().await.unwrap();
                let mut current = tx
                    .get_secret_for_update(&tenant, &key)
                    .await
                    .unwrap()
                    .unwrap();
                // Give the other tasks a chance to read the same row if the lock
                // did not hold them back.
                tokio::task::yield_now().await;
                let expected = current.revision;
                current.latest_version += 1;
                current.current_version = current.latest_version;
                current.revision += 1;
                tx.insert_version(&version(&current.uid, current.latest_version))
                    .await
                    .unwrap();
                tx.update_secret(&current, expected).await.unwrap();
                tx.commit().await.unwrap();
                current.latest_version
            }));
        }
        let mut allocated = Vec::new();
        for task in tasks {
            allocated.push(task.await.unwrap());
        }
        allocated.sort_unstable();
        assert_eq!(allocated, (1..=TASKS).collect::<Vec<_>>());

        let got = store
            .get_secret(&rec.tenant, &rec.key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.latest_version, TASKS);
        assert_eq!(got.revision, rec.revision + TASKS);
        let versions = store.list_versions(&rec.uid, None, 100).await.unwrap();
        let numbers: Vec<i64> = versions.iter().rev().map(|v| v.version).collect();
        assert_eq!(numbers, (1..=TASKS).collect::<Vec<_>>());
    }
);
