//! ListSecretVersions under churn: rotations and state changes while paging
//! newest first.

use coffer_core::record::VersionState;
use coffer_store::store_test;

use crate::support::*;

store_test!(list_versions_survives_churn, |store| async move {
    const BEFORE: i64 = 60;
    let rec = secret("rotated", &[]);
    create(&store, &rec).await;
    for _ in 0..BEFORE {
        rotate(&store, &rec.key).await;
    }

    // The background churn rotates the secret and flips old versions
    // between DISABLED and ENABLED.
    let churn = {
        let store = store.clone();
        let (uid, key) = (rec.uid.clone(), rec.key.clone());
        Churn::start(move |n| {
            let store = store.clone();
            let (uid, key) = (uid.clone(), key.clone());
            async move {
                rotate(&store, &key).await;
                let old = 1 + i64::try_from(n).unwrap() % (BEFORE - 1);
                let state = if n % 2 == 0 {
                    VersionState::Disabled
                } else {
                    VersionState::Enabled
                };
                set_version_state(&store, &uid, old, state).await;
            }
        })
    };
    let mut seen_ops = churn.progress(0).await;

    let mut listed: Vec<i64> = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<i64> = None;
    loop {
        let mut page = store
            .list_versions(&rec.uid, cursor, PAGE + 1)
            .await
            .unwrap();
        pages += 1;
        let more = page.len() > PAGE;
        page.truncate(PAGE);
        listed.extend(page.iter().map(|v| v.version));
        if !more {
            break;
        }
        cursor = listed.last().copied();
        // Between pages: a rotation (above every cursor, so never listed
        // after the first page) and the destruction of a version ahead of
        // the cursor, which stays listed, as DESTROYED.
        rotate(&store, &rec.key).await;
        let ahead = cursor.unwrap() - 1;
        set_version_state(&store, &rec.uid, ahead, VersionState::Destroyed).await;
        seen_ops = churn.progress(seen_ops).await;
    }
    let ops = churn.finish().await;

    let what = format!(
        "{} versions in {pages} pages, {ops} churn ops",
        listed.len()
    );
    assert!(pages > 5, "{what}: too few pages to mean anything");
    for pair in listed.windows(2) {
        assert!(
            pair[0] > pair[1],
            "{what}: version {} listed after {} (duplicate or out of order)",
            pair[1],
            pair[0]
        );
    }
    // The first page saw the newest version of the moment; every version up
    // to it existed before the listing and is listed exactly once (versions
    // are never removed, a destroyed one stays listed). Versions created
    // later sit above every cursor, so the strict order above already
    // keeps them out. The churn may have rotated many times before the
    // first page, so how many of the listed are newer than BEFORE is not
    // bounded by one page.
    let newest_at_start = listed[0];
    assert!(
        newest_at_start > BEFORE,
        "{what}: the seeded versions are missing"
    );
    assert_eq!(
        listed,
        (1..=newest_at_start).rev().collect::<Vec<_>>(),
        "{what}"
    );
});
