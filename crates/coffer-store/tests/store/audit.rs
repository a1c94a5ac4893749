//! The audit trail: per-tenant gapless seqs and a verifiable chain (also under
//! concurrent appenders), filters, the context round trip, rollback, and the
//! last-resolve-time stamp.

use coffer_core::TenantId;
use coffer_core::audit::{ChainHead, ChainVerifier, GENESIS_HASH};
use coffer_core::record::{AuditEventRecord, AuditOutcome, NewAuditEvent};
use coffer_store::testing::execute_raw;
use coffer_store::{AuditFilter, Store, store_test};

use crate::fixtures::{T0, event, secret, tenant};

async fn append(store: &Store, events: Vec<NewAuditEvent>) -> Vec<AuditEventRecord> {
    let tx = store.begin().await.unwrap();
    let records = tx.append_audit(events).await.unwrap();
    tx.commit().await.unwrap();
    records
}

/// Every event of the tenant, read in pages of three.
async fn all_events(store: &Store, t: &TenantId) -> Vec<AuditEventRecord> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map(|r: &AuditEventRecord| r.seq);
        let page = store
            .list_audit_events(t, &AuditFilter::default(), after, 3)
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The first broken seq of the stored chain, after checking it counted all.
async fn first_broken(store: &Store, t: &TenantId) -> Option<i64> {
    let events = all_events(store, t).await;
    let mut verifier = ChainVerifier::default();
    events.iter().for_each(|r| verifier.feed(r));
    verifier.first_broken()
}

fn seqs(records: &[AuditEventRecord]) -> Vec<i64> {
    records.iter().map(|r| r.seq).collect()
}

fn request_ids(records: &[AuditEventRecord]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r.event.request_id.as_str())
        .collect()
}

store_test!(tenants_get_their_own_gapless_chains, |store| async move {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    assert!(store.audit_head(&acme).await.unwrap().is_none());
    let input = vec![
        event("globex", "g1"),
        event("acme", "a1"),
        event("globex", "g2"),
        event("acme", "a2"),
        event("acme", "a3"),
    ];
    let records = append(&store, input.clone()).await;
    // Input order, each event chained within its own tenant.
    assert_eq!(request_ids(&records), ["g1", "a1", "g2", "a2", "a3"]);
    assert_eq!(seqs(&records), [1, 1, 2, 2, 3]);
    for (record, sent) in records.iter().zip(&input) {
        assert_eq!(&record.event, sent);
    }
    assert_eq!(records[0].prev_hash, GENESIS_HASH);
    assert_eq!(records[1].prev_hash, GENESIS_HASH);
    assert_eq!(records[3].prev_hash, records[1].hash);

    // A later transaction continues each chain where it ended.
    let more = append(&store, vec![event("acme", "a4"), event("globex", "g3")]).await;
    assert_eq!(seqs(&more), [4, 3]);
    assert_eq!(more[0].prev_hash, records[4].hash);

    let stored = all_events(&store, &acme).await;
    assert_eq!(seqs(&stored), [1, 2, 3, 4]);
    assert_eq!(request_ids(&stored), ["a1", "a2", "a3", "a4"]);
    assert_eq!(
        stored[..3],
        [records[1].clone(), records[3].clone(), records[4].clone()]
    );
    assert_eq!(first_broken(&store, &acme).await, None);
    assert_eq!(first_broken(&store, &globex).await, None);
    assert_eq!(
        store.audit_head(&acme).await.unwrap(),
        Some(ChainHead {
            seq: 4,
            hash: more[0].hash.clone()
        })
    );
    assert_eq!(store.audit_head(&globex).await.unwrap().unwrap().seq, 3);

    // Tampering with a stored row breaks the chain at that row.
    let changed = execute_raw(
        &store,
        "UPDATE audit_events SET principal = 'mallory' WHERE tenant = 'acme' AND seq = 3",
    )
    .await;
    assert_eq!(changed, 1);
    assert_eq!(first_broken(&store, &acme).await, Some(3));
    assert_eq!(first_broken(&store, &globex).await, None);
});

store_test!(a_rolled_back_append_leaves_no_trace, |store| async move {
    let t = tenant("acme");
    let tx = store.begin().await.unwrap();
    let records = tx.append_audit(vec![event("acme", "lost")]).await.unwrap();
    assert_eq!(seqs(&records), [1]);
    drop(tx);
    assert!(store.audit_head(&t).await.unwrap().is_none());
    assert!(all_events(&store, &t).await.is_empty());

    let records = append(&store, vec![event("acme", "kept")]).await;
    assert_eq!(seqs(&records), [1]);
    assert!(append(&store, Vec::new()).await.is_empty());
    assert_eq!(store.audit_head(&t).await.unwrap().unwrap().seq, 1);
});

const TASKS: usize = 10;
const PER_TASK: usize = 5;

store_test!(concurrent_appenders_keep_seqs_gapless, |store| async move {
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let tx = store.begin().await.unwrap();
            let events = (0..PER_TASK)
                .map(|i| event("acme", &format!("t{task}-e{i}")))
                .collect();
            let records = tx.append_audit(events).await.unwrap();
            // Hold the transaction open a moment: without the head lock, other
            // appenders would read the same head meanwhile.
            tokio::task::yield_now().await;
            tx.commit().await.unwrap();
            records
        }));
    }
    let mut allocated = Vec::new();
    for task in tasks {
        let records = task.await.unwrap();
        // One transaction's events are consecutive.
        let own = seqs(&records);
        assert!(own.windows(2).all(|w| w[1] == w[0] + 1), "{own:?}");
        allocated.extend(own);
    }
    allocated.sort_unstable();
    let total = i64::try_from(TASKS * PER_TASK).unwrap();
    assert_eq!(allocated, (1..=total).collect::<Vec<_>>());

    let t = tenant("acme");
    let stored = all_events(&store, &t).await;
    assert_eq!(seqs(&stored), (1..=total).collect::<Vec<_>>());
    assert_eq!(first_broken(&store, &t).await, None);
    assert_eq!(store.audit_head(&t).await.unwrap().unwrap().seq, total);
});

store_test!(filters_audit_events, |store| async move {
    let mut events = Vec::new();
    let mut push = |request_id: &str, edit: &dyn Fn(&mut NewAuditEvent)| {
        let mut e = event("acme", request_id);
        edit(&mut e);
        events.push(e);
    };
    push("create-a", &|e| {
        e.action = "secret.create".into();
        e.resource = "tenants/acme/secrets/a".into();
        e.consumer_kind = String::new();
        e.consumer_id = String::new();
        e.time = T0;
    });
    push("resolve-a", &|e| {
        e.resource = "tenants/acme/secrets/a".into();
        e.time = T0 + 10;
    });
    push("denied-ab", &|e| {
        e.resource = "tenants/acme/secrets/ab".into();
        e.outcome = AuditOutcome::Denied;
        e.reason = "NOT_BOUND".into();
        e.consumer_id = "a2".into();
        e.time = T0 + 20;
    });
    push("bind", &|e| {
        e.action = "binding.create".into();
        e.resource = "tenants/acme/bindings/b1".into();
        e.time = T0 + 30;
    });
    push("failed-x", &|e| {
        // `_` must not act as a wildcard in a prefix.
        e.resource = "tenants/acme/secrets_x/y".into();
        e.outcome = AuditOutcome::Failure;
        e.reason = "PROVIDER_UNAVAILABLE".into();
        e.consumer_kind = "run".into();
        e.time = T0 + 40;
    });
    append(&store, events).await;
    append(&store, vec![event("globex", "other-tenant")]).await;
    let t = tenant("acme");

    let list = |filter: AuditFilter| {
        let (store, t) = (store.clone(), t.clone());
        async move {
            let page = store
                .list_audit_events(&t, &filter, None, 100)
                .await
                .unwrap();
            request_ids(&page)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    let resource = |r: &str| AuditFilter {
        resource: Some(r.to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(list(AuditFilter::default()).await.len(), 5);
    assert_eq!(
        list(resource("tenants/acme/secrets/a")).await,
        ["create-a", "resolve-a"]
    );
    assert_eq!(
        list(resource("tenants/acme/secrets/*")).await,
        ["create-a", "resolve-a", "denied-ab"]
    );
    assert_eq!(
        list(resource("tenants/acme/secrets_/*")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list(resource("tenants/acme/secrets%")).await,
        Vec::<String>::new()
    );
    assert_eq!(list(resource("tenants/acme/*")).await.len(), 5);
    assert_eq!(
        list(AuditFilter {
            action: Some("secret.create".into()),
            ..AuditFilter::default()
        })
        .await,
        ["create-a"]
    );
    assert_eq!(
        list(AuditFilter {
            outcome: Some(AuditOutcome::Denied),
            ..AuditFilter::default()
        })
        .await,
        ["denied-ab"]
    );
    assert_eq!(
        list(AuditFilter {
            consumer: Some(("agent".into(), "a1".into())),
            ..AuditFilter::default()
        })
        .await,
        ["resolve-a", "bind"]
    );
    assert_eq!(
        list(AuditFilter {
            start_time: Some(T0 + 10),
            end_time: Some(T0 + 30),
            ..AuditFilter::default()
        })
        .await,
        ["resolve-a", "denied-ab"]
    );
    assert_eq!(
        list(AuditFilter {
            resource: Some("tenants/acme/secrets/*".into()),
            outcome: Some(AuditOutcome::Success),
            start_time: Some(T0 + 1),
            ..AuditFilter::default()
        })
        .await,
        ["resolve-a"]
    );
    // Paging with a filter resumes after the last seq.
    let page = store
        .list_audit_events(&t, &resource("tenants/acme/secrets/*"), Some(1), 1)
        .await
        .unwrap();
    assert_eq!(request_ids(&page), ["resolve-a"]);
});

store_test!(context_round_trips_with_unicode, |store| async move {
    let mut e = event("acme", "ctx");
    e.context = [
        ("run_id", "run-42"),
        ("issue_id", "ISSUE-7"),
        ("note", "café ☕ 日本語 \"quoted\" \\ back"),
        ("empty", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let records = append(&store, vec![e.clone()]).await;
    let stored = all_events(&store, &tenant("acme")).await;
    assert_eq!(stored, records);
    assert_eq!(stored[0].event.context, e.context);
    // Stored as one JSON object with sorted keys, unicode kept as is.
    let matched = execute_raw(
        &store,
        r#"UPDATE audit_events SET reason = reason WHERE context = '{"empty":"","issue_id":"ISSUE-7","note":"café ☕ 日本語 \"quoted\" \\ back","run_id":"run-42"}'"#,
    )
    .await;
    assert_eq!(matched, 1);
    assert_eq!(first_broken(&store, &tenant("acme")).await, None);
});

store_test!(last_resolve_time_only_moves_forward, |store| async move {
    let a = secret("acme", "a");
    let mut b = secret("acme", "b");
    b.last_resolve_time = Some(T0 + 500);
    let untouched = secret("acme", "c");
    let tx = store.begin().await.unwrap();
    for rec in [&a, &b, &untouched] {
        tx.insert_secret(rec).await.unwrap();
    }
    tx.commit().await.unwrap();

    let stamp = |uids: Vec<String>, time: i64| {
        let store = store.clone();
        async move {
            let tx = store.begin().await.unwrap();
            tx.set_last_resolve_time(&uids, time).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    let resolved = |uid: String| {
        let store = store.clone();
        async move {
            let rec = store.get_secret_by_uid(&uid).await.unwrap().unwrap();
            (rec.last_resolve_time, rec.revision)
        }
    };
    stamp(vec![a.uid.clone(), b.uid.clone()], T0 + 100).await;
    assert_eq!(resolved(a.uid.clone()).await, (Some(T0 + 100), a.revision));
    // b's later stamp is kept.
    assert_eq!(resolved(b.uid.clone()).await, (Some(T0 + 500), b.revision));
    stamp(vec![a.uid.clone(), b.uid.clone(), "gone".into()], T0 + 600).await;
    assert_eq!(resolved(a.uid.clone()).await.0, Some(T0 + 600));
    assert_eq!(resolved(b.uid.clone()).await.0, Some(T0 + 600));
    stamp(vec![a.uid.clone()], T0 + 50).await;
    assert_eq!(resolved(a.uid.clone()).await.0, Some(T0 + 600));
    stamp(Vec::new(), T0 + 900).await;
    assert_eq!(
        resolved(untouched.uid.clone()).await,
        (None, untouched.revision)
    );
});
