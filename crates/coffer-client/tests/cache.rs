//! CachedResolver against real servers: a rotation reaches the cache within
//! a second with no TTL involved (SQLite and PostgreSQL); reads are served from memory; while the
//! server is down cached values still serve (until the TTL), and the cache
//! catches up with what changed once a server is back on the same database;
//! an expired resume token drops the whole cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use coffer_client::{CacheEvent, CacheOptions, CachedResolver, Client, ClientConfig, RetryPolicy};
use coffer_server::app::WatchOptions;
use coffer_tests::{Db, TestServer, e2e_test};
use common::*;
use tonic::Code;

const HOUR: Duration = Duration::from_secs(3600);

fn options(ttl: Duration) -> CacheOptions {
    CacheOptions {
        ttl,
        reconnect: RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        },
        ..Default::default()
    }
}

fn config(url: &str) -> ClientConfig {
    ClientConfig::plaintext(url, TENANT).with_retry(RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    })
}

/// How many resolves of `key` the server has audited.
async fn resolves_audited(server: &TestServer, key: &str) -> usize {
    server
        .secrets()
        .list_audit_events(v1::ListAuditEventsRequest {
            parent: PARENT.into(),
            filter: format!(r#"action = "secret.resolve" AND secret = "{}""#, name(key)),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .audit_events
        .len()
}

e2e_test!(
    a_rotation_reaches_the_next_resolve_within_a_second,
    |server: TestServer| async move {
        create(&server, "db", b"first-value").await;
        let client = Client::connect(config(&format!("http://{}", server.addr)))
            .await
            .unwrap();
        let cache = CachedResolver::start(client, options(HOUR)).await.unwrap();
        assert!(cache.is_watching());

        let value = cache.resolve("db").await.unwrap();
        assert_eq!((value.expose(), value.version()), (&b"first-value"[..], 1));
        // Served from memory: the server audits one resolve, not two.
        assert_eq!(cache.resolve("db").await.unwrap().expose(), b"first-value");
        assert_eq!(resolves_audited(&server, "db").await, 1);

        let mut events = cache.subscribe();
        let rotated_at = Instant::now();
        let version = rotate(&server, "db", b"second-value-longer").await;
        wait_for(&mut events, Duration::from_secs(1), |e| {
            rotated(e, "db", version)
        })
        .await;
        let value = cache.resolve("db").await.unwrap();
        assert_eq!(value.expose(), b"second-value-longer");
        assert_eq!(value.version(), version);
        assert!(
            rotated_at.elapsed() < Duration::from_secs(1),
            "{:?}",
            rotated_at.elapsed()
        );
        assert_eq!(resolves_audited(&server, "db").await, 2);
        // A change to another secret leaves this entry cached.
        create(&server, "other", b"x").await;
        wait_for(
            &mut events,
            Duration::from_secs(1),
            |e| matches!(e, CacheEvent::Changed(c) if c.secret == name("other")),
        )
        .await;
        cache.resolve("db").await.unwrap();
        assert_eq!(resolves_audited(&server, "db").await, 2);
    }
);

e2e_test!(
    cached_values_serve_while_the_server_is_down_and_it_catches_up_after,
    |first: TestServer| async move {
        // The same deployment after a restart: another server on the same
        // SQLite file, reached through the same address once the first is gone.
        let second = first.start_replica(WatchOptions::default()).await;
        create(&first, "db", b"before-outage").await;
        let mut proxy = Proxy::start(first.addr).await;
        let client = Client::connect(config(&proxy.url())).await.unwrap();
        let cache = CachedResolver::start(client, options(HOUR)).await.unwrap();
        let mut events = cache.subscribe();
        assert_eq!(
            cache.resolve("db").await.unwrap().expose(),
            b"before-outage"
        );

        proxy.down().await;
        first.stop().await;
        wait_for(&mut events, Duration::from_secs(5), |e| {
            *e == CacheEvent::Disconnected
        })
        .await;
        assert!(!cache.is_watching());
        // Down: served from the cache.
        assert_eq!(
            cache.resolve("db").await.unwrap().expose(),
            b"before-outage"
        );
        // Changed while this client cannot see it.
        let version = rotate(&second, "db", b"during-outage").await;
        assert_eq!(
            cache.resolve("db").await.unwrap().expose(),
            b"before-outage"
        );

        proxy.up(second.addr).await;
        wait_for(&mut events, Duration::from_secs(10), |e| {
            *e == CacheEvent::Reconnected
        })
        .await;
        // The missed rotation is replayed from the resume token.
        wait_for(&mut events, Duration::from_secs(5), |e| {
            rotated(e, "db", version)
        })
        .await;
        assert!(cache.is_watching());
        let value = cache.resolve("db").await.unwrap();
        assert_eq!(
            (value.expose(), value.version()),
            (&b"during-outage"[..], version)
        );

        // And it keeps following the new server.
        let version = rotate(&second, "db", b"after-outage").await;
        wait_for(&mut events, Duration::from_secs(1), |e| {
            rotated(e, "db", version)
        })
        .await;
        assert_eq!(cache.resolve("db").await.unwrap().expose(), b"after-outage");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_the_ttl_while_the_stream_is_down() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    create(&server, "db", b"v1").await;
    let mut proxy = Proxy::start(server.addr).await;
    let client = Client::connect(config(&proxy.url())).await.unwrap();
    let ttl = Duration::from_millis(500);
    let cache = CachedResolver::start(client, options(ttl)).await.unwrap();
    let mut events = cache.subscribe();
    cache.resolve("db").await.unwrap();
    // While the stream is up, the TTL does not apply.
    tokio::time::sleep(ttl * 2).await;
    cache.resolve("db").await.unwrap();
    assert_eq!(resolves_audited(&server, "db").await, 1);

    proxy.down().await;
    wait_for(&mut events, Duration::from_secs(5), |e| {
        *e == CacheEvent::Disconnected
    })
    .await;
    assert_eq!(cache.resolve("db").await.unwrap().expose(), b"v1");
    tokio::time::sleep(ttl).await;
    let err = cache.resolve("db").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");

    proxy.up(server.addr).await;
    wait_for(&mut events, Duration::from_secs(10), |e| {
        *e == CacheEvent::Reconnected
    })
    .await;
    assert_eq!(cache.resolve("db").await.unwrap().expose(), b"v1");
    assert_eq!(resolves_audited(&server, "db").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_resume_token_drops_the_whole_cache() {
    let first = TestServer::start(Db::Sqlite).await.unwrap();
    // A server that replays at most 3 events.
    let strict = first
        .start_replica(WatchOptions {
            max_replay_events: 3,
            ..Default::default()
        })
        .await;
    create(&first, "db", b"v1").await;
    let mut proxy = Proxy::start(first.addr).await;
    let client = Client::connect(config(&proxy.url())).await.unwrap();
    let cache = CachedResolver::start(client, options(HOUR)).await.unwrap();
    let mut events = cache.subscribe();
    cache.resolve("db").await.unwrap();

    proxy.down().await;
    wait_for(&mut events, Duration::from_secs(5), |e| {
        *e == CacheEvent::Disconnected
    })
    .await;
    for key in ["a", "b", "c", "d", "e"] {
        create(&first, key, b"x").await;
    }
    proxy.up(strict.addr).await;
    wait_for(&mut events, Duration::from_secs(10), |e| {
        *e == CacheEvent::Reset
    })
    .await;
    wait_for(&mut events, Duration::from_secs(10), |e| {
        *e == CacheEvent::Reconnected
    })
    .await;
    // Nothing cached survived: the next read goes to the server.
    cache.resolve("db").await.unwrap();
    assert_eq!(resolves_audited(&first, "db").await, 2);
}
