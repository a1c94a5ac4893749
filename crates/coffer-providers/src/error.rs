//! [`ProviderError`]: a classified provider failure with a client-safe
//! message and a raw cause for server logs, and its mapping to
//! [`coffer_core::Error`].
//!
//! Mapping (AIP-193), with the `ErrorInfo` reason:
//!
//! | kind | code | reason | why |
//! |---|---|---|---|
//! | AccessDenied | PERMISSION_DENIED | PROVIDER_ACCESS_DENIED | the vault's credentials may not do this; the reason tells callers it is Coffer's access, not theirs |
//! | Throttled | UNAVAILABLE | PROVIDER_THROTTLED | the limit is the deployment's shared provider quota, not the caller's (RESOURCE_EXHAUSTED), and UNAVAILABLE is what gRPC retry policies retry with backoff |
//! | NotFound | FAILED_PRECONDITION | PROVIDER_NOT_FOUND | the secret exists in Coffer; its remote data is gone, which retrying will not fix |
//! | Conflict | ABORTED | PROVIDER_ERROR | a concurrent remote change; re-read and retry |
//! | InvalidRequest | FAILED_PRECONDITION | PROVIDER_ERROR | Coffer validated the request already, so the provider rejects it because of remote state or vault configuration |
//! | Unavailable | UNAVAILABLE | PROVIDER_UNAVAILABLE | transient; retry with backoff |
//! | Provider | INTERNAL | PROVIDER_ERROR | unexpected (e.g. undecryptable stored material); details only in the log |
//! | Unsupported | UNIMPLEMENTED | NOT_IMPLEMENTED | the vault's provider does not offer this operation |
//! | Busy | RESOURCE_EXHAUSTED | PROVIDER_BUSY | Coffer's own bound on concurrent calls to the vault is reached (not the remote's quota); `google.rpc.RetryInfo` says when to retry |
//! | Guardrail | FAILED_PRECONDITION | PROVIDER_GUARDRAIL | a namespace guardrail refused the reference (an external ref inside Coffer's managed namespace, or a managed ref that drifted outside it) |

use std::fmt;
use std::time::Duration;

use coffer_core::{Error, ErrorCode, Reason};

/// What went wrong, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderErrorKind {
    AccessDenied,
    Throttled,
    NotFound,
    Conflict,
    InvalidRequest,
    Unavailable,
    Provider,
    Unsupported,
    Guardrail,
    /// Coffer's bound on concurrent calls to this vault is reached.
    Busy,
}

impl ProviderErrorKind {
    /// snake_case form for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderErrorKind::AccessDenied => "access_denied",
            ProviderErrorKind::Throttled => "throttled",
            ProviderErrorKind::NotFound => "not_found",
            ProviderErrorKind::Conflict => "conflict",
            ProviderErrorKind::InvalidRequest => "invalid_request",
            ProviderErrorKind::Unavailable => "unavailable",
            ProviderErrorKind::Provider => "provider_error",
            ProviderErrorKind::Unsupported => "unsupported",
            ProviderErrorKind::Guardrail => "guardrail",
            ProviderErrorKind::Busy => "busy",
        }
    }

    /// The core code and reason this kind maps to (see the module table).
    pub fn code_and_reason(self) -> (ErrorCode, Reason) {
        match self {
            ProviderErrorKind::AccessDenied => {
                (ErrorCode::PermissionDenied, Reason::ProviderAccessDenied)
            }
            ProviderErrorKind::Throttled => (ErrorCode::Unavailable, Reason::ProviderThrottled),
            ProviderErrorKind::NotFound => {
                (ErrorCode::FailedPrecondition, Reason::ProviderNotFound)
            }
            ProviderErrorKind::Conflict => (ErrorCode::Aborted, Reason::ProviderError),
            ProviderErrorKind::InvalidRequest => {
                (ErrorCode::FailedPrecondition, Reason::ProviderError)
            }
            ProviderErrorKind::Unavailable => (ErrorCode::Unavailable, Reason::ProviderUnavailable),
            ProviderErrorKind::Provider => (ErrorCode::Internal, Reason::ProviderError),
            ProviderErrorKind::Unsupported => (ErrorCode::Unimplemented, Reason::NotImplemented),
            ProviderErrorKind::Guardrail => {
                (ErrorCode::FailedPrecondition, Reason::ProviderGuardrail)
            }
            ProviderErrorKind::Busy => (ErrorCode::ResourceExhausted, Reason::ProviderBusy),
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ProviderErrorKind::Throttled
                | ProviderErrorKind::Unavailable
                | ProviderErrorKind::Conflict
                | ProviderErrorKind::Busy
        )
    }
}

impl fmt::Display for ProviderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider failure. `message` is safe for clients (lowercase, says what to
/// do, never a value, credential or raw provider text); `cause` is the raw
/// error for server logs only. `Display` prints the message only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    pub message: String,
    pub cause: Option<String>,
    /// When retrying may succeed, if known (sent as `google.rpc.RetryInfo`).
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
            cause: None,
            retry_after: None,
        }
    }

    /// Attaches the raw cause, for server logs only.
    pub fn with_cause(mut self, cause: impl fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// Says when retrying may succeed.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Too many calls to the vault are under way; retry after `retry_after`.
    pub fn busy(retry_after: Duration) -> Self {
        Self::new(
            ProviderErrorKind::Busy,
            "too many calls to this vault are under way; retry after the delay in RetryInfo",
        )
        .with_retry_after(retry_after)
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::AccessDenied, message)
    }

    pub fn throttled(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Throttled, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Conflict, message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::InvalidRequest, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Unavailable, message)
    }

    pub fn guardrail(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Guardrail, message)
    }

    pub fn provider(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Provider, message)
    }

    /// The provider does not offer `operation`.
    pub fn unsupported(provider_id: &str, operation: &str) -> Self {
        Self::new(
            ProviderErrorKind::Unsupported,
            format!(
                "provider {provider_id} does not support {operation}; use a vault whose provider does"
            ),
        )
    }
}

impl From<ProviderError> for Error {
    fn from(err: ProviderError) -> Self {
        let (code, reason) = err.kind.code_and_reason();
        let mut mapped = Error::new(code, reason, err.message)
            .with_metadata("provider_error", err.kind.as_str());
        if let Some(delay) = err.retry_after {
            mapped = mapped.with_retry_delay(delay);
        }
        match err.cause {
            Some(cause) => mapped.with_internal(cause),
            None => mapped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_goes_to_the_log_not_the_message() {
        let err = ProviderError::unavailable("the vault is unreachable; retry with backoff")
            .with_cause("dispatch failure: connection refused (10.0.0.7:443)");
        assert_eq!(
            err.to_string(),
            "the vault is unreachable; retry with backoff"
        );
        let core: Error = err.into();
        assert_eq!(core.code(), ErrorCode::Unavailable);
        assert_eq!(core.reason(), Reason::ProviderUnavailable);
        assert_eq!(
            core.message(),
            "the vault is unreachable; retry with backoff"
        );
        assert_eq!(
            core.internal_cause(),
            Some("dispatch failure: connection refused (10.0.0.7:443)")
        );
        assert_eq!(core.metadata()["provider_error"], "unavailable");
    }

    #[test]
    fn every_kind_keeps_a_distinct_classification() {
        let kinds = [
            ProviderErrorKind::AccessDenied,
            ProviderErrorKind::Throttled,
            ProviderErrorKind::NotFound,
            ProviderErrorKind::Conflict,
            ProviderErrorKind::InvalidRequest,
            ProviderErrorKind::Unavailable,
            ProviderErrorKind::Provider,
            ProviderErrorKind::Unsupported,
            ProviderErrorKind::Guardrail,
            ProviderErrorKind::Busy,
        ];
        let expected = [
            (ErrorCode::PermissionDenied, Reason::ProviderAccessDenied),
            (ErrorCode::Unavailable, Reason::ProviderThrottled),
            (ErrorCode::FailedPrecondition, Reason::ProviderNotFound),
            (ErrorCode::Aborted, Reason::ProviderError),
            (ErrorCode::FailedPrecondition, Reason::ProviderError),
            (ErrorCode::Unavailable, Reason::ProviderUnavailable),
            (ErrorCode::Internal, Reason::ProviderError),
            (ErrorCode::Unimplemented, Reason::NotImplemented),
            (ErrorCode::FailedPrecondition, Reason::ProviderGuardrail),
            (ErrorCode::ResourceExhausted, Reason::ProviderBusy),
        ];
        for (kind, (code, reason)) in kinds.into_iter().zip(expected) {
            let core: Error = ProviderError::new(kind, "msg").into();
            assert_eq!((core.code(), core.reason()), (code, reason), "{kind}");
            assert_eq!(core.metadata()["provider_error"], kind.as_str());
            assert_eq!(core.internal_cause(), None);
        }
    }

    #[test]
    fn busy_keeps_its_retry_delay() {
        let core: Error = ProviderError::busy(Duration::from_millis(100)).into();
        assert_eq!(core.code(), ErrorCode::ResourceExhausted);
        assert_eq!(core.reason(), Reason::ProviderBusy);
        assert_eq!(core.retry_delay(), Some(Duration::from_millis(100)));
        assert!(ProviderErrorKind::Busy.is_retryable());
    }
}
