//! Server reflection v1 and v1alpha both list every service (each other
//! included) and resolve the error-detail types clients need to decode
//! `ErrorInfo` and `BadRequest`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer_tests::{Db, TestServer};
use tonic_reflection::pb::v1 as v1r;
use tonic_reflection::pb::v1alpha as v1a;

const SERVICES: [&str; 5] = [
    "coffer.v1.SecretsService",
    "coffer.v1.VaultService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_reflection_versions_list_every_service_and_error_details() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();

    let mut v1 = v1r::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let requests = vec![
        v1r::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1r::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        },
        v1r::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1r::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "google.rpc.ErrorInfo".into(),
                ),
            ),
        },
    ];
    let mut stream = v1
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let listed = stream.message().await.unwrap().unwrap();
    let Some(v1r::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("unexpected v1 response: {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in SERVICES {
        assert!(
            names.iter().any(|n| n == service),
            "v1 lacks {service}: {names:?}"
        );
    }
    let symbol = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(
            symbol.message_response,
            Some(v1r::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "google.rpc.ErrorInfo is not resolvable: {symbol:?}"
    );

    let mut alpha =
        v1a::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let request = v1a::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1a::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let listed = stream.message().await.unwrap().unwrap();
    let Some(v1a::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("unexpected v1alpha response: {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in SERVICES {
        assert!(
            names.iter().any(|n| n == service),
            "v1alpha lacks {service}: {names:?}"
        );
    }
    server.stop().await;
}
