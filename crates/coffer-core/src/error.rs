//! The error every layer returns. Variants of [`ErrorCode`] are named for what
//! the caller can do about them; the gRPC edge maps each to exactly one status
//! code. Messages are lowercase, say what to do, and never carry a value, a
//! credential or a raw provider or database error (those go to server logs
//! through [`Error::with_internal`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What kind of failure this is, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed; retrying it unchanged will fail again.
    InvalidArgument,
    /// The resource does not exist (or the caller may not know it exists).
    NotFound,
    /// A resource with that identity already exists.
    AlreadyExists,
    /// The system is not in a state where the request can run (e.g. a disabled secret).
    FailedPrecondition,
    /// A concurrency conflict (etag mismatch); re-read and retry.
    Aborted,
    /// The caller has no valid identity.
    Unauthenticated,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// A quota or rate limit was hit; retry later.
    ResourceExhausted,
    /// A dependency (database, provider) is unreachable; retry with backoff.
    Unavailable,
    /// The deadline passed before the work finished.
    DeadlineExceeded,
    /// The request names a position past what the server can serve (e.g. a
    /// WatchSecrets resume token older than the replay window).
    OutOfRange,
    /// The capability is not built (yet) or not configured.
    Unimplemented,
    /// A bug or an unexpected failure; details are in the server log only.
    Internal,
}

/// Machine-readable reason, sent as `google.rpc.ErrorInfo.reason` (domain `coffer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    BadRequest,
    SecretNotFound,
    VersionNotFound,
    TenantNotFound,
    SecretAlreadyExists,
    SecretPendingDeletion,
    DisplayNameTaken,
    EtagMismatch,
    SecretNotActive,
    SecretNotDeleted,
    VersionDisabled,
    VersionDestroyed,
    VersionIsCurrent,
    RequestIdReused,
    NotBound,
    BindingNotFound,
    BindingAlreadyExists,
    RequiredBindingsUnresolved,
    AuditUnavailable,
    VaultDisabled,
    VaultNotFound,
    VaultAlreadyExists,
    /// No vault was named and the tenant has no default vault for the provider.
    NoDefaultVault,
    /// The deployment does not offer the requested provider.
    ProviderNotConfigured,
    /// A namespace guardrail refused a remote reference.
    ProviderGuardrail,
    ProviderThrottled,
    ProviderUnavailable,
    ProviderAccessDenied,
    ProviderNotFound,
    ProviderError,
    Unauthenticated,
    PermissionDenied,
    NotImplemented,
    DatabaseUnavailable,
    /// A WatchSecrets resume token is older than the replay window: read
    /// everything again and watch without a token.
    WatchTokenExpired,
    /// The server is shutting down; retry (on another replica) with backoff.
    ShuttingDown,
    /// The calling principal is over its request rate limit; retry after
    /// the delay in `google.rpc.RetryInfo`.
    RateLimited,
    /// Too many calls are waiting on the vault's provider; retry after the
    /// delay in `google.rpc.RetryInfo`.
    ProviderBusy,
    Internal,
}

impl Reason {
    /// The UPPER_SNAKE_CASE form sent to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BAD_REQUEST",
            Reason::SecretNotFound => "SECRET_NOT_FOUND",
            Reason::VersionNotFound => "VERSION_NOT_FOUND",
            Reason::TenantNotFound => "TENANT_NOT_FOUND",
            Reason::SecretAlreadyExists => "SECRET_ALREADY_EXISTS",
            Reason::SecretPendingDeletion => "SECRET_PENDING_DELETION",
            Reason::DisplayNameTaken => "DISPLAY_NAME_TAKEN",
            Reason::EtagMismatch => "ETAG_MISMATCH",
            Reason::SecretNotActive => "SECRET_NOT_ACTIVE",
            Reason::SecretNotDeleted => "SECRET_NOT_DELETED",
            Reason::VersionDisabled => "VERSION_DISABLED",
            Reason::VersionDestroyed => "VERSION_DESTROYED",
            Reason::VersionIsCurrent => "VERSION_IS_CURRENT",
            Reason::RequestIdReused => "REQUEST_ID_REUSED",
            Reason::NotBound => "NOT_BOUND",
            Reason::BindingNotFound => "BINDING_NOT_FOUND",
            Reason::BindingAlreadyExists => "BINDING_ALREADY_EXISTS",
            Reason::RequiredBindingsUnresolved => "REQUIRED_BINDINGS_UNRESOLVED",
            Reason::AuditUnavailable => "AUDIT_UNAVAILABLE",
            Reason::VaultDisabled => "VAULT_DISABLED",
            Reason::VaultNotFound => "VAULT_NOT_FOUND",
            Reason::VaultAlreadyExists => "VAULT_ALREADY_EXISTS",
            Reason::NoDefaultVault => "NO_DEFAULT_VAULT",
            Reason::ProviderNotConfigured => "PROVIDER_NOT_CONFIGURED",
            Reason::ProviderGuardrail => "PROVIDER_GUARDRAIL",
            Reason::ProviderThrottled => "PROVIDER_THROTTLED",
            Reason::ProviderUnavailable => "PROVIDER_UNAVAILABLE",
            Reason::ProviderAccessDenied => "PROVIDER_ACCESS_DENIED",
            Reason::ProviderNotFound => "PROVIDER_NOT_FOUND",
            Reason::ProviderError => "PROVIDER_ERROR",
            Reason::Unauthenticated => "UNAUTHENTICATED",
            Reason::PermissionDenied => "PERMISSION_DENIED",
            Reason::NotImplemented => "NOT_IMPLEMENTED",
            Reason::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Reason::WatchTokenExpired => "WATCH_TOKEN_EXPIRED",
            Reason::ShuttingDown => "SHUTTING_DOWN",
            Reason::RateLimited => "RATE_LIMITED",
            Reason::ProviderBusy => "PROVIDER_BUSY",
            Reason::Internal => "INTERNAL",
        }
    }
}

/// One invalid field of a request (`google.rpc.BadRequest.FieldViolation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `secret_id` or `secret.labels`.
    pub field: String,
    /// What is wrong and what would be accepted. Never echoes a value.
    pub description: String,
}

/// A failure with a caller-safe message and an optional internal cause.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    reason: Reason,
    message: String,
    violations: Vec<FieldViolation>,
    metadata: BTreeMap<String, String>,
    /// When retrying may succeed (`google.rpc.RetryInfo` and `retry-after`).
    retry_delay: Option<Duration>,
    /// For server logs only: never sent to a client.
    internal: Option<String>,
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure with an explicit code, reason and caller-safe message.
    pub fn new(code: ErrorCode, reason: Reason, message: impl Into<String>) -> Self {
        Error {
            code,
            reason,
            message: message.into(),
            violations: Vec::new(),
            metadata: BTreeMap::new(),
            retry_delay: None,
            internal: None,
        }
    }

    /// The calling principal is over its request rate; a token is available
    /// again after `retry_delay`.
    pub fn rate_limited(retry_delay: Duration) -> Self {
        Error::new(
            ErrorCode::ResourceExhausted,
            Reason::RateLimited,
            "too many requests from this principal; retry after the delay in RetryInfo",
        )
        .with_retry_delay(retry_delay)
    }

    /// One invalid field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid_fields(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// Several invalid fields; the message lists them.
    pub fn invalid_fields(violations: Vec<FieldViolation>) -> Self {
        let message = match violations.as_slice() {
            [one] => format!("invalid {}: {}", one.field, one.description),
            many => format!(
                "invalid request: {}",
                many.iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        let mut err = Error::new(ErrorCode::InvalidArgument, Reason::BadRequest, message);
        err.violations = violations;
        err
    }

    /// A missing resource, named by its resource name.
    pub fn not_found(reason: Reason, resource: &str) -> Self {
        Error::new(ErrorCode::NotFound, reason, format!("{resource} not found"))
            .with_metadata("resource", resource)
    }

    /// The caller's etag is stale.
    pub fn etag_mismatch(resource: &str) -> Self {
        Error::new(
            ErrorCode::Aborted,
            Reason::EtagMismatch,
            format!(
                "{resource} was changed by someone else; read it again and retry with the new etag"
            ),
        )
        .with_metadata("resource", resource)
    }

    /// A precondition failed.
    pub fn failed_precondition(reason: Reason, message: impl Into<String>) -> Self {
        Error::new(ErrorCode::FailedPrecondition, reason, message)
    }

    /// An unexpected failure. The cause is logged, the client sees only `internal error`.
    pub fn internal(cause: impl fmt::Display) -> Self {
        Error::new(ErrorCode::Internal, Reason::Internal, "internal error").with_internal(cause)
    }

    /// The database cannot be reached.
    pub fn database_unavailable(cause: impl fmt::Display) -> Self {
        Error::new(
            ErrorCode::Unavailable,
            Reason::DatabaseUnavailable,
            "the database is unavailable; retry with backoff",
        )
        .with_internal(cause)
    }

    /// A capability that this build or deployment does not offer.
    pub fn unimplemented(what: &str) -> Self {
        Error::new(
            ErrorCode::Unimplemented,
            Reason::NotImplemented,
            format!("this version of coffer does not implement {what} yet"),
        )
    }

    /// Adds an `ErrorInfo` metadata entry (never a value or credential).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Says when retrying may succeed (sent as `google.rpc.RetryInfo` and a
    /// `retry-after` header).
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = Some(delay);
        self
    }

    /// Attaches a cause for the server log.
    pub fn with_internal(mut self, cause: impl fmt::Display) -> Self {
        self.internal = Some(cause.to_string());
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The caller-safe message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// When retrying may succeed, if the error says.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_delay
    }

    /// The cause for server logs, if any.
    pub fn internal_cause(&self) -> Option<&str> {
        self.internal.as_deref()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code)
            .field("reason", &self.reason)
            .field("message", &self.message)
            .field("violations", &self.violations)
            .field("retry_delay", &self.retry_delay)
            .field("internal", &self.internal)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_cause_is_not_in_the_message() {
        let err = Error::internal("connection reset by peer at 10.0.0.1");
        assert_eq!(err.message(), "internal error");
        assert_eq!(err.to_string(), "internal error");
        assert_eq!(
            err.internal_cause(),
            Some("connection reset by peer at 10.0.0.1")
        );
    }

    #[test]
    fn several_violations_are_listed() {
        let err = Error::invalid_fields(vec![
            FieldViolation {
                field: "a".into(),
                description: "is required".into(),
            },
            FieldViolation {
                field: "b".into(),
                description: "is too long".into(),
            },
        ]);
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(
            err.message(),
            "invalid request: a: is required; b: is too long"
        );
    }

    #[test]
    fn rate_limited_carries_its_retry_delay() {
        let err = Error::rate_limited(Duration::from_millis(250));
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        assert_eq!(err.reason().as_str(), "RATE_LIMITED");
        assert_eq!(err.retry_delay(), Some(Duration::from_millis(250)));
        assert_eq!(Error::internal("x").retry_delay(), None);
    }
}
