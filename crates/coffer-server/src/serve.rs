//! The serve loop: one tonic server carrying SecretsService, VaultService,
//! health and reflection (v1 and v1alpha) on a listener the caller bound, with
//! bounded message sizes, plus the background tasks (health watcher, reaper).
//! Shutdown: health NOT_SERVING first, then in-flight RPCs drain.

use std::future::Future;
use std::time::Duration;

use coffer_proto::v1::secrets_service_server::SecretsServiceServer;
use coffer_proto::v1::vault_service_server::VaultServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::app::{Coffer, spawn_reaper};
use crate::grpc::auth::Authenticator;
use crate::grpc::{SecretsApi, VaultsApi};
use crate::health;

/// Server settings that are not part of the use cases.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub authenticator: Authenticator,
    /// The largest request accepted (a 64 KiB value plus metadata fits easily).
    pub max_decoding_message_size: usize,
    /// The largest response sent (a batch of 100 values of 64 KiB fits).
    pub max_encoding_message_size: usize,
    /// Server-side bound on every RPC.
    pub request_timeout: Duration,
    pub health_interval: Duration,
    pub reaper_interval: Duration,
}

impl ServeOptions {
    /// Defaults for `coffer serve --dev`.
    pub fn dev() -> Self {
        ServeOptions {
            authenticator: Authenticator::DevAdmin,
            max_decoding_message_size: 1024 * 1024,
            max_encoding_message_size: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(1),
            reaper_interval: Duration::from_secs(60),
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("building the reflection service failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Reflection knows every served service, both reflection versions included,
/// and the error-detail messages, so `grpcurl list`, `describe` and decoded
/// error details work whichever reflection version a client speaks.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(coffer_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// Serves until `shutdown` resolves, then drains in-flight RPCs and returns.
pub async fn serve(
    listener: TcpListener,
    coffer: Coffer,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::set_all(&reporter, ServingStatus::NotServing).await;
    let watcher = health::spawn_watcher(
        coffer.store().clone(),
        reporter.clone(),
        options.health_interval,
    );
    let reaper = spawn_reaper(coffer.clone(), options.reaper_interval);

    let reflection_v1 = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;

    // Size limits live on the generated servers; the interceptor wraps them.
    let secrets = InterceptedService::new(
        SecretsServiceServer::new(SecretsApi::new(coffer.clone()))
            .max_decoding_message_size(options.max_decoding_message_size)
            .max_encoding_message_size(options.max_encoding_message_size),
        options.authenticator.clone(),
    );
    let vaults = InterceptedService::new(
        VaultServiceServer::new(VaultsApi)
            .max_decoding_message_size(options.max_decoding_message_size)
            .max_encoding_message_size(options.max_encoding_message_size),
        options.authenticator.clone(),
    );

    let drain_reporter = reporter.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
        health::set_all(&drain_reporter, ServingStatus::NotServing).await;
    };

    let result = Server::builder()
        .timeout(options.request_timeout)
        .trace_fn(|request| tracing::info_span!("rpc", method = %request.uri().path()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(secrets)
        .add_service(vaults)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    watcher.abort();
    reaper.abort();
    result?;
    tracing::info!("server stopped");
    Ok(())
}
