//! The metadata cache of the resolve path across replicas (ADR 0010). Two
//! servers share one database; one (the reader) keeps resolving while the
//! other (the writer) rotates, disables and destroys versions, changes a
//! binding, disables the secret and its vault, and deletes it. On
//! PostgreSQL the reader hears each commit through LISTEN/NOTIFY and shows it
//! within a bound; on SQLite, where notices stay in their process, the
//! cache's TTL is the bound. Also: a hot resolve reads no metadata from the
//! database, the cache can be turned off, and a dropped listener connection
//! turns the cache off until it is back (no stale value in between).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use coffer_proto::v1::{self, secret};
use coffer_server::app::{CofferOptions, MetadataCacheOptions};
use coffer_tests::{Db, TestServer, reason, wait_until};
use tonic::Code;

const PARENT: &str = "tenants/acme";

fn secret_name(key: &str) -> String {
    format!("{PARENT}/secrets/{key}")
}

fn consumer() -> Option<v1::Consumer> {
    Some(v1::Consumer {
        kind: "agent".into(),
        id: "a1".into(),
    })
}

async fn create(server: &TestServer, key: &str, value: &[u8], vault: &str) {
    server
        .secrets()
        .create_secret(v1::CreateSecretRequest {
            parent: PARENT.into(),
            secret_id: key.into(),
            secret: Some(v1::Secret {
                vault: vault.into(),
                ..Default::default()
            }),
            source: Some(v1::create_secret_request::Source::Value(value.to_vec())),
            request_id: String::new(),
        })
        .await
        .unwrap();
}

/// What a resolve gave: the value, or the error's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Value(Vec<u8>),
    Refused(Code, String),
}

fn refused(code: Code, why: &str) -> Outcome {
    Outcome::Refused(code, why.to_owned())
}

async fn resolve_as(server: &TestServer, key: &str, version: &str, bound: bool) -> Outcome {
    let (consumer, config_path) = if bound {
        (consumer(), "env.API".to_owned())
    } else {
        (None, String::new())
    };
    let result = server
        .secrets()
        .resolve_secret(v1::ResolveSecretRequest {
            name: secret_name(key),
            version: version.into(),
            consumer,
            config_path,
            context: HashMap::new(),
        })
        .await;
    match result {
        Ok(response) => Outcome::Value(response.into_inner().value),
        Err(status) => Outcome::Refused(status.code(), reason(&status)),
    }
}

async fn resolve(server: &TestServer, key: &str, version: &str) -> Outcome {
    resolve_as(server, key, version, false).await
}

/// Resolves on `reader` until it gives `expected`; how long that took.
async fn seen_within(
    reader: &TestServer,
    key: &str,
    version: &str,
    bound: bool,
    expected: &Outcome,
    bound_time: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let outcome = resolve_as(reader, key, version, bound).await;
        if &outcome == expected {
            break;
        }
        assert!(
            start.elapsed() < bound_time,
            "the reader did not show {expected:?} for {key}@{version:?} within {bound_time:?}; last: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

/// Every change kind made on `writer`, each shown on `reader` within
/// `bound`; returns the slowest propagation.
async fn writes_reach_the_reader(
    writer: &TestServer,
    reader: &TestServer,
    bound: Duration,
) -> Duration {
    let mut slowest = Duration::ZERO;
    let mut note = |took: Duration| slowest = slowest.max(took);
    let value = |v: &[u8]| Outcome::Value(v.to_vec());

    create(writer, "api", b"api-v1", "").await;
    // A notice of the create may still be on its way and drop the first
    // fill; soon a resolve finds both its records in the cache.
    wait_until(Duration::from_secs(2), || async {
        let before = reader.coffer.metadata_cache_stats().hits;
        assert_eq!(resolve(reader, "api", "").await, value(b"api-v1"));
        reader.coffer.metadata_cache_stats().hits >= before + 2
    })
    .await
    .expect("a hot resolve reads its secret and version from the cache");

    // Rotate: the current version moves.
    let mut secrets = writer.secrets();
    secrets
        .rotate_secret(v1::RotateSecretRequest {
            name: secret_name("api"),
            source: Some(v1::rotate_secret_request::Source::Value(b"api-v2".to_vec())),
            ..Default::default()
        })
        .await
        .unwrap();
    note(seen_within(reader, "api", "", false, &value(b"api-v2"), bound).await);

    // Disable, then destroy, an old version.
    assert_eq!(resolve(reader, "api", "1").await, value(b"api-v1"));
    secrets
        .disable_secret_version(v1::DisableSecretVersionRequest {
            name: format!("{}/versions/1", secret_name("api")),
            etag: String::new(),
        })
        .await
        .unwrap();
    let disabled = resolve(writer, "api", "1").await;
    assert!(
        matches!(disabled, Outcome::Refused(Code::FailedPrecondition, _)),
        "{disabled:?}"
    );
    note(seen_within(reader, "api", "1", false, &disabled, bound).await);
    secrets
        .destroy_secret_version(v1::DestroySecretVersionRequest {
            name: format!("{}/versions/1", secret_name("api")),
            etag: String::new(),
        })
        .await
        .unwrap();
    let destroyed = resolve(writer, "api", "1").await;
    assert!(
        matches!(destroyed, Outcome::Refused(Code::FailedPrecondition, _)),
        "{destroyed:?}"
    );
    note(seen_within(reader, "api", "1", false, &destroyed, bound).await);

    // Bind, then unbind, a consumer.
    let binding = secrets
        .create_binding(v1::CreateBindingRequest {
            parent: PARENT.into(),
            binding: Some(v1::Binding {
                consumer: consumer(),
                secret: secret_name("api"),
                config_path: "env.API".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    note(seen_within(reader, "api", "", true, &value(b"api-v2"), bound).await);
    secrets
        .delete_binding(v1::DeleteBindingRequest {
            name: binding.name,
            etag: binding.etag,
        })
        .await
        .unwrap();
    note(
        seen_within(
            reader,
            "api",
            "",
            true,
            &refused(Code::FailedPrecondition, "NOT_BOUND"),
            bound,
        )
        .await,
    );

    // Disable the secret, enable it, delete it.
    let set_state = |state: secret::State| v1::UpdateSecretRequest {
        secret: Some(v1::Secret {
            name: secret_name("api"),
            state: state as i32,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["state".into()],
        }),
    };
    secrets
        .update_secret(set_state(secret::State::Disabled))
        .await
        .unwrap();
    let not_active = refused(Code::FailedPrecondition, "SECRET_NOT_ACTIVE");
    note(seen_within(reader, "api", "", false, &not_active, bound).await);
    secrets
        .update_secret(set_state(secret::State::Active))
        .await
        .unwrap();
    note(seen_within(reader, "api", "", false, &value(b"api-v2"), bound).await);
    secrets
        .delete_secret(v1::DeleteSecretRequest {
            name: secret_name("api"),
            ..Default::default()
        })
        .await
        .unwrap();
    note(seen_within(reader, "api", "", false, &not_active, bound).await);

    // Disable a vault.
    let vault = format!("{PARENT}/vaults/main");
    writer
        .vaults()
        .create_vault(v1::CreateVaultRequest {
            parent: PARENT.into(),
            vault_id: "main".into(),
            vault: Some(v1::Vault {
                provider: "local_encrypted".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    create(writer, "vaulted", b"vaulted-v1", &vault).await;
    note(seen_within(reader, "vaulted", "", false, &value(b"vaulted-v1"), bound).await);
    writer
        .vaults()
        .disable_vault(v1::DisableVaultRequest {
            name: vault,
            etag: String::new(),
        })
        .await
        .unwrap();
    note(
        seen_within(
            reader,
            "vaulted",
            "",
            false,
            &refused(Code::FailedPrecondition, "VAULT_DISABLED"),
            bound,
        )
        .await,
    );
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_sees_every_write_on_postgres() {
    let Some(writer) = TestServer::start(Db::Postgres).await else {
        return;
    };
    let reader = writer.start_replica_with(CofferOptions::default()).await;
    // Far below the TTL: only a notice can explain it.
    let slowest = writes_reach_the_reader(&writer, &reader, Duration::from_secs(2)).await;
    eprintln!("slowest propagation to the replica: {slowest:?}");
    assert!(reader.coffer.metadata_cache_stats().invalidations > 0);
}

/// Another process on the same SQLite file (here a second server on it)
/// sees every kind of write through the change marks, long before the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_sqlite_sees_every_write_through_change_marks() {
    let writer = TestServer::start(Db::Sqlite).await.unwrap();
    let reader = writer.start_replica_with(CofferOptions::default()).await;
    assert_eq!(
        CofferOptions::default().metadata_cache.ttl,
        Duration::from_secs(60)
    );
    // Far below the TTL: only a change mark can explain it.
    let slowest = writes_reach_the_reader(&writer, &reader, Duration::from_secs(2)).await;
    eprintln!("slowest propagation to the other process: {slowest:?}");
    assert!(reader.coffer.metadata_cache_stats().invalidations > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_sqlite_is_bounded_by_the_ttl() {
    let writer = TestServer::start(Db::Sqlite).await.unwrap();
    let ttl = Duration::from_millis(300);
    let reader = writer
        .start_replica_with(CofferOptions {
            metadata_cache: MetadataCacheOptions {
                ttl,
                ..MetadataCacheOptions::default()
            },
            ..CofferOptions::default()
        })
        .await;
    writes_reach_the_reader(&writer, &reader, ttl * 5).await;
}

/// A write made while the replica's listener is cut off still shows there:
/// the cache is off until the listener is back, then starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listener_connection_never_serves_stale_records() {
    let Some(writer) = TestServer::start(Db::Postgres).await else {
        return;
    };
    let reader = writer.start_replica_with(CofferOptions::default()).await;
    create(&writer, "api", b"api-v1", "").await;
    assert_eq!(
        resolve(&reader, "api", "").await,
        Outcome::Value(b"api-v1".to_vec())
    );

    for round in 2..=4 {
        // Ends every LISTEN connection on this database: both replicas'.
        coffer_store::testing::execute_raw(
            &writer.store,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%' \
             AND pid <> pg_backend_pid()",
        )
        .await;
        let value = format!("api-v{round}").into_bytes();
        writer
            .secrets()
            .rotate_secret(v1::RotateSecretRequest {
                name: secret_name("api"),
                source: Some(v1::rotate_secret_request::Source::Value(value.clone())),
                ..Default::default()
            })
            .await
            .unwrap();
        seen_within(
            &reader,
            "api",
            "",
            false,
            &Outcome::Value(value),
            Duration::from_secs(3),
        )
        .await;
    }
    // And the cache works again once the listener is back.
    let before = reader.coffer.metadata_cache_stats().hits;
    wait_until(Duration::from_secs(3), || async {
        resolve(&reader, "api", "").await;
        reader.coffer.metadata_cache_stats().hits > before
    })
    .await
    .expect("the cache serves again after the listener reconnects");
}

/// With the metadata cache off, every resolve reads the database and the
/// cache stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_can_be_turned_off() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let uncached = server
        .start_replica_with(CofferOptions {
            metadata_cache: MetadataCacheOptions::disabled(),
            ..CofferOptions::default()
        })
        .await;
    create(&server, "api", b"api-v1", "").await;
    for _ in 0..3 {
        assert_eq!(
            resolve(&uncached, "api", "").await,
            Outcome::Value(b"api-v1".to_vec())
        );
    }
    let stats = uncached.coffer.metadata_cache_stats();
    assert_eq!((stats.hits, stats.entries), (0, 0), "{stats:?}");
}

/// A BatchResolve that misses the cache reads its secrets and their
/// current versions in bulk first: every per-item lookup is then a hit,
/// instead of three reads per item; the values are the right ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_batch_resolve_reads_its_records_in_bulk() {
    const ITEMS: usize = 20;
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    for n in 0..ITEMS {
        create(&server, &format!("k{n}"), format!("v{n}").as_bytes(), "").await;
    }
    // A fresh replica: nothing cached yet.
    let cold = server.start_replica_with(CofferOptions::default()).await;
    let before = cold.coffer.metadata_cache_stats();
    let results = cold
        .secrets()
        .batch_resolve_secrets(v1::BatchResolveSecretsRequest {
            parent: PARENT.into(),
            requests: (0..ITEMS)
                .map(|n| v1::ResolveSecretRequest {
                    name: secret_name(&format!("k{n}")),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    use v1::batch_resolve_result::Result as Item;
    for (n, result) in results.into_iter().enumerate() {
        match result.result {
            Some(Item::Resolved(resolved)) => {
                assert_eq!(resolved.value, format!("v{n}").into_bytes())
            }
            other => panic!("item {n}: {other:?}"),
        }
    }
    let after = cold.coffer.metadata_cache_stats();
    assert_eq!(after.misses - before.misses, 0, "{after:?}");
    assert!(after.hits - before.hits >= 2 * ITEMS as u64, "{after:?}");
}

/// The cache holds at most its byte bound: resolving more secrets than fit
/// starts it over instead of growing, and every resolve still gives the
/// right value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_byte_bound() {
    const SECRETS: usize = 40;
    let max_bytes = 16 * 1024;
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    for n in 0..SECRETS {
        create(&server, &format!("k{n}"), format!("v{n}").as_bytes(), "").await;
    }
    let bounded = server
        .start_replica_with(CofferOptions {
            metadata_cache: MetadataCacheOptions {
                max_bytes,
                ..MetadataCacheOptions::default()
            },
            ..CofferOptions::default()
        })
        .await;
    let mut most_entries = 0;
    for round in 0..2 {
        for n in 0..SECRETS {
            assert_eq!(
                resolve(&bounded, &format!("k{n}"), "").await,
                Outcome::Value(format!("v{n}").into_bytes()),
                "round {round}, secret {n}"
            );
            let stats = bounded.coffer.metadata_cache_stats();
            assert!(stats.bytes <= max_bytes, "{stats:?}");
            most_entries = most_entries.max(stats.entries);
        }
    }
    let stats = bounded.coffer.metadata_cache_stats();
    // Two records (secret, version) per secret do not all fit: the cache
    // started over at least once, yet held more than a few at a time.
    assert!(most_entries < 2 * SECRETS, "{most_entries} {stats:?}");
    assert!(most_entries >= 8, "{most_entries} {stats:?}");
    assert!(stats.invalidations > 0, "{stats:?}");
}
