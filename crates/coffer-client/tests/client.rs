//! The client against real servers: mutual TLS from files and from PEM, the
//! convenience reads, a consumer-scoped cache following rotations and
//! binding changes, and retries on UNAVAILABLE only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use coffer_client::{
    CacheEvent, CacheOptions, CachedResolver, Client, ClientConfig, Error, RetryPolicy, TlsConfig,
};
use coffer_tests::{Db, TestServer};
use common::*;
use tonic::Code;

const POLICY: &str = r#"
[[grant]]
principal = "test:harness"
tenants = ["acme"]
roles = ["admin"]

[[grant]]
principal = "spiffe://corp/billing"
tenants = ["acme"]
roles = ["resolver"]
"#;

fn billing() -> v1::Consumer {
    v1::Consumer {
        kind: "service".into(),
        id: "billing".into(),
    }
}

async fn bind(server: &TestServer, key: &str, path: &str) {
    server
        .secrets()
        .create_binding(v1::CreateBindingRequest {
            parent: PARENT.into(),
            binding: Some(v1::Binding {
                secret: name(key),
                consumer: Some(billing()),
                config_path: path.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap();
}

/// A config for `principal` on an mTLS test server, from files.
fn mtls_files(server: &TestServer, principal: &str, dir: &std::path::Path) -> ClientConfig {
    let setup = server.mtls.as_ref().unwrap();
    let identity = setup.pki.client(principal);
    std::fs::write(dir.join("ca.pem"), &setup.pki.ca_pem).unwrap();
    std::fs::write(dir.join("client.pem"), &identity.cert).unwrap();
    std::fs::write(dir.join("client.key"), &identity.key).unwrap();
    ClientConfig::from_files(
        format!("https://127.0.0.1:{}", server.addr.port()),
        TENANT,
        &dir.join("ca.pem"),
        &dir.join("client.pem"),
        &dir.join("client.key"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_over_mtls_follows_rotations_and_binding_changes() {
    let server = TestServer::start_mtls(Db::Sqlite, POLICY).await.unwrap();
    create(&server, "db", b"db-one").await;
    create(&server, "api", b"api-one").await;
    bind(&server, "db", "env.DB").await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::connect(mtls_files(&server, "spiffe://corp/billing", dir.path()))
        .await
        .unwrap();

    let bindings = client.resolve_bindings(&billing(), "env.").await.unwrap();
    assert_eq!(bindings.get("env.DB").unwrap().expose(), b"db-one");
    assert_eq!(bindings.entries.len(), 1);
    // A resolver may not resolve without a consumer; the answer is not retried.
    let err = client.resolve("db").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");

    let cache = CachedResolver::start(
        client.clone(),
        CacheOptions {
            consumer: Some(billing()),
            ttl: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut events = cache.subscribe();
    let cached = cache.resolve_bindings(&billing(), "env.").await.unwrap();
    assert_eq!(cached, bindings);
    assert!(matches!(
        cache.resolve("db").await,
        Err(Error::OutOfScope(_))
    ));
    let other = v1::Consumer {
        kind: "service".into(),
        id: "other".into(),
    };
    assert!(matches!(
        cache.resolve_bindings(&other, "env.").await,
        Err(Error::OutOfScope(_))
    ));

    let rotated_at = Instant::now();
    let version = rotate(&server, "db", b"db-two").await;
    wait_for(&mut events, Duration::from_secs(1), |e| {
        rotated(e, "db", version)
    })
    .await;
    let fresh = cache.resolve_bindings(&billing(), "env.").await.unwrap();
    assert_eq!(fresh.get("env.DB").unwrap().expose(), b"db-two");
    assert!(rotated_at.elapsed() < Duration::from_secs(1));

    // A rotation of an unbound secret is not on this consumer's stream.
    rotate(&server, "api", b"api-two").await;
    bind(&server, "api", "env.API").await;
    let change = wait_for(&mut events, Duration::from_secs(2), |e| {
        matches!(e, CacheEvent::Changed(_))
    })
    .await;
    let CacheEvent::Changed(change) = change else {
        unreachable!()
    };
    assert_eq!(
        change.r#type,
        v1::secret_change_event::Type::BindingChanged as i32,
        "{change:?}"
    );
    let fresh = cache.resolve_bindings(&billing(), "env.").await.unwrap();
    assert_eq!(fresh.get("env.API").unwrap().expose(), b"api-two");
    assert_eq!(fresh.entries.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_from_pem_strings_and_a_certificate_outside_the_policy() {
    let server = TestServer::start_mtls(Db::Sqlite, POLICY).await.unwrap();
    create(&server, "db", b"db-one").await;
    bind(&server, "db", "env.DB").await;
    let setup = server.mtls.as_ref().unwrap();
    let url = format!("https://127.0.0.1:{}", server.addr.port());

    let identity = setup.pki.client("spiffe://corp/billing");
    let config = ClientConfig::from_pem(
        &url,
        TENANT,
        &setup.pki.ca_pem,
        &identity.cert,
        &identity.key,
    );
    let client = Client::connect(config).await.unwrap();
    let bindings = client.resolve_bindings(&billing(), "").await.unwrap();
    assert_eq!(bindings.get("env.DB").unwrap().expose(), b"db-one");

    // A server name checked against the certificate, not the URL.
    let identity = setup.pki.client("spiffe://corp/billing");
    let tls = TlsConfig::from_pem(&setup.pki.ca_pem, &identity.cert, &identity.key)
        .with_domain_name("localhost");
    let client = Client::connect(ClientConfig::plaintext(&url, TENANT).with_tls(tls))
        .await
        .unwrap();
    client.resolve_bindings(&billing(), "").await.unwrap();

    // A principal without a grant sees nothing (NOT_FOUND, no existence oracle).
    let stranger = setup.pki.client("spiffe://corp/stranger");
    let config = ClientConfig::from_pem(
        &url,
        TENANT,
        &setup.pki.ca_pem,
        &stranger.cert,
        &stranger.key,
    );
    let err = Client::connect(config)
        .await
        .unwrap()
        .resolve_bindings(&billing(), "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unavailable_is_retried() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    create(&server, "db", b"value").await;
    let mut proxy = Proxy::start(server.addr).await;
    let patient = RetryPolicy {
        max_attempts: 50,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    };
    let client =
        Client::connect(ClientConfig::plaintext(proxy.url(), TENANT).with_retry(patient.clone()))
            .await
            .unwrap();

    // NOT_FOUND is an answer: one attempt, audited once.
    let err = client.resolve("missing").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    let audited = server
        .secrets()
        .list_audit_events(v1::ListAuditEventsRequest {
            parent: PARENT.into(),
            filter: r#"action = "secret.resolve""#.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    assert_eq!(audited.len(), 1, "{audited:?}");

    // UNAVAILABLE is retried until the server is back.
    proxy.down().await;
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.up(server.addr).await;
        (proxy, server)
    });
    let started = Instant::now();
    let value = client.resolve("db").await.unwrap();
    assert_eq!(value.expose(), b"value");
    assert!(started.elapsed() >= Duration::from_millis(400));
    let (mut proxy, server) = back.await.unwrap();

    // ... but only a bounded number of times.
    proxy.down().await;
    let impatient = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    };
    let client =
        Client::connect_lazy(ClientConfig::plaintext(proxy.url(), TENANT).with_retry(impatient))
            .unwrap();
    let err = client.resolve("db").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    drop(server);
}
