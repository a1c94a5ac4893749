//! Mutual TLS at the handshake: no client certificate, one from another CA,
//! an expired one and (client side) a server certificate for another host are
//! all refused before any RPC runs; a certificate that names nobody gets
//! UNAUTHENTICATED; the principal is the URI SAN, else the CN.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer_proto::v1;
use coffer_proto::v1::secrets_service_client::SecretsServiceClient;
use coffer_tests::pki::{Pem, TestPki};
use coffer_tests::{Db, TestServer, tls_channel};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const POLICY: &str = r#"
[[grant]]
principal = "spiffe://corp/ops"
tenants = ["acme"]
roles = ["admin"]

[[grant]]
principal = "alice"
tenants = ["acme"]
roles = ["viewer"]
"#;

async fn server() -> TestServer {
    TestServer::start_mtls(Db::Sqlite, POLICY)
        .await
        .expect("sqlite server")
}

fn ca(server: &TestServer) -> &str {
    &server.mtls.as_ref().unwrap().pki.ca_pem
}

fn channel(server: &TestServer, identity: Option<&Pem>) -> Channel {
    tls_channel(server.addr, ca(server), identity, "localhost")
}

async fn health(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

async fn list(channel: Channel) -> Result<v1::ListSecretsResponse, tonic::Status> {
    SecretsServiceClient::new(channel)
        .list_secrets(v1::ListSecretsRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// A refused handshake never reaches a service: the call fails at the
/// transport (with TLS 1.3 the client may only notice when the server's
/// alert arrives mid-call, hence CANCELLED too), never with a service's answer.
fn assert_transport_refused(result: Result<(), tonic::Status>, what: &str) {
    let err = result.expect_err(what);
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "{what}: {err:?}"
    );
    assert_eq!(coffer_tests::reason(&err), "", "{what}: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_requires_a_client_certificate_from_the_ca() {
    let server = server().await;
    let pki = &server.mtls.as_ref().unwrap().pki;

    // A valid certificate works (the control for every refusal below).
    health(channel(&server, Some(&pki.client("alice"))))
        .await
        .expect("valid client certificate");

    assert_transport_refused(
        health(channel(&server, None)).await,
        "no client certificate",
    );
    assert_transport_refused(
        list(channel(&server, None)).await.map(|_| ()),
        "no client certificate, service call",
    );

    let other = TestPki::new("some other ca");
    assert_transport_refused(
        health(channel(&server, Some(&other.client("alice")))).await,
        "certificate from another ca",
    );
    assert_transport_refused(
        health(channel(&server, Some(&pki.expired_client("alice")))).await,
        "expired certificate",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_server_certificate_for_another_host() {
    let server = TestServer::start_mtls_for_hosts(Db::Sqlite, POLICY, &["coffer.other.example"])
        .await
        .expect("server started");
    let pki = &server.mtls.as_ref().unwrap().pki;
    let alice = pki.client("alice");
    let wrong_host = tls_channel(server.addr, &pki.ca_pem, Some(&alice), "localhost");
    assert_transport_refused(health(wrong_host).await, "server cert for another host");
    let right_host = tls_channel(
        server.addr,
        &pki.ca_pem,
        Some(&alice),
        "coffer.other.example",
    );
    health(right_host)
        .await
        .expect("the certificate's own name");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_is_the_uri_san_else_the_cn() {
    let server = server().await;
    let pki = &server.mtls.as_ref().unwrap().pki;

    // URI SAN: ops is admin and may create.
    let mut ops =
        SecretsServiceClient::new(channel(&server, Some(&pki.client("spiffe://corp/ops"))));
    ops.create_secret(v1::CreateSecretRequest {
        parent: "tenants/acme".into(),
        secret_id: "db".into(),
        source: Some(v1::create_secret_request::Source::Value(b"v".to_vec())),
        ..Default::default()
    })
    .await
    .expect("admin by uri san");

    // CN: alice is a viewer: she lists, she may not rotate.
    let listed = list(channel(&server, Some(&pki.client("alice"))))
        .await
        .unwrap();
    assert_eq!(listed.secrets.len(), 1);
    let err = SecretsServiceClient::new(channel(&server, Some(&pki.client("alice"))))
        .rotate_secret(v1::RotateSecretRequest {
            name: "tenants/acme/secrets/db".into(),
            source: Some(v1::rotate_secret_request::Source::Value(b"w".to_vec())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The policy matches principals exactly: a look-alike gets nothing.
    let lookalike = list(channel(&server, Some(&pki.client("spiffe://corp/ops/")))).await;
    assert_eq!(lookalike.unwrap_err().code(), Code::NotFound);

    // A certificate from the right CA that names nobody: UNAUTHENTICATED,
    // on every call (the server remembers each certificate's answer).
    let anonymous = channel(&server, Some(&pki.anonymous_client()));
    for _ in 0..2 {
        let err = list(anonymous.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    // ...while a named caller on its own connection still is who it is.
    let listed = list(channel(&server, Some(&pki.client("alice"))))
        .await
        .unwrap();
    assert_eq!(listed.secrets.len(), 1);
    server.stop().await;
}
