//! Prometheus metrics: the series Coffer records (names below), the one
//! process-wide recorder, and the `/metrics` listener.
//!
//! Recording goes through the `metrics` facade everywhere (here, the use
//! cases, `coffer-providers`); until [`crate::serve`] gets a metrics listener
//! no recorder is installed and every record is a no-op. The exporter only
//! renders text; `/metrics` is served over HTTP/1.1 by the hyper that tonic
//! already brings, on its own listener, with 404 for any other path.
//!
//! | series | type | labels |
//! |---|---|---|
//! | `coffer_rpc_requests_total` | counter | method, code |
//! | `coffer_rpc_duration_seconds` | histogram | method, code |
//! | `coffer_rpc_in_flight` | gauge | |
//! | `coffer_resolves_total` | counter | outcome (success, denied, failure) |
//! | `coffer_provider_call_duration_seconds` | histogram | provider, operation |
//! | `coffer_provider_errors_total` | counter | provider, operation, kind |
//! | `coffer_value_cache_hits_total` | counter | |
//! | `coffer_value_cache_misses_total` | counter | |
//! | `coffer_value_cache_evictions_total` | counter | |
//! | `coffer_value_cache_bytes` | gauge | |
//! | `coffer_audit_batch_size` | histogram | |
//! | `coffer_audit_flush_duration_seconds` | histogram | |
//! | `coffer_db_pool_connections` | gauge | pool, state (idle, in_use) |
//! | `coffer_db_pool_max_connections` | gauge | pool |
//! | `coffer_build_info` | gauge (1) | version |
//! | `coffer_rate_limited_total` | counter | method |
//!
//! `method` is the gRPC path (`/coffer.v1.SecretsService/ResolveSecret`) for
//! the methods this server serves and `unknown` for anything else, so a
//! caller cannot grow the label set; `code` is the canonical status name
//! (`OK`, `NOT_FOUND`, …).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use coffer_store::Store;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::InFlight;

pub use coffer_providers::instrumented::{
    CALL_DURATION as PROVIDER_CALL_DURATION, ERRORS as PROVIDER_ERRORS,
};

pub const RPC_REQUESTS: &str = "coffer_rpc_requests_total";
pub const RPC_DURATION: &str = "coffer_rpc_duration_seconds";
pub const RPC_IN_FLIGHT: &str = "coffer_rpc_in_flight";
pub const RESOLVES: &str = "coffer_resolves_total";
pub const VALUE_CACHE_HITS: &str = "coffer_value_cache_hits_total";
pub const VALUE_CACHE_MISSES: &str = "coffer_value_cache_misses_total";
pub const VALUE_CACHE_EVICTIONS: &str = "coffer_value_cache_evictions_total";
pub const VALUE_CACHE_BYTES: &str = "coffer_value_cache_bytes";
pub const METADATA_CACHE_HITS: &str = "coffer_metadata_cache_hits_total";
pub const METADATA_CACHE_MISSES: &str = "coffer_metadata_cache_misses_total";
pub const METADATA_CACHE_INVALIDATIONS: &str = "coffer_metadata_cache_invalidations_total";
pub const METADATA_CACHE_ENTRIES: &str = "coffer_metadata_cache_entries";
pub const METADATA_CACHE_BYTES: &str = "coffer_metadata_cache_bytes";
pub const AUDIT_BATCH_SIZE: &str = "coffer_audit_batch_size";
pub const AUDIT_FLUSH_DURATION: &str = "coffer_audit_flush_duration_seconds";
pub const DB_POOL_CONNECTIONS: &str = "coffer_db_pool_connections";
pub const DB_POOL_MAX_CONNECTIONS: &str = "coffer_db_pool_max_connections";
pub const BUILD_INFO: &str = "coffer_build_info";
pub const RATE_LIMITED: &str = "coffer_rate_limited_total";

/// Latency buckets (seconds): sub-millisecond cache hits up to the 30 s
/// request timeout.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Audit batch sizes, up to the writer's default maximum of 512.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often histograms are compacted and pool gauges sampled between
/// scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How long a scraper may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The method label of paths this server does not serve.
const UNKNOWN_METHOD: &str = "unknown";

/// The recorder, installed at most once per process and shared by every
/// server the process runs (tests run several).
static RECORDER: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Why the metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid histogram buckets: {0}")]
    Buckets(String),
    #[error("another metrics recorder is already installed in this process")]
    RecorderTaken,
}

/// The process-wide Prometheus recorder, installed (with Coffer's bucket
/// layout, descriptions and build info) on first use.
pub(crate) fn prometheus() -> Result<PrometheusHandle, MetricsError> {
    let mut installed = RECORDER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let buckets =
        |err: metrics_exporter_prometheus::BuildError| MetricsError::Buckets(err.to_string());
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
        .map_err(buckets)?
        .set_buckets_for_metric(Matcher::Full(AUDIT_BATCH_SIZE.to_owned()), &BATCH_BUCKETS)
        .map_err(buckets)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::RecorderTaken)?;
    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    *installed = Some(handle.clone());
    Ok(handle)
}

fn describe() {
    metrics::describe_counter!(
        RPC_REQUESTS,
        Unit::Count,
        "finished rpcs by method and code"
    );
    metrics::describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "rpc latency by method and code"
    );
    metrics::describe_gauge!(
        RPC_IN_FLIGHT,
        Unit::Count,
        "rpcs started and not finished (response streams included)"
    );
    metrics::describe_counter!(
        RESOLVES,
        Unit::Count,
        "resolved secret values by audited outcome (success, denied, failure)"
    );
    metrics::describe_histogram!(
        PROVIDER_CALL_DURATION,
        Unit::Seconds,
        "provider call latency by provider and operation"
    );
    metrics::describe_counter!(
        PROVIDER_ERRORS,
        Unit::Count,
        "failed provider calls by provider, operation and error kind"
    );
    metrics::describe_counter!(
        VALUE_CACHE_HITS,
        Unit::Count,
        "resolves served from the decrypted-value cache"
    );
    metrics::describe_counter!(
        VALUE_CACHE_MISSES,
        Unit::Count,
        "cacheable resolves that had to call their provider"
    );
    metrics::describe_counter!(
        VALUE_CACHE_EVICTIONS,
        Unit::Count,
        "values dropped from the cache for space or by a disable, destroy or purge"
    );
    metrics::describe_gauge!(
        VALUE_CACHE_BYTES,
        Unit::Bytes,
        "bytes held by the decrypted-value cache"
    );
    metrics::describe_counter!(
        METADATA_CACHE_HITS,
        Unit::Count,
        "secret, version, binding and vault lookups of the resolve path served from the metadata cache"
    );
    metrics::describe_counter!(
        METADATA_CACHE_MISSES,
        Unit::Count,
        "metadata lookups of the resolve path that read the database"
    );
    metrics::describe_counter!(
        METADATA_CACHE_INVALIDATIONS,
        Unit::Count,
        "metadata cache invalidations by scope (tenant: a committed write; all: notices may have been missed)"
    );
    metrics::describe_gauge!(
        METADATA_CACHE_ENTRIES,
        Unit::Count,
        "records held by the metadata cache"
    );
    metrics::describe_gauge!(
        METADATA_CACHE_BYTES,
        Unit::Bytes,
        "estimated heap held by the metadata cache's records"
    );
    metrics::describe_histogram!(
        AUDIT_BATCH_SIZE,
        Unit::Count,
        "events per group-committed audit batch"
    );
    metrics::describe_histogram!(
        AUDIT_FLUSH_DURATION,
        Unit::Seconds,
        "time to commit one audit batch"
    );
    metrics::describe_gauge!(
        DB_POOL_CONNECTIONS,
        Unit::Count,
        "open database connections by pool and state (idle, in_use)"
    );
    metrics::describe_gauge!(
        DB_POOL_MAX_CONNECTIONS,
        Unit::Count,
        "the most connections each database pool opens"
    );
    metrics::describe_gauge!(BUILD_INFO, "always 1; the version label names the build");
    metrics::describe_counter!(
        RATE_LIMITED,
        Unit::Count,
        "calls refused because their principal was over its request rate, by method"
    );
}

/// Counts one resolve by its audited outcome.
pub(crate) fn record_resolve(outcome: &'static str) {
    metrics::counter!(RESOLVES, "outcome" => outcome).increment(1);
}

/// What is sampled rather than recorded: gauges read when scraped (and
/// every few seconds), so the hot path pays nothing for them.
#[derive(Debug, Clone)]
pub(crate) struct Sampled {
    pub(crate) store: Store,
    pub(crate) in_flight: InFlight,
}

impl Sampled {
    fn sample(&self) {
        metrics::gauge!(RPC_IN_FLIGHT).set(self.in_flight.count() as f64);
        sample_pools(&self.store);
    }
}

/// Copies the store's pool usage into the pool gauges.
fn sample_pools(store: &Store) {
    for usage in store.pool_usage() {
        let pool = usage.pool;
        metrics::gauge!(DB_POOL_CONNECTIONS, "pool" => pool, "state" => "idle")
            .set(f64::from(usage.idle));
        metrics::gauge!(DB_POOL_CONNECTIONS, "pool" => pool, "state" => "in_use")
            .set(f64::from(usage.in_use));
        metrics::gauge!(DB_POOL_MAX_CONNECTIONS, "pool" => pool).set(f64::from(usage.max));
    }
}

/// The `method` label of each gRPC path this server serves.
#[derive(Debug, Clone, Default)]
pub(crate) struct MethodLabels(Arc<HashSet<Arc<str>>>);

impl MethodLabels {
    /// Every method of every service in the encoded descriptor sets.
    pub(crate) fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        let mut paths = HashSet::new();
        for set in sets {
            let set = match prost_types::FileDescriptorSet::decode(*set) {
                Ok(set) => set,
                Err(err) => {
                    tracing::warn!(error = %err, "a descriptor set does not decode; its methods are labelled unknown");
                    continue;
                }
            };
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    for method in &service.method {
                        let path = if package.is_empty() {
                            format!("/{}/{}", service.name(), method.name())
                        } else {
                            format!("/{package}.{}/{}", service.name(), method.name())
                        };
                        paths.insert(Arc::from(path));
                    }
                }
            }
        }
        MethodLabels(Arc::new(paths))
    }

    /// The label of a served path (the path itself, sharing the stored
    /// string); `None` for anything else, which is labelled [`Self::unknown`].
    pub(crate) fn label(&self, path: &str) -> Option<SharedString> {
        self.0
            .get(path)
            .map(|known| SharedString::from(known.clone()))
    }

    pub(crate) fn unknown() -> SharedString {
        SharedString::const_str(UNKNOWN_METHOD)
    }
}

/// Serves `/metrics` on `listener` until `stop` is cancelled, and keeps the
/// recorder compact and the pool gauges fresh in between scrapes.
pub(crate) fn spawn_endpoint(
    listener: TcpListener,
    handle: PrometheusHandle,
    sampled: Sampled,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let upkeep = {
        let (handle, sampled, stop) = (handle.clone(), sampled.clone(), stop.clone());
        async move {
            let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticker.tick() => {
                        handle.run_upkeep();
                        sampled.sample();
                    }
                }
            }
        }
    };
    tokio::spawn(async move {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, "metrics are served at /metrics");
        }
        tokio::join!(upkeep, accept(listener, handle, sampled, stop));
    })
}

async fn accept(
    listener: TcpListener,
    handle: PrometheusHandle,
    sampled: Sampled,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning.
                    tracing::warn!(error = %err, "metrics listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (handle, sampled, stop) = (handle.clone(), sampled.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&request, &handle, &sampled);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, "metrics connection ended with an error");
            }
        });
    }
}

fn answer(
    request: &Request<Incoming>,
    handle: &PrometheusHandle,
    sampled: &Sampled,
) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    sampled.sample();
    let mut response = Response::new(Full::new(Bytes::from(handle.render())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_methods_are_labelled_by_path_and_others_are_not() {
        let labels = MethodLabels::from_descriptor_sets(&[
            coffer_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]);
        for path in [
            "/coffer.v1.SecretsService/ResolveSecret",
            "/coffer.v1.VaultService/CreateVault",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(labels.label(path).as_deref(), Some(path));
        }
        for path in [
            "/coffer.v1.SecretsService/NoSuchMethod",
            "/evil/../path",
            "",
        ] {
            assert!(labels.label(path).is_none(), "{path}");
        }
    }
}
