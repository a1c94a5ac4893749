//! ListSecrets under churn: plain, with deleted secrets shown, and filtered
//! by a label.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use coffer_core::filter::SecretFilter;
use coffer_core::record::{SecretRecord, SecretState};
use coffer_store::{Store, store_test};

use crate::support::*;

/// Which ListSecrets variant a run pages through.
#[derive(Debug, Clone, Copy)]
enum Listing {
    Plain,
    ShowDeleted,
    LabelFilter,
}

/// Keys the listing may meet, by what happened to them.
#[derive(Default)]
struct Known {
    /// Created before the listing; never deleted.
    stable: BTreeSet<String>,
    /// Created before the listing (or by the churn), possibly deleted since.
    others: BTreeSet<String>,
    /// Soft-deleted while their position was ahead of the cursor.
    soft_deleted_ahead: BTreeSet<String>,
    /// Purged while their position was ahead of the cursor.
    purged_ahead: BTreeSet<String>,
}

async fn secrets_churn_run(store: &Store, listing: Listing) {
    let labels: &[(&str, &str)] = &[("env", "prod")];
    let mut known = Known::default();
    // Stable secrets, and doomed ones the between-page churn deletes.
    let mut doomed: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..60 {
        let rec = secret(&random_key('s'), labels);
        create(store, &rec).await;
        known.stable.insert(rec.key.as_str().to_owned());
        // Half the doomed ones carry no label: a label filter must skip them.
        let doomed_labels: &[(&str, &str)] = if i % 2 == 0 { labels } else { &[] };
        let rec = secret(&random_key('d'), doomed_labels);
        create(store, &rec).await;
        known.others.insert(rec.key.as_str().to_owned());
        doomed.insert(rec.key.as_str().to_owned(), rec.uid.clone());
    }

    // The background churn: creates secrets (labelled or not), soft-deletes
    // or purges what it created, and updates stable secrets.
    let churn_keys: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let churn = {
        let store = store.clone();
        let churn_keys = churn_keys.clone();
        let stable: Vec<String> = known.stable.iter().cloned().collect();
        let mut mine: Vec<SecretRecord> = Vec::new();
        Churn::start(move |n| {
            let store = store.clone();
            let churn_keys = churn_keys.clone();
            let victim = if n % 2 == 1 { mine.pop() } else { None };
            let rec = secret(&random_key('c'), if n % 3 == 0 { &[] } else { labels });
            // Known before it can be listed.
            churn_keys
                .lock()
                .unwrap()
                .insert(rec.key.as_str().to_owned());
            mine.push(rec.clone());
            let stable_key = stable[n % stable.len()].clone();
            async move {
                create(&store, &rec).await;
                match victim {
                    Some(v) if n % 4 == 1 => soft_delete(&store, v.key.as_str()).await,
                    Some(v) => purge(&store, &v.uid).await,
                    None => touch(&store, &stable_key).await,
                }
            }
        })
    };
    let mut seen_ops = churn.progress(0).await;

    let (filter, show_deleted) = match listing {
        Listing::Plain => (SecretFilter::default(), false),
        Listing::ShowDeleted => (SecretFilter::default(), true),
        Listing::LabelFilter => (
            SecretFilter::parse("labels.env=prod", "filter").unwrap(),
            false,
        ),
    };
    let mut listed: Vec<SecretRecord> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut page = store
            .list_secrets(
                &tenant(),
                &filter,
                show_deleted,
                cursor.as_deref(),
                PAGE + 1,
            )
            .await
            .unwrap();
        pages += 1;
        let more = page.len() > PAGE;
        page.truncate(PAGE);
        listed.extend(page);
        if !more {
            break;
        }
        cursor = listed.last().map(|r| r.key.as_str().to_owned());
        let at = cursor.clone().unwrap();

        // Between pages: two new secrets, and one doomed secret ahead of the
        // cursor soft-deleted, one purged, one behind it purged.
        for _ in 0..2 {
            let rec = secret(&random_key('n'), labels);
            known.others.insert(rec.key.as_str().to_owned());
            create(store, &rec).await;
        }
        let ahead: Vec<String> = doomed
            .range::<str, _>((Bound::Excluded(at.as_str()), Bound::Unbounded))
            .map(|(k, _)| k.clone())
            .take(2)
            .collect();
        if let Some(k) = ahead.first() {
            doomed.remove(k);
            soft_delete(store, k).await;
            known.soft_deleted_ahead.insert(k.clone());
        }
        if let Some(k) = ahead.get(1) {
            let uid = doomed.remove(k).unwrap();
            purge(store, &uid).await;
            known.purged_ahead.insert(k.clone());
        }
        let behind = doomed
            .range::<str, _>((Bound::Unbounded, Bound::Included(at.as_str())))
            .next()
            .map(|(k, u)| (k.clone(), u.clone()));
        if let Some((k, uid)) = behind {
            doomed.remove(&k);
            purge(store, &uid).await;
        }
        seen_ops = churn.progress(seen_ops).await;
    }
    let ops = churn.finish().await;
    known
        .others
        .extend(churn_keys.lock().unwrap().iter().cloned());

    let keys: Vec<&str> = listed.iter().map(|r| r.key.as_str()).collect();
    let what = format!(
        "{listing:?}: {} rows in {pages} pages, {ops} churn ops",
        keys.len()
    );
    assert!(pages > 10, "{what}: too few pages to mean anything");
    for pair in keys.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{what}: {} listed after {} (duplicate or out of order)",
            pair[1],
            pair[0]
        );
    }
    let listed_set: BTreeSet<&str> = keys.iter().copied().collect();
    for key in &known.stable {
        assert!(
            listed_set.contains(key.as_str()),
            "{what}: stable secret {key} was skipped"
        );
    }
    for key in &keys {
        assert!(
            known.stable.contains(*key) || known.others.contains(*key),
            "{what}: unknown secret {key} listed"
        );
    }
    for key in &known.purged_ahead {
        assert!(
            !listed_set.contains(key.as_str()),
            "{what}: {key} was listed although purged before its page"
        );
    }
    for key in &known.soft_deleted_ahead {
        assert_eq!(
            listed_set.contains(key.as_str()),
            show_deleted,
            "{what}: {key} was soft-deleted before its page"
        );
    }
    for rec in &listed {
        if !show_deleted {
            assert_ne!(
                rec.state,
                SecretState::Deleted,
                "{what}: deleted row listed"
            );
        }
        // A page's labels come from a second query, so a secret purged in
        // between is listed without them (a known race of
        // `Store::list_secrets`); every secret still there must match.
        let still_there = store
            .get_secret(&rec.tenant, &rec.key)
            .await
            .unwrap()
            .is_some_and(|now| now.uid == rec.uid);
        if matches!(listing, Listing::LabelFilter) && still_there {
            assert_eq!(
                rec.labels.get("env").map(String::as_str),
                Some("prod"),
                "{what}: {} does not match the label filter",
                rec.key.as_str()
            );
        }
    }
    assert!(
        !known.purged_ahead.is_empty() && !known.soft_deleted_ahead.is_empty(),
        "{what}: the between-page churn deleted nothing ahead of the cursor"
    );
}

store_test!(list_secrets_survives_churn, |store| async move {
    secrets_churn_run(&store, Listing::Plain).await;
});

store_test!(
    list_secrets_show_deleted_survives_churn,
    |store| async move {
        secrets_churn_run(&store, Listing::ShowDeleted).await;
    }
);

store_test!(list_secrets_by_label_survives_churn, |store| async move {
    secrets_churn_run(&store, Listing::LabelFilter).await;
});
