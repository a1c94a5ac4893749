//! PostgreSQL's statement timeout (`[database] statement_timeout_ms`): a
//! write that waits on a row lock held elsewhere (another replica, an
//! operator's session, a stuck transaction) is cancelled by the database
//! after the timeout and answers UNAVAILABLE with a message that says so —
//! never INTERNAL, never a call that hangs until the client gives up. Once
//! the lock is released the same call succeeds, and the cancelled attempt
//! left nothing behind. Migrations run without the timeout.
//!
//! Runs against COFFER_TEST_DATABASE_URL (a fresh database per test); skipped
//! when no PostgreSQL server answers, unless COFFER_TEST_REQUIRE_POSTGRES=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coffer_core::record::{SecretMode, SecretRecord, SecretState};
use coffer_core::{ErrorCode, SecretKey, TenantId};
use coffer_proto::v1;
use coffer_server::app::CofferOptions;
use coffer_store::{Store, StoreOptions};
use coffer_tests::{TestServer, reason};
use tonic::Code;

const PARENT: &str = "tenants/acme";
const KEY: &str = "locked";
/// The server's statement timeout in this test.
const TIMEOUT: Duration = Duration::from_millis(500);
/// How long a cancelled call may take in all: the timeout plus the call's
/// own statements and the audit of its failure.
const ANSWER_WITHIN: Duration = Duration::from_millis(1500);

fn tenant() -> TenantId {
    TenantId::parse("acme", "tenant").unwrap()
}

fn key() -> SecretKey {
    SecretKey::parse(KEY, "key").unwrap()
}

/// A store on the same database without a statement timeout: the "other
/// session" that holds the lock as long as the test wants.
async fn untimed(url: &str) -> Store {
    Store::connect(
        url,
        StoreOptions {
            statement_timeout: Duration::ZERO,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap()
}

/// A secret row as the store keeps it, written directly (no server here).
fn record() -> SecretRecord {
    const T0: i64 = 1_764_000_000_000_000;
    SecretRecord {
        uid: "00000000-0000-4000-8000-000000000001".to_owned(),
        tenant: tenant(),
        key: key(),
        display_name: String::new(),
        description: String::new(),
        labels: BTreeMap::new(),
        mode: SecretMode::Managed,
        provider: "local_encrypted".to_owned(),
        vault: String::new(),
        external_ref: String::new(),
        state: SecretState::Active,
        current_version: 0,
        latest_version: 0,
        create_time: T0,
        update_time: T0,
        rotate_time: None,
        last_resolve_time: None,
        delete_time: None,
        purge_time: None,
        revision: 1,
    }
}

fn rotate(value: &[u8]) -> v1::RotateSecretRequest {
    v1::RotateSecretRequest {
        name: format!("{PARENT}/secrets/{KEY}"),
        source: Some(v1::rotate_secret_request::Source::Value(value.to_vec())),
        ..Default::default()
    }
}

fn describe(description: &str) -> v1::UpdateSecretRequest {
    v1::UpdateSecretRequest {
        secret: Some(v1::Secret {
            name: format!("{PARENT}/secrets/{KEY}"),
            description: description.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["description".into()],
        }),
    }
}

/// A call cut by the statement timeout: UNAVAILABLE, the database-unavailable
/// reason, a message that says why, and soon.
fn assert_cancelled<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tonic::Status>,
    took: Duration,
) {
    let status = result.expect_err(what);
    eprintln!("{what}: {:?} after {took:?}", status.code());
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert_eq!(
        reason(&status),
        "DATABASE_UNAVAILABLE",
        "{what}: {status:?}"
    );
    assert!(
        status.message().contains("in time"),
        "{what}: the message does not say the database took too long: {status:?}"
    );
    assert!(
        !status.message().contains("57014") && !status.message().contains("statement timeout"),
        "{what}: the database's own text reached the client: {status:?}"
    );
    assert!(
        took >= TIMEOUT && took < ANSWER_WITHIN,
        "{what}: answered after {took:?} (statement timeout {TIMEOUT:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_blocked_by_a_row_lock_answers_unavailable_then_succeeds() {
    let Some(url) = coffer_store::testing::fresh_postgres_url().await else {
        return;
    };
    let server = TestServer::start_on_url_with(
        &url,
        StoreOptions {
            statement_timeout: TIMEOUT,
            ..StoreOptions::default()
        },
        CofferOptions::default(),
    )
    .await;
    let mut secrets = server.secrets();
    secrets
        .create_secret(v1::CreateSecretRequest {
            parent: PARENT.into(),
            secret_id: KEY.into(),
            secret: Some(v1::Secret {
                provider: "local_encrypted".into(),
                ..Default::default()
            }),
            source: Some(v1::create_secret_request::Source::Value(b"v1".to_vec())),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = server
        .store
        .get_secret(&tenant(), &key())
        .await
        .unwrap()
        .unwrap();

    // Another session locks the secret's row and keeps its transaction open.
    let holder = untimed(&url).await;
    let held = holder.begin().await.unwrap();
    assert!(
        held.get_secret_for_update(&tenant(), &key())
            .await
            .unwrap()
            .is_some()
    );

    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        secrets.rotate_secret(rotate(b"v2")),
    )
    .await
    .expect("a rotation blocked by a row lock hung");
    assert_cancelled("rotate while the row is locked", result, started.elapsed());

    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        secrets.update_secret(describe("while locked")),
    )
    .await
    .expect("an update blocked by a row lock hung");
    assert_cancelled("update while the row is locked", result, started.elapsed());

    // Nothing of the cancelled calls was written.
    let during = server
        .store
        .get_secret(&tenant(), &key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(during.latest_version, before.latest_version);
    assert_eq!(during.current_version, before.current_version);
    assert_eq!(during.description, before.description);
    assert_eq!(
        server
            .store
            .list_versions(&before.uid, None, 100)
            .await
            .unwrap()
            .len(),
        1
    );

    // Released: the same calls succeed, on the server's same pool.
    held.rollback().await.unwrap();
    secrets.rotate_secret(rotate(b"v2")).await.unwrap();
    secrets
        .update_secret(describe("after the lock"))
        .await
        .unwrap();
    let after = server
        .store
        .get_secret(&tenant(), &key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.latest_version, before.latest_version + 1);
    assert_eq!(after.current_version, after.latest_version);
    assert_eq!(after.description, "after the lock");
    let versions = server
        .store
        .list_versions(&before.uid, None, 100)
        .await
        .unwrap();
    assert_eq!(versions.len(), 2, "{versions:?}");
    let resolved = secrets
        .resolve_secret(v1::ResolveSecretRequest {
            name: format!("{PARENT}/secrets/{KEY}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    assert_eq!(resolved, b"v2");
    let report = server.coffer.verify_audit_chain(&tenant()).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");

    holder.close().await.unwrap();
    server.stop().await;
    coffer_store::testing::drop_postgres_database(&url).await;
}

/// A pool whose statements may run only 1 ms still migrates a fresh
/// database (migrations take their own connection without the timeout),
/// and the timeout does bind that pool's own statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_without_the_statement_timeout() {
    let Some(url) = coffer_store::testing::fresh_postgres_url().await else {
        return;
    };
    let store = Store::connect(
        &url,
        StoreOptions {
            statement_timeout: Duration::from_millis(1),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    store.migrate_up().await.unwrap();
    // Read back on an untimed pool: the catalog query behind the status
    // itself takes more than 1 ms, which is what the timeout would have
    // done to the migrations.
    let other = untimed(&url).await;
    let status = other.migration_status().await.unwrap();
    assert!(!status.is_empty() && status.iter().all(|m| m.applied));

    // Seed a secret with the untimed store, lock its row there, and ask for
    // the same lock through the 1 ms pool: cancelled, UNAVAILABLE.
    let tx = other.begin().await.unwrap();
    let rec = record();
    tx.insert_secret(&rec).await.unwrap();
    tx.commit().await.unwrap();
    let held = other.begin().await.unwrap();
    held.get_secret_for_update(&tenant(), &key())
        .await
        .unwrap()
        .unwrap();
    let blocked = store.begin().await.unwrap();
    let err = blocked
        .get_secret_for_update(&tenant(), &key())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err:?}");
    drop(blocked);
    held.rollback().await.unwrap();

    other.close().await.unwrap();
    store.close().await.unwrap();
    coffer_store::testing::drop_postgres_database(&url).await;
}
