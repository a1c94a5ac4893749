//! Bindings: round trips with the joined secret key, pages by secret and by
//! consumer, uniqueness, optimistic updates, deletion, literal config-path
//! prefixes and the purge of a bound secret.

use coffer_core::record::{BindingRecord, SecretRecord};
use coffer_core::{ErrorCode, Reason};
use coffer_store::{Store, store_test};

use crate::fixtures::{T0, binding, secret, tenant};

async fn insert_secrets(store: &Store, secrets: &[&SecretRecord]) {
    let tx = store.begin().await.unwrap();
    for rec in secrets {
        tx.insert_secret(rec).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn insert_bindings(store: &Store, bindings: &[&BindingRecord]) {
    let tx = store.begin().await.unwrap();
    for b in bindings {
        tx.insert_binding(b).await.unwrap();
    }
    tx.commit().await.unwrap();
}

fn with_id(mut b: BindingRecord, id: &str) -> BindingRecord {
    b.id = id.to_owned();
    b
}

fn ids(page: &[BindingRecord]) -> Vec<&str> {
    page.iter().map(|b| b.id.as_str()).collect()
}

fn paths(page: &[BindingRecord]) -> Vec<&str> {
    page.iter().map(|b| b.config_path.as_str()).collect()
}

store_test!(stores_gets_and_pages_bindings, |store| async move {
    let a = secret("acme", "db.password");
    let b = secret("acme", "openai");
    let g = secret("globex", "db.password");
    insert_secrets(&store, &[&a, &b, &g]).await;
    let mut pinned = with_id(binding(&b, "agent", "a1", "env.OPENAI_API_KEY"), "id-2");
    pinned.version_selector = "3".to_owned();
    pinned.required = false;
    pinned.label = "openai for a1".to_owned();
    let all = [
        with_id(binding(&a, "agent", "a1", "env.DB_PASSWORD"), "id-4"),
        pinned,
        with_id(binding(&a, "agent", "a2", "env.DB_PASSWORD"), "id-1"),
        with_id(binding(&a, "project", "p1", "dbPassword"), "id-5"),
        with_id(binding(&b, "agent", "a2", "env.OPENAI_API_KEY"), "id-3"),
    ];
    let other_tenant = with_id(binding(&g, "agent", "a1", "env.DB_PASSWORD"), "id-0");
    insert_bindings(
        &store,
        &all.iter().chain([&other_tenant]).collect::<Vec<_>>(),
    )
    .await;
    let t = tenant("acme");

    // Every field survives, and the secret's key comes from the join.
    for expected in &all {
        let got = store.get_binding(&t, &expected.id).await.unwrap().unwrap();
        assert_eq!(&got, expected);
    }
    assert_eq!(
        store
            .get_binding(&t, "id-2")
            .await
            .unwrap()
            .unwrap()
            .secret_name()
            .to_string(),
        "tenants/acme/secrets/openai"
    );
    assert!(store.get_binding(&t, "id-0").await.unwrap().is_none());
    assert!(store.get_binding(&t, "nope").await.unwrap().is_none());

    // The whole tenant, in id order, two at a time.
    let page = store.list_bindings(&t, None, None, None, 2).await.unwrap();
    assert_eq!(ids(&page), ["id-1", "id-2"]);
    let page = store
        .list_bindings(&t, None, None, Some("id-2"), 2)
        .await
        .unwrap();
    assert_eq!(ids(&page), ["id-3", "id-4"]);
    let page = store
        .list_bindings(&t, None, None, Some("id-4"), 2)
        .await
        .unwrap();
    assert_eq!(ids(&page), ["id-5"]);

    // By secret, by consumer, and both.
    let by_secret = |after: Option<&'static str>, limit| {
        let (store, t, uid) = (store.clone(), t.clone(), a.uid.clone());
        async move {
            store
                .list_bindings(&t, Some(&uid), None, after, limit)
                .await
                .unwrap()
        }
    };
    assert_eq!(ids(&by_secret(None, 2).await), ["id-1", "id-4"]);
    assert_eq!(ids(&by_secret(Some("id-4"), 2).await), ["id-5"]);
    let by_consumer = store
        .list_bindings(&t, None, Some(("agent", "a1")), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&by_consumer), ["id-2", "id-4"]);
    let both = store
        .list_bindings(&t, Some(&b.uid), Some(("agent", "a2")), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&both), ["id-3"]);
    assert!(
        store
            .list_bindings(&t, None, Some(("agent", "nobody")), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The resolution lookup matches kind, id and path exactly.
    let found = store
        .find_binding(&t, "agent", "a1", "env.OPENAI_API_KEY")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, "id-2");
    for (kind, id, path) in [
        ("agent", "a1", "env.OPENAI_API_KEY2"),
        ("agent", "a3", "env.OPENAI_API_KEY"),
        ("project", "a1", "env.OPENAI_API_KEY"),
    ] {
        assert!(
            store
                .find_binding(&t, kind, id, path)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(
        store
            .find_binding(&tenant("globex"), "agent", "a1", "env.OPENAI_API_KEY")
            .await
            .unwrap()
            .is_none()
    );
});

store_test!(a_duplicate_binding_already_exists, |store| async move {
    let a = secret("acme", "a");
    let b = secret("acme", "b");
    insert_secrets(&store, &[&a, &b]).await;
    let first = binding(&a, "agent", "a1", "env.KEY");
    insert_bindings(&store, &[&first]).await;

    // Same consumer and path, even for another secret: refused, and the
    // transaction refuses to commit afterwards.
    let tx = store.begin().await.unwrap();
    let err = tx
        .insert_binding(&binding(&b, "agent", "a1", "env.KEY"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert_eq!(err.reason(), Reason::BindingAlreadyExists);
    assert_eq!(
        err.message(),
        "a binding for this consumer and config path already exists"
    );
    assert_eq!(tx.commit().await.unwrap_err().code(), ErrorCode::Internal);

    // A missing secret is refused too.
    let mut dangling = binding(&a, "agent", "a9", "env.KEY");
    dangling.secret_uid = "no-such-secret".to_owned();
    let tx = store.begin().await.unwrap();
    let err = tx.insert_binding(&dangling).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(err.reason(), Reason::SecretNotFound);
    drop(tx);

    // Another path, consumer id or kind is a different binding.
    insert_bindings(
        &store,
        &[
            &binding(&b, "agent", "a1", "env.KEY2"),
            &binding(&b, "agent", "a2", "env.KEY"),
            &binding(&b, "run", "a1", "env.KEY"),
        ],
    )
    .await;
    let t = tenant("acme");
    assert_eq!(
        store
            .list_bindings(&t, None, None, None, 10)
            .await
            .unwrap()
            .len(),
        4
    );
});

store_test!(
    updates_bindings_optimistically_and_deletes,
    |store| async move {
        let a = secret("acme", "a");
        let b = secret("acme", "b");
        insert_secrets(&store, &[&a, &b]).await;
        let original = binding(&a, "agent", "a1", "env.KEY");
        insert_bindings(&store, &[&original]).await;
        let t = tenant("acme");

        let mut changed = original.clone();
        changed.secret_uid = b.uid.clone();
        changed.secret_key = b.key.clone();
        changed.version_selector = "2".to_owned();
        changed.required = false;
        changed.label = "moved".to_owned();
        changed.update_time = T0 + 10;
        changed.revision = 2;
        // Fields that are not mutable are ignored by an update.
        let mut attempt = changed.clone();
        attempt.create_time = T0 + 99;

        let tx = store.begin().await.unwrap();
        let err = tx.update_binding(&attempt, 7).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Aborted);
        assert_eq!(err.reason(), Reason::EtagMismatch);
        assert!(err.message().contains(&original.name()));
        drop(tx);

        let tx = store.begin().await.unwrap();
        let seen = tx.get_binding(&t, &original.id).await.unwrap().unwrap();
        assert_eq!(seen, original);
        tx.update_binding(&attempt, seen.revision).await.unwrap();
        assert_eq!(
            tx.get_binding(&t, &original.id).await.unwrap().unwrap(),
            changed
        );
        tx.commit().await.unwrap();
        assert_eq!(
            store.get_binding(&t, &original.id).await.unwrap().unwrap(),
            changed
        );
        // The old revision is stale now.
        let tx = store.begin().await.unwrap();
        let err = tx.update_binding(&changed, 1).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Aborted);
        drop(tx);

        let tx = store.begin().await.unwrap();
        assert!(
            !tx.delete_binding(&tenant("globex"), &original.id)
                .await
                .unwrap()
        );
        assert!(tx.delete_binding(&t, &original.id).await.unwrap());
        assert!(!tx.delete_binding(&t, &original.id).await.unwrap());
        assert!(tx.get_binding(&t, &original.id).await.unwrap().is_none());
        tx.commit().await.unwrap();
        assert!(store.get_binding(&t, &original.id).await.unwrap().is_none());
    }
);

store_test!(consumer_prefixes_match_literally, |store| async move {
    let a = secret("acme", "a");
    insert_secrets(&store, &[&a]).await;
    let mine = [
        "webhook", "env.B", "envX", "env_x.A", "env%.B", "ENV.C", "env.A", "env",
    ];
    let mut rows: Vec<BindingRecord> = mine.iter().map(|p| binding(&a, "agent", "a1", p)).collect();
    // Another consumer's bindings under the same prefix stay out.
    rows.push(binding(&a, "agent", "a2", "env.A"));
    rows.push(binding(&a, "run", "a1", "env.A"));
    insert_bindings(&store, &rows.iter().collect::<Vec<_>>()).await;
    let t = tenant("acme");

    let cases: [(&str, &[&str]); 7] = [
        // Byte order on both backends: uppercase first, then % . X _.
        (
            "",
            &[
                "ENV.C", "env", "env%.B", "env.A", "env.B", "envX", "env_x.A", "webhook",
            ],
        ),
        ("env.", &["env.A", "env.B"]),
        ("env_", &["env_x.A"]),
        ("env%", &["env%.B"]),
        (
            "env",
            &["env", "env%.B", "env.A", "env.B", "envX", "env_x.A"],
        ),
        ("env.A", &["env.A"]),
        ("env.A.", &[]),
    ];
    for (prefix, expected) in cases {
        let got = store
            .consumer_bindings(&t, "agent", "a1", prefix)
            .await
            .unwrap();
        assert_eq!(paths(&got), expected, "prefix {prefix:?}");
        let tx = store.begin().await.unwrap();
        let in_tx = tx
            .consumer_bindings(&t, "agent", "a1", prefix)
            .await
            .unwrap();
        assert_eq!(in_tx, got, "prefix {prefix:?} inside a transaction");
        drop(tx);
    }
    assert!(
        store
            .consumer_bindings(&tenant("globex"), "agent", "a1", "")
            .await
            .unwrap()
            .is_empty()
    );
});

store_test!(purging_a_secret_deletes_its_bindings, |store| async move {
    let a = secret("acme", "a");
    let b = secret("acme", "b");
    insert_secrets(&store, &[&a, &b]).await;
    let of_a = [
        binding(&a, "agent", "a1", "env.A"),
        binding(&a, "agent", "a2", "env.A"),
    ];
    let of_b = binding(&b, "agent", "a1", "env.B");
    insert_bindings(&store, &[&of_a[0], &of_a[1], &of_b]).await;

    let tx = store.begin().await.unwrap();
    tx.purge_secret(&a.uid, T0 + 100).await.unwrap();
    tx.commit().await.unwrap();

    let t = tenant("acme");
    for gone in &of_a {
        assert!(store.get_binding(&t, &gone.id).await.unwrap().is_none());
    }
    let left = store.list_bindings(&t, None, None, None, 10).await.unwrap();
    assert_eq!(left, std::slice::from_ref(&of_b));
    assert!(
        store
            .list_bindings(&t, Some(&a.uid), None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The freed path can be bound again, to a new secret under the old key.
    let reborn = secret("acme", "a");
    insert_secrets(&store, &[&reborn]).await;
    insert_bindings(&store, &[&binding(&reborn, "agent", "a1", "env.A")]).await;
});
