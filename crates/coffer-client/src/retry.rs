//! Retries with exponential backoff and full jitter, on UNAVAILABLE: the
//! code that says "nothing happened, try again" (server down, draining, or
//! unreachable); and on RESOURCE_EXHAUSTED when the server says when to come
//! back (`google.rpc.RetryInfo`, sent with RATE_LIMITED and PROVIDER_BUSY):
//! the call was refused before it ran, so it is waited for exactly that long
//! (never longer than `max_backoff`; a later hint is returned as the error).
//! Every other code is an answer, and a retry could repeat a mutation or
//! hide a real error. A RetryInfo on UNAVAILABLE stretches the backoff to at
//! least the server's delay.
//!
//! tonic reports a connection that broke under a call (reset, broken pipe)
//! as UNKNOWN, and a call queued on a connection that closed before sending
//! it as CANCELLED, each with the transport error as its source; gRPC calls
//! both UNAVAILABLE, and so do we: such statuses are turned into UNAVAILABLE
//! before they are judged or returned. An UNKNOWN or CANCELLED the server
//! sent has no transport source and stays what it is.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// How often and how patiently to retry (see the module docs for what).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry; it doubles per retry.
    pub initial_backoff: Duration,
    /// The largest backoff ceiling.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (0 for the first retry): a
    /// uniformly random duration up to `initial_backoff * 2^retry`, capped at
    /// `max_backoff`. Full jitter spreads out clients that failed together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry.min(30)))
            .min(self.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Runs `op` until it succeeds, fails with a code that is not retried
    /// (see the module docs), or `max_attempts` attempts have failed; the
    /// last status is returned.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempt = 1;
        loop {
            let status = match op().await.map_err(connection_lost_is_unavailable) {
                Err(status) if attempt < self.max_attempts => status,
                result => return result,
            };
            let Some(wait) = self.wait_before_retry(&status, attempt - 1) else {
                return Err(status);
            };
            tracing::debug!(attempt, code = ?status.code(), ?wait, "retrying a coffer call");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// How long to wait before retrying after `status` (retry number
    /// `retry`), or `None` when it is not retried.
    fn wait_before_retry(&self, status: &Status, retry: u32) -> Option<Duration> {
        let hint = server_retry_delay(status);
        match status.code() {
            Code::Unavailable => Some(hint.map_or_else(
                || self.backoff(retry),
                |hint| hint.min(self.max_backoff).max(self.backoff(retry)),
            )),
            Code::ResourceExhausted => hint.filter(|hint| *hint <= self.max_backoff),
            _ => None,
        }
    }
}

/// The delay a status's `google.rpc.RetryInfo` asks for, if it has one.
pub(crate) fn server_retry_delay(status: &Status) -> Option<Duration> {
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
}

/// UNAVAILABLE for a call whose connection broke, else `status` as it is.
pub(crate) fn connection_lost_is_unavailable(status: Status) -> Status {
    let transport = std::error::Error::source(&status)
        .is_some_and(|source| source.is::<tonic::transport::Error>());
    if matches!(status.code(), Code::Unknown | Code::Cancelled) && transport {
        Status::unavailable(format!("connection lost: {}", status.message()))
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        }
    }

    /// Counts attempts of an operation that always fails with `code`.
    async fn attempts_for(code: Code, max_attempts: u32) -> u32 {
        let calls = AtomicU32::new(0);
        let result: Result<(), Status> = quick(max_attempts)
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(Status::new(code, "no")) }
            })
            .await;
        assert_eq!(result.unwrap_err().code(), code);
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn without_a_hint_only_unavailable_is_retried_and_attempts_are_bounded() {
        assert_eq!(attempts_for(Code::Unavailable, 4).await, 4);
        assert_eq!(attempts_for(Code::Unavailable, 1).await, 1);
        for code in [
            Code::NotFound,
            Code::PermissionDenied,
            Code::Aborted,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Internal,
            Code::Unknown,
            Code::OutOfRange,
        ] {
            assert_eq!(attempts_for(code, 4).await, 1, "{code:?}");
        }
    }

    /// A status carrying `google.rpc.RetryInfo`, as the server sends it.
    fn with_retry_info(code: Code, delay: Duration) -> Status {
        let details = tonic_types::ErrorDetails::with_retry_info(Some(delay));
        Status::with_error_details(code, "later", details)
    }

    /// Attempts and elapsed time of an operation that fails with `status`.
    async fn run_failing(policy: RetryPolicy, status: Status) -> (u32, Duration) {
        let calls = AtomicU32::new(0);
        let started = std::time::Instant::now();
        let result: Result<(), Status> = policy
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                let status = Status::with_details(
                    status.code(),
                    status.message(),
                    status.details().to_vec().into(),
                );
                async move { Err(status) }
            })
            .await;
        assert_eq!(result.unwrap_err().code(), status.code());
        (calls.load(Ordering::SeqCst), started.elapsed())
    }

    #[tokio::test]
    async fn resource_exhausted_waits_the_servers_retry_info() {
        let hint = Duration::from_millis(30);
        let (calls, elapsed) =
            run_failing(quick(3), with_retry_info(Code::ResourceExhausted, hint)).await;
        assert_eq!(calls, 1, "a hint beyond max_backoff is not waited for");
        let patient = RetryPolicy {
            max_backoff: Duration::from_secs(1),
            ..quick(3)
        };
        let (calls, elapsed_patient) =
            run_failing(patient, with_retry_info(Code::ResourceExhausted, hint)).await;
        assert_eq!(calls, 3);
        assert!(elapsed_patient >= hint * 2, "{elapsed_patient:?}");
        assert!(elapsed < hint, "{elapsed:?}");
    }

    #[tokio::test]
    async fn unavailable_backs_off_at_least_the_servers_hint() {
        let hint = Duration::from_millis(40);
        let patient = RetryPolicy {
            max_backoff: Duration::from_secs(1),
            ..quick(2)
        };
        let (calls, elapsed) = run_failing(patient, with_retry_info(Code::Unavailable, hint)).await;
        assert_eq!(calls, 2);
        assert!(elapsed >= hint, "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_retry_that_succeeds_returns_its_result() {
        let calls = AtomicU32::new(0);
        let result = quick(5)
            .run(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(Status::unavailable("down"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result.unwrap(), 2);
    }

    /// A status as tonic builds it for a call its connection failed.
    fn from_the_transport(code: Code) -> Status {
        let transport = tonic::transport::Endpoint::from_shared("not a uri\u{0}")
            .expect_err("a NUL is not allowed in a URI");
        let mut status = Status::new(code, "connection closed");
        status.set_source(std::sync::Arc::new(transport));
        status
    }

    #[test]
    fn a_connection_lost_under_a_call_is_unavailable_but_the_servers_codes_stay() {
        for code in [Code::Unknown, Code::Cancelled] {
            let status = connection_lost_is_unavailable(from_the_transport(code));
            assert_eq!(status.code(), Code::Unavailable, "{code:?}");
            let sent = connection_lost_is_unavailable(Status::new(code, "from the server"));
            assert_eq!(sent.code(), code);
        }
        let refused = connection_lost_is_unavailable(from_the_transport(Code::NotFound));
        assert_eq!(refused.code(), Code::NotFound);
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        };
        for _ in 0..200 {
            assert!(policy.backoff(0) <= Duration::from_millis(100));
            assert!(policy.backoff(2) <= Duration::from_millis(400));
            assert!(policy.backoff(40) <= Duration::from_millis(1000));
        }
        // Jitter: the waits are not all the same.
        let waits: std::collections::HashSet<_> = (0..20).map(|_| policy.backoff(3)).collect();
        assert!(waits.len() > 1);
    }
}
