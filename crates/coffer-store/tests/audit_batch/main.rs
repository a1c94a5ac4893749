//! The audit writer's group commit, `Store::append_audit_batch`, on SQLite
//! and PostgreSQL: it chains each batch from the heads it remembers, so
//! these tests make those heads wrong in every way the server meets them
//! (a mutation's own append in between, a mutation holding the head row
//! while the batch runs, a second writer on another `Store` handle of the
//! same database, a head forged with the right seq and the wrong hash) and
//! check each time that seqs stay gapless, the stored chain verifies, every
//! event reported stored is stored exactly as reported, and the remembered
//! heads end where the database's are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use coffer_core::TenantId;
use coffer_core::audit::{ChainHead, ChainVerifier};
use coffer_core::record::{AuditEventRecord, AuditOutcome, NewAuditEvent};
use coffer_core::{Error, ErrorCode};
use coffer_store::testing::{drop_postgres_database, postgres_store};
use coffer_store::{AuditFilter, Store, StoreOptions, store_test};

const T0: i64 = 1_764_000_000_000_000;

fn tenant(raw: &str) -> TenantId {
    TenantId::parse(raw, "tenant").unwrap()
}

/// A resolve event of `tenant_id`, told apart by `request_id`, with a
/// context and non-ASCII text so that the JSON round trip is exercised.
fn event(tenant_id: &str, request_id: &str) -> NewAuditEvent {
    NewAuditEvent {
        tenant: tenant(tenant_id),
        time: T0,
        principal: "spiffe://test/orchestrator".to_owned(),
        action: "secret.resolve".to_owned(),
        resource: format!("tenants/{tenant_id}/secrets/clé-\"q\"\\"),
        version: 7,
        consumer_kind: "agent".to_owned(),
        consumer_id: "a1".to_owned(),
        config_path: "env.KEY".to_owned(),
        context: BTreeMap::from([
            ("run_id".to_owned(), "run-42".to_owned()),
            ("note".to_owned(), "日本語 {\"json\": 1}".to_owned()),
        ]),
        outcome: AuditOutcome::Success,
        reason: String::new(),
        request_id: request_id.to_owned(),
    }
}

type Heads = HashMap<TenantId, ChainHead>;

/// Appends a batch and insists that every event was stored.
async fn stored(
    store: &Store,
    heads: &mut Heads,
    events: Vec<NewAuditEvent>,
) -> Vec<AuditEventRecord> {
    store
        .append_audit_batch(events, heads)
        .await
        .into_iter()
        .map(|r| r.expect("every event of the batch is stored"))
        .collect()
}

/// A mutation's own append, committed.
async fn mutation(store: &Store, tenant_id: &str, request_id: &str) -> AuditEventRecord {
    let tx = store.begin().await.unwrap();
    let mut e = event(tenant_id, request_id);
    e.action = "secret.rotate".to_owned();
    let mut records = tx.append_audit(vec![e]).await.unwrap();
    tx.commit().await.unwrap();
    records.pop().unwrap()
}

async fn all_events(store: &Store, t: &TenantId) -> Vec<AuditEventRecord> {
    let mut out: Vec<AuditEventRecord> = Vec::new();
    loop {
        let after = out.last().map(|r| r.seq);
        let page = store
            .list_audit_events(t, &AuditFilter::default(), after, 100)
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Checks the tenant's stored chain: seqs 1..=n without a gap, every link
/// verified, the head row at the last event. Returns the stored events.
async fn verified(store: &Store, t: &TenantId) -> Vec<AuditEventRecord> {
    let events = all_events(store, t).await;
    let mut verifier = ChainVerifier::default();
    events.iter().for_each(|r| verifier.feed(r));
    assert_eq!(verifier.first_broken(), None, "chain of {t:?} is broken");
    let seqs: Vec<i64> = events.iter().map(|r| r.seq).collect();
    let n = i64::try_from(events.len()).unwrap();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "seqs of {t:?}");
    let head = store.audit_head(t).await.unwrap();
    assert_eq!(
        head.map(|h| (h.seq, h.hash)),
        events.last().map(|r| (r.seq, r.hash.clone())),
        "head row of {t:?}"
    );
    events
}

/// A row of tenant `acme` at `seq` that no appender wrote, with request id
/// `stray`: a batch that reaches that seq collides with it.
async fn insert_stray_row(store: &Store, seq: i64) {
    coffer_store::testing::execute_raw(
        store,
        &format!(
            "INSERT INTO audit_events (tenant, seq, time, principal, action, resource, \
             version, consumer_kind, consumer_id, config_path, context, outcome, reason, \
             request_id, prev_hash, hash) VALUES ('acme', {seq}, 0, 'p', 'stray', 'r', 0, '', \
             '', '', '{{}}', 'success', '', 'stray', 'x', 'y')"
        ),
    )
    .await;
}

/// Every returned record is stored exactly as returned.
fn assert_stored_as_returned(stored: &[AuditEventRecord], returned: &[AuditEventRecord]) {
    let by_seq: HashMap<i64, &AuditEventRecord> = stored.iter().map(|r| (r.seq, r)).collect();
    for record in returned {
        assert_eq!(by_seq.get(&record.seq), Some(&record), "seq {}", record.seq);
    }
}

store_test!(
    batches_chain_from_the_remembered_heads,
    |store| async move {
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let mut heads = Heads::new();
        // New tenants: their head rows are created on the way.
        let first = stored(
            &store,
            &mut heads,
            vec![
                event("globex", "g1"),
                event("acme", "a1"),
                event("acme", "a2"),
            ],
        )
        .await;
        // Input order, each event chained within its own tenant.
        let ids: Vec<&str> = first.iter().map(|r| r.event.request_id.as_str()).collect();
        assert_eq!(ids, ["g1", "a1", "a2"]);
        assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 1, 2]);
        assert_eq!(first[2].prev_hash, first[1].hash);
        assert_eq!(
            heads[&acme],
            ChainHead {
                seq: 2,
                hash: first[2].hash.clone()
            }
        );

        // Later batches start where the remembered heads are.
        let second = stored(
            &store,
            &mut heads,
            vec![event("acme", "a3"), event("globex", "g2")],
        )
        .await;
        assert_eq!(second.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(second[0].prev_hash, first[2].hash);
        assert!(
            store
                .append_audit_batch(Vec::new(), &mut heads)
                .await
                .is_empty()
        );

        let stored_acme = verified(&store, &acme).await;
        assert_eq!(stored_acme.len(), 3);
        assert_stored_as_returned(
            &stored_acme,
            &[first[1].clone(), first[2].clone(), second[0].clone()],
        );
        let stored_globex = verified(&store, &globex).await;
        assert_stored_as_returned(&stored_globex, &[first[0].clone(), second[1].clone()]);
        // The context and the quoted, non-ASCII resource came back byte for byte.
        assert_eq!(stored_acme[0].event, event("acme", "a1"));
    }
);

store_test!(
    a_mutation_between_batches_is_chained_after,
    |store| async move {
        let acme = tenant("acme");
        let mut heads = Heads::new();
        let mut returned = stored(&store, &mut heads, vec![event("acme", "b1")]).await;
        for round in 0..3 {
            // The mutation moves the head this writer remembers.
            returned.push(mutation(&store, "acme", &format!("m{round}")).await);
            let batch = (0..4)
                .map(|i| event("acme", &format!("b{round}-{i}")))
                .collect();
            returned.extend(stored(&store, &mut heads, batch).await);
            // A second tenant in the same batch whose head did not move.
            returned.extend(
                stored(
                    &store,
                    &mut heads,
                    vec![event("acme", "x"), event("globex", "y")],
                )
                .await,
            );
        }
        let events = verified(&store, &acme).await;
        assert_eq!(events.len(), 1 + 3 * (1 + 4 + 1));
        let acme_returned: Vec<AuditEventRecord> = returned
            .into_iter()
            .filter(|r| r.event.tenant == acme)
            .collect();
        assert_stored_as_returned(&events, &acme_returned);
        assert_eq!(
            heads[&acme],
            store.audit_head(&acme).await.unwrap().unwrap()
        );
        verified(&store, &tenant("globex")).await;
    }
);

store_test!(a_forged_head_is_never_written_over, |store| async move {
    let acme = tenant("acme");
    let mut heads = Heads::new();
    stored(
        &store,
        &mut heads,
        vec![event("acme", "1"), event("acme", "2")],
    )
    .await;
    // The right seq with a wrong hash, then a seq from the past: neither may
    // move the head, and both batches still land after the real head.
    heads.insert(
        acme.clone(),
        ChainHead {
            seq: 2,
            hash: "f".repeat(64),
        },
    );
    stored(&store, &mut heads, vec![event("acme", "3")]).await;
    heads.insert(acme.clone(), ChainHead::genesis());
    stored(&store, &mut heads, vec![event("acme", "4")]).await;
    // A remembered head for a tenant that has none yet.
    heads.insert(
        tenant("newco"),
        ChainHead {
            seq: 5,
            hash: "e".repeat(64),
        },
    );
    stored(&store, &mut heads, vec![event("newco", "n1")]).await;
    let events = verified(&store, &acme).await;
    let ids: Vec<&str> = events.iter().map(|r| r.event.request_id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    assert_eq!(verified(&store, &tenant("newco")).await.len(), 1);
    assert_eq!(heads[&tenant("newco")].seq, 1);
});

// A mutation holds the tenant's head (its transaction appended and is
// still open) while a batch chained from the old head runs: the batch
// waits (for the head row on PostgreSQL, for the write turn on SQLite),
// finds the head moved once the mutation commits, reads the new head and
// chains after the mutation's event.
store_test!(
    a_batch_waits_for_a_mutation_holding_the_head_and_chains_after_it,
    |store| async move {
        let acme = tenant("acme");
        let mut heads = Heads::new();
        stored(&store, &mut heads, vec![event("acme", "before")]).await;

        let tx = store.begin().await.unwrap();
        let held = tx
            .append_audit(vec![event("acme", "mutation")])
            .await
            .unwrap();
        assert_eq!(held[0].seq, 2);
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                let records = stored(&store, &mut heads, vec![event("acme", "during")]).await;
                (records, heads)
            })
        };
        // Long enough for the batch to reach the locked row.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !writer.is_finished(),
            "the batch must wait for the mutation's transaction"
        );
        tx.commit().await.unwrap();
        let (records, heads) = tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the batch finishes once the mutation commits")
            .unwrap();
        assert_eq!(records[0].seq, 3);
        assert_eq!(records[0].prev_hash, held[0].hash);
        let events = verified(&store, &acme).await;
        let ids: Vec<&str> = events.iter().map(|r| r.event.request_id.as_str()).collect();
        assert_eq!(ids, ["before", "mutation", "during"]);
        assert_eq!(heads[&acme].seq, 3);
    }
);

/// Two writers on two `Store` handles of one PostgreSQL database (two
/// replicas), each with its own remembered heads, append batches for the
/// same tenants at once while mutations append in between: every event is
/// stored once, seqs stay gapless and the chains verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_two_handles_keep_one_gapless_chain() {
    const BATCHES: usize = 40;
    // Every eighth batch is big enough to go out as several statements
    // on PostgreSQL, which the other writer can then cut between.
    let per_batch = |b: usize| if b % 8 == 3 { 150 } else { 5 };
    let Some((first, url)) = postgres_store().await else {
        return;
    };
    let second = Store::connect(&url, StoreOptions::default()).await.unwrap();
    let mut writers = Vec::new();
    for (w, store) in [first.clone(), second.clone()].into_iter().enumerate() {
        writers.push(tokio::spawn(async move {
            let mut heads = Heads::new();
            let mut returned = Vec::new();
            for b in 0..BATCHES {
                let mut batch: Vec<NewAuditEvent> = (0..per_batch(b))
                    .map(|i| event("acme", &format!("w{w}-b{b}-{i}")))
                    .collect();
                // Every other batch also carries a tenant of its own.
                if b % 2 == 0 {
                    batch.push(event(&format!("solo{w}"), &format!("w{w}-b{b}")));
                }
                returned.extend(stored(&store, &mut heads, batch).await);
            }
            returned
        }));
    }
    let mutations = {
        let store = second.clone();
        tokio::spawn(async move {
            let mut returned = Vec::new();
            for m in 0..10 {
                returned.push(mutation(&store, "acme", &format!("m{m}")).await);
                tokio::task::yield_now().await;
            }
            returned
        })
    };
    let mut returned = mutations.await.unwrap();
    for writer in writers {
        returned.extend(writer.await.unwrap());
    }
    let acme = tenant("acme");
    let events = verified(&first, &acme).await;
    let per_writer: usize = (0..BATCHES).map(per_batch).sum();
    assert_eq!(events.len(), 2 * per_writer + 10);
    let acme_returned: Vec<AuditEventRecord> = returned
        .iter()
        .filter(|r| r.event.tenant == acme)
        .cloned()
        .collect();
    assert_eq!(acme_returned.len(), events.len());
    assert_stored_as_returned(&events, &acme_returned);
    // Each writer's own events keep their batch order within the chain.
    for w in 0..2 {
        let order: Vec<&str> = events
            .iter()
            .map(|r| r.event.request_id.as_str())
            .filter(|id| id.starts_with(&format!("w{w}-")))
            .collect();
        let expected: Vec<String> = (0..BATCHES)
            .flat_map(|b| (0..per_batch(b)).map(move |i| format!("w{w}-b{b}-{i}")))
            .collect();
        assert_eq!(order, expected);
        assert_eq!(
            verified(&first, &tenant(&format!("solo{w}"))).await.len(),
            BATCHES / 2
        );
    }
    let _ = second.close().await;
    let _ = first.close().await;
    drop_postgres_database(&url).await;
}

/// An event PostgreSQL refuses (a NUL in text) fails its whole batch, as
/// before: nothing of it is stored, every event reports the failure, and
/// the next batch chains on correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_stores_nothing_and_the_next_one_chains_on() {
    coffer_store::testing::on_postgres(|store| async move {
        let acme = tenant("acme");
        let mut heads = Heads::new();
        stored(
            &store,
            &mut heads,
            vec![event("acme", "ok1"), event("globex", "g")],
        )
        .await;
        let mut bad = event("acme", "bad");
        bad.resource = "nul\u{0}here".to_owned();
        let outcomes = store
            .append_audit_batch(
                vec![event("acme", "lost"), bad, event("globex", "lost")],
                &mut heads,
            )
            .await;
        assert_eq!(outcomes.len(), 3);
        for outcome in &outcomes {
            let err: &Error = outcome.as_ref().expect_err("the batch is refused");
            // The database's reason stays in the internal cause.
            assert_eq!(err.code(), ErrorCode::Internal, "{err:?}");
        }
        stored(&store, &mut heads, vec![event("acme", "ok2")]).await;
        // A batch cut into several statements, refused in its last one:
        // the earlier statements are rolled back with it.
        let mut big: Vec<NewAuditEvent> = (0..150)
            .map(|i| event("acme", &format!("lost-{i}")))
            .collect();
        let mut bad = event("acme", "bad-last");
        bad.resource = "nul\u{0}here".to_owned();
        big.push(bad);
        let outcomes = store.append_audit_batch(big, &mut heads).await;
        assert_eq!(outcomes.len(), 151);
        assert!(
            outcomes.iter().all(Result::is_err),
            "the batch is refused whole"
        );
        stored(&store, &mut heads, vec![event("acme", "ok3")]).await;
        let events = verified(&store, &acme).await;
        let ids: Vec<&str> = events.iter().map(|r| r.event.request_id.as_str()).collect();
        assert_eq!(ids, ["ok1", "ok2", "ok3"]);
        assert_eq!(verified(&store, &tenant("globex")).await.len(), 1);
    })
    .await;
}

store_test!(
    a_big_batch_of_many_tenants_is_stored_whole,
    |store| async move {
        let mut heads = Heads::new();
        let mut returned = Vec::new();
        for round in 0..3 {
            // 3 × 120 events, interleaved across tenants, with long texts:
            // on PostgreSQL several statements per batch.
            let batch = (0..360)
                .map(|i| {
                    let mut e = event(&format!("t{}", i % 3), &format!("r{round}-{i}"));
                    e.resource = format!("{}/{}", e.resource, "x".repeat(i % 200));
                    e
                })
                .collect();
            returned.extend(stored(&store, &mut heads, batch).await);
            mutation(&store, "t1", &format!("m{round}")).await;
        }
        for t in ["t0", "t1", "t2"] {
            let t = tenant(t);
            let events = verified(&store, &t).await;
            let mine: Vec<AuditEventRecord> = returned
                .iter()
                .filter(|r| r.event.tenant == t)
                .cloned()
                .collect();
            assert_eq!(mine.len(), 360);
            assert_stored_as_returned(&events, &mine);
        }
    }
);

store_test!(
    a_batch_that_collides_with_a_stored_row_stores_none_of_it,
    |store| async move {
        let acme = tenant("acme");
        let mut heads = Heads::new();
        stored(&store, &mut heads, vec![event("acme", "ok1")]).await;
        // A stray row where the batch's second event belongs (seq 3).
        insert_stray_row(&store, 3).await;
        let outcomes = store
            .append_audit_batch(
                vec![
                    event("acme", "lost1"),
                    event("acme", "lost2"),
                    event("acme", "lost3"),
                ],
                &mut heads,
            )
            .await;
        assert!(outcomes.iter().all(Result::is_err), "{outcomes:?}");
        // Nothing of the batch is stored, not even the event before the
        // collision, and the head did not move.
        let ids: Vec<String> = all_events(&store, &acme)
            .await
            .into_iter()
            .map(|r| r.event.request_id)
            .collect();
        assert_eq!(ids, ["ok1", "stray"]);
        assert_eq!(store.audit_head(&acme).await.unwrap().unwrap().seq, 1);
        // The store works on: the stray row removed, the next batch and a
        // mutation chain on from the head.
        coffer_store::testing::execute_raw(
            &store,
            "DELETE FROM audit_events WHERE request_id = 'stray'",
        )
        .await;
        stored(&store, &mut heads, vec![event("acme", "ok2")]).await;
        mutation(&store, "acme", "m1").await;
        let ids: Vec<String> = verified(&store, &acme)
            .await
            .into_iter()
            .map(|r| r.event.request_id)
            .collect();
        assert_eq!(ids, ["ok1", "ok2", "m1"]);
    }
);

/// An in-memory SQLite database is one connection: the audit writer's
/// batches borrow it (a connection of their own would open another, empty
/// database) and still chain after mutations, and a refused batch leaves
/// the connection usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_database_stores_batches_on_its_one_connection() {
    let store = Store::connect("sqlite::memory:", StoreOptions::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    let acme = tenant("acme");
    let mut heads = Heads::new();
    stored(
        &store,
        &mut heads,
        vec![event("acme", "b1"), event("globex", "g1")],
    )
    .await;
    mutation(&store, "acme", "m1").await;
    stored(&store, &mut heads, vec![event("acme", "b2")]).await;
    insert_stray_row(&store, 5).await;
    let outcomes = store
        .append_audit_batch(
            vec![event("acme", "lost1"), event("acme", "lost2")],
            &mut heads,
        )
        .await;
    assert!(outcomes.iter().all(Result::is_err), "{outcomes:?}");
    coffer_store::testing::execute_raw(
        &store,
        "DELETE FROM audit_events WHERE request_id = 'stray'",
    )
    .await;
    stored(&store, &mut heads, vec![event("acme", "b3")]).await;
    let ids: Vec<String> = verified(&store, &acme)
        .await
        .into_iter()
        .map(|r| r.event.request_id)
        .collect();
    assert_eq!(ids, ["b1", "m1", "b2", "b3"]);
    assert_eq!(verified(&store, &tenant("globex")).await.len(), 1);
    let _ = store.close().await;
}
