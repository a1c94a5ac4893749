//! Batch lookups of secrets by external reference, key and display name (the
//! duplicate checks of remote import): soft-deleted secrets count, purged ones
//! and other tenants' do not, and long lists are split into several queries.

use coffer_core::SecretKey;
use coffer_core::record::{SecretMode, SecretRecord, SecretState};
use coffer_store::{Store, store_test};

use crate::fixtures::{T0, key, labeled, secret, tenant};

async fn insert(store: &Store, rec: &SecretRecord) {
    let tx = store.begin().await.unwrap();
    tx.insert_secret(rec).await.unwrap();
    tx.commit().await.unwrap();
}

fn external(tenant_id: &str, key_id: &str, external_ref: &str) -> SecretRecord {
    let mut rec = secret(tenant_id, key_id);
    rec.mode = SecretMode::ExternalReference;
    rec.provider = "aws_secrets_manager".to_owned();
    rec.vault = format!("tenants/{tenant_id}/vaults/prod");
    rec.external_ref = external_ref.to_owned();
    rec
}

fn soft_deleted(mut rec: SecretRecord) -> SecretRecord {
    rec.state = SecretState::Deleted;
    rec.delete_time = Some(T0);
    rec.purge_time = Some(T0 + 100);
    rec
}

/// One live, one soft-deleted and one purged secret of acme, and one of globex.
async fn seed(store: &Store) -> [SecretRecord; 4] {
    let live = labeled(
        external(
            "acme",
            "live",
            "arn:aws:secretsmanager:eu-west-1:1:secret:live",
        ),
        &[("team", "core")],
    );
    let deleted = soft_deleted(external(
        "acme",
        "deleted",
        "arn:aws:secretsmanager:eu-west-1:1:secret:deleted",
    ));
    let purged = external(
        "acme",
        "purged",
        "arn:aws:secretsmanager:eu-west-1:1:secret:purged",
    );
    let foreign = external(
        "globex",
        "live",
        "arn:aws:secretsmanager:eu-west-1:1:secret:live",
    );
    for rec in [&live, &deleted, &purged, &foreign] {
        insert(store, rec).await;
    }
    let tx = store.begin().await.unwrap();
    tx.purge_secret(&purged.uid, T0 + 1).await.unwrap();
    tx.commit().await.unwrap();
    [live, deleted, purged, foreign]
}

fn refs(recs: &[&SecretRecord]) -> Vec<String> {
    recs.iter().map(|r| r.external_ref.clone()).collect()
}

store_test!(finds_secrets_by_external_ref, |store| async move {
    let [live, deleted, purged, _foreign] = seed(&store).await;
    let acme = tenant("acme");

    let mut asked = refs(&[&live, &deleted, &purged, &live]);
    asked.push("arn:aws:secretsmanager:eu-west-1:1:secret:unknown".to_owned());
    let found = store.secrets_by_external_refs(&acme, &asked).await.unwrap();
    // Key order, each once, with labels; the purged and the foreign are absent.
    assert_eq!(found, vec![deleted.clone(), live.clone()]);
    assert!(
        store
            .secrets_by_external_refs(&acme, &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .secrets_by_external_refs(&tenant("initech"), &refs(&[&live]))
            .await
            .unwrap()
            .is_empty()
    );
});

store_test!(finds_secrets_by_key_and_display_name, |store| async move {
    let [live, deleted, purged, _foreign] = seed(&store).await;
    let acme = tenant("acme");

    let keys: Vec<SecretKey> = ["purged", "live", "deleted", "missing"]
        .into_iter()
        .map(key)
        .collect();
    let found = store.secrets_by_keys(&acme, &keys).await.unwrap();
    assert_eq!(found, vec![deleted.clone(), live.clone()]);

    let names = vec![
        purged.display_name.clone(),
        live.display_name.clone(),
        deleted.display_name.clone(),
        "Display nobody".to_owned(),
    ];
    let found = store.secrets_by_display_names(&acme, &names).await.unwrap();
    assert_eq!(found, vec![deleted, live]);

    // Other tenants' secrets are never found, under any name.
    let globex = tenant("globex");
    let found = store.secrets_by_keys(&globex, &keys).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].tenant, globex);
    assert!(store.secrets_by_keys(&acme, &[]).await.unwrap().is_empty());
    assert!(
        store
            .secrets_by_display_names(&acme, &[])
            .await
            .unwrap()
            .is_empty()
    );
});

store_test!(
    a_purged_secret_frees_its_names_for_the_lookups,
    |store| async move {
        let [_live, _deleted, purged, _foreign] = seed(&store).await;
        // Its key and display name reused by a new secret: only that one is found.
        let reborn = external("acme", "purged", &purged.external_ref);
        insert(&store, &reborn).await;
        let acme = tenant("acme");
        assert_eq!(
            store
                .secrets_by_keys(&acme, &[key("purged")])
                .await
                .unwrap(),
            vec![reborn.clone()]
        );
        assert_eq!(
            store
                .secrets_by_display_names(&acme, std::slice::from_ref(&purged.display_name))
                .await
                .unwrap(),
            vec![reborn.clone()]
        );
        assert_eq!(
            store
                .secrets_by_external_refs(&acme, &refs(&[&purged]))
                .await
                .unwrap(),
            vec![reborn]
        );
    }
);

store_test!(long_lists_are_looked_up_in_chunks, |store| async move {
    // More values than one IN list takes, with hits in the first and last chunk.
    let first = external("acme", "k0000", "ref-0000");
    let last = external("acme", "k1199", "ref-1199");
    insert(&store, &first).await;
    insert(&store, &last).await;
    let acme = tenant("acme");

    let keys: Vec<SecretKey> = (0..1200).map(|n| key(&format!("k{n:04}"))).collect();
    let found = store.secrets_by_keys(&acme, &keys).await.unwrap();
    assert_eq!(found, vec![first.clone(), last.clone()]);

    let refs: Vec<String> = (0..1200).map(|n| format!("ref-{n:04}")).collect();
    let found = store.secrets_by_external_refs(&acme, &refs).await.unwrap();
    assert_eq!(found, vec![first.clone(), last.clone()]);

    let names: Vec<String> = (0..1200).map(|n| format!("Display k{n:04}")).collect();
    let found = store.secrets_by_display_names(&acme, &names).await.unwrap();
    assert_eq!(found, vec![first, last]);
});

store_test!(
    long_multibyte_references_are_stored_and_found_exactly,
    |store| async move {
        // 2048 characters of 3 bytes each: too long for a btree entry on
        // PostgreSQL if the whole reference were indexed. Two references
        // share their first 2000 characters, so only the exact comparison
        // tells them apart.
        let common: String = "秘".repeat(2000);
        let ref_a = format!("{common}{}", "a".repeat(48));
        let ref_b = format!("{common}{}", "b".repeat(48));
        let a = external("acme", "a", &ref_a);
        let b = external("acme", "b", &ref_b);
        insert(&store, &a).await;
        insert(&store, &b).await;
        let acme = tenant("acme");
        assert_eq!(
            store
                .secrets_by_external_refs(&acme, std::slice::from_ref(&ref_b))
                .await
                .unwrap(),
            vec![b.clone()]
        );
        assert_eq!(
            store
                .secrets_by_external_refs(&acme, &[ref_a, ref_b])
                .await
                .unwrap(),
            vec![a, b]
        );
        assert!(
            store
                .secrets_by_external_refs(&acme, &[common])
                .await
                .unwrap()
                .is_empty()
        );
    }
);
