//! Secrets: round trips, pages, filters, uniqueness, optimistic updates, purge.

use coffer_core::filter::SecretFilter;
use coffer_core::record::{SecretMode, SecretState};
use coffer_core::{ErrorCode, Reason};
use coffer_store::store_test;

use crate::fixtures::{T0, key, labeled, secret, tenant, version};

async fn insert(store: &coffer_store::Store, rec: &coffer_core::record::SecretRecord) {
    let tx = store.begin().await.unwrap();
    tx.insert_secret(rec).await.unwrap();
    tx.commit().await.unwrap();
}

fn keys(page: &[coffer_core::record::SecretRecord]) -> Vec<&str> {
    page.iter().map(|s| s.key.as_str()).collect()
}

store_test!(round_trips_a_secret_with_labels, |store| async move {
    let mut rec = labeled(
        secret("acme", "db.password"),
        &[("env", "prod"), ("team", "core")],
    );
    rec.rotate_time = Some(T0 + 5);
    rec.purge_time = None;
    insert(&store, &rec).await;

    let got = store
        .get_secret(&rec.tenant, &rec.key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, rec);
    let by_uid = store.get_secret_by_uid(&rec.uid).await.unwrap().unwrap();
    assert_eq!(by_uid, rec);
    assert!(
        store
            .get_secret(&tenant("globex"), &rec.key)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_secret(&rec.tenant, &key("other"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_secret_by_uid("no-such-uid")
            .await
            .unwrap()
            .is_none()
    );
});

store_test!(rolls_back_an_uncommitted_transaction, |store| async move {
    let rec = secret("acme", "k");
    let tx = store.begin().await.unwrap();
    tx.insert_secret(&rec).await.unwrap();
    drop(tx);
    assert!(
        store
            .get_secret(&rec.tenant, &rec.key)
            .await
            .unwrap()
            .is_none()
    );
});

store_test!(lists_pages_in_key_order, |store| async move {
    for k in ["e", "a-1", "c", "b", "d", "a"] {
        insert(&store, &secret("acme", k)).await;
    }
    insert(&store, &secret("globex", "a0")).await;
    let t = tenant("acme");
    let all = SecretFilter::default();

    let first = store.list_secrets(&t, &all, false, None, 2).await.unwrap();
    assert_eq!(keys(&first), ["a", "a-1"]);
    let second = store
        .list_secrets(&t, &all, false, Some("a-1"), 3)
        .await
        .unwrap();
    assert_eq!(keys(&second), ["b", "c", "d"]);
    let last = store
        .list_secrets(&t, &all, false, Some("d"), 3)
        .await
        .unwrap();
    assert_eq!(keys(&last), ["e"]);
    let past = store
        .list_secrets(&t, &all, false, Some("e"), 3)
        .await
        .unwrap();
    assert!(past.is_empty());
});

store_test!(filters_by_state_labels_and_provider, |store| async move {
    let prod_core = labeled(secret("acme", "a"), &[("env", "prod"), ("team", "core")]);
    let prod_web = labeled(secret("acme", "b"), &[("env", "prod"), ("team", "web")]);
    let mut dev_disabled = labeled(secret("acme", "c"), &[("env", "dev")]);
    dev_disabled.state = SecretState::Disabled;
    let mut deleted = labeled(secret("acme", "d"), &[("env", "prod")]);
    deleted.state = SecretState::Deleted;
    deleted.delete_time = Some(T0);
    deleted.purge_time = Some(T0 + 1);
    let mut aws = secret("acme", "e");
    aws.provider = "aws_secrets_manager".to_owned();
    aws.mode = SecretMode::ExternalReference;
    aws.vault = "tenants/acme/vaults/aws".to_owned();
    // Same labels in another tenant must never leak into acme's results.
    let other = labeled(secret("globex", "a"), &[("env", "prod")]);
    for rec in [&prod_core, &prod_web, &dev_disabled, &deleted, &aws, &other] {
        insert(&store, rec).await;
    }
    let t = tenant("acme");
    let list = |filter: SecretFilter, show_deleted: bool| {
        let store = store.clone();
        let t = t.clone();
        async move {
            let page = store
                .list_secrets(&t, &filter, show_deleted, None, 100)
                .await
                .unwrap();
            page.iter()
                .map(|s| s.key.as_str().to_owned())
                .collect::<Vec<_>>()
        }
    };

    assert_eq!(
        list(SecretFilter::default(), false).await,
        ["a", "b", "c", "e"]
    );
    assert_eq!(
        list(SecretFilter::default(), true).await,
        ["a", "b", "c", "d", "e"]
    );
    let state = |s| SecretFilter {
        state: Some(s),
        ..Default::default()
    };
    assert_eq!(
        list(state(SecretState::Active), true).await,
        ["a", "b", "e"]
    );
    assert_eq!(list(state(SecretState::Disabled), false).await, ["c"]);
    assert_eq!(list(state(SecretState::Deleted), false).await, ["d"]);

    let labels = |pairs: &[(&str, &str)]| SecretFilter {
        labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    assert_eq!(list(labels(&[("env", "prod")]), false).await, ["a", "b"]);
    assert_eq!(
        list(labels(&[("env", "prod")]), true).await,
        ["a", "b", "d"]
    );
    assert_eq!(
        list(labels(&[("env", "prod"), ("team", "web")]), false).await,
        ["b"]
    );
    assert!(
        list(labels(&[("env", "prod"), ("team", "nope")]), false)
            .await
            .is_empty()
    );
    // A value that looks like SQL is only ever a bound parameter.
    assert!(
        list(labels(&[("env", "x' OR '1'='1")]), true)
            .await
            .is_empty()
    );

    let provider = SecretFilter {
        provider: Some("aws_secrets_manager".to_owned()),
        ..Default::default()
    };
    assert_eq!(list(provider, false).await, ["e"]);
    let mode = SecretFilter {
        mode: Some(SecretMode::Managed),
        ..Default::default()
    };
    assert_eq!(list(mode, false).await, ["a", "b", "c"]);
    let vault = SecretFilter {
        vault: Some("tenants/acme/vaults/aws".to_owned()),
        ..Default::default()
    };
    assert_eq!(list(vault, false).await, ["e"]);

    // Labels of every secret on the page are loaded.
    let page = store
        .list_secrets(&t, &SecretFilter::default(), true, None, 100)
        .await
        .unwrap();
    assert_eq!(page[0], prod_core);
    assert_eq!(page[1].labels, prod_web.labels);
    assert!(page[4].labels.is_empty());
});

store_test!(update_checks_the_revision, |store| async move {
    let rec = labeled(secret("acme", "k"), &[("env", "prod")]);
    insert(&store, &rec).await;

    let mut next = rec.clone();
    next.display_name = "Renamed".to_owned();
    next.description = "new".to_owned();
    next.state = SecretState::Disabled;
    next.current_version = 3;
    next.latest_version = 4;
    next.update_time = T0 + 10;
    next.last_resolve_time = Some(T0 + 9);
    next.labels = [("team".to_owned(), "web".to_owned())].into();
    next.revision = rec.revision + 1;

    let tx = store.begin().await.unwrap();
    let err = tx.update_secret(&next, rec.revision + 7).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted);
    assert_eq!(err.reason(), Reason::EtagMismatch);
    assert!(
        err.message().contains("tenants/acme/secrets/k"),
        "{}",
        err.message()
    );
    tx.update_secret(&next, rec.revision).await.unwrap();
    tx.commit().await.unwrap();

    let got = store
        .get_secret(&rec.tenant, &rec.key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, next);
    // The identity columns never change, even if the record says otherwise.
    let mut tampered = next.clone();
    tampered.create_time = 1;
    tampered.revision = next.revision + 1;
    let tx = store.begin().await.unwrap();
    tx.update_secret(&tampered, next.revision).await.unwrap();
    tx.commit().await.unwrap();
    let got = store.get_secret_by_uid(&rec.uid).await.unwrap().unwrap();
    assert_eq!(got.create_time, rec.create_time);
    // The old revision is stale now.
    let tx = store.begin().await.unwrap();
    let err = tx.update_secret(&next, rec.revision).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted);
});

store_test!(
    keys_and_display_names_are_unique_per_tenant,
    |store| async move {
        let first = secret("acme", "k");
        insert(&store, &first).await;

        let tx = store.begin().await.unwrap();
        let mut same_key = secret("acme", "k");
        same_key.display_name = "something else".to_owned();
        let err = tx.insert_secret(&same_key).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AlreadyExists);
        assert_eq!(err.reason(), Reason::SecretAlreadyExists);
        assert_eq!(
            err.message(),
            "a secret with this key or display name already exists"
        );
        drop(tx);

        let tx = store.begin().await.unwrap();
        let mut same_name = secret("acme", "k2");
        same_name.display_name = first.display_name.clone();
        let err = tx.insert_secret(&same_name).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AlreadyExists);
        assert_eq!(err.reason(), Reason::SecretAlreadyExists);
        drop(tx);

        // Another tenant may use both.
        insert(&store, &secret("globex", "k")).await;

        let tx = store.begin().await.unwrap();
        let t = tenant("acme");
        assert_eq!(
            tx.secret_key_taken(&t, &key("k"))
                .await
                .unwrap()
                .unwrap()
                .uid,
            first.uid
        );
        assert!(
            tx.secret_key_taken(&t, &key("free"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            tx.display_name_taken(&t, &first.display_name, None)
                .await
                .unwrap()
        );
        assert!(
            !tx.display_name_taken(&t, &first.display_name, Some(&first.uid))
                .await
                .unwrap()
        );
        assert!(!tx.display_name_taken(&t, "unused", None).await.unwrap());

        // Renaming onto a taken display name is refused by the index too.
        let second = secret("acme", "k3");
        tx.insert_secret(&second).await.unwrap();
        let mut renamed = second.clone();
        renamed.display_name = first.display_name.clone();
        renamed.revision += 1;
        let err = tx
            .update_secret(&renamed, second.revision)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::AlreadyExists);
    }
);

store_test!(
    purge_frees_the_key_and_keeps_a_tombstone,
    |store| async move {
        let mut rec = labeled(secret("acme", "k"), &[("env", "prod")]);
        rec.state = SecretState::Deleted;
        rec.delete_time = Some(T0);
        rec.purge_time = Some(T0 + 100);
        let tx = store.begin().await.unwrap();
        tx.insert_secret(&rec).await.unwrap();
        tx.insert_version(&version(&rec.uid, 1)).await.unwrap();
        tx.commit().await.unwrap();
        let mut not_due = secret("acme", "later");
        not_due.state = SecretState::Deleted;
        not_due.purge_time = Some(T0 + 1000);
        insert(&store, &not_due).await;
        insert(&store, &secret("acme", "live")).await;

        assert!(
            store
                .secrets_due_for_purge(T0 + 99, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let due = store.secrets_due_for_purge(T0 + 100, 10).await.unwrap();
        assert_eq!(due, vec![rec.clone()]);

        let tx = store.begin().await.unwrap();
        tx.purge_secret(&rec.uid, T0 + 200).await.unwrap();
        tx.commit().await.unwrap();

        assert!(
            store
                .get_secret(&rec.tenant, &rec.key)
                .await
                .unwrap()
                .is_none()
        );
        let tombstone = store.get_secret_by_uid(&rec.uid).await.unwrap().unwrap();
        assert_eq!(tombstone.key, rec.key);
        assert!(tombstone.labels.is_empty());
        assert!(
            store
                .list_versions(&rec.uid, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .secrets_due_for_purge(T0 + 100, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let listed = store
            .list_secrets(&rec.tenant, &SecretFilter::default(), true, None, 10)
            .await
            .unwrap();
        assert_eq!(keys(&listed), ["later", "live"]);

        // The key and display name are free again; the tombstone stays.
        let again = secret("acme", "k");
        assert_eq!(again.display_name, rec.display_name);
        insert(&store, &again).await;
        let got = store
            .get_secret(&rec.tenant, &rec.key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.uid, again.uid);
        assert!(store.get_secret_by_uid(&rec.uid).await.unwrap().is_some());

        // A tombstone cannot be purged or updated again.
        let tx = store.begin().await.unwrap();
        let err = tx.purge_secret(&rec.uid, T0 + 300).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        let mut stale = tombstone.clone();
        stale.revision += 1;
        let err = tx
            .update_secret(&stale, tombstone.revision)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Aborted);
    }
);
