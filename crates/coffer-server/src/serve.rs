//! The serve loop: one tonic server carrying SecretsService, VaultService,
//! health and reflection (v1 and v1alpha) on a listener the caller bound, with
//! bounded message sizes, plus the background tasks (health watcher, reaper).
//! The transport is plaintext (dev mode only) or mutual TLS ([`Mtls`]: the
//! TLS configuration and the role policy, reloadable together).
//! Shutdown: health NOT_SERVING first, then in-flight RPCs drain.

use std::future::Future;
use std::path::PathBuf;
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
use crate::grpc::authz::{Authorizer, PolicyFileError, SharedPolicy, load_policy_file};
use crate::grpc::{SecretsApi, VaultsApi};
use crate::health;
use crate::tls::{ReloadableTls, TlsError, TlsFiles, incoming};

/// Server settings that are not part of the use cases.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How callers are identified; must be `Mtls` exactly when `tls` is set.
    pub authenticator: Authenticator,
    /// The role policy every handler checks.
    pub policy: SharedPolicy,
    /// Mutual TLS; `None` serves plaintext (dev mode).
    pub tls: Option<ReloadableTls>,
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
            policy: SharedPolicy::dev(),
            tls: None,
            max_decoding_message_size: 1024 * 1024,
            max_encoding_message_size: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(1),
            reaper_interval: Duration::from_secs(60),
        }
    }

    /// Defaults for a server with mutual TLS and a role policy.
    pub fn mtls(mtls: &Mtls) -> Self {
        ServeOptions {
            authenticator: Authenticator::Mtls,
            policy: mtls.policy.clone(),
            tls: Some(mtls.tls.clone()),
            ..ServeOptions::dev()
        }
    }
}

/// Where the mutual-TLS settings and the policy come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsFiles {
    pub tls: TlsFiles,
    pub policy_file: PathBuf,
}

/// Why the mTLS settings could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Policy(#[from] PolicyFileError),
}

/// The TLS configuration and the role policy of a running server; both are
/// reloaded from their files together (SIGHUP in the binary).
#[derive(Debug, Clone)]
pub struct Mtls {
    tls: ReloadableTls,
    policy: SharedPolicy,
    policy_file: PathBuf,
}

impl Mtls {
    pub fn load(files: MtlsFiles) -> Result<Self, MtlsError> {
        let policy = SharedPolicy::new(load_policy_file(&files.policy_file)?);
        let tls = ReloadableTls::load(files.tls)?;
        Ok(Mtls {
            tls,
            policy,
            policy_file: files.policy_file,
        })
    }

    /// Re-reads every file; all of it takes effect for new connections and
    /// calls, or, if anything fails, none of it does. Calls already running
    /// finish under the state they started with.
    pub fn reload(&self) -> Result<ReloadSummary, MtlsError> {
        let policy = load_policy_file(&self.policy_file)?;
        let tls = self.tls.prepare()?;
        let summary = ReloadSummary {
            grants: policy.len(),
        };
        self.tls.install(tls);
        self.policy.replace(policy);
        Ok(summary)
    }

    pub fn policy(&self) -> &SharedPolicy {
        &self.policy
    }
}

/// What a successful reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    pub grants: usize,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("building the reflection service failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("inconsistent serve options: {0}")]
    Options(&'static str),
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
    // Fail closed on a mismatch rather than serve certificates to everyone
    // as the dev admin, or serve plaintext to callers who cannot authenticate.
    match (&options.authenticator, &options.tls) {
        (Authenticator::DevAdmin, Some(_)) => {
            return Err(ServeError::Options(
                "the dev admin authenticator cannot be used with tls",
            ));
        }
        (Authenticator::Mtls, None) => {
            return Err(ServeError::Options(
                "mtls authentication needs tls settings",
            ));
        }
        (Authenticator::DevAdmin, None) | (Authenticator::Mtls, Some(_)) => {}
    }
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
        SecretsServiceServer::new(SecretsApi::new(
            coffer.clone(),
            Authorizer::new(options.policy.clone()).with_audit(coffer.audit_writer()),
        ))
        .max_decoding_message_size(options.max_decoding_message_size)
        .max_encoding_message_size(options.max_encoding_message_size),
        options.authenticator.clone(),
    );
    let vaults = InterceptedService::new(
        VaultServiceServer::new(VaultsApi::new(
            coffer.clone(),
            Authorizer::new(options.policy.clone()).with_audit(coffer.audit_writer()),
        ))
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

    let router = Server::builder()
        .timeout(options.request_timeout)
        .trace_fn(|request| tracing::info_span!("rpc", method = %request.uri().path()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(secrets)
        .add_service(vaults);
    let result = match options.tls {
        None => {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await
        }
        Some(tls) => {
            let (connections, acceptor) = incoming(listener, tls);
            let result = router
                .serve_with_incoming_shutdown(connections, shutdown)
                .await;
            acceptor.abort();
            result
        }
    };
    watcher.abort();
    reaper.abort();
    result?;
    tracing::info!("server stopped");
    Ok(())
}
