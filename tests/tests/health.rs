//! Health follows the database: NOT_SERVING while PostgreSQL refuses
//! connections, SERVING again once it accepts them, without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use coffer_tests::{Db, TestServer, wait_until};
use tonic_health::pb::health_check_response::ServingStatus;

/// Runs one SQL statement as the PostgreSQL superuser of the test server.
fn admin_sql(admin_url: &str, sql: &str) {
    let output = Command::new("psql")
        .arg(admin_url)
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-c")
        .arg(sql)
        .output()
        .expect("psql is needed for this test (Debian package postgresql-client)");
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    let Some(server) = TestServer::start(Db::Postgres).await else {
        return;
    };
    let db_name = server.database_url.rsplit('/').next().unwrap().to_owned();
    let admin_url = std::env::var("COFFER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());

    admin_sql(
        &admin_url,
        &format!("ALTER DATABASE \"{db_name}\" ALLOW_CONNECTIONS false"),
    );
    admin_sql(
        &admin_url,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}'"
        ),
    );
    let down = wait_until(Duration::from_secs(15), || async {
        server.health_status("").await == Some(ServingStatus::NotServing)
            && server.health_status("coffer.v1.SecretsService").await
                == Some(ServingStatus::NotServing)
    })
    .await;
    // A call that needs the database fails with UNAVAILABLE, not INTERNAL.
    let err = server
        .secrets()
        .get_secret(coffer_proto::v1::GetSecretRequest {
            name: "tenants/a/secrets/b".into(),
        })
        .await
        .unwrap_err();
    admin_sql(
        &admin_url,
        &format!("ALTER DATABASE \"{db_name}\" ALLOW_CONNECTIONS true"),
    );
    assert!(down.is_ok(), "health never went NOT_SERVING");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    let up = wait_until(Duration::from_secs(15), || async {
        server.health_status("").await == Some(ServingStatus::Serving)
    })
    .await;
    assert!(up.is_ok(), "health did not recover");
    server
        .secrets()
        .list_secrets(coffer_proto::v1::ListSecretsRequest {
            parent: "tenants/a".into(),
            ..Default::default()
        })
        .await
        .expect("calls work again after recovery");
    server.stop().await;
}
