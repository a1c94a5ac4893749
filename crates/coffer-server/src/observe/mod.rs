//! What an operator sees of the running server, never a value: the per-RPC
//! layer (span, request id, final status, latency, one log line per call,
//! in-flight tracking for shutdown), request ids, and Prometheus metrics
//! (the series, the recorder and the `/metrics` listener).
//!
//! Installing a subscriber (log format, OTLP export) is the telemetry
//! module's job; this one only emits.

mod layer;
pub mod metrics;
mod request_id;

pub(crate) use layer::{InFlight, RpcContext, RpcLayer};
pub use request_id::REQUEST_ID_HEADER;
