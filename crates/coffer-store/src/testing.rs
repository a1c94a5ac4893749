//! Test harness shared by this crate's tests and the end-to-end test crate:
//! fresh stores on both backends, migrated with the real migrations, and
//! [`store_test!`](crate::store_test) to run one test body on each.
//!
//! PostgreSQL comes from `COFFER_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each store gets a database
//! of its own. Without a reachable server the PostgreSQL half is skipped,
//! unless `COFFER_TEST_REQUIRE_POSTGRES=1`, where it fails instead.

use std::future::Future;
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

use crate::conn::{Store, StoreOptions};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DATABASE_PREFIX: &str = "coffer_test_";

/// A fresh SQLite file database, migrated. Keep the `TempDir` alive as long
/// as the store.
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory for the test database");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("coffer.db").display()
    );
    let store = Store::connect(&url, StoreOptions::default())
        .await
        .expect("open the sqlite test database");
    store
        .migrate_up()
        .await
        .expect("migrate the sqlite test database");
    (store, dir)
}

/// A fresh, migrated PostgreSQL database and its URL, or `None` (after a SKIP
/// note) when no server is reachable and PostgreSQL is not required.
pub async fn postgres_store() -> Option<(Store, String)> {
    let url = fresh_postgres_url().await?;
    let store = Store::connect(&url, StoreOptions::default())
        .await
        .expect("open the postgres test database");
    store
        .migrate_up()
        .await
        .expect("migrate the postgres test database");
    Some((store, url))
}

/// Creates an empty database `coffer_test_<uuid>` and returns its URL, for
/// tests that start a whole server against it.
pub async fn fresh_postgres_url() -> Option<String> {
    let admin_url = admin_url();
    let admin = admin_connection(&admin_url).await?;
    let name = format!("{DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a postgres test database");
    // Best effort: the admin pool is dropped either way.
    let _ = admin.close().await;
    Some(with_database(&admin_url, &name))
}

/// Drops a database made by [`fresh_postgres_url`] (its connections are
/// ended). Only `coffer_test_*` databases are touched.
pub async fn drop_postgres_database(url: &str) {
    let name = database_of(url);
    assert!(
        name.starts_with(DATABASE_PREFIX)
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "refusing to drop {name:?}: not a coffer test database"
    );
    let admin_url = admin_url();
    let Some(admin) = admin_connection(&admin_url).await else {
        return;
    };
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop the postgres test database");
    let _ = admin.close().await;
}

/// Runs raw SQL on the write pool and returns the rows it affected, for tests
/// that must reach past the API (e.g. tampering with audit rows to prove the
/// chain verifier notices). Panics on a database error.
pub async fn execute_raw(store: &Store, sql: &str) -> u64 {
    let _turn = store.write_turn().await.expect("wait for the write turn");
    store
        .write
        .execute_unprepared(sql)
        .await
        .expect("run raw test sql")
        .rows_affected()
}

/// Runs `test` on a fresh SQLite store.
pub async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let (store, _dir) = sqlite_store().await;
    test(store.clone()).await;
    let _ = store.close().await;
}

/// Runs `test` on a fresh PostgreSQL database (or skips, see the module docs).
/// The database is dropped when the test passes and kept for inspection when
/// it panics.
pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some((store, url)) = postgres_store().await else {
        return;
    };
    test(store.clone()).await;
    let _ = store.close().await;
    drop_postgres_database(&url).await;
}

/// Defines a storage test that runs on both backends, as `name::sqlite` and
/// `name::postgres`:
///
/// ```ignore
/// coffer_store::store_test!(finds_nothing, |store| async move {
///     assert!(store.get_secret_by_uid("x").await.unwrap().is_none());
/// });
/// ```
#[macro_export]
macro_rules! store_test {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::testing::on_sqlite($body).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::testing::on_postgres($body).await;
            }
        }
    };
}

fn admin_url() -> String {
    std::env::var("COFFER_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

async fn admin_connection(admin_url: &str) -> Option<DatabaseConnection> {
    let mut opts = ConnectOptions::new(admin_url.to_owned());
    opts.max_connections(1)
        .connect_timeout(Duration::from_secs(3))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    match Database::connect(opts).await {
        Ok(conn) => Some(conn),
        Err(err) => {
            if std::env::var("COFFER_TEST_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "COFFER_TEST_REQUIRE_POSTGRES=1 but postgres at {} is unreachable: {err}",
                    redact(admin_url)
                );
            }
            eprintln!(
                "SKIP postgres test: no server at {} ({err}); set COFFER_TEST_DATABASE_URL, or COFFER_TEST_REQUIRE_POSTGRES=1 to fail instead",
                redact(admin_url)
            );
            None
        }
    }
}

/// `url` with its path (database name) replaced by `database`, query kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{authority}/{database}?{query}"),
        None => format!("{authority}/{database}"),
    }
}

fn database_of(url: &str) -> &str {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    base.rsplit_once('/').map_or("", |(_, db)| db)
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    match url[scheme_end..].find('@') {
        Some(at) => {
            let userinfo = &url[scheme_end..scheme_end + at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!(
                "{}{user}@{}",
                &url[..scheme_end],
                &url[scheme_end + at + 1..]
            )
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_the_database_name_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "db1"),
            "postgres://u:p@h:5432/db1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "db1"), "postgres://h/db1");
        assert_eq!(
            database_of("postgres://h:1/coffer_test_x?a=b"),
            "coffer_test_x"
        );
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u@h/db");
        assert!(!redact("postgres://u:secret@h/db").contains("secret"));
    }
}
