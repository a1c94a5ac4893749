//! The conformance suite every [`SecretProvider`] runs in its tests
//! (local_encrypted in-process, AWS against a moto server, …). It panics with
//! a message naming the provider and the failed check.
//!
//! It needs a provider that supports managed values. Each run writes under a
//! fresh tenant (see [`SuiteOptions::tenant`]) so runs against a shared
//! backend do not collide.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::provider::SecretProvider;
use crate::types::{RemoveMode, SecretValue, StoredVersion, VersionContext};

/// Knobs for [`run_suite_with`].
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Resolving a version's material under another tenant, key or version
    /// must fail. True for providers that bind the value to its place
    /// (local_encrypted's AAD, a provider that checks the remote name).
    pub expect_context_binding: bool,
    /// Tenant every test version is written under.
    pub tenant: String,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        SuiteOptions {
            expect_context_binding: true,
            tenant: format!("conformance-{}-{nanos}", std::process::id()),
        }
    }
}

/// Runs every check with default options (context binding expected).
pub async fn run_suite(provider: Arc<dyn SecretProvider>) {
    run_suite_with(provider, SuiteOptions::default()).await;
}

/// Runs every check; panics on the first failure.
pub async fn run_suite_with(provider: Arc<dyn SecretProvider>, options: SuiteOptions) {
    let suite = Suite {
        id: provider.descriptor().id,
        provider,
        tenant: options.tenant.clone(),
    };
    suite.descriptor_is_sane();
    suite.health_check_passes().await;
    suite.round_trips_binary_values().await;
    suite.versions_keep_their_own_values().await;
    suite.resolve_many_keeps_request_order().await;
    suite.retried_put_is_idempotent().await;
    suite.removal_is_idempotent().await;
    if options.expect_context_binding {
        suite.other_context_fails().await;
    }
    suite.debug_output_hides_values().await;
}

struct Suite {
    id: &'static str,
    provider: Arc<dyn SecretProvider>,
    tenant: String,
}

impl Suite {
    fn ctx(&self, key: &str, version: i64) -> VersionContext {
        VersionContext::new(self.tenant.clone(), key, version)
    }

    async fn put(&self, ctx: &VersionContext, value: &[u8], what: &str) -> StoredVersion {
        match self.provider.put_value(ctx, value).await {
            Ok(stored) => stored,
            Err(err) => panic!(
                "conformance [{}]: put_value of {what} at {ctx:?} failed: {err:?}",
                self.id
            ),
        }
    }

    async fn resolve(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
        what: &str,
    ) -> SecretValue {
        match self.provider.resolve(ctx, stored).await {
            Ok(value) => value,
            Err(err) => panic!(
                "conformance [{}]: resolve of {what} at {ctx:?} failed: {err:?}",
                self.id
            ),
        }
    }

    fn descriptor_is_sane(&self) {
        let d = self.provider.descriptor();
        assert!(
            !d.id.is_empty()
                && d.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "conformance [{}]: descriptor id must be snake_case",
            d.id
        );
        assert!(
            !d.label.is_empty(),
            "conformance [{}]: descriptor label is empty",
            d.id
        );
        assert!(
            d.supports_managed_values,
            "conformance [{}]: the suite needs a provider with managed values",
            d.id
        );
    }

    async fn health_check_passes(&self) {
        let health = self.provider.health_check().await;
        assert!(
            health.ok,
            "conformance [{}]: health_check failed: {}",
            self.id, health.message
        );
    }

    async fn round_trips_binary_values(&self) {
        let values: [(&str, Vec<u8>); 4] = [
            ("a single 0x00 byte", vec![0]),
            (
                "binary with 0x00 and 0xff",
                b"\x00\x01\xfe\xff\x00bin\x00".to_vec(),
            ),
            ("utf-8 text", "pässwörd ✓".as_bytes().to_vec()),
            ("64 KiB of binary", binary(64 * 1024)),
        ];
        for (n, (what, value)) in values.iter().enumerate() {
            let ctx = self.ctx(&format!("round-trip-{n}"), 1);
            let stored = self.put(&ctx, value, what).await;
            let resolved = self.resolve(&ctx, &stored, what).await;
            assert!(
                resolved.expose() == value.as_slice(),
                "conformance [{}]: {what} did not round-trip (got {} bytes, want {})",
                self.id,
                resolved.len(),
                value.len()
            );
        }
    }

    async fn versions_keep_their_own_values(&self) {
        let (v1, v2) = (self.ctx("versions", 1), self.ctx("versions", 2));
        let s1 = self.put(&v1, b"first value", "version 1").await;
        let s2 = self.put(&v2, b"second value", "version 2").await;
        let r2 = self.resolve(&v2, &s2, "version 2").await;
        let r1 = self
            .resolve(&v1, &s1, "version 1 after version 2 was written")
            .await;
        assert!(
            r1.expose() == b"first value" && r2.expose() == b"second value",
            "conformance [{}]: two versions of one key did not keep their own values",
            self.id
        );
    }

    async fn resolve_many_keeps_request_order(&self) {
        let mut items = Vec::new();
        let mut expected = Vec::new();
        for n in 1..=4 {
            let ctx = self.ctx("batch", n);
            let value = format!("batch value {n}").into_bytes();
            let stored = self.put(&ctx, &value, "a batch version").await;
            items.push((ctx, stored));
            expected.push(value);
        }
        // Request order deliberately differs from write order, with a repeat.
        let order = [2usize, 0, 3, 1, 2];
        let request: Vec<_> = order.iter().map(|&i| items[i].clone()).collect();
        let results = self.provider.resolve_many(&request).await;
        assert_eq!(
            results.len(),
            request.len(),
            "conformance [{}]: resolve_many must return one result per item",
            self.id
        );
        for (position, (&i, result)) in order.iter().zip(results).enumerate() {
            match result {
                Ok(value) => assert!(
                    value.expose() == expected[i].as_slice(),
                    "conformance [{}]: resolve_many result {position} is not the value of its item",
                    self.id
                ),
                Err(err) => panic!(
                    "conformance [{}]: resolve_many item {position} failed: {err:?}",
                    self.id
                ),
            }
        }
        assert!(
            self.provider.resolve_many(&[]).await.is_empty(),
            "conformance [{}]: resolve_many of nothing must return nothing",
            self.id
        );
    }

    /// A write retried after a lost answer (same version, same value) must
    /// not fail, and both answers must resolve to the value; a provider
    /// that reports its own version id reports the same one both times.
    async fn retried_put_is_idempotent(&self) {
        let ctx = self
            .ctx("retried", 1)
            .with_secret_uid(format!("{}-retried-uid", self.tenant));
        let value = b"written twice";
        let first = self.put(&ctx, value, "the first attempt").await;
        let second = self.put(&ctx, value, "a retried attempt").await;
        assert_eq!(
            first.provider_version_ref, second.provider_version_ref,
            "conformance [{}]: a retried write created another provider version",
            self.id
        );
        for (what, stored) in [("the first attempt", &first), ("the retry", &second)] {
            let resolved = self.resolve(&ctx, stored, what).await;
            assert!(
                resolved.expose() == value,
                "conformance [{}]: {what} does not resolve to the written value",
                self.id
            );
        }
    }

    /// Removing twice, restoring twice and purging twice all succeed, and a
    /// restored secret resolves again.
    async fn removal_is_idempotent(&self) {
        let ctx = self.ctx("removable", 1);
        let stored = self
            .put(&ctx, b"removable value", "a removable version")
            .await;
        let archive = RemoveMode::Archive {
            recovery_window_days: 7,
        };
        for (step, result) in [
            (
                "archive",
                self.provider.remove_secret(&ctx, &stored, archive).await,
            ),
            (
                "archive again",
                self.provider.remove_secret(&ctx, &stored, archive).await,
            ),
            ("restore", self.provider.restore_secret(&ctx, &stored).await),
            (
                "restore again",
                self.provider.restore_secret(&ctx, &stored).await,
            ),
        ] {
            if let Err(err) = result {
                panic!("conformance [{}]: {step} failed: {err:?}", self.id);
            }
        }
        let restored = self.resolve(&ctx, &stored, "a restored version").await;
        assert!(
            restored.expose() == b"removable value",
            "conformance [{}]: a restored version lost its value",
            self.id
        );
        for step in ["purge", "purge again"] {
            if let Err(err) = self
                .provider
                .remove_secret(&ctx, &stored, RemoveMode::Delete)
                .await
            {
                panic!("conformance [{}]: {step} failed: {err:?}", self.id);
            }
        }
    }

    async fn other_context_fails(&self) {
        let value = b"bound to its place";
        let ctx = self.ctx("bound", 1);
        let stored = self.put(&ctx, value, "a bound version").await;
        let others = [
            VersionContext::new(format!("{}-other", self.tenant), "bound", 1),
            self.ctx("bound-other", 1),
            self.ctx("bound", 2),
        ];
        for other in others {
            match self.provider.resolve(&other, &stored).await {
                Ok(_) => panic!(
                    "conformance [{}]: material of {ctx:?} resolved under {other:?}",
                    self.id
                ),
                Err(err) => assert!(
                    !format!("{err:?}").contains("bound to its place"),
                    "conformance [{}]: an error carries the value",
                    self.id
                ),
            }
        }
    }

    async fn debug_output_hides_values(&self) {
        let canary = b"conformance-canary-7f3a9c";
        let canary_text = "conformance-canary-7f3a9c";
        let ctx = self.ctx("canary", 1);
        let stored = self.put(&ctx, canary, "the canary").await;
        let value = self.resolve(&ctx, &stored, "the canary").await;
        for (what, debug) in [
            ("SecretValue", format!("{value:?}")),
            ("SecretValue (alternate)", format!("{value:#?}")),
            ("StoredVersion", format!("{stored:?}")),
        ] {
            assert!(
                !debug.contains(canary_text)
                    && !debug.contains(&format!("{:?}", canary.as_slice())),
                "conformance [{}]: Debug of {what} shows the value",
                self.id
            );
        }
    }
}

/// Deterministic bytes covering every byte value, including runs of 0x00.
fn binary(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|i| {
            if i % 1024 < 8 {
                return 0;
            }
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}
