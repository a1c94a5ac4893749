//! Vaults: round trips, pages in byte order, duplicate ids, optimistic
//! updates, the database-kept "one default per tenant and provider" rule, and
//! the provider lock that serializes default and disable changes.

use std::time::Duration;

use coffer_core::record::{VaultRecord, VaultState};
use coffer_core::{ErrorCode, Reason};
use coffer_store::{Store, store_test};

use crate::fixtures::{T0, tenant, vault};

const AWS: &str = "aws_secrets_manager";
const LOCAL: &str = "local_encrypted";
const DEFAULT_RACE: &str = "another default vault was set concurrently; retry";

async fn insert(store: &Store, rec: &VaultRecord) {
    let tx = store.begin().await.unwrap();
    tx.insert_vault(rec).await.unwrap();
    tx.commit().await.unwrap();
}

fn ids(page: &[VaultRecord]) -> Vec<&str> {
    page.iter().map(|v| v.vault_id.as_str()).collect()
}

fn as_default(mut rec: VaultRecord) -> VaultRecord {
    rec.is_default = true;
    rec
}

store_test!(round_trips_and_pages_vaults, |store| async move {
    let mut checked = vault("acme", "prod", AWS);
    checked.health_status = "ok".to_owned();
    checked.health_message = "reachable".to_owned();
    checked.health_check_time = Some(T0 + 7);
    let mut disabled = vault("acme", "a-1", AWS);
    disabled.state = VaultState::Disabled;
    disabled.disable_time = Some(T0 + 9);
    // Byte order puts "a-1" < "a.1" < "a1" < "b"; a locale-aware collation
    // that skips punctuation would not.
    for rec in [
        &checked,
        &vault("acme", "b", LOCAL),
        &vault("acme", "a1", AWS),
        &disabled,
        &vault("acme", "a.1", AWS),
    ] {
        insert(&store, rec).await;
    }
    insert(&store, &vault("globex", "a0", AWS)).await;

    let acme = tenant("acme");
    assert_eq!(
        store.get_vault(&acme, "prod").await.unwrap().unwrap(),
        checked
    );
    assert_eq!(
        store.get_vault(&acme, "a-1").await.unwrap().unwrap(),
        disabled
    );
    assert!(store.get_vault(&acme, "a0").await.unwrap().is_none());
    assert!(
        store
            .get_vault(&tenant("globex"), "prod")
            .await
            .unwrap()
            .is_none()
    );

    let all = store.list_vaults(&acme, None, 100).await.unwrap();
    assert_eq!(ids(&all), ["a-1", "a.1", "a1", "b", "prod"]);
    let first = store.list_vaults(&acme, None, 2).await.unwrap();
    assert_eq!(ids(&first), ["a-1", "a.1"]);
    let second = store.list_vaults(&acme, Some("a.1"), 2).await.unwrap();
    assert_eq!(ids(&second), ["a1", "b"]);
    let last = store.list_vaults(&acme, Some("b"), 2).await.unwrap();
    assert_eq!(ids(&last), ["prod"]);
    assert!(
        store
            .list_vaults(&acme, Some("prod"), 2)
            .await
            .unwrap()
            .is_empty()
    );
});

store_test!(a_taken_vault_id_already_exists, |store| async move {
    let first = vault("acme", "prod", AWS);
    insert(&store, &first).await;

    let tx = store.begin().await.unwrap();
    let err = tx
        .insert_vault(&vault("acme", "prod", LOCAL))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert_eq!(err.reason(), Reason::VaultAlreadyExists);
    assert_eq!(
        err.message(),
        "vault tenants/acme/vaults/prod already exists"
    );
    // The conflict left the transaction usable: nothing failed in it.
    let other = vault("acme", "staging", AWS);
    tx.insert_vault(&other).await.unwrap();
    tx.commit().await.unwrap();

    let acme = tenant("acme");
    assert_eq!(
        store.get_vault(&acme, "prod").await.unwrap().unwrap(),
        first
    );
    assert_eq!(
        store.get_vault(&acme, "staging").await.unwrap().unwrap(),
        other
    );
    // Another tenant may use the same id.
    insert(&store, &vault("globex", "prod", AWS)).await;
});

store_test!(updates_vaults_optimistically, |store| async move {
    let rec = vault("acme", "prod", AWS);
    insert(&store, &rec).await;

    let tx = store.begin().await.unwrap();
    let mut next = tx
        .lock_provider_vaults(&rec.tenant, AWS)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(next, rec);
    next.display_name = "Production".to_owned();
    next.state = VaultState::Warning;
    next.config = "{\"region\":\"us-east-1\"}".to_owned();
    next.health_status = "failing".to_owned();
    next.health_message = "access denied".to_owned();
    next.health_check_time = Some(T0 + 3);
    next.update_time = T0 + 4;
    next.revision = rec.revision + 1;
    let err = tx.update_vault(&next, rec.revision + 5).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted);
    assert_eq!(err.reason(), Reason::EtagMismatch);
    drop(tx);

    let tx = store.begin().await.unwrap();
    // Identity, provider and create time are not rewritten by an update.
    let mut sneaky = next.clone();
    sneaky.provider = LOCAL.to_owned();
    sneaky.create_time = T0 + 99;
    tx.update_vault(&sneaky, rec.revision).await.unwrap();
    tx.commit().await.unwrap();
    let got = store.get_vault(&rec.tenant, "prod").await.unwrap().unwrap();
    assert_eq!(got, next);
    assert_eq!(got.etag(), "r2");

    // The old revision is stale now.
    let tx = store.begin().await.unwrap();
    let err = tx.update_vault(&next, rec.revision).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted);
    assert_eq!(err.reason(), Reason::EtagMismatch);
});

store_test!(
    the_database_allows_one_default_per_tenant_and_provider,
    |store| async move {
        let first = as_default(vault("acme", "a", AWS));
        insert(&store, &first).await;
        // Defaults of another provider or another tenant do not collide,
        // and any number of vaults may be non-default.
        insert(&store, &as_default(vault("acme", "local", LOCAL))).await;
        insert(&store, &as_default(vault("globex", "a", AWS))).await;
        let second = vault("acme", "b", AWS);
        insert(&store, &second).await;
        insert(&store, &vault("acme", "c", AWS)).await;

        // A second default by insert is refused, and PostgreSQL has aborted
        // the transaction, so it refuses to commit.
        let tx = store.begin().await.unwrap();
        let err = tx
            .insert_vault(&as_default(vault("acme", "d", AWS)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Aborted);
        assert_eq!(err.message(), DEFAULT_RACE);
        assert_eq!(tx.commit().await.unwrap_err().code(), ErrorCode::Internal);

        // ... and by update.
        let tx = store.begin().await.unwrap();
        let mut promoted = as_default(second.clone());
        promoted.revision += 1;
        let err = tx
            .update_vault(&promoted, second.revision)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Aborted);
        assert_eq!(err.message(), DEFAULT_RACE);
        drop(tx);

        let acme = tenant("acme");
        assert_eq!(
            store.default_vault(&acme, AWS).await.unwrap().unwrap(),
            first
        );
        assert_eq!(
            store
                .default_vault(&acme, LOCAL)
                .await
                .unwrap()
                .unwrap()
                .vault_id,
            "local"
        );
        assert!(
            store
                .default_vault(&acme, "hashicorp_vault")
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.get_vault(&acme, "d").await.unwrap().is_none());

        // Clearing the old default first lets another take its place.
        let tx = store.begin().await.unwrap();
        let mut cleared = first.clone();
        cleared.is_default = false;
        cleared.revision += 1;
        tx.update_vault(&cleared, first.revision).await.unwrap();
        tx.update_vault(&promoted, second.revision).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            store.default_vault(&acme, AWS).await.unwrap().unwrap(),
            promoted
        );
    }
);

store_test!(
    racing_defaults_let_only_the_first_commit_win,
    |store| async move {
        let a = vault("acme", "a", AWS);
        let b = vault("acme", "b", AWS);
        insert(&store, &a).await;
        insert(&store, &b).await;

        let tx = store.begin().await.unwrap();
        let mut a_default = as_default(a.clone());
        a_default.revision += 1;
        tx.update_vault(&a_default, a.revision).await.unwrap();

        // A writer that skipped the provider lock: it waits for the first
        // transaction (on the index on PostgreSQL, for the single writer on
        // SQLite) and then finds the default taken.
        let racer = {
            let store = store.clone();
            let b = b.clone();
            tokio::spawn(async move {
                let tx = store.begin().await.unwrap();
                let mut b_default = as_default(b.clone());
                b_default.revision += 1;
                tx.update_vault(&b_default, b.revision).await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!racer.is_finished());
        tx.commit().await.unwrap();

        let err = racer.await.unwrap().unwrap_err();
        assert_eq!(err.code(), ErrorCode::Aborted);
        assert_eq!(err.message(), DEFAULT_RACE);
        assert_eq!(
            store
                .default_vault(&a.tenant, AWS)
                .await
                .unwrap()
                .unwrap()
                .vault_id,
            "a"
        );
    }
);

store_test!(locks_a_providers_vaults_in_id_order, |store| async move {
    for id in ["z", "m", "a"] {
        insert(&store, &vault("acme", id, AWS)).await;
    }
    insert(&store, &vault("acme", "local", LOCAL)).await;
    insert(&store, &vault("globex", "b", AWS)).await;
    let acme = tenant("acme");

    let tx = store.begin().await.unwrap();
    let locked = tx.lock_provider_vaults(&acme, AWS).await.unwrap();
    assert_eq!(ids(&locked), ["a", "m", "z"]);
    assert!(
        tx.lock_provider_vaults(&acme, "hashicorp_vault")
            .await
            .unwrap()
            .is_empty()
    );

    // A second locker waits until the first commits, then sees its write.
    let waiter = {
        let store = store.clone();
        let acme = acme.clone();
        tokio::spawn(async move {
            let tx = store.begin().await.unwrap();
            let seen = tx.lock_provider_vaults(&acme, AWS).await.unwrap();
            tx.commit().await.unwrap();
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    let mut m = locked[1].clone();
    m.is_default = true;
    m.revision += 1;
    tx.update_vault(&m, locked[1].revision).await.unwrap();
    tx.commit().await.unwrap();

    let seen = waiter.await.unwrap();
    assert_eq!(ids(&seen), ["a", "m", "z"]);
    let defaults: Vec<bool> = seen.iter().map(|v| v.is_default).collect();
    assert_eq!(defaults, [false, true, false]);
});
