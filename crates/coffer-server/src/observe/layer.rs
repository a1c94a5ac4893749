//! [`RpcLayer`]: the tower layer around every service the server carries
//! (health and reflection included). For each call it
//!
//! - picks the request id ([`RequestId`]) and echoes it in the response
//!   headers (trailers-only error responses carry headers too);
//! - opens the `rpc` span (`rpc.method`, `request_id`, and `principal`,
//!   `tenant`, `code`, `latency_ms` recorded later) that the handler runs in,
//!   and puts an [`RpcContext`] in the request extensions so the authorizer
//!   can name the caller;
//! - learns the final gRPC status from the response headers (trailers-only
//!   responses) or from the `grpc-status` trailer at the end of the body;
//! - then writes one log line carrying all of it (INFO; DEBUG for health
//!   checks) and the RPC metrics;
//! - counts the call as in flight until its body ends, so shutdown can drain
//!   and, after the grace period, cut it ([`InFlight`]).
//!
//! It never reads a message body and logs no metadata but the request id.
//! A call whose future or body is dropped (the caller went away, or tonic's
//! timeout fired) is logged as CANCELLED, which is what tonic answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use metrics::SharedString;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::body::Body;
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing::field::Empty;

use super::metrics::{MethodLabels, RPC_DURATION, RPC_REQUESTS};
use super::request_id::{REQUEST_ID_HEADER, RequestId};

/// Health checks are logged at DEBUG: probes call them every few seconds.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
/// Paths of unknown methods are logged cut to this length.
const MAX_LOGGED_PATH: usize = 200;
/// What a call cut at the end of the shutdown grace period answers.
const SHUTDOWN_MESSAGE: &str = "the server is shutting down; retry on another replica";

/// The calls under way, and the switch that cuts them when the shutdown
/// grace period is over. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct InFlight(Arc<InFlightInner>);

#[derive(Debug, Default)]
struct InFlightInner {
    count: AtomicUsize,
    cut: CancellationToken,
}

impl InFlight {
    /// Calls started whose final status is not known yet (streams until
    /// their trailers).
    pub(crate) fn count(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    /// Ends every call under way, and any started later, with UNAVAILABLE.
    pub(crate) fn cut(&self) {
        self.0.cut.cancel();
    }

    fn enter(&self) -> InFlightGuard {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }
}

#[derive(Debug)]
struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a handler adds to its call's span and log line: the caller. Found
/// in the request extensions; absent outside a served call (unit tests).
#[derive(Debug, Clone)]
pub(crate) struct RpcContext(Arc<ContextInner>);

#[derive(Debug)]
struct ContextInner {
    span: tracing::Span,
}

impl RpcContext {
    fn new(span: tracing::Span) -> Self {
        RpcContext(Arc::new(ContextInner { span }))
    }

    /// Names the calling principal and the tenant the call targets on the
    /// call's span, which the call's log line prints.
    pub(crate) fn record_caller(&self, principal: &str, tenant: &str) {
        self.0.span.record("principal", principal);
        self.0.span.record("tenant", tenant);
    }
}

/// Wraps every service in [`RpcService`].
#[derive(Debug, Clone)]
pub(crate) struct RpcLayer {
    methods: MethodLabels,
    in_flight: InFlight,
}

impl RpcLayer {
    pub(crate) fn new(methods: MethodLabels, in_flight: InFlight) -> Self {
        RpcLayer { methods, in_flight }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            methods: self.methods.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct RpcService<S> {
    inner: S,
    methods: MethodLabels,
    in_flight: InFlight,
}

type ResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<http::Response<RpcBody>, E>> + Send + 'static>>;

impl<S> Service<http::Request<Body>> for RpcService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<RpcBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let rpc = Rpc::start(&request, &self.methods, &self.in_flight);
        let span = rpc.context.0.span.clone();
        request.extensions_mut().insert(rpc.context.clone());
        let cut = self.in_flight.0.cut.clone();
        // The clone that was not polled ready stays behind for the next call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(
            async move {
                // Dropped with this future (caller gone, timeout), the call
                // finishes as CANCELLED.
                let mut rpc = rpc;
                let result = tokio::select! {
                    biased;
                    result = inner.call(request) => result,
                    () = cut.cancelled() => Ok(Status::unavailable(SHUTDOWN_MESSAGE).into_http()),
                };
                match result {
                    Ok(response) => Ok(respond(response, rpc, cut)),
                    Err(err) => {
                        rpc.finish(Code::Unknown);
                        Err(err)
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// Tags the response with the request id and finishes the call now
/// (trailers-only) or when its body ends.
fn respond(
    mut response: http::Response<Body>,
    mut rpc: Rpc,
    cut: CancellationToken,
) -> http::Response<RpcBody> {
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, rpc.request_id.header());
    let cut = match grpc_status(response.headers()) {
        Some(code) => {
            rpc.finish(code);
            None
        }
        None => Some(Box::pin(cut.cancelled_owned())),
    };
    response.map(|inner| RpcBody {
        inner,
        rpc,
        cut,
        ended: false,
    })
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// One call between its start and its final status. Dropped unfinished,
/// it finishes as CANCELLED; it leaves the in-flight count when it finishes.
#[derive(Debug)]
struct Rpc {
    context: RpcContext,
    /// The metric label; `None` for paths this server does not serve.
    method: Option<SharedString>,
    request_id: RequestId,
    health: bool,
    started: Instant,
    /// `None` once finished.
    in_flight: Option<InFlightGuard>,
}

impl Rpc {
    fn start(request: &http::Request<Body>, methods: &MethodLabels, in_flight: &InFlight) -> Self {
        let raw = request.uri().path();
        let method = methods.label(raw);
        let path = match &method {
            Some(label) => label.clone(),
            None => SharedString::from(raw.get(..MAX_LOGGED_PATH).unwrap_or(raw).to_owned()),
        };
        let request_id = RequestId::from_headers(request.headers());
        let health = raw.starts_with(HEALTH_PREFIX);
        let span = if health {
            tracing::debug_span!(
                "rpc",
                rpc.method = &*path,
                request_id = request_id.as_str(),
                principal = Empty,
                tenant = Empty,
                code = Empty,
                latency_ms = Empty,
            )
        } else {
            tracing::info_span!(
                "rpc",
                rpc.method = &*path,
                request_id = request_id.as_str(),
                principal = Empty,
                tenant = Empty,
                code = Empty,
                latency_ms = Empty,
            )
        };
        Rpc {
            context: RpcContext::new(span),
            method,
            request_id,
            health,
            started: Instant::now(),
            in_flight: Some(in_flight.enter()),
        }
    }

    fn is_finished(&self) -> bool {
        self.in_flight.is_none()
    }

    /// Records the final status on the span, logs the call's line and
    /// counts it; once.
    fn finish(&mut self, code: Code) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        drop(in_flight);
        let elapsed = self.started.elapsed();
        // Microsecond resolution is plenty for a log line.
        let latency_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        let code_name = code_name(code);
        let span = &self.context.0.span;
        span.record("code", code_name);
        span.record("latency_ms", latency_ms);
        // The line is the span's: its fields (method, request id, caller,
        // code, latency) print once, with the span, not again as the
        // event's; at tens of thousands of calls a second the duplicate
        // formatting was a tenth of the server's time.
        if self.health {
            tracing::debug!(parent: span, "rpc finished");
        } else {
            tracing::info!(parent: span, "rpc finished");
        }
        let method = self.method.take().unwrap_or_else(MethodLabels::unknown);
        metrics::counter!(RPC_REQUESTS, "method" => method.clone(), "code" => code_name)
            .increment(1);
        metrics::histogram!(RPC_DURATION, "method" => method, "code" => code_name)
            .record(elapsed.as_secs_f64());
    }
}

impl Drop for Rpc {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// A response body that finishes its call when the `grpc-status` trailer
/// passes (or the body ends or is dropped), and ends it with UNAVAILABLE
/// when shutdown cuts the calls still streaming.
pub(crate) struct RpcBody {
    inner: Body,
    rpc: Rpc,
    /// Fires when shutdown cuts; `None` once the call is finished.
    cut: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Set after the shutdown trailers were sent.
    ended: bool,
}

impl std::fmt::Debug for RpcBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcBody")
            .field("finished", &self.rpc.is_finished())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl http_body::Body for RpcBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if !this.rpc.is_finished()
            && let Some(cut) = this.cut.as_mut()
            && cut.as_mut().poll(cx).is_ready()
        {
            this.cut = None;
            this.ended = true;
            this.rpc.finish(Code::Unavailable);
            let mut trailers = HeaderMap::new();
            if Status::unavailable(SHUTDOWN_MESSAGE)
                .add_header(&mut trailers)
                .is_ok()
            {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            return Poll::Ready(Some(Err(Status::unavailable(SHUTDOWN_MESSAGE))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.rpc
                        .finish(grpc_status(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(status))) => this.rpc.finish(status.code()),
            // gRPC responses end with trailers; a body without them is
            // answered as an error by the client.
            Poll::Ready(None) => this.rpc.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

/// The canonical name of a status code, as gRPC's documentation spells it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
