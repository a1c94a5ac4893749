//! An unreachable or hung endpoint: calls fail as Unavailable within the
//! configured timeout, the health check says so safely, and the same
//! client works again once the endpoint is back.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use coffer_providers::testing::MotoServer;
use coffer_providers::{
    AwsProviderOptions, AwsSecretsManagerFactory, ProviderErrorKind, ProviderFactory, VaultConfig,
    VersionContext,
};

/// Scheduling slack on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_stopped_server_is_unavailable_and_a_restart_recovers() {
    let mut moto = MotoServer::start();
    let options = MotoServer::provider_options();
    let provider = moto.connect("outage").await;
    let ctx = VersionContext::new("acme", "db", 1);
    let stored = provider
        .put_value(&ctx, b"before the outage")
        .await
        .unwrap();

    moto.stop();
    let started = Instant::now();
    let err = provider.resolve(&ctx, &stored).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable, "{err:?}");
    assert!(
        elapsed < options.operation_timeout + MARGIN,
        "took {elapsed:?}"
    );
    assert!(err.cause.is_some(), "the raw cause is kept for the log");
    let results = provider
        .resolve_many(&[(ctx.clone(), stored.clone())])
        .await;
    assert_eq!(
        results[0].as_ref().unwrap_err().kind,
        ProviderErrorKind::Unavailable
    );

    let health = provider.health_check().await;
    assert!(!health.ok);
    assert!(health.message.contains("unreachable"), "{}", health.message);
    assert!(
        !health.message.contains("127.0.0.1"),
        "raw text in {}",
        health.message
    );
    assert!(
        !health.message.contains("Connection refused"),
        "raw text in {}",
        health.message
    );

    // moto keeps no state across a restart: the same client writes and
    // reads again.
    moto.restart();
    assert!(provider.health_check().await.ok);
    let again = provider.put_value(&ctx, b"after the outage").await.unwrap();
    assert_eq!(
        provider.resolve(&ctx, &again).await.unwrap().expose(),
        b"after the outage"
    );
}

#[tokio::test]
async fn a_hung_server_times_out_within_the_operation_timeout() {
    let moto = MotoServer::start();
    let options = AwsProviderOptions {
        operation_timeout: Duration::from_secs(2),
        max_attempts: 3,
        ..MotoServer::provider_options()
    };
    let config = VaultConfig::AwsSecretsManager(moto.vault_config("hung"));
    let provider = AwsSecretsManagerFactory::new(options.clone())
        .connect(&config)
        .await
        .unwrap();
    let ctx = VersionContext::new("acme", "db", 1);
    let stored = provider
        .put_value(&ctx, b"kept across the pause")
        .await
        .unwrap();

    moto.pause();
    let started = Instant::now();
    let err = provider.resolve(&ctx, &stored).await.unwrap_err();
    let elapsed = started.elapsed();
    moto.resume();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable, "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(600),
        "it did wait: {elapsed:?}"
    );
    assert!(
        elapsed < options.operation_timeout + MARGIN,
        "took {elapsed:?}"
    );

    let value = provider.resolve(&ctx, &stored).await.unwrap();
    assert_eq!(value.expose(), b"kept across the pause");
}
