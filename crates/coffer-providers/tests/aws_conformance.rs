//! The provider conformance suite against AWS Secrets Manager on moto.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use coffer_providers::conformance::{SuiteOptions, run_suite, run_suite_with};
use coffer_providers::testing::MotoServer;
use coffer_providers::{ProviderRegistry, VaultConfig};

#[tokio::test]
async fn aws_on_moto_passes_the_suite() {
    let moto = MotoServer::start();
    run_suite(moto.connect("conformance").await).await;
    // The suite's resolve_many went through the batch API.
    assert!(moto.action_count("BatchGetSecretValue") >= 1);
}

#[tokio::test]
async fn aws_passes_the_suite_through_the_registry() {
    let moto = MotoServer::start();
    let registry = ProviderRegistry::builder()
        .register(Arc::new(MotoServer::factory()))
        .unwrap()
        .build();
    let config = VaultConfig::AwsSecretsManager(moto.vault_config("registry"));
    let factory = registry.get("aws_secrets_manager").unwrap();
    assert_eq!(
        factory.validate_config(&config).unwrap(),
        Vec::<String>::new()
    );
    let provider = registry.client("vault-uid-1", 1, &config).await.unwrap();
    run_suite_with(
        provider,
        SuiteOptions {
            tenant: "acme".to_owned(),
            ..SuiteOptions::default()
        },
    )
    .await;
}
