//! ListBindings under churn: a tenant's, one consumer's, one secret's.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use coffer_core::record::{BindingRecord, SecretRecord};
use coffer_store::{Store, store_test};

use crate::support::*;

/// Which ListBindings variant a run pages through.
#[derive(Debug, Clone, Copy)]
enum BindingListing {
    Tenant,
    Consumer,
    Secret,
}

async fn bindings_churn_run(store: &Store, listing: BindingListing) {
    let bound = secret("bound", &[]);
    let other = secret("other", &[]);
    create(store, &bound).await;
    create(store, &other).await;
    // Stable bindings by id: a1 on `bound` and a2 on `other`, alternately.
    let mut stable: BTreeMap<String, BindingRecord> = BTreeMap::new();
    let mut others: BTreeSet<String> = BTreeSet::new();
    let mut doomed: BTreeSet<String> = BTreeSet::new();
    for i in 0..60 {
        let (rec, consumer) = if i % 2 == 0 {
            (&bound, "a1")
        } else {
            (&other, "a2")
        };
        let b = binding(rec, consumer);
        insert_binding(store, &b).await;
        stable.insert(b.id.clone(), b);
        // Doomed bindings match every listing, so deleting them ahead of the
        // cursor is visible whichever listing runs.
        let d = binding(&bound, "a1");
        insert_binding(store, &d).await;
        doomed.insert(d.id.clone());
        others.insert(d.id);
    }

    // The background churn: binds consumer a1 to `bound` and to secrets of
    // its own, deletes those bindings again, and purges its secrets, which
    // takes their bindings with them.
    let churn_ids: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let churn = {
        let store = store.clone();
        let churn_ids = churn_ids.clone();
        let bound = bound.clone();
        let mut mine: Vec<BindingRecord> = Vec::new();
        let mut own_secrets: Vec<SecretRecord> = Vec::new();
        Churn::start(move |n| {
            let store = store.clone();
            let fresh = (n % 3 == 2).then(|| secret(&random_key('c'), &[]));
            let target = fresh.as_ref().unwrap_or(&bound);
            let b = binding(target, "a1");
            churn_ids.lock().unwrap().insert(b.id.clone());
            let victim = if n % 2 == 1 { mine.pop() } else { None };
            let purged = if n % 6 == 5 { own_secrets.pop() } else { None };
            if let Some(rec) = &fresh {
                own_secrets.push(rec.clone());
            } else {
                mine.push(b.clone());
            }
            async move {
                if let Some(rec) = &fresh {
                    create(&store, rec).await;
                }
                insert_binding(&store, &b).await;
                if let Some(v) = victim {
                    delete_binding(&store, &v.id).await;
                }
                if let Some(rec) = purged {
                    purge(&store, &rec.uid).await;
                }
            }
        })
    };
    let mut seen_ops = churn.progress(0).await;

    let (secret_uid, consumer) = match listing {
        BindingListing::Tenant => (None, None),
        BindingListing::Consumer => (None, Some(("agent", "a1"))),
        BindingListing::Secret => (Some(bound.uid.as_str()), None),
    };
    let mut listed: Vec<BindingRecord> = Vec::new();
    let mut deleted_ahead: BTreeSet<String> = BTreeSet::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut page = store
            .list_bindings(&tenant(), secret_uid, consumer, cursor.as_deref(), PAGE + 1)
            .await
            .unwrap();
        pages += 1;
        let more = page.len() > PAGE;
        page.truncate(PAGE);
        listed.extend(page);
        if !more {
            break;
        }
        cursor = listed.last().map(|b| b.id.clone());
        let at = cursor.clone().unwrap();

        // Between pages: a new binding, one doomed binding ahead of the
        // cursor deleted and one behind it.
        let b = binding(&bound, "a1");
        others.insert(b.id.clone());
        insert_binding(store, &b).await;
        let ahead = doomed
            .range::<str, _>((Bound::Excluded(at.as_str()), Bound::Unbounded))
            .next()
            .cloned();
        if let Some(id) = ahead {
            doomed.remove(&id);
            delete_binding(store, &id).await;
            deleted_ahead.insert(id);
        }
        let behind = doomed
            .range::<str, _>((Bound::Unbounded, Bound::Included(at.as_str())))
            .next()
            .cloned();
        if let Some(id) = behind {
            doomed.remove(&id);
            delete_binding(store, &id).await;
        }
        seen_ops = churn.progress(seen_ops).await;
    }
    let ops = churn.finish().await;
    others.extend(churn_ids.lock().unwrap().iter().cloned());

    let ids: Vec<&str> = listed.iter().map(|b| b.id.as_str()).collect();
    let what = format!(
        "{listing:?}: {} rows in {pages} pages, {ops} churn ops",
        ids.len()
    );
    assert!(pages > 5, "{what}: too few pages to mean anything");
    for pair in ids.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{what}: {} listed after {} (duplicate or out of order)",
            pair[1],
            pair[0]
        );
    }
    let listed_set: BTreeSet<&str> = ids.iter().copied().collect();
    for b in &listed {
        assert!(
            stable.contains_key(&b.id) || others.contains(&b.id),
            "{what}: unknown binding {} listed",
            b.id
        );
        if let Some(uid) = secret_uid {
            assert_eq!(b.secret_uid, uid, "{what}: binding of another secret");
        }
        if let Some((kind, id)) = consumer {
            assert_eq!(
                (b.consumer_kind.as_str(), b.consumer_id.as_str()),
                (kind, id),
                "{what}: binding of another consumer"
            );
        }
    }
    let matching: Vec<&BindingRecord> = stable
        .values()
        .filter(|b| secret_uid.is_none_or(|uid| b.secret_uid == uid))
        .filter(|b| consumer.is_none_or(|(_, id)| b.consumer_id == id))
        .collect();
    assert!(
        matching.len() >= 30,
        "{what}: too few stable bindings match"
    );
    for b in matching {
        assert!(
            listed_set.contains(b.id.as_str()),
            "{what}: stable binding {} was skipped",
            b.id
        );
    }
    for id in &deleted_ahead {
        assert!(
            !listed_set.contains(id.as_str()),
            "{what}: {id} was listed although deleted before its page"
        );
    }
    assert!(
        !deleted_ahead.is_empty(),
        "{what}: the between-page churn deleted nothing ahead of the cursor"
    );
}

store_test!(list_bindings_survives_churn, |store| async move {
    bindings_churn_run(&store, BindingListing::Tenant).await;
});

store_test!(
    list_bindings_by_consumer_survives_churn,
    |store| async move {
        bindings_churn_run(&store, BindingListing::Consumer).await;
    }
);

store_test!(list_bindings_by_secret_survives_churn, |store| async move {
    bindings_churn_run(&store, BindingListing::Secret).await;
});
