//! The provider conformance suite and local_encrypted specifics.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use coffer_crypto::Keyring;
use coffer_providers::conformance::{SuiteOptions, run_suite, run_suite_with};
use coffer_providers::local_encrypted::SCHEME;
use coffer_providers::{
    LocalEncryptedProvider, ProviderErrorKind, RemoveMode, SecretProvider, StoredVersion,
    VersionContext,
};

fn provider() -> LocalEncryptedProvider {
    LocalEncryptedProvider::new(Arc::new(Keyring::generate().unwrap()))
}

#[tokio::test]
async fn local_encrypted_passes_the_suite() {
    run_suite(Arc::new(provider())).await;
}

#[tokio::test]
async fn local_encrypted_passes_the_suite_through_the_registry() {
    let registry = coffer_providers::ProviderRegistry::for_test();
    let provider = registry.builtin().await.unwrap();
    run_suite_with(
        provider,
        SuiteOptions {
            tenant: "acme".to_owned(),
            ..SuiteOptions::default()
        },
    )
    .await;
}

/// The suite itself must catch a provider that ignores the context.
#[derive(Debug)]
struct IgnoresContext(LocalEncryptedProvider);

#[async_trait::async_trait]
impl SecretProvider for IgnoresContext {
    fn descriptor(&self) -> coffer_providers::ProviderDescriptor {
        SecretProvider::descriptor(&self.0)
    }
    async fn put_value(
        &self,
        _ctx: &VersionContext,
        value: &[u8],
    ) -> Result<StoredVersion, coffer_providers::ProviderError> {
        self.0
            .put_value(&VersionContext::new("x", "x", 1), value)
            .await
    }
    async fn resolve(
        &self,
        _ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<coffer_providers::SecretValue, coffer_providers::ProviderError> {
        self.0
            .resolve(&VersionContext::new("x", "x", 1), stored)
            .await
    }
    async fn destroy_version(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<(), coffer_providers::ProviderError> {
        self.0.destroy_version(ctx, stored).await
    }
    async fn remove_secret(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
        mode: RemoveMode,
    ) -> Result<(), coffer_providers::ProviderError> {
        self.0.remove_secret(ctx, stored, mode).await
    }
    async fn health_check(&self) -> coffer_providers::ProviderHealth {
        self.0.health_check().await
    }
}

#[tokio::test]
#[should_panic(expected = "resolved under")]
async fn the_suite_catches_a_provider_that_ignores_context() {
    run_suite(Arc::new(IgnoresContext(provider()))).await;
}

#[tokio::test]
async fn a_provider_that_ignores_context_passes_without_binding() {
    run_suite_with(
        Arc::new(IgnoresContext(provider())),
        SuiteOptions {
            expect_context_binding: false,
            ..SuiteOptions::default()
        },
    )
    .await;
}

#[tokio::test]
async fn material_is_tagged_json_and_holds_no_plaintext() {
    let p = provider();
    let ctx = VersionContext::new("acme", "db", 1);
    let stored = p.put_value(&ctx, b"plaintext-marker").await.unwrap();
    assert_eq!(stored.provider_version_ref, "");
    let json: serde_json::Value = serde_json::from_str(&stored.material).unwrap();
    assert_eq!(json["scheme"], SCHEME);
    assert_eq!(json["kek_id"], "kek-1");
    for field in ["dek_nonce", "wrapped_dek", "nonce", "ciphertext"] {
        assert!(json[field].is_string(), "{field}");
    }
    assert!(!stored.material.contains("plaintext-marker"));
    assert_eq!(
        LocalEncryptedProvider::kek_id_of(&stored.material).as_deref(),
        Some("kek-1")
    );
}

#[tokio::test]
async fn bad_material_is_a_safe_provider_error() {
    let p = provider();
    let ctx = VersionContext::new("acme", "db", 1);
    let good = p.put_value(&ctx, b"v").await.unwrap();
    let cases = [
        "not json".to_owned(),
        r#"{"scheme":"aws_secrets_manager/v1","arn":"x"}"#.to_owned(),
        r#"{"scheme":"local_encrypted/v1"}"#.to_owned(),
        good.material
            .replace("\"ciphertext\":\"", "\"ciphertext\":\"AAAA"),
    ];
    for material in cases {
        let stored = StoredVersion {
            material: material.clone(),
            provider_version_ref: String::new(),
        };
        let err = p.resolve(&ctx, &stored).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Provider, "{material}");
        assert!(err.cause.is_some());
        assert!(!err.message.contains(&material));
        let core: coffer_core::Error = err.into();
        assert_eq!(core.code(), coffer_core::ErrorCode::Internal);
        assert_eq!(core.reason(), coffer_core::Reason::ProviderError);
    }
    assert_eq!(LocalEncryptedProvider::kek_id_of("not json"), None);
    assert_eq!(
        LocalEncryptedProvider::kek_id_of(r#"{"scheme":"other/v1","kek_id":"kek-1"}"#),
        None
    );
}

#[tokio::test]
async fn rewrap_moves_material_to_the_active_kek() {
    let mut keyring = Keyring::generate().unwrap();
    let old =
        LocalEncryptedProvider::new(Arc::new(Keyring::from_json(&keyring.to_json()).unwrap()));
    let ctx = VersionContext::new("acme", "db", 4);
    let stored = old.put_value(&ctx, b"before rotation").await.unwrap();

    keyring.rotate().unwrap();
    let p = LocalEncryptedProvider::new(Arc::new(keyring));
    let moved = p
        .rewrap(&stored)
        .unwrap()
        .expect("kek-1 material must move");
    assert_eq!(
        LocalEncryptedProvider::kek_id_of(&moved.material).as_deref(),
        Some("kek-2")
    );
    let before: serde_json::Value = serde_json::from_str(&stored.material).unwrap();
    let after: serde_json::Value = serde_json::from_str(&moved.material).unwrap();
    assert_eq!(before["ciphertext"], after["ciphertext"]);
    assert_eq!(
        p.resolve(&ctx, &moved).await.unwrap().expose(),
        b"before rotation"
    );
    assert_eq!(
        p.resolve(&ctx, &stored).await.unwrap().expose(),
        b"before rotation"
    );
    assert!(p.rewrap(&moved).unwrap().is_none());
}

#[tokio::test]
async fn unsupported_operations_and_remove() {
    let p = provider();
    let ctx = VersionContext::new("acme", "db", 1);
    let err = p
        .link_external(&ctx, "arn:aws:secretsmanager:x", "")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Unsupported);
    assert!(err.message.contains("local_encrypted"), "{}", err.message);
    let stored = p.put_value(&ctx, b"v").await.unwrap();
    p.destroy_version(&ctx, &stored).await.unwrap();
    p.remove_secret(&ctx, &stored, RemoveMode::Delete)
        .await
        .unwrap();
    p.remove_secret(
        &ctx,
        &stored,
        RemoveMode::Archive {
            recovery_window_days: 7,
        },
    )
    .await
    .unwrap();
    p.restore_secret(&ctx, &stored).await.unwrap();
    let remote = p.list_remote("", 10, None).await.unwrap_err();
    assert_eq!(remote.kind, ProviderErrorKind::Unsupported);
    let health = p.health_check().await;
    assert!(health.ok, "{}", health.message);
    assert!(health.message.contains("kek-1"));
}
