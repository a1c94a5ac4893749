//! Classification of AWS SDK failures into [`ProviderErrorKind`]s with
//! client-safe messages. The raw SDK error goes only into the cause (server
//! logs); AWS error texts never reach a client. AWS error messages do not
//! echo secret values, and values are never formatted here.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::{ProviderError, ProviderErrorKind};

/// Error codes by kind. Codes AWS documents for Secrets Manager and the
/// common ones every AWS JSON service may answer with.
const ACCESS_DENIED: [&str; 10] = [
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredTokenException",
    "ExpiredToken",
];
const THROTTLED: [&str; 7] = [
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
];
const NOT_FOUND: [&str; 1] = ["ResourceNotFoundException"];
const CONFLICT: [&str; 1] = ["ResourceExistsException"];
const INVALID: [&str; 9] = [
    "InvalidRequestException",
    "InvalidParameterException",
    "InvalidNextTokenException",
    "ValidationException",
    "MalformedPolicyDocumentException",
    "PreconditionNotMetException",
    "LimitExceededException",
    "DecryptionFailure",
    "EncryptionFailure",
];
const UNAVAILABLE: [&str; 4] = [
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
];

/// The kind of an AWS error code, falling back on the HTTP status when the
/// code is unknown.
pub(super) fn classify_code(code: Option<&str>, status: Option<u16>) -> ProviderErrorKind {
    if let Some(code) = code {
        for (codes, kind) in [
            (&ACCESS_DENIED[..], ProviderErrorKind::AccessDenied),
            (&THROTTLED[..], ProviderErrorKind::Throttled),
            (&NOT_FOUND[..], ProviderErrorKind::NotFound),
            (&CONFLICT[..], ProviderErrorKind::Conflict),
            (&INVALID[..], ProviderErrorKind::InvalidRequest),
            (&UNAVAILABLE[..], ProviderErrorKind::Unavailable),
        ] {
            if codes.contains(&code) {
                return kind;
            }
        }
    }
    match status {
        Some(401 | 403) => ProviderErrorKind::AccessDenied,
        Some(404) => ProviderErrorKind::NotFound,
        Some(409) => ProviderErrorKind::Conflict,
        Some(429) => ProviderErrorKind::Throttled,
        Some(400..=499) => ProviderErrorKind::InvalidRequest,
        Some(500..=599) => ProviderErrorKind::Unavailable,
        _ => ProviderErrorKind::Provider,
    }
}

/// The safe message for a kind (and, for a few codes that need a specific
/// fix, the code). `operation` is the AWS action, e.g. `GetSecretValue`.
fn message(kind: ProviderErrorKind, code: Option<&str>, operation: &str) -> String {
    match (kind, code) {
        (_, Some("DecryptionFailure")) => "AWS Secrets Manager could not decrypt the secret with its KMS key; check that the key is enabled and that the server's role may use it (kms:Decrypt)".to_owned(),
        (_, Some("EncryptionFailure")) => "AWS Secrets Manager could not encrypt the secret with the vault's KMS key; check kms_key_id, that the key is enabled, and that the server's role may use it (kms:GenerateDataKey)".to_owned(),
        (ProviderErrorKind::AccessDenied, _) => format!(
            "the server's AWS credentials were refused or may not call secretsmanager:{operation} on this secret; check the server's role and its IAM policy"
        ),
        (ProviderErrorKind::Throttled, _) => {
            "AWS Secrets Manager throttled the request; retry with backoff".to_owned()
        }
        (ProviderErrorKind::NotFound, _) => {
            "the secret does not exist in AWS Secrets Manager (it was deleted, purged or renamed remotely)".to_owned()
        }
        (ProviderErrorKind::Conflict, _) => {
            "the secret changed concurrently in AWS Secrets Manager; retry".to_owned()
        }
        (ProviderErrorKind::InvalidRequest, _) => format!(
            "AWS Secrets Manager refused {operation} because of the remote secret's state or the vault's settings (e.g. the secret is scheduled for deletion); check both"
        ),
        (ProviderErrorKind::Unavailable, _) => {
            "AWS Secrets Manager is unreachable or did not answer in time; retry with backoff, and check the vault's region and endpoint_url".to_owned()
        }
        _ => format!(
            "AWS Secrets Manager failed {operation} unexpectedly; the server log has the details"
        ),
    }
}

/// Classifies an error AWS reported for one item of a BatchGetSecretValue.
pub(super) fn from_code(code: Option<&str>, raw: &str, operation: &str) -> ProviderError {
    let kind = classify_code(code, None);
    ProviderError::new(kind, message(kind, code, operation)).with_cause(format!(
        "{operation}: {} {raw}",
        code.unwrap_or("(no code)")
    ))
}

/// Classifies one failed SDK call.
pub(super) fn from_sdk<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let cause = format!("{operation}: {}", DisplayErrorContext(err));
    let (kind, code) = match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code();
            (
                classify_code(code, Some(service.raw().status().as_u16())),
                code,
            )
        }
        SdkError::TimeoutError(_) => (ProviderErrorKind::Unavailable, None),
        SdkError::DispatchFailure(dispatch) => {
            if caused_by_credentials(err) {
                return ProviderError::access_denied(
                    "the server has no usable AWS credentials; configure its default credential chain (environment, profile, web identity or instance role)",
                )
                .with_cause(cause);
            }
            if dispatch.is_user() {
                (ProviderErrorKind::InvalidRequest, None)
            } else {
                (ProviderErrorKind::Unavailable, None)
            }
        }
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            let kind = if (500..=599).contains(&status) {
                ProviderErrorKind::Unavailable
            } else {
                ProviderErrorKind::Provider
            };
            (kind, None)
        }
        // Construction failures are bugs in how Coffer built the request.
        _ => (ProviderErrorKind::Provider, None),
    };
    ProviderError::new(kind, message(kind, code, operation)).with_cause(cause)
}

/// Whether an error's source chain holds a credentials failure (the SDK
/// reports a failed credential chain as a dispatch failure).
fn caused_by_credentials(err: &(dyn StdError + 'static)) -> bool {
    let mut source = err.source();
    while let Some(current) = source {
        if current.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        source = current.source();
    }
    false
}

/// The AWS error code of a failed call, if AWS answered with one.
pub(super) fn code_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(ProvideErrorMetadata::code)
}

#[cfg(test)]
mod tests {
    use aws_sdk_secretsmanager::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

    use super::*;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(status.try_into().expect("a valid status"), "{}".into())
    }

    fn service_error(code: &str, status: u16) -> SdkError<GetSecretValueError, HttpResponse> {
        let err = GetSecretValueError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("raw aws text: arn:aws:secretsmanager:us-east-1:123456789012:secret:x")
                .build(),
        );
        SdkError::service_error(err, response(status))
    }

    #[test]
    fn codes_map_to_kinds() {
        let cases = [
            (
                "AccessDeniedException",
                400,
                ProviderErrorKind::AccessDenied,
            ),
            (
                "UnrecognizedClientException",
                400,
                ProviderErrorKind::AccessDenied,
            ),
            (
                "ExpiredTokenException",
                400,
                ProviderErrorKind::AccessDenied,
            ),
            ("ThrottlingException", 400, ProviderErrorKind::Throttled),
            (
                "TooManyRequestsException",
                400,
                ProviderErrorKind::Throttled,
            ),
            (
                "ResourceNotFoundException",
                400,
                ProviderErrorKind::NotFound,
            ),
            ("ResourceExistsException", 400, ProviderErrorKind::Conflict),
            (
                "InvalidRequestException",
                400,
                ProviderErrorKind::InvalidRequest,
            ),
            (
                "InvalidParameterException",
                400,
                ProviderErrorKind::InvalidRequest,
            ),
            ("DecryptionFailure", 400, ProviderErrorKind::InvalidRequest),
            ("InternalServiceError", 500, ProviderErrorKind::Unavailable),
            ("SomethingNew", 503, ProviderErrorKind::Unavailable),
            ("SomethingNew", 403, ProviderErrorKind::AccessDenied),
            ("SomethingNew", 429, ProviderErrorKind::Throttled),
            ("SomethingNew", 400, ProviderErrorKind::InvalidRequest),
            ("SomethingNew", 302, ProviderErrorKind::Provider),
        ];
        for (code, status, kind) in cases {
            let err = from_sdk("GetSecretValue", &service_error(code, status));
            assert_eq!(err.kind, kind, "{code} {status}");
            assert!(
                !err.message.contains("raw aws text") && !err.message.contains("arn:aws"),
                "raw text reached the message: {}",
                err.message
            );
            let cause = err.cause.expect("a cause for the log");
            assert!(cause.contains(code), "{cause}");
            assert!(cause.starts_with("GetSecretValue: "), "{cause}");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let denied = from_sdk(
            "GetSecretValue",
            &service_error("AccessDeniedException", 400),
        );
        assert!(
            denied.message.contains("secretsmanager:GetSecretValue"),
            "{}",
            denied.message
        );
        let kms = from_sdk("GetSecretValue", &service_error("DecryptionFailure", 400));
        assert!(kms.message.contains("kms:Decrypt"), "{}", kms.message);
        let throttled = from_sdk("GetSecretValue", &service_error("ThrottlingException", 400));
        assert!(throttled.message.contains("retry"), "{}", throttled.message);
        for err in [denied, kms, throttled] {
            assert!(!err.message.ends_with('.'), "{}", err.message);
        }
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let timeout: SdkError<GetSecretValueError, HttpResponse> =
            SdkError::timeout_error("operation timed out");
        assert_eq!(
            from_sdk("GetSecretValue", &timeout).kind,
            ProviderErrorKind::Unavailable
        );
        let refused: SdkError<GetSecretValueError, HttpResponse> = SdkError::dispatch_failure(
            ConnectorError::io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()),
        );
        let err = from_sdk("GetSecretValue", &refused);
        assert_eq!(err.kind, ProviderErrorKind::Unavailable);
        assert!(err.message.contains("unreachable"), "{}", err.message);
        let garbled: SdkError<GetSecretValueError, HttpResponse> =
            SdkError::response_error("not json", response(502));
        assert_eq!(
            from_sdk("GetSecretValue", &garbled).kind,
            ProviderErrorKind::Unavailable
        );
        let odd: SdkError<GetSecretValueError, HttpResponse> =
            SdkError::response_error("not json", response(200));
        assert_eq!(
            from_sdk("GetSecretValue", &odd).kind,
            ProviderErrorKind::Provider
        );
        let construction: SdkError<GetSecretValueError, HttpResponse> =
            SdkError::construction_failure("missing field");
        assert_eq!(
            from_sdk("GetSecretValue", &construction).kind,
            ProviderErrorKind::Provider
        );
    }

    #[test]
    fn missing_credentials_are_access_denied() {
        let no_credentials: SdkError<GetSecretValueError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::other(
                Box::new(CredentialsError::not_loaded("no providers in chain")),
                None,
            ));
        let err = from_sdk("GetSecretValue", &no_credentials);
        assert_eq!(err.kind, ProviderErrorKind::AccessDenied);
        assert!(err.message.contains("credential chain"), "{}", err.message);
    }

    #[test]
    fn batch_item_errors_are_classified() {
        let err = from_code(
            Some("ResourceNotFoundException"),
            "raw text",
            "BatchGetSecretValue",
        );
        assert_eq!(err.kind, ProviderErrorKind::NotFound);
        assert!(!err.message.contains("raw text"));
        assert!(err.cause.unwrap().contains("raw text"));
        assert_eq!(
            from_code(None, "", "BatchGetSecretValue").kind,
            ProviderErrorKind::Provider
        );
        assert_eq!(
            code_of(&service_error("ThrottlingException", 400)),
            Some("ThrottlingException")
        );
    }
}
