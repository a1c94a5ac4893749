//! The serve loop: one tonic server carrying SecretsService, VaultService,
//! health and reflection (v1 and v1alpha) on a listener the caller bound, with
//! bounded message sizes, plus the background tasks (health watcher, reaper)
//! and, when given a listener, the Prometheus `/metrics` endpoint. Every call
//! passes the per-RPC layer of [`crate::observe`] (span, request id, log
//! line, metrics). SecretsService and VaultService calls are then
//! authenticated and held to the caller's request rate ([`crate::limits`])
//! before their handler runs; health and reflection are not. The transport is plaintext (dev mode only) or mutual TLS
//! ([`Mtls`]: the TLS configuration and the role policy, reloadable together).
//!
//! Shutdown, when the caller's future resolves: health NOT_SERVING for every
//! service at once, WatchSecrets streams end, the listener closes and
//! connections are told to go away (new calls are refused), in-flight calls
//! finish within the grace period;
//! calls still running after it are cut (they answer UNAVAILABLE) and
//! `serve` returns `Ok` all the same, with a warning naming how many.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use coffer_proto::v1::secrets_service_server::SecretsServiceServer;
use coffer_proto::v1::vault_service_server::VaultServiceServer;
use futures::FutureExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::app::{Coffer, spawn_reaper};
use crate::grpc::auth::Authenticator;
use crate::grpc::authz::{Authorizer, PolicyFileError, SharedPolicy, load_policy_file};
use crate::grpc::{SecretsApi, VaultsApi};
use crate::health;
use crate::limits::{RateLimited, RateLimiter, RateLimits};
use crate::observe::metrics::{self, MethodLabels, MetricsError};
use crate::observe::{InFlight, RpcLayer};
use crate::tls::{ReloadableTls, TlsError, TlsFiles, incoming};

/// How long cut calls get to send their UNAVAILABLE answer after the grace
/// period before `serve` returns.
const CUT_FLUSH: Duration = Duration::from_millis(500);

/// How long shutdown waits for queued audit events to be committed.
const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Server settings that are not part of the use cases. Not `Clone`: it owns
/// the metrics listener.
#[derive(Debug)]
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
    /// How long in-flight calls may run on after shutdown starts; calls
    /// still running then are cut.
    pub shutdown_grace: Duration,
    /// Where to serve Prometheus text at `/metrics` (HTTP/1.1, plaintext);
    /// `None` records no metrics at all.
    pub metrics_listener: Option<TcpListener>,
    /// Where to serve `grpc.health.v1` alone, in plaintext, for probes that
    /// cannot present a client certificate (Kubernetes `grpc:` probes, a
    /// container HEALTHCHECK). It reports the same status as the API port and
    /// keeps answering (NOT_SERVING) while the server drains.
    pub health_listener: Option<TcpListener>,
    /// Per-principal request rates; the default limits nobody.
    pub rate_limits: RateLimits,
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
            shutdown_grace: Duration::from_secs(20),
            metrics_listener: None,
            health_listener: None,
            rate_limits: RateLimits::default(),
        }
    }

    /// Defaults for a server with mutual TLS and a role policy.
    pub fn mtls(mtls: &Mtls) -> Self {
        ServeOptions {
            authenticator: Authenticator::mtls(),
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
    #[error("cannot serve metrics: {0}")]
    Metrics(#[from] MetricsError),
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

/// Every method the server answers, for the `method` metric label.
fn served_methods() -> MethodLabels {
    MethodLabels::from_descriptor_sets(&[
        coffer_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])
}

/// Serves until `shutdown` resolves, then drains in-flight RPCs (bounded by
/// `options.shutdown_grace`) and returns.
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
        (Authenticator::Mtls(_), None) => {
            return Err(ServeError::Options(
                "mtls authentication needs tls settings",
            ));
        }
        (Authenticator::DevAdmin, None) | (Authenticator::Mtls(_), Some(_)) => {}
    }
    // Everything that can fail comes before the first task is spawned.
    let metrics_endpoint = match options.metrics_listener {
        Some(listener) => Some((listener, metrics::prometheus()?)),
        None => None,
    };
    let reflection_v1 = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::set_all(&reporter, ServingStatus::NotServing).await;
    let watcher = health::spawn_watcher(
        coffer.store().clone(),
        reporter.clone(),
        options.health_interval,
    );
    let reaper = spawn_reaper(coffer.clone(), options.reaper_interval);
    let in_flight = InFlight::default();
    // Stops the side listeners (metrics, health-only) after the drain.
    let stop_metrics = CancellationToken::new();
    let health_only = options.health_listener.map(|listener| {
        let service = health_service.clone();
        let stop = stop_metrics.clone();
        tokio::spawn(async move {
            let served = Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "the health listener failed");
            }
        })
    });
    let metrics = metrics_endpoint.map(|(listener, recorder)| {
        metrics::spawn_endpoint(
            listener,
            recorder,
            metrics::Sampled {
                store: coffer.store().clone(),
                in_flight: in_flight.clone(),
            },
            stop_metrics.clone(),
        )
    });

    // Size limits live on the generated servers; the rate limiter wraps
    // them inside the authenticating interceptor, so it sees the principal.
    // It reads role grants from the same live policy as the handlers.
    let limiter = RateLimiter::new(options.rate_limits, options.policy.clone());
    let methods = served_methods();
    let secrets = InterceptedService::new(
        RateLimited::new(
            SecretsServiceServer::new(SecretsApi::new(
                coffer.clone(),
                Authorizer::new(options.policy.clone()).with_audit(coffer.audit_writer()),
            ))
            .max_decoding_message_size(options.max_decoding_message_size)
            .max_encoding_message_size(options.max_encoding_message_size),
            limiter.clone(),
            methods.clone(),
        ),
        options.authenticator.clone(),
    );
    let vaults = InterceptedService::new(
        RateLimited::new(
            VaultServiceServer::new(VaultsApi::new(
                coffer.clone(),
                Authorizer::new(options.policy.clone()).with_audit(coffer.audit_writer()),
            ))
            .max_decoding_message_size(options.max_decoding_message_size)
            .max_encoding_message_size(options.max_encoding_message_size),
            limiter,
            methods.clone(),
        ),
        options.authenticator.clone(),
    );

    let (drain, draining) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder()
        .timeout(options.request_timeout)
        .layer(RpcLayer::new(methods, in_flight.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(secrets)
        .add_service(vaults);
    let draining = async {
        let _ = draining.await;
    };
    let mut acceptor = None;
    let server = match options.tls {
        None => router
            .serve_with_incoming_shutdown(plaintext_incoming(listener), draining)
            .boxed(),
        Some(tls) => {
            let (connections, task) = incoming(listener, tls);
            acceptor = Some(task);
            router
                .serve_with_incoming_shutdown(connections, draining)
                .boxed()
        }
    };
    let result = run_until_drained(
        server,
        shutdown,
        Drain {
            coffer: &coffer,
            watcher: &watcher,
            reporter: &reporter,
            send: drain,
            in_flight: &in_flight,
            grace: options.shutdown_grace,
        },
    )
    .await;
    if let Some(acceptor) = acceptor {
        acceptor.abort();
    }
    watcher.abort();
    reaper.abort();
    // Denials are queued without waiting; commit them before returning
    // (bounded: a database that is gone must not hold the exit).
    if tokio::time::timeout(AUDIT_FLUSH_TIMEOUT, coffer.audit_writer().flush())
        .await
        .is_err()
    {
        tracing::warn!("the audit writer did not flush in time; queued denial events may be lost");
    }
    stop_metrics.cancel();
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    if let Some(health_only) = health_only {
        let _ = health_only.await;
    }
    result?;
    tracing::info!("server stopped");
    Ok(())
}

/// What shutdown needs to stop the server in order.
struct Drain<'a> {
    coffer: &'a Coffer,
    watcher: &'a tokio::task::JoinHandle<()>,
    reporter: &'a tonic_health::server::HealthReporter,
    send: tokio::sync::oneshot::Sender<()>,
    in_flight: &'a InFlight,
    grace: Duration,
}

/// Runs the server until `shutdown` resolves, then: NOT_SERVING, drain,
/// and after the grace period cut what is left.
async fn run_until_drained(
    server: futures::future::BoxFuture<'_, Result<(), tonic::transport::Error>>,
    shutdown: impl Future<Output = ()> + Send,
    drain: Drain<'_>,
) -> Result<(), tonic::transport::Error> {
    let mut server = server;
    tokio::select! {
        // Only a transport failure ends the server before shutdown.
        result = &mut server => return result,
        () = shutdown => {}
    }
    let started = Instant::now();
    // The watcher would turn health back to SERVING on its next ping.
    drain.watcher.abort();
    health::set_all(drain.reporter, ServingStatus::NotServing).await;
    // Change streams never end on their own; they must not hold the drain.
    drain.coffer.close_watches();
    tracing::info!(
        in_flight = drain.in_flight.count(),
        grace_ms = millis(drain.grace),
        "shutting down: health NOT_SERVING, refusing new calls, draining in-flight calls"
    );
    let _ = drain.send.send(());
    match tokio::time::timeout(drain.grace, &mut server).await {
        Ok(result) => {
            tracing::info!(
                drained_ms = millis(started.elapsed()),
                "every in-flight call finished"
            );
            result
        }
        Err(_) => {
            let cut = drain.in_flight.count();
            tracing::warn!(
                cut,
                grace_ms = millis(drain.grace),
                "grace period over; cutting the calls still in flight"
            );
            drain.in_flight.cut();
            // Let the cut calls' answers reach their callers; whatever is
            // still open after that ends with the process.
            let _ = tokio::time::timeout(CUT_FLUSH, &mut server).await;
            Ok(())
        }
    }
}

/// Plaintext connections with Nagle's algorithm off (as the TLS accept loop
/// does): a response written in several frames would otherwise wait for the
/// peer's delayed ACK, adding ~40 ms to batch and bindings resolves.
fn plaintext_incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
