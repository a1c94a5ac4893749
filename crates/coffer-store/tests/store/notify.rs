//! Commit notices across replicas on PostgreSQL: a listener whose
//! connection goes silent (a half-open TCP connection delivers nothing and
//! reports nothing) is noticed by its heartbeat, given up and replaced.

use std::process::Command;
use std::time::Duration;

use coffer_core::TenantId;
use coffer_core::record::{AuditOutcome, NewAuditEvent};
use coffer_store::notify::{CommitNotice, HEARTBEAT_DEADLINE, HEARTBEAT_EVERY};
use coffer_store::testing::{drop_postgres_database, postgres_store};
use coffer_store::{Store, StoreOptions};
use sea_orm::sqlx::PgPool;
use tokio::sync::broadcast;

/// The backend pids of the database's LISTEN connections.
async fn listener_pids(admin: &PgPool) -> Vec<i32> {
    sea_orm::sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(admin)
    .await
    .unwrap()
}

fn signal(pid: i32, which: &str) -> bool {
    Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .is_ok_and(|status| status.success())
}

async fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// A committed mutation of `tenant` on `store` (an audited success, which
/// is what notifies).
async fn mutate(store: &Store, tenant: &TenantId) {
    let tx = store.begin().await.unwrap();
    tx.append_audit(vec![NewAuditEvent {
        tenant: tenant.clone(),
        time: 1,
        principal: "p".to_owned(),
        action: "secret.rotate".to_owned(),
        resource: format!("tenants/{tenant}/secrets/k"),
        version: 1,
        consumer_kind: String::new(),
        consumer_id: String::new(),
        config_path: String::new(),
        context: Default::default(),
        outcome: AuditOutcome::Success,
        reason: String::new(),
        request_id: "r".to_owned(),
    }])
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Waits for `tenant`'s notice, skipping others.
async fn hears(notices: &mut broadcast::Receiver<CommitNotice>, tenant: &TenantId) -> bool {
    let wait = async {
        loop {
            match notices.recv().await {
                Ok(CommitNotice::Tenant(t)) if t == *tenant => return true,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or(false)
}

/// The listener's backend is frozen (SIGSTOP: its socket stays open and
/// silent, as a half-open connection would): within the heartbeat deadline
/// the store stops claiming live notices and says `Lost`, then listens on
/// a new connection and hears other replicas again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_stops_hearing_is_replaced() {
    let Some((store, url)) = postgres_store().await else {
        return;
    };
    let admin = PgPool::connect(&url).await.unwrap();
    let other = Store::connect(&url, StoreOptions::default()).await.unwrap();
    let mut notices = store.subscribe_commits();
    store.spawn_commit_listener().unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || store.commit_notices_live()).await,
        "the listener connects"
    );
    let tenant = TenantId::parse("acme", "tenant").unwrap();
    mutate(&other, &tenant).await;
    assert!(hears(&mut notices, &tenant).await, "a live listener hears");

    let frozen = listener_pids(&admin).await;
    assert_eq!(frozen.len(), 1, "one listener: {frozen:?}");
    if !signal(frozen[0], "-STOP") {
        eprintln!("SKIPPED: cannot signal the PostgreSQL backend (not root?)");
    } else {
        // Heard nothing for the deadline, noticed at the next beat.
        let noticed = wait_for(HEARTBEAT_DEADLINE + 2 * HEARTBEAT_EVERY, || {
            !store.commit_notices_live()
        })
        .await;
        let reconnected =
            noticed && wait_for(Duration::from_secs(5), || store.commit_notices_live()).await;
        let listeners = listener_pids(&admin).await;
        // Thaw and end the frozen backend before any assertion can fail.
        signal(frozen[0], "-CONT");
        let _ = sea_orm::sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(frozen[0])
            .execute(&admin)
            .await;
        assert!(noticed, "a silent listener is given up within the deadline");
        assert!(reconnected, "and replaced by a new one");
        assert!(
            listeners.iter().any(|pid| *pid != frozen[0]),
            "a new LISTEN connection: {listeners:?}"
        );
        let mut lost = false;
        while let Ok(notice) = notices.try_recv() {
            lost |= notice == CommitNotice::Lost;
        }
        assert!(lost, "subscribers are told notices may have been missed");
        mutate(&other, &tenant).await;
        assert!(hears(&mut notices, &tenant).await, "the new listener hears");
    }
    let _ = other.close().await;
    let _ = store.close().await;
    admin.close().await;
    drop_postgres_database(&url).await;
}
