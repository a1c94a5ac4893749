//! Traces and logs of a real server: telemetry exports over OTLP/gRPC to a
//! collector started on loopback by the test, and a resolve arrives as one
//! span tree (the RPC span, its database spans) with no value anywhere in
//! the export. Without an endpoint nothing is exported; JSON logs are one
//! JSON object per line.
//!
//! Each test installs the process-wide subscriber, so each needs a process
//! of its own: run them with nextest (as `scripts/test` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use coffer_proto::v1;
use coffer_server::telemetry::{self, LogFormat, TelemetryGuard, TelemetrySettings};
use coffer_tests::{Db, TestServer};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing_subscriber::fmt::MakeWriter;

const CANARY: &str = "canary-7c1f0e9a-otlp-value";
const NAME: &str = "tenants/acme/secrets/traced";

/// An OTLP trace collector that keeps every export request it receives.
#[derive(Debug, Clone, Default)]
struct Collector {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves on 127.0.0.1:0 and returns the endpoint to export to.
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        endpoint
    }

    fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.requests.lock().unwrap().clone()
    }
}

/// Creates a secret holding the canary and resolves it.
async fn create_and_resolve(server: &TestServer) {
    let mut client = server.secrets();
    client
        .create_secret(v1::CreateSecretRequest {
            parent: "tenants/acme".into(),
            secret_id: "traced".into(),
            secret: Some(v1::Secret::default()),
            source: Some(v1::create_secret_request::Source::Value(
                CANARY.as_bytes().to_vec(),
            )),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let resolved = client
        .resolve_secret(v1::ResolveSecretRequest {
            name: NAME.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.value, CANARY.as_bytes());
}

/// Flushes off the runtime's workers: shutdown blocks until the collector,
/// served by this runtime, has the last spans.
async fn shutdown(guard: TelemetryGuard) -> Duration {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        guard.shutdown();
        start.elapsed()
    })
    .await
    .unwrap()
}

/// Every form the canary could take in an export or a log: as is, as
/// `Debug` of its bytes, as base64.
fn leaked(haystack: &[u8]) -> Option<String> {
    let forms = [
        CANARY.to_owned(),
        format!("{:?}", CANARY.as_bytes())
            .trim_matches(['[', ']'])
            .to_owned(),
        base64::engine::general_purpose::STANDARD.encode(CANARY),
    ];
    forms.into_iter().find(|form| {
        haystack
            .windows(form.len())
            .any(|window| window == form.as_bytes())
    })
}

fn string_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn has_string_value(attributes: &[KeyValue], needle: &str) -> bool {
    attributes.iter().any(|kv| {
        matches!(
            kv.value.as_ref(),
            Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }) if s.contains(needle)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_exports_its_span_tree_and_no_value_sqlite() {
    span_tree(Db::Sqlite, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_exports_its_span_tree_and_no_value_postgres() {
    span_tree(Db::Postgres, "postgresql").await;
}

async fn span_tree(db: Db, db_system: &str) {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let guard = telemetry::init(&TelemetrySettings {
        log_level: "warn".into(),
        otlp_endpoint: Some(endpoint),
        service_name: "coffer-otlp-test".into(),
        ..TelemetrySettings::default()
    })
    .unwrap();

    let Some(server) = TestServer::start(db).await else {
        return;
    };
    create_and_resolve(&server).await;
    server.stop().await;
    shutdown(guard).await;

    let requests = collector.requests();
    assert!(!requests.is_empty(), "the collector received no export");
    for request in &requests {
        let encoded = request.encode_to_vec();
        assert_eq!(leaked(&encoded), None, "the value reached the export");
    }

    let mut spans: Vec<&Span> = Vec::new();
    for resource_spans in requests.iter().flat_map(|r| &r.resource_spans) {
        let resource = resource_spans.resource.as_ref().unwrap();
        assert_eq!(
            string_attr(&resource.attributes, "service.name"),
            Some("coffer-otlp-test")
        );
        assert_eq!(
            string_attr(&resource.attributes, "service.version"),
            Some(env!("CARGO_PKG_VERSION"))
        );
        spans.extend(resource_spans.scope_spans.iter().flat_map(|s| &s.spans));
    }

    let rpc = spans
        .iter()
        .find(|s| s.name == "rpc" && has_string_value(&s.attributes, "ResolveSecret"))
        .unwrap_or_else(|| {
            let names: Vec<_> = spans.iter().map(|s| &s.name).collect();
            panic!("no rpc span for ResolveSecret among {names:?}")
        });
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (&s.span_id[..], *s)).collect();
    let descends_from_rpc = |span: &Span| {
        let mut parent = &span.parent_span_id[..];
        while let Some(up) = by_id.get(parent) {
            if up.span_id == rpc.span_id {
                return true;
            }
            parent = &up.parent_span_id[..];
        }
        false
    };
    let db_spans: Vec<&Span> = spans
        .iter()
        .copied()
        .filter(|s| s.trace_id == rpc.trace_id && s.name.starts_with("db."))
        .collect();
    let db_names: Vec<&str> = db_spans.iter().map(|s| s.name.as_str()).collect();
    for read in ["db.get_secret", "db.get_version"] {
        assert!(
            db_names.contains(&read),
            "no {read} among the resolve's database spans {db_names:?}"
        );
    }
    for span in &db_spans {
        assert!(
            descends_from_rpc(span),
            "{} is not under the rpc span",
            span.name
        );
        assert_eq!(span.kind, SpanKind::Client as i32, "{}", span.name);
        assert_eq!(string_attr(&span.attributes, "db.system"), Some(db_system));
        assert_eq!(
            string_attr(&span.attributes, "db.operation"),
            span.name.strip_prefix("db.")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported() {
    let collector = Collector::default();
    collector.start().await;
    let logs = Capture::default();
    let guard = telemetry::init_with_writer(
        &TelemetrySettings {
            log_level: "info".into(),
            ..TelemetrySettings::default()
        },
        logs.clone(),
    )
    .unwrap();

    let server = TestServer::start(Db::Sqlite).await.unwrap();
    create_and_resolve(&server).await;
    server.stop().await;
    assert!(shutdown(guard).await < Duration::from_secs(1));

    assert!(collector.requests().is_empty());
    // Logging works without the export.
    let logs = logs.text();
    assert!(logs.contains("server stopped"), "{logs}");
    assert_eq!(leaked(logs.as_bytes()), None, "the value reached the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let logs = Capture::default();
    let guard = telemetry::init_with_writer(
        &TelemetrySettings {
            log_level: "debug".into(),
            log_format: LogFormat::Json,
            ..TelemetrySettings::default()
        },
        logs.clone(),
    )
    .unwrap();

    let server = TestServer::start(Db::Sqlite).await.unwrap();
    create_and_resolve(&server).await;
    // A refused call logs at DEBUG inside its RPC span.
    let missing = server
        .secrets()
        .resolve_secret(v1::ResolveSecretRequest {
            name: "tenants/acme/secrets/missing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.stop().await;
    shutdown(guard).await;

    let text = logs.text();
    assert_eq!(leaked(text.as_bytes()), None, "the value reached the logs");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
    }
    let refused = lines
        .iter()
        .find(|line| line["reason"] == "SECRET_NOT_FOUND")
        .expect("the refused resolve's line");
    assert_eq!(refused["level"], "DEBUG");
    assert_eq!(refused["code"], "NotFound", "{refused}");
    // The enclosing spans come along, the RPC's with its method.
    assert_eq!(refused["span"]["name"], "rpc", "{refused}");
    let rpc = &refused["spans"][0];
    assert_eq!(rpc["name"], "rpc", "{refused}");
    let names_the_method = rpc
        .as_object()
        .unwrap()
        .values()
        .any(|v| v.as_str().is_some_and(|s| s.contains("ResolveSecret")));
    assert!(names_the_method, "{refused}");
    assert!(lines.iter().any(|line| line["message"] == "server stopped"));
}

/// Log lines written by the subscriber, kept for the test to read.
#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
