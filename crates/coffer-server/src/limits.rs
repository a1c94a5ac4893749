//! Per-principal request rate limits: one token bucket per calling
//! principal, checked after authentication (the principal is known) and
//! before the handler runs, on SecretsService and VaultService only —
//! `grpc.health.v1` and reflection are never limited.
//!
//! Which rate applies, first match wins:
//! 1. the principal's own entry in [`RateLimits::principals`];
//! 2. else the most generous rate in [`RateLimits::roles`] (highest
//!    `requests_per_second`, ties broken by the larger burst) among the roles
//!    the principal holds in *any* tenant under the policy in force now;
//! 3. else [`RateLimits::default`];
//! 4. else the principal is not limited.
//!
//! Roles count across every tenant because the limiter runs in a tower layer
//! in front of the handlers, before the request is decoded, so the tenant of
//! the call is not known yet; a principal has one bucket and one rate, not
//! one per tenant. A role rate replaces the default even when it is lower.
//!
//! The policy is the server's [`SharedPolicy`], so a reload (SIGHUP) changes
//! role-derived rates for every later call. The principal → role-rate table
//! is rebuilt once per policy generation (the first call that sees a new
//! policy builds it) and read without a lock; a call takes the bucket lock
//! only when it has a rate. Buckets are kept across a rate change: the
//! next call refills at the new rate and caps at the new burst, so a lower
//! limit takes effect at once and a higher one grants no fresh burst.
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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use coffer_core::authz::{Policy, Role};
use coffer_core::{Error, Principal};
use futures::future::{Either, Ready, ready};
use tonic::body::Body;
use tonic::server::NamedService;
use tower_service::Service;

use crate::grpc::authz::SharedPolicy;
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

    /// The more generous of two rates: the higher sustained rate, and on a
    /// tie the larger burst.
    pub fn most_generous(self, other: Rate) -> Rate {
        let key = |rate: &Rate| (rate.per_second, rate.burst);
        // Rates are finite by construction, so the comparison is total.
        if key(&other) > key(&self) {
            other
        } else {
            self
        }
    }
}

/// Which principals are limited, and how. The default limits nobody.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// The rate of every principal without an own entry or a role rate;
    /// `None`: unlimited.
    pub default: Option<Rate>,
    /// Explicit per-principal rates, by principal id; they win over role
    /// rates and the default (higher or lower).
    pub principals: HashMap<String, Rate>,
    /// Rates by role: a principal without an own entry gets the most
    /// generous rate among the roles it holds in any tenant (module docs).
    pub roles: BTreeMap<Role, Rate>,
    /// How many buckets are kept at most (see the module docs).
    pub max_buckets: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            default: None,
            principals: HashMap::new(),
            roles: BTreeMap::new(),
            max_buckets: DEFAULT_MAX_BUCKETS,
        }
    }
}

impl RateLimits {
    /// The rate `principal` is held to when it holds no role that has a
    /// rate: its own entry, else the default.
    pub fn rate_for(&self, principal: &str) -> Option<Rate> {
        self.rate_with_role_rate(principal, None)
    }

    /// The rate of a principal holding `roles` (in any tenant): its own
    /// entry, else the most generous of those roles' rates, else the default.
    pub fn rate_with_roles(
        &self,
        principal: &str,
        roles: impl IntoIterator<Item = Role>,
    ) -> Option<Rate> {
        self.rate_with_role_rate(principal, self.role_rate(roles))
    }

    /// The most generous rate among `roles`; `None` when none has one.
    pub fn role_rate(&self, roles: impl IntoIterator<Item = Role>) -> Option<Rate> {
        roles
            .into_iter()
            .filter_map(|role| self.roles.get(&role).copied())
            .reduce(Rate::most_generous)
    }

    fn rate_with_role_rate(&self, principal: &str, role_rate: Option<Rate>) -> Option<Rate> {
        self.principals
            .get(principal)
            .copied()
            .or(role_rate)
            .or(self.default)
    }

    /// Whether any principal can be limited at all.
    pub fn is_enabled(&self) -> bool {
        self.default.is_some() || !self.principals.is_empty() || !self.roles.is_empty()
    }
}

/// One principal's bucket. It does not remember the rate it was created
/// under: every refill uses the rate in force at that call.
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

    /// Adds what `rate` earned since the last call, capped at its burst (so
    /// a burst lowered by a reload takes effect on the next call).
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

/// The role-derived rate of every principal of one policy generation.
#[derive(Debug, Default)]
struct RoleRates {
    /// The policy the table was built from. Held (not just its address) so
    /// the address cannot be reused by a later policy while we compare it.
    policy: Option<Arc<Policy>>,
    /// Principal id → the most generous rate among its roles; principals
    /// whose roles have no rate are absent.
    rates: HashMap<String, Rate>,
}

impl RoleRates {
    fn build(limits: &RateLimits, policy: Arc<Policy>) -> RoleRates {
        let rates = policy
            .roles_by_principal()
            .into_iter()
            .filter_map(|(principal, roles)| {
                limits
                    .role_rate(roles)
                    .map(|rate| (principal.to_owned(), rate))
            })
            .collect();
        RoleRates {
            policy: Some(policy),
            rates,
        }
    }

    fn is_for(&self, policy: &Arc<Policy>) -> bool {
        self.policy
            .as_ref()
            .is_some_and(|built| Arc::ptr_eq(built, policy))
    }
}

/// The buckets of every principal seen recently. Cheap to clone; clones
/// share the buckets.
#[derive(Debug, Clone)]
pub struct RateLimiter(Arc<LimiterInner>);

#[derive(Debug)]
struct LimiterInner {
    limits: RateLimits,
    /// Who holds which roles; consulted only when some role has a rate.
    policy: SharedPolicy,
    /// Role rates of the last policy generation seen; replaced whole.
    role_rates: ArcSwap<RoleRates>,
    /// One short critical section per limited call; no await inside.
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter holding principals to `limits`, with role rates taken from
    /// the roles `policy` grants (and re-read whenever it is replaced).
    pub fn new(limits: RateLimits, policy: SharedPolicy) -> RateLimiter {
        RateLimiter(Arc::new(LimiterInner {
            limits,
            policy,
            role_rates: ArcSwap::from_pointee(RoleRates::default()),
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

    /// The rate `principal` is held to under the policy in force now.
    pub fn rate_for(&self, principal: &str) -> Option<Rate> {
        let role_rates = self.role_rates();
        self.rate_in(&role_rates, principal)
    }

    /// The role-rate table of the policy in force, rebuilt if the policy was
    /// replaced since it was built. Two calls racing over a reload may both
    /// build (each for the policy it saw); the table always matches the
    /// policy of the call that reads it, and settles on the newest.
    fn role_rates(&self) -> Arc<RoleRates> {
        let limits = &self.0.limits;
        let cached = self.0.role_rates.load_full();
        if limits.roles.is_empty() {
            return cached;
        }
        let policy = self.0.policy.current();
        if cached.is_for(&policy) {
            return cached;
        }
        let built = Arc::new(RoleRates::build(limits, policy));
        tracing::debug!(
            principals_with_role_rates = built.rates.len(),
            "rate limiter rebuilt its role rates for a new policy"
        );
        self.0.role_rates.store(built.clone());
        built
    }

    fn rate_in(&self, role_rates: &RoleRates, principal: &str) -> Option<Rate> {
        self.0
            .limits
            .rate_with_role_rate(principal, role_rates.rates.get(principal).copied())
    }

    fn check_at(&self, principal: &str, now: Instant) -> Result<(), Duration> {
        if !self.is_enabled() {
            return Ok(());
        }
        let role_rates = self.role_rates();
        let Some(rate) = self.rate_in(&role_rates, principal) else {
            return Ok(());
        };
        let mut buckets = self.lock();
        if let Some(bucket) = buckets.get_mut(principal) {
            return bucket.take(rate, now);
        }
        if buckets.len() >= self.0.limits.max_buckets.max(1) {
            self.evict(&mut buckets, &role_rates, now);
        }
        let mut bucket = Bucket::full(rate, now);
        let taken = bucket.take(rate, now);
        buckets.insert(principal.to_owned(), bucket);
        taken
    }

    /// Makes room: full buckets first, then the least recently used quarter.
    /// A bucket whose principal has no rate any more (after a reload) is
    /// dropped too.
    fn evict(&self, buckets: &mut HashMap<String, Bucket>, role_rates: &RoleRates, now: Instant) {
        let limits = &self.0.limits;
        buckets.retain(|principal, bucket| {
            self.rate_in(role_rates, principal)
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
        RateLimiter::new(
            RateLimits {
                default,
                max_buckets,
                ..RateLimits::default()
            },
            SharedPolicy::new(Policy::default()),
        )
    }

    fn policy(text: &str) -> Policy {
        crate::grpc::authz::parse_policy(text).expect("a valid policy")
    }

    /// `ci` is a resolver in acme and a viewer in globex; `ops` is admin
    /// everywhere; `batch` is a resolver with its own entry; `nobody` holds
    /// no grant.
    const POLICY: &str = r#"
        [[grant]]
        principal = "ci"
        tenants = ["acme"]
        roles = ["resolver"]

        [[grant]]
        principal = "ci"
        tenants = ["globex"]
        roles = ["viewer"]

        [[grant]]
        principal = "ops"
        tenants = ["*"]
        roles = ["admin"]

        [[grant]]
        principal = "batch"
        tenants = ["acme"]
        roles = ["resolver"]
    "#;

    fn role_limiter(
        default: Option<Rate>,
        principals: &[(&str, Rate)],
        roles: &[(Role, Rate)],
        policy: SharedPolicy,
    ) -> RateLimiter {
        RateLimiter::new(
            RateLimits {
                default,
                principals: principals
                    .iter()
                    .map(|(p, r)| ((*p).to_owned(), *r))
                    .collect(),
                roles: roles.iter().copied().collect(),
                max_buckets: 10,
            },
            policy,
        )
    }

    /// How many calls pass at `now` before the first refusal (at most 100).
    fn admitted(limiter: &RateLimiter, principal: &str, now: Instant) -> usize {
        (0..100)
            .take_while(|_| limiter.check_at(principal, now).is_ok())
            .count()
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
        let limiter = RateLimiter::new(
            RateLimits {
                default: Some(rate(1.0, 1)),
                principals,
                roles: BTreeMap::new(),
                max_buckets: 10,
            },
            SharedPolicy::new(Policy::default()),
        );
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

    #[test]
    fn the_most_generous_rate_is_the_faster_then_the_larger_burst() {
        let slow_big = rate(1.0, 50);
        let fast_small = rate(2.0, 1);
        assert_eq!(slow_big.most_generous(fast_small), fast_small);
        assert_eq!(fast_small.most_generous(slow_big), fast_small);
        assert_eq!(rate(2.0, 3).most_generous(rate(2.0, 5)), rate(2.0, 5));
        assert_eq!(rate(2.0, 5).most_generous(rate(2.0, 3)), rate(2.0, 5));
    }

    #[test]
    fn a_role_rate_applies_to_its_holders_in_any_tenant() {
        let limiter = role_limiter(
            None,
            &[],
            &[(Role::Viewer, rate(1.0, 2))],
            SharedPolicy::new(policy(POLICY)),
        );
        assert!(limiter.is_enabled());
        let t0 = Instant::now();
        // ci is a viewer in globex only; the limit follows it everywhere.
        assert_eq!(limiter.rate_for("ci"), Some(rate(1.0, 2)));
        assert_eq!(admitted(&limiter, "ci", t0), 2);
        assert_eq!(
            limiter.check_at("ci", t0),
            Err(Duration::from_secs(1)),
            "the retry delay follows the role's rate"
        );
        // Without the role, and without a default: not limited or tracked.
        assert_eq!(limiter.rate_for("ops"), None);
        assert_eq!(admitted(&limiter, "ops", t0), 100);
        assert_eq!(admitted(&limiter, "nobody", t0), 100);
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn a_principals_own_entry_beats_its_roles() {
        let limiter = role_limiter(
            Some(rate(100.0, 100)),
            &[("batch", rate(1.0, 1))],
            &[(Role::Resolver, rate(50.0, 50))],
            SharedPolicy::new(policy(POLICY)),
        );
        let t0 = Instant::now();
        // batch is a resolver, but its own (lower) entry wins.
        assert_eq!(limiter.rate_for("batch"), Some(rate(1.0, 1)));
        assert_eq!(admitted(&limiter, "batch", t0), 1);
        // ci is a resolver too, without an entry: the role's rate, which
        // replaces the (here higher) default.
        assert_eq!(limiter.rate_for("ci"), Some(rate(50.0, 50)));
        assert_eq!(admitted(&limiter, "ci", t0), 50);
    }

    #[test]
    fn the_most_generous_of_a_principals_roles_wins() {
        let limiter = role_limiter(
            Some(rate(1000.0, 1000)),
            &[],
            &[
                (Role::Resolver, rate(2.0, 4)),
                (Role::Viewer, rate(5.0, 1)),
                (Role::Editor, rate(100.0, 100)),
            ],
            SharedPolicy::new(policy(POLICY)),
        );
        let t0 = Instant::now();
        // ci: resolver (2/s, burst 4) in acme, viewer (5/s, burst 1) in
        // globex; the higher rate wins although its burst is smaller.
        assert_eq!(limiter.rate_for("ci"), Some(rate(5.0, 1)));
        assert_eq!(admitted(&limiter, "ci", t0), 1);
        assert_eq!(limiter.check_at("ci", t0), Err(Duration::from_millis(200)));
        // Editor's rate is not ci's: it holds no editor grant anywhere.
        assert_eq!(limiter.rate_for("ops"), Some(rate(1000.0, 1000)));
    }

    #[test]
    fn principals_without_a_rated_role_get_the_default() {
        let limiter = role_limiter(
            Some(rate(1.0, 3)),
            &[],
            &[(Role::Editor, rate(100.0, 100))],
            SharedPolicy::new(policy(POLICY)),
        );
        let t0 = Instant::now();
        // ops is admin, ci a resolver and viewer; none has a role rate.
        for principal in ["ops", "ci", "nobody"] {
            assert_eq!(limiter.rate_for(principal), Some(rate(1.0, 3)));
            assert_eq!(admitted(&limiter, principal, t0), 3, "{principal}");
        }
        // The table-free form agrees.
        let limits = &limiter.0.limits;
        assert_eq!(
            limits.rate_with_roles("ops", [Role::Admin]),
            Some(rate(1.0, 3))
        );
        assert_eq!(
            limits.rate_with_roles("ops", [Role::Admin, Role::Editor]),
            Some(rate(100.0, 100))
        );
    }

    #[test]
    fn a_policy_reload_changes_the_rate_without_a_fresh_burst() {
        let shared = SharedPolicy::new(policy(POLICY));
        let limiter = role_limiter(
            None,
            &[],
            &[
                (Role::Resolver, rate(1.0, 2)),
                (Role::Admin, rate(10.0, 20)),
            ],
            shared.clone(),
        );
        let t0 = Instant::now();
        assert_eq!(admitted(&limiter, "ci", t0), 2);
        assert_eq!(limiter.rate_for("ops"), Some(rate(10.0, 20)));

        // ci becomes admin: the faster rate applies from the next call, but
        // the empty bucket is not refilled to the new burst.
        shared.replace(policy(
            r#"
            [[grant]]
            principal = "ci"
            tenants = ["acme"]
            roles = ["resolver", "admin"]
            "#,
        ));
        assert_eq!(limiter.rate_for("ci"), Some(rate(10.0, 20)));
        assert_eq!(
            limiter.check_at("ci", t0),
            Err(Duration::from_millis(100)),
            "a reload must not hand out a fresh burst"
        );
        // 0.5 s at 10/s earns 5 tokens, not 20.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(admitted(&limiter, "ci", t1), 5);
        // ops lost its grant: no role rate, no default, no limit.
        assert_eq!(limiter.rate_for("ops"), None);
        assert_eq!(admitted(&limiter, "ops", t1), 100);

        // Back to resolver only: a long idle bucket refills to the new,
        // smaller burst, not to the 20 it could hold as admin.
        shared.replace(policy(POLICY));
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(admitted(&limiter, "ci", t2), 2);
        assert_eq!(limiter.check_at("ci", t2), Err(Duration::from_secs(1)));

        // A lowered burst caps a bucket that was fuller under the old rate.
        shared.replace(policy(
            r#"
            [[grant]]
            principal = "ci"
            tenants = ["*"]
            roles = ["admin"]
            "#,
        ));
        let t3 = t2 + Duration::from_secs(60);
        assert_eq!(admitted(&limiter, "ci", t3), 20);
        let t4 = t3 + Duration::from_secs(60);
        limiter.check_at("ci", t4).unwrap(); // 19 left at the admin rate
        shared.replace(policy(POLICY));
        assert_eq!(admitted(&limiter, "ci", t4), 2);
    }

    #[test]
    fn making_room_drops_buckets_whose_principal_lost_its_role_rate() {
        let shared = SharedPolicy::new(policy(POLICY));
        let limiter = RateLimiter::new(
            RateLimits {
                roles: BTreeMap::from([(Role::Resolver, rate(1.0, 1))]),
                max_buckets: 2,
                ..RateLimits::default()
            },
            shared.clone(),
        );
        let t0 = Instant::now();
        // ci and batch are resolvers; both buckets are in use.
        assert_eq!(limiter.check_at("ci", t0), Ok(()));
        assert_eq!(limiter.check_at("batch", t0), Ok(()));
        assert_eq!(limiter.tracked(), 2);
        // batch loses its grant; a new resolver needs room: batch's bucket
        // goes (nobody would read it), ci's in-use bucket stays.
        shared.replace(policy(
            r#"
            [[grant]]
            principal = "ci"
            tenants = ["acme"]
            roles = ["resolver"]

            [[grant]]
            principal = "new"
            tenants = ["acme"]
            roles = ["resolver"]
            "#,
        ));
        assert_eq!(limiter.check_at("new", t0), Ok(()));
        assert_eq!(limiter.tracked(), 2);
        assert!(limiter.check_at("ci", t0).is_err());
        assert_eq!(admitted(&limiter, "batch", t0), 100);
    }
}
