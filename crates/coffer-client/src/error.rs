//! The SDK's one error type. Nothing in it ever carries a secret value: server
//! statuses never do (the server guarantees it), and local errors name only
//! files, URLs and keys.

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (bad URL, plaintext to a remote host,
    /// TLS files that cannot be read, ...); fix it and connect again.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The first connection failed; the server may be down or unreachable.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with an error (after retries, for UNAVAILABLE).
    #[error("{}", status_text(.0))]
    Status(#[from] tonic::Status),
    /// The call does not fit what this cache watches (e.g. another consumer).
    #[error("{0}")]
    OutOfScope(String),
}

impl Error {
    /// The gRPC code, for errors the server (or the transport) reported.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status(status) => Some(status.code()),
            Error::Config(_) | Error::Connect { .. } | Error::OutOfScope(_) => None,
        }
    }
}

fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
