//! The one mapping from [`coffer_core::Error`] to a gRPC status: the code from
//! an exhaustive match, `google.rpc.ErrorInfo` (domain `coffer`) and
//! `google.rpc.BadRequest` in the details, and for errors that say when to
//! retry (rate limits, a busy provider) `google.rpc.RetryInfo` plus a
//! `retry-after` header in whole seconds, rounded up. Internal causes are
//! logged here and never sent.

use std::time::Duration;

use coffer_core::{Error, ErrorCode};
use coffer_proto::google::rpc::Status as RpcStatus;
use prost::Message;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo` domain of every Coffer error.
pub const ERROR_DOMAIN: &str = "coffer";

/// The response header that repeats `RetryInfo` in whole seconds (rounded
/// up), for clients and proxies that do not decode status details.
pub const RETRY_AFTER_HEADER: &str = "retry-after";

/// The gRPC code of an error code; one arm per code, no catch-all.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::Aborted => Code::Aborted,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorCode::OutOfRange => Code::OutOfRange,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::Internal => Code::Internal,
    }
}

/// A use case's result as a gRPC response.
pub(crate) fn respond<T>(result: coffer_core::Result<T>) -> Result<tonic::Response<T>, Status> {
    result
        .map(tonic::Response::new)
        .map_err(|err| to_status(&err))
}

/// Converts an error into a status with details, logging its internal cause.
pub fn to_status(err: &Error) -> Status {
    log_error(err);
    let mut details = ErrorDetails::with_error_info(
        err.reason().as_str(),
        ERROR_DOMAIN,
        err.metadata()
            .clone()
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    );
    if !err.violations().is_empty() {
        details.set_bad_request(
            err.violations()
                .iter()
                .map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone()))
                .collect::<Vec<_>>(),
        );
    }
    if let Some(delay) = err.retry_delay() {
        details.set_retry_info(Some(delay));
    }
    let mut status = Status::with_error_details(grpc_code(err.code()), err.message(), details);
    if let Some(delay) = err.retry_delay() {
        status
            .metadata_mut()
            .insert(RETRY_AFTER_HEADER, retry_after_seconds(delay).into());
    }
    status
}

/// A delay as `retry-after` seconds: rounded up, so a client that waits that
/// long never comes back early.
pub fn retry_after_seconds(delay: Duration) -> u64 {
    let whole = delay.as_secs();
    if delay.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    }
}

/// The same error as a `google.rpc.Status` message, for per-item results.
pub fn to_rpc_status(err: &Error) -> RpcStatus {
    let status = to_status(err);
    RpcStatus::decode(status.details()).unwrap_or_else(|_| RpcStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    })
}

fn log_error(err: &Error) {
    let code = grpc_code(err.code());
    match (err.code(), err.internal_cause()) {
        (ErrorCode::Internal, cause) => tracing::error!(
            code = ?code,
            reason = err.reason().as_str(),
            cause = cause.unwrap_or(""),
            "request failed"
        ),
        (_, Some(cause)) => tracing::warn!(
            code = ?code,
            reason = err.reason().as_str(),
            cause,
            "request failed"
        ),
        (_, None) => tracing::debug!(
            code = ?code,
            reason = err.reason().as_str(),
            detail = err.message(),
            "request refused"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::Reason;

    #[test]
    fn details_carry_error_info_and_bad_request() {
        let status = to_status(&Error::invalid_field(
            "secret_id",
            "secret key must match x",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "BAD_REQUEST");
        assert_eq!(info.domain, "coffer");
        let bad = details.bad_request().expect("bad request");
        assert_eq!(bad.field_violations[0].field, "secret_id");
    }

    #[test]
    fn a_retry_delay_becomes_retry_info_and_retry_after() {
        let status = to_status(&Error::rate_limited(Duration::from_millis(1_200)));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().expect("error info").reason,
            "RATE_LIMITED"
        );
        let retry = details.retry_info().expect("retry info");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(1_200)));
        assert_eq!(
            status
                .metadata()
                .get(RETRY_AFTER_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("2")
        );
        let plain = to_status(&Error::internal("x"));
        assert!(plain.get_error_details().retry_info().is_none());
        assert!(plain.metadata().get(RETRY_AFTER_HEADER).is_none());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 0);
        assert_eq!(retry_after_seconds(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::from_millis(3_001)), 4);
    }

    #[test]
    fn internal_cause_is_not_sent() {
        let status = to_status(&Error::internal("password=hunter2 in connection string"));
        assert_eq!(status.message(), "internal error");
        assert!(!format!("{status:?}").contains("hunter2"));
        let rpc = to_rpc_status(&Error::failed_precondition(Reason::NotBound, "not bound"));
        assert_eq!(rpc.code, Code::FailedPrecondition as i32);
        assert!(!rpc.details.is_empty());
    }
}
