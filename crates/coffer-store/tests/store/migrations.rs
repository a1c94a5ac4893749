//! Migrations and connection failures.

use std::time::Duration;

use coffer_core::ErrorCode;
use coffer_store::testing::execute_raw;
use coffer_store::{Backend, Store, StoreOptions, store_test};

use crate::fixtures::{secret, tenant, vault};

const MIGRATIONS: [&str; 11] = [
    "m20261128_000001_secrets",
    "m20261128_000002_secret_labels",
    "m20261128_000003_secret_versions",
    "m20261128_000004_idempotency_keys",
    "m20261201_000005_bindings",
    "m20261201_000006_audit_events",
    "m20261201_000007_audit_heads",
    "m20261205_000008_vaults",
    "m20261205_000009_version_locations",
    "m20261210_000010_list_indexes",
    "m20261212_000011_change_marks",
];

store_test!(
    reports_applied_migrations_and_reapplies_as_a_no_op,
    |store| async move {
        let status = store.migration_status().await.unwrap();
        let names: Vec<&str> = status.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, MIGRATIONS);
        assert!(status.iter().all(|m| m.applied));

        let rec = secret("acme", "k");
        let tx = store.begin().await.unwrap();
        tx.insert_secret(&rec).await.unwrap();
        tx.commit().await.unwrap();
        store.migrate_up().await.unwrap();
        store.migrate_up().await.unwrap();
        assert_eq!(store.migration_status().await.unwrap(), status);
        assert!(
            store
                .get_secret(&rec.tenant, &rec.key)
                .await
                .unwrap()
                .is_some()
        );
    }
);

store_test!(migrates_down_and_up_again, |store| async move {
    store.migrate_down(Some(1)).await.unwrap();
    let status = store.migration_status().await.unwrap();
    let applied: Vec<bool> = status.iter().map(|m| m.applied).collect();
    assert_eq!(
        applied,
        [
            true, true, true, true, true, true, true, true, true, true, false
        ]
    );
    // Down three more: the vaults table is gone.
    store.migrate_down(Some(3)).await.unwrap();
    let err = store.get_vault(&tenant("acme"), "v").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);

    store.migrate_down(None).await.unwrap();
    assert!(
        store
            .migration_status()
            .await
            .unwrap()
            .iter()
            .all(|m| !m.applied)
    );
    let tx = store.begin().await.unwrap();
    let err = tx.insert_secret(&secret("acme", "k")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    drop(tx);

    store.migrate_up().await.unwrap();
    assert!(
        store
            .migration_status()
            .await
            .unwrap()
            .iter()
            .all(|m| m.applied)
    );
    let tx = store.begin().await.unwrap();
    tx.insert_secret(&secret("acme", "k")).await.unwrap();
    tx.insert_vault(&vault("acme", "v", "local_encrypted"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
});

store_test!(
    version_locations_are_backfilled_from_their_secret,
    |store| async move {
        // Back to the schema before versions knew their location (undoing
        // the later change marks and list indexes first).
        store.migrate_down(Some(3)).await.unwrap();
        let mut external = secret("acme", "ext");
        external.provider = "aws_secrets_manager".to_owned();
        external.vault = "tenants/acme/vaults/prod".to_owned();
        let local = secret("acme", "local");
        let tx = store.begin().await.unwrap();
        tx.insert_secret(&external).await.unwrap();
        tx.insert_secret(&local).await.unwrap();
        tx.commit().await.unwrap();
        for (uid, n) in [(&external.uid, 1), (&external.uid, 2), (&local.uid, 1)] {
            let inserted = execute_raw(
                &store,
                &format!(
                    "INSERT INTO secret_versions (secret_uid, version, state, \
                     provider_version_ref, material, fingerprint, create_time, created_by, \
                     destroy_time, revision) \
                     VALUES ('{uid}', {n}, 'enabled', 'ref', '{{}}', 'fp', 1, 'test', NULL, 1)"
                ),
            )
            .await;
            assert_eq!(inserted, 1);
        }

        store.migrate_up().await.unwrap();
        for n in [1, 2] {
            let v = store.get_version(&external.uid, n).await.unwrap().unwrap();
            assert_eq!(v.provider, "aws_secrets_manager");
            assert_eq!(v.vault, "tenants/acme/vaults/prod");
        }
        let v = store.get_version(&local.uid, 1).await.unwrap().unwrap();
        assert_eq!(v.provider, "local_encrypted");
        assert_eq!(v.vault, "");
    }
);

store_test!(a_closed_store_is_unavailable, |store| async move {
    store.ping().await.unwrap();
    store.close().await.unwrap();
    let err = store.ping().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert_eq!(
        err.message(),
        "the database is unavailable; retry with backoff"
    );
    let err = store.begin().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
});

#[tokio::test]
async fn an_unreachable_postgres_is_unavailable() {
    // Port 1 on loopback: nothing listens there, so the connection is refused.
    let options = StoreOptions {
        connect_timeout: Duration::from_secs(2),
        acquire_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let err = Store::connect("postgres://postgres:hunter2@127.0.0.1:1/coffer", options)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(!err.message().contains("hunter2"));
}

#[tokio::test]
async fn rejects_unknown_url_schemes() {
    let err = Store::connect("mysql://localhost/db", StoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn opens_sqlite_files_in_both_url_forms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.db");
    let store = Store::connect(
        &format!("sqlite:{}", path.display()),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store.migrate_up().await.unwrap();
    store.ping().await.unwrap();
    assert!(path.exists());
    // Reads see committed writes through the separate read pool.
    let rec = secret("acme", "k");
    let tx = store.begin().await.unwrap();
    tx.insert_secret(&rec).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        store
            .get_secret(&rec.tenant, &rec.key)
            .await
            .unwrap()
            .is_some()
    );
    store.close().await.unwrap();

    let reopened = Store::connect(
        &format!("sqlite://{}?mode=rwc", path.display()),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        reopened
            .get_secret(&rec.tenant, &rec.key)
            .await
            .unwrap()
            .is_some()
    );
}
