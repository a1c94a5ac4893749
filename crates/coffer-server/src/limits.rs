//! Per-principal request rate limits: one token bucket per calling
//! principal, checked after authentication (the principal is known) and
//! before the handler runs, on SecretsService and VaultService only —
//! `grpc.health.v1` and reflection are never limited.
//!
//! Which rate applies is decided by the principal alone: its explicit
//! override when [`RateLimits::principals`] has one, else
//! [`RateLimits::default`]; with neither the principal is not limited.
//! Roles play no part, so a principal's limit is the same in every tenant
//! and cannot change when a grant does.
//!
//! A call over the limit answers RESOURCE_EXHAUSTED, reason `RATE_LIMITED`,
//! with `google.rpc.RetryInfo` (the time until the next token) and a
//! `retry-after` header (whole seconds, rounded up), and counts in
//! `coffer_rate_limited_total{method}`.
//!
//! Memory is bounded: at most [`RateLimits::max_buckets`] buckets are kept.
//! When the map is full, buckets that have refilled completely are dropped
//! first (a full bucket is indistinguishable from a fresh one, so nothing is
//! forgotten); if every bucket is in use, the least recently used quarter is
//! dropped, which at worst hands those principals a fresh burst.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use coffer_core::{Error, Principal};
use futures::future::{Either, Ready, ready};
use tonic::body::Body;
use tonic::server::NamedService;
use tower_service::Service;

use crate::grpc::status::to_status;
use crate::observe::RpcContext;
use crate::observe::metrics::{MethodLabels, RATE_LIMITED};

/// The default bound on tracked principals.
pub const DEFAULT_MAX_BUCKETS: usize = 100_000;

/// Tokens short of a whole one by less than this count as whole, so a client
/// that waits exactly the advertised delay is not refused over float error.
const EPSILON: f64 = 1e-9;

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second; finite and positive.
    per_second: f64,
    /// Bucket size: how many calls may arrive at once after a pause; ≥ 1.
    burst: u32,
}

impl Rate {
    /// `None` unless `per_second` is finite and positive and `burst` ≥ 1.
    pub fn new(per_second: f64, burst: u32) -> Option<Rate> {
        (per_second.is_finite() && per_second > 0.0 && burst >= 1)
            .then_some(Rate { per_second, burst })
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// Which principals are limited, and how. The default limits nobody.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// The rate of every principal without an override; `None`: unlimited.
    pub default: Option<Rate>,
    /// Explicit per-principal rates, by principal id; they win over the
    /// default (higher or lower).
    pub principals: HashMap<String, Rate>,
    /// How many buckets are kept at most (see the module docs).
    pub max_buckets: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            default: None,
            principals: HashMap::new(),
            max_buckets: DEFAULT_MAX_BUCKETS,
        }
    }
}

impl RateLimits {
    /// The rate `principal` is held to, if any.
    pub fn rate_for(&self, principal: &str) -> Option<Rate> {
        self.principals.get(principal).copied().or(self.default)
    }

    /// Whether any principal can be limited at all.
    pub fn is_enabled(&self) -> bool {
        self.default.is_some() || !self.principals.is_empty()
    }
}

/// One principal's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.updated = now;
    }

    /// Takes one token, or says how long until one is available.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 - EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            return Ok(());
        }
        let seconds = (1.0 - self.tokens) / rate.per_second;
        // Rounded up to the microsecond: waiting the delay must be enough.
        let micros = (seconds * 1_000_000.0).ceil();
        Err(Duration::from_micros(if micros >= u64::MAX as f64 {
            u64::MAX
        } else {
            micros as u64
        }))
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= f64::from(rate.burst)
    }
}

/// The buckets of every principal seen recently. Cheap to clone; clones
/// share the buckets.
#[derive(Debug, Clone)]
pub struct RateLimiter(Arc<LimiterInner>);

#[derive(Debug)]
struct LimiterInner {
    limits: RateLimits,
    /// One short critical section per call; no await inside.
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter(Arc::new(LimiterInner {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether any principal can be limited; a disabled limiter admits every
    /// call without taking its lock.
    pub fn is_enabled(&self) -> bool {
        self.0.limits.is_enabled()
    }

    /// Admits one call of `principal`, or says how long until it would be.
    pub fn check(&self, principal: &str) -> Result<(), Duration> {
        self.check_at(principal, Instant::now())
    }

    /// How many buckets are held now.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn check_at(&self, principal: &str, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.0.limits.rate_for(principal) else {
            return Ok(());
        };
        let mut buckets = self.lock();
        if let Some(bucket) = buckets.get_mut(principal) {
            return bucket.take(rate, now);
        }
        if buckets.len() >= self.0.limits.max_buckets.max(1) {
            self.evict(&mut buckets, now);
        }
        let mut bucket = Bucket::full(rate, now);
        let taken = bucket.take(rate, now);
        buckets.insert(principal.to_owned(), bucket);
        taken
    }

    /// Makes room: full buckets first, then the least recently used quarter.
    fn evict(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let limits = &self.0.limits;
        buckets.retain(|principal, bucket| {
            limits
                .rate_for(principal)
                .is_some_and(|rate| !bucket.is_full(rate, now))
        });
        let max = limits.max_buckets.max(1);
        if buckets.len() < max {
            return;
        }
        let keep = max - max.div_ceil(4);
        let mut by_age: Vec<(Instant, String)> = buckets
            .iter()
            .map(|(principal, bucket)| (bucket.updated, principal.clone()))
            .collect();
        let drop = by_age.len().saturating_sub(keep);
        if drop == 0 {
            return;
        }
        by_age.select_nth_unstable_by_key(drop - 1, |(updated, _)| *updated);
        for (_, principal) in by_age.into_iter().take(drop) {
            buckets.remove(&principal);
        }
        tracing::warn!(
            dropped = drop,
            max_buckets = max,
            "rate limiter is tracking its maximum of active principals; dropped the least recently used buckets"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        // Plain numbers; a panicking holder cannot leave them inconsistent.
        self.0
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wraps one generated service (inside the authenticating interceptor, so
/// the [`Principal`] is in the extensions) and refuses calls over the
/// caller's rate before they reach the handler.
#[derive(Debug, Clone)]
pub(crate) struct RateLimited<S> {
    inner: S,
    limiter: RateLimiter,
    methods: MethodLabels,
}

impl<S> RateLimited<S> {
    pub(crate) fn new(inner: S, limiter: RateLimiter, methods: MethodLabels) -> Self {
        RateLimited {
            inner,
            limiter,
            methods,
        }
    }
}

impl<S: NamedService> NamedService for RateLimited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for RateLimited<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<http::Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // No principal: the handler answers UNAUTHENTICATED; nothing to count.
        if let Some(principal) = request.extensions().get::<Principal>()
            && let Err(wait) = self.limiter.check(principal.as_str())
        {
            let method = self
                .methods
                .label(request.uri().path())
                .unwrap_or_else(MethodLabels::unknown);
            metrics::counter!(RATE_LIMITED, "method" => method).increment(1);
            if let Some(context) = request.extensions().get::<RpcContext>() {
                // The handler never runs to name the caller on the log line.
                context.record_caller(principal.as_str(), "");
            }
            let status = to_status(&Error::rate_limited(wait));
            return Either::Left(ready(Ok(status.into_http())));
        }
        Either::Right(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate::new(per_second, burst).expect("a valid rate")
    }

    fn limiter(default: Option<Rate>, max_buckets: usize) -> RateLimiter {
        RateLimiter::new(RateLimits {
            default,
            principals: HashMap::new(),
            max_buckets,
        })
    }

    #[test]
    fn invalid_rates_are_refused() {
        assert!(Rate::new(0.0, 1).is_none());
        assert!(Rate::new(-1.0, 1).is_none());
        assert!(Rate::new(f64::NAN, 1).is_none());
        assert!(Rate::new(f64::INFINITY, 1).is_none());
        assert!(Rate::new(1.0, 0).is_none());
        assert_eq!(rate(2.5, 3).per_second(), 2.5);
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let limiter = limiter(Some(rate(2.0, 3)), 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at("p", t0), Ok(()));
        }
        // Empty: one token takes 1 / 2 s.
        assert_eq!(limiter.check_at("p", t0), Err(Duration::from_millis(500)));
        // Partly refilled: a quarter of a token short is 125 ms.
        let t1 = t0 + Duration::from_millis(375);
        assert_eq!(limiter.check_at("p", t1), Err(Duration::from_millis(125)));
        // Waiting exactly the advertised delay is enough.
        let t2 = t1 + Duration::from_millis(125);
        assert_eq!(limiter.check_at("p", t2), Ok(()));
        assert!(limiter.check_at("p", t2).is_err());
        // A long pause refills to the burst, not beyond.
        let t3 = t2 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.check_at("p", t3), Ok(()));
        }
        assert!(limiter.check_at("p", t3).is_err());
    }

    #[test]
    fn retry_delay_is_rounded_up() {
        let limiter = limiter(Some(rate(3.0, 1)), 10);
        let t0 = Instant::now();
        assert_eq!(limiter.check_at("p", t0), Ok(()));
        // 1/3 s = 333_333.3 µs, rounded up.
        assert_eq!(
            limiter.check_at("p", t0),
            Err(Duration::from_micros(333_334))
        );
        assert_eq!(
            limiter.check_at("p", t0 + Duration::from_micros(333_334)),
            Ok(())
        );
    }

    #[test]
    fn principals_have_their_own_buckets_and_overrides_win() {
        let mut principals = HashMap::new();
        principals.insert("batch".to_owned(), rate(1.0, 5));
        let limiter = RateLimiter::new(RateLimits {
            default: Some(rate(1.0, 1)),
            principals,
            max_buckets: 10,
        });
        let t0 = Instant::now();
        assert_eq!(limiter.check_at("a", t0), Ok(()));
        assert!(limiter.check_at("a", t0).is_err());
        assert_eq!(limiter.check_at("b", t0), Ok(()));
        for _ in 0..5 {
            assert_eq!(limiter.check_at("batch", t0), Ok(()));
        }
        assert!(limiter.check_at("batch", t0).is_err());
    }

    #[test]
    fn without_a_rate_nobody_is_limited_or_tracked() {
        let limiter = limiter(None, 10);
        assert!(!limiter.is_enabled());
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(limiter.check_at("p", t0), Ok(()));
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn buckets_are_bounded() {
        let limiter = limiter(Some(rate(1.0, 2)), 8);
        let t0 = Instant::now();
        // Eight active principals fill the map.
        for i in 0..8 {
            assert_eq!(limiter.check_at(&format!("p{i}"), t0), Ok(()));
        }
        assert_eq!(limiter.tracked(), 8);
        // A ninth, with every bucket in use: the oldest quarter goes.
        let t1 = t0 + Duration::from_millis(1);
        assert_eq!(limiter.check_at("p8", t1), Ok(()));
        assert!(limiter.tracked() <= 8, "{}", limiter.tracked());
        // Thousands of principals never grow it past the bound.
        for i in 0..5_000 {
            let _ = limiter.check_at(&format!("q{i}"), t1);
        }
        assert!(limiter.tracked() <= 8, "{}", limiter.tracked());
        // After a pause every old bucket is full again: the next eviction
        // drops all of them and keeps only the new principals' buckets.
        let t2 = t1 + Duration::from_secs(10);
        let mut inserted = 0;
        loop {
            let before = limiter.tracked();
            assert_eq!(limiter.check_at(&format!("n{inserted}"), t2), Ok(()));
            inserted += 1;
            if limiter.tracked() <= before {
                break;
            }
            assert!(inserted <= 8, "no eviction by the bound");
        }
        assert_eq!(limiter.tracked(), inserted);
        // A dropped principal starts with a full burst, as it would have.
        assert_eq!(limiter.check_at("p0", t2), Ok(()));
        assert_eq!(limiter.check_at("p0", t2), Ok(()));
        assert!(limiter.check_at("p0", t2).is_err());
    }

    #[test]
    fn an_active_bucket_is_not_dropped_while_idle_ones_can_be() {
        let limiter = limiter(Some(rate(1.0, 1)), 2);
        let t0 = Instant::now();
        assert_eq!(limiter.check_at("busy", t0), Ok(()));
        assert_eq!(
            limiter.check_at("idle", t0 - Duration::from_secs(5)),
            Ok(())
        );
        // "idle" refilled long ago; making room drops it, not "busy".
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(limiter.check_at("third", t1), Ok(()));
        assert!(limiter.check_at("busy", t1).is_err());
    }
}
