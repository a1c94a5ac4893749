//! Turns a failed command into the lines printed on stderr: the status
//! message, its code, the `google.rpc.ErrorInfo` reason and any
//! `google.rpc.BadRequest` field violations. Server messages never carry a
//! value, and the client adds none.

use std::fmt::Write;

use tonic_types::StatusExt;

/// The error report for `err`, one line per fact, without a trailing newline.
pub(crate) fn report(err: &anyhow::Error) -> String {
    let Some(status) = err.downcast_ref::<tonic::Status>() else {
        return format!("error: {err:#}");
    };
    let message = if status.message().is_empty() {
        status.code().description()
    } else {
        status.message()
    };
    let mut out = format!("error: {message}\n  code: {}", code_name(status.code()));
    let details = status.get_error_details();
    if let Some(info) = details.error_info() {
        let _ = write!(out, "\n  reason: {}", info.reason);
    }
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            let _ = write!(out, "\n  field {}: {}", v.field, v.description);
        }
    }
    if let Some(pre) = details.precondition_failure() {
        for v in &pre.violations {
            let _ = write!(out, "\n  precondition {}: {}", v.subject, v.description);
        }
    }
    out
}

/// The canonical upper-case gRPC code name, as grpcurl and the docs show it.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic::Code;
    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn reason_and_violations_are_listed() {
        let mut details = ErrorDetails::with_error_info("BAD_REQUEST", "coffer", HashMap::new());
        details.add_bad_request_violation(
            "secret_id",
            "secret key must match [a-z0-9][a-z0-9_.-]{0,119}",
        );
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "invalid request: secret_id",
            details,
        );
        let report = report(&anyhow::Error::new(status));
        assert_eq!(
            report,
            "error: invalid request: secret_id\n  code: INVALID_ARGUMENT\n  reason: BAD_REQUEST\n  \
             field secret_id: secret key must match [a-z0-9][a-z0-9_.-]{0,119}"
        );
    }

    #[test]
    fn plain_statuses_and_other_errors_are_reported() {
        let status = tonic::Status::not_found("secret tenants/a/secrets/k not found");
        assert_eq!(
            report(&anyhow::Error::new(status)),
            "error: secret tenants/a/secrets/k not found\n  code: NOT_FOUND"
        );
        let err = anyhow::anyhow!("inner").context("cannot connect to http://x");
        assert_eq!(report(&err), "error: cannot connect to http://x: inner");
    }
}
