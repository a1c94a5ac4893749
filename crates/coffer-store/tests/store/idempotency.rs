//! Idempotency keys.

use coffer_core::{ErrorCode, Reason};
use coffer_store::{IdempotencyRecord, store_test};

use crate::fixtures::{T0, tenant};

fn request(tenant_id: &str, request_id: &str, create_time: i64) -> IdempotencyRecord {
    IdempotencyRecord {
        tenant: tenant_id.to_owned(),
        request_id: request_id.to_owned(),
        operation: "secret.create".to_owned(),
        request_hash: "h1".to_owned(),
        secret_uid: "uid-1".to_owned(),
        version: 1,
        create_time,
    }
}

store_test!(remembers_requests_once, |store| async move {
    let first = request("acme", "6f9619ff-8b86-d011-b42d-00c04fc964ff", T0);
    let tx = store.begin().await.unwrap();
    tx.insert_idempotency(&first).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .find_idempotency(&tenant("acme"), &first.request_id)
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert!(
        store
            .find_idempotency(&tenant("globex"), &first.request_id)
            .await
            .unwrap()
            .is_none()
    );

    let tx = store.begin().await.unwrap();
    let mut reused = first.clone();
    reused.request_hash = "h2".to_owned();
    let err = tx.insert_idempotency(&reused).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert_eq!(err.reason(), Reason::RequestIdReused);
    drop(tx);

    // The same id in another tenant is another request.
    let tx = store.begin().await.unwrap();
    tx.insert_idempotency(&request("globex", &first.request_id, T0 + 10))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(store.delete_idempotency_older_than(T0).await.unwrap(), 0);
    assert_eq!(
        store.delete_idempotency_older_than(T0 + 5).await.unwrap(),
        1
    );
    assert!(
        store
            .find_idempotency(&tenant("acme"), &first.request_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_idempotency(&tenant("globex"), &first.request_id)
            .await
            .unwrap()
            .is_some()
    );
});
