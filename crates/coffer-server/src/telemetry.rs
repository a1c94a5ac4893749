//! Logs and traces: the process-wide `tracing` subscriber. Logs go to stderr
//! as JSON lines or human-readable text, filtered by the configured level (or
//! `RUST_LOG`). With an OTLP endpoint, spans also go to a collector over
//! OTLP/gRPC: the RPC spans, coffer's DEBUG spans (database and provider
//! calls, see [`exported`]) and INFO+ events as span events, whatever the log
//! level. [`TelemetryGuard`] flushes the export on shutdown.
//!
//! Nothing here filters values: spans and events carry names, methods, codes
//! and ids, never a request or a response body, so exporting them exports no
//! secret.

use std::io::{BufWriter, IsTerminal};
use std::time::Duration;

use anyhow::{Context, bail};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tokio::runtime::Runtime;
use tracing::{Level, Metadata};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter, fmt};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, event fields at the top level, with the
    /// enclosing spans (`span`, `spans`).
    Json,
    /// Human-readable lines, colored when stderr is a terminal.
    Pretty,
}

/// What [`init`] installs.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// An `EnvFilter` directive (`info`, `coffer_server=debug,info`);
    /// `RUST_LOG`, when set, takes its place.
    pub log_level: String,
    pub log_format: LogFormat,
    /// `http://host:port` of an OTLP/gRPC collector; `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported resource.
    pub service_name: String,
    /// The share of new traces sampled, 0.0 to 1.0; a call that arrives with
    /// a sampled parent follows its parent.
    pub sample_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            log_level: "info".to_owned(),
            log_format: LogFormat::Pretty,
            otlp_endpoint: None,
            service_name: "coffer".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

/// How long [`TelemetryGuard::shutdown`] waits for the last spans to leave,
/// and how long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the global subscriber: logs to stderr and, when
/// `otlp_endpoint` is set, the trace export. Fails on invalid settings or
/// when a global subscriber is already installed. Keep the guard until exit.
///
/// Lines reach stderr through a thread of their own, which writes whatever
/// has queued in one buffered write: a write per line, on the thread that
/// logged it, was about 4 % of a busy server's CPU (one `rpc finished` line
/// per call). Nothing is dropped: a full queue (128 000 lines) makes the
/// logging thread wait.
pub fn init(settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    let (writer, logs) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("coffer-log")
        .finish(BufWriter::new(std::io::stderr()));
    let mut guard = install(settings, writer, std::io::stderr().is_terminal())?;
    guard.logs = Some(logs);
    Ok(guard)
}

/// [`init`] with logs written to `writer` instead of stderr, never colored
/// (tests read the lines back).
pub fn init_with_writer<W>(
    settings: &TelemetrySettings,
    writer: W,
) -> anyhow::Result<TelemetryGuard>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    install(settings, writer, false)
}

fn install<W>(settings: &TelemetrySettings, writer: W, ansi: bool) -> anyhow::Result<TelemetryGuard>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let log_filter = log_filter(
        &settings.log_level,
        std::env::var(EnvFilter::DEFAULT_ENV).ok(),
    )?;
    let export = settings
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| Export::start(endpoint, settings))
        .transpose()?;

    let logs = match settings.log_format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_ansi(ansi).with_writer(writer).boxed(),
    };
    let traces = export.as_ref().map(|export| {
        tracing_opentelemetry::layer()
            .with_tracer(export.provider.tracer("coffer"))
            .with_filter(filter::filter_fn(exported))
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(log_filter))
        .with(traces)
        .try_init()
        .context("installing the tracing subscriber (is one already installed?)")?;
    Ok(TelemetryGuard { export, logs: None })
}

/// The log filter: `rust_log` (the `RUST_LOG` variable) when set, else the
/// configured directive.
fn log_filter(configured: &str, rust_log: Option<String>) -> anyhow::Result<EnvFilter> {
    let (directive, source) = match rust_log {
        Some(env) if !env.trim().is_empty() => (env, EnvFilter::DEFAULT_ENV),
        _ => (configured.to_owned(), "log level"),
    };
    EnvFilter::builder()
        .parse(&directive)
        .with_context(|| format!("invalid {source} {directive:?}"))
}

/// What the trace export takes: coffer's spans down to DEBUG (database and
/// provider calls), other spans and all events at INFO and above. The
/// exporter's own transport and SDK are left out, so exporting never traces
/// itself.
fn exported(meta: &Metadata<'_>) -> bool {
    const TRANSPORT: [&str; 6] = ["opentelemetry", "tonic", "tower", "hyper", "h2", "rustls"];
    let target = meta.target();
    if TRANSPORT.iter().any(|quiet| target.starts_with(quiet)) {
        return false;
    }
    let floor = if meta.is_span() && target.starts_with("coffer") {
        Level::DEBUG
    } else {
        Level::INFO
    };
    *meta.level() <= floor
}

/// Keeps the trace export and the log writer running;
/// [`TelemetryGuard::shutdown`] (or dropping it) flushes the spans and the
/// log lines still queued.
#[derive(Debug)]
pub struct TelemetryGuard {
    export: Option<Export>,
    /// The stderr writer's thread ([`init`] only); dropping it writes what
    /// is queued. Lines logged afterwards are lost.
    logs: Option<WorkerGuard>,
}

impl TelemetryGuard {
    /// Flushes the queued spans and stops the export, waiting at most a few
    /// seconds for an unreachable collector, then writes the queued log
    /// lines. Call it last: later lines are not written.
    pub fn shutdown(mut self) {
        drop(self.export.take());
        drop(self.logs.take());
    }
}

/// The tracer provider (a batch span processor on its own thread) and the
/// runtime its gRPC channel runs on. The channel gets a runtime of its own
/// so that flushing works from anywhere, even from a single-threaded
/// runtime or while the server's runtime winds down.
#[derive(Debug)]
struct Export {
    provider: SdkTracerProvider,
    runtime: Option<Runtime>,
}

impl Export {
    fn start(endpoint: &str, settings: &TelemetrySettings) -> anyhow::Result<Export> {
        if !endpoint.starts_with("http://") {
            bail!(
                "otlp endpoint {endpoint:?} must be http://host:port (plain gRPC to a collector \
                 nearby; TLS to the collector is not supported)"
            );
        }
        let ratio = settings.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            bail!("telemetry sample ratio {ratio} is not between 0.0 and 1.0");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("coffer-otlp")
            .enable_all()
            .build()
            .context("starting the otlp export runtime")?;
        // The exporter's lazy channel spawns its connection task on the
        // runtime entered here.
        let built = {
            let _entered = runtime.enter();
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
        };
        let exporter = match built {
            Ok(exporter) => exporter,
            Err(err) => {
                // Dropping a runtime blocks, which panics inside the caller's.
                runtime.shutdown_background();
                return Err(err)
                    .with_context(|| format!("configuring the otlp exporter for {endpoint:?}"));
            }
        };
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(resource)
            .build();
        Ok(Export {
            provider,
            runtime: Some(runtime),
        })
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        if let Err(err) = self.provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
            tracing::warn!(error = %err, "flushing the trace export failed; the last spans are lost");
        }
        // Not a blocking shutdown: the guard may be dropped inside the
        // server's runtime, where blocking on another runtime panics.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: &str, ratio: f64) -> TelemetrySettings {
        TelemetrySettings {
            otlp_endpoint: Some(endpoint.to_owned()),
            sample_ratio: ratio,
            ..TelemetrySettings::default()
        }
    }

    // Each refusal happens before anything is installed, so these tests can
    // share one process.
    #[test]
    fn refuses_tls_and_schemeless_endpoints() {
        for endpoint in ["https://collector:4317", "collector:4317", ""] {
            let err = init(&settings(endpoint, 1.0)).unwrap_err();
            assert!(err.to_string().contains("http://host:port"), "{err:#}");
        }
    }

    // Inside a runtime, as the binary calls it: the export's own runtime must
    // be let go without blocking when the exporter cannot be built.
    #[tokio::test]
    async fn refuses_an_endpoint_that_is_no_uri() {
        let err = init(&settings("http://bad host:4317", 1.0)).unwrap_err();
        assert!(format!("{err:#}").contains("otlp exporter"), "{err:#}");
    }

    #[test]
    fn refuses_a_sample_ratio_out_of_range() {
        for ratio in [-0.1, 1.5, f64::NAN] {
            let err = init(&settings("http://127.0.0.1:4317", ratio)).unwrap_err();
            assert!(err.to_string().contains("sample ratio"), "{err:#}");
        }
    }

    #[test]
    fn rust_log_overrides_the_configured_level() {
        let err = log_filter("coffer=loud", None).unwrap_err();
        assert!(
            err.to_string().contains("log level \"coffer=loud\""),
            "{err:#}"
        );
        assert!(log_filter("coffer=loud", Some("debug".to_owned())).is_ok());
        let err = log_filter("info", Some("coffer=loud".to_owned())).unwrap_err();
        assert!(err.to_string().contains("RUST_LOG"), "{err:#}");
        // An empty RUST_LOG counts as unset.
        assert!(log_filter("info", Some(" ".to_owned())).is_ok());
    }
}
