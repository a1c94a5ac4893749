//! Versions: insert, newest-first pages, optimistic updates, the rewrap scan.

use coffer_core::record::VersionState;
use coffer_core::{ErrorCode, Reason};
use coffer_store::store_test;

use crate::fixtures::{T0, secret, version};

fn numbers(page: &[coffer_core::record::VersionRecord]) -> Vec<i64> {
    page.iter().map(|v| v.version).collect()
}

store_test!(stores_and_pages_versions_newest_first, |store| async move {
    let rec = secret("acme", "k");
    let other = secret("acme", "other");
    let tx = store.begin().await.unwrap();
    tx.insert_secret(&rec).await.unwrap();
    tx.insert_secret(&other).await.unwrap();
    for n in 1..=5 {
        tx.insert_version(&version(&rec.uid, n)).await.unwrap();
    }
    tx.insert_version(&version(&other.uid, 1)).await.unwrap();
    tx.commit().await.unwrap();

    // A number taken by a concurrent writer: Aborted, and the failed
    // transaction refuses to commit (PostgreSQL has aborted it already).
    let tx = store.begin().await.unwrap();
    tx.insert_version(&version(&rec.uid, 6)).await.unwrap();
    let err = tx.insert_version(&version(&rec.uid, 3)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted);
    let err = tx.commit().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);

    assert_eq!(
        store.get_version(&rec.uid, 3).await.unwrap().unwrap(),
        version(&rec.uid, 3)
    );
    assert!(store.get_version(&rec.uid, 6).await.unwrap().is_none());
    assert_eq!(
        numbers(&store.list_versions(&rec.uid, None, 2).await.unwrap()),
        [5, 4]
    );
    assert_eq!(
        numbers(&store.list_versions(&rec.uid, Some(4), 2).await.unwrap()),
        [3, 2]
    );
    assert_eq!(
        numbers(&store.list_versions(&rec.uid, Some(2), 2).await.unwrap()),
        [1]
    );
    assert_eq!(
        numbers(&store.list_versions(&other.uid, None, 10).await.unwrap()),
        [1]
    );
});

store_test!(updates_versions_optimistically, |store| async move {
    let rec = secret("acme", "k");
    let tx = store.begin().await.unwrap();
    tx.insert_secret(&rec).await.unwrap();
    tx.insert_version(&version(&rec.uid, 1)).await.unwrap();
    tx.insert_version(&version(&rec.uid, 2)).await.unwrap();
    tx.commit().await.unwrap();

    let tx = store.begin().await.unwrap();
    let mut destroyed = tx.get_version(&rec.uid, 1).await.unwrap().unwrap();
    destroyed.state = VersionState::Destroyed;
    destroyed.material = None;
    destroyed.destroy_time = Some(T0 + 50);
    destroyed.provider_version_ref = "gone".to_owned();
    destroyed.revision = 2;
    let err = tx.update_version(&destroyed, 5).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted);
    assert_eq!(err.reason(), Reason::EtagMismatch);
    tx.update_version(&destroyed, 1).await.unwrap();
    let all = tx.list_all_versions(&rec.uid).await.unwrap();
    assert_eq!(numbers(&all), [1, 2]);
    tx.commit().await.unwrap();

    let got = store.get_version(&rec.uid, 1).await.unwrap().unwrap();
    assert_eq!(got, destroyed);
    // Create-time fields are not rewritten by an update.
    assert_eq!(got.fingerprint, "fp1");
    assert_eq!(got.created_by, "spiffe://test/admin");
});

store_test!(
    versions_keep_the_location_they_were_written_to,
    |store| async move {
        let rec = secret("acme", "k");
        let mut remote = version(&rec.uid, 1);
        remote.provider = "aws_secrets_manager".to_owned();
        remote.vault = "tenants/acme/vaults/prod".to_owned();
        let local = version(&rec.uid, 2);
        let tx = store.begin().await.unwrap();
        tx.insert_secret(&rec).await.unwrap();
        tx.insert_version(&remote).await.unwrap();
        tx.insert_version(&local).await.unwrap();
        tx.commit().await.unwrap();

        assert_eq!(
            store.get_version(&rec.uid, 1).await.unwrap().unwrap(),
            remote
        );
        let listed = store.list_versions(&rec.uid, None, 10).await.unwrap();
        assert_eq!(listed, vec![local.clone(), remote.clone()]);

        // An update never moves a version.
        let tx = store.begin().await.unwrap();
        let mut moved = remote.clone();
        moved.state = VersionState::Disabled;
        moved.provider = "local_encrypted".to_owned();
        moved.vault = String::new();
        moved.revision = 2;
        tx.update_version(&moved, 1).await.unwrap();
        tx.commit().await.unwrap();
        let got = store.get_version(&rec.uid, 1).await.unwrap().unwrap();
        assert_eq!(got.state, VersionState::Disabled);
        assert_eq!(got.provider, "aws_secrets_manager");
        assert_eq!(got.vault, "tenants/acme/vaults/prod");
    }
);

store_test!(scans_and_rewraps_material, |store| async move {
    let a = secret("acme", "a");
    let b = secret("acme", "b");
    let tx = store.begin().await.unwrap();
    tx.insert_secret(&a).await.unwrap();
    tx.insert_secret(&b).await.unwrap();
    for n in 1..=3 {
        tx.insert_version(&version(&a.uid, n)).await.unwrap();
        tx.insert_version(&version(&b.uid, n)).await.unwrap();
    }
    let mut destroyed = version(&b.uid, 2);
    destroyed.material = None;
    destroyed.state = VersionState::Destroyed;
    destroyed.revision = 2;
    tx.update_version(&destroyed, 1).await.unwrap();
    tx.commit().await.unwrap();

    let mut expected: Vec<(String, i64)> = [
        (&a.uid, 1),
        (&a.uid, 2),
        (&a.uid, 3),
        (&b.uid, 1),
        (&b.uid, 3),
    ]
    .iter()
    .map(|(u, n)| ((*u).clone(), *n))
    .collect();
    expected.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .versions_with_material(after.clone(), 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        for v in &page {
            seen.push((v.secret_uid.clone(), v.version));
        }
        let last = page.last().unwrap();
        after = Some((last.secret_uid.clone(), last.version));
    }
    assert_eq!(seen, expected);

    let current = store
        .get_version(&a.uid, 2)
        .await
        .unwrap()
        .unwrap()
        .material
        .unwrap();
    let tx = store.begin().await.unwrap();
    assert!(
        tx.set_version_material(&a.uid, 2, &current, "rewrapped")
            .await
            .unwrap()
    );
    // Compare-and-swap: stale material, or a destroyed version, is left alone.
    assert!(
        !tx.set_version_material(&a.uid, 3, "stale", "x")
            .await
            .unwrap()
    );
    assert!(
        !tx.set_version_material(&b.uid, 2, &current, "x")
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let got = store.get_version(&a.uid, 2).await.unwrap().unwrap();
    assert_eq!(got.material.as_deref(), Some("rewrapped"));
    assert_eq!(got.revision, 1);
    assert_eq!(
        store
            .get_version(&b.uid, 2)
            .await
            .unwrap()
            .unwrap()
            .material,
        None
    );
});

store_test!(reads_exactly_the_versions_asked_for, |store| async move {
    let a = secret("acme", "a");
    let b = secret("acme", "b");
    let tx = store.begin().await.unwrap();
    tx.insert_secret(&a).await.unwrap();
    tx.insert_secret(&b).await.unwrap();
    for n in 1..=3 {
        tx.insert_version(&version(&a.uid, n)).await.unwrap();
    }
    tx.insert_version(&version(&b.uid, 1)).await.unwrap();
    tx.commit().await.unwrap();

    // a's 3 and b's 1 are asked for; the lists would also match a's 1 and
    // b's 3 (absent), which must not come back. Duplicates and a missing
    // version are fine.
    let asked = [
        (a.uid.clone(), 3),
        (b.uid.clone(), 1),
        (a.uid.clone(), 3),
        (b.uid.clone(), 3),
        ("no-such-uid".to_owned(), 1),
    ];
    let mut found: Vec<(String, i64)> = store
        .versions_by_ids(&asked)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.secret_uid, v.version))
        .collect();
    found.sort();
    let mut expected = vec![(a.uid.clone(), 3), (b.uid.clone(), 1)];
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(
        store.versions_by_ids(&[(a.uid.clone(), 2)]).await.unwrap(),
        vec![version(&a.uid, 2)]
    );
    assert!(store.versions_by_ids(&[]).await.unwrap().is_empty());
});
