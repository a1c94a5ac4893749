//! resolve_many on moto: BatchGetSecretValue in chunks of 20, GetSecretValue
//! only for versions the batch cannot return, per-item errors.
#![allow(clippy::unwrap_used)]

use coffer_providers::testing::MotoServer;
use coffer_providers::{ProviderErrorKind, RemoveMode, StoredVersion, VersionContext};

fn ctx(n: usize, version: i64) -> VersionContext {
    VersionContext::new("acme", format!("key-{n:02}"), version).with_secret_uid(format!("uid-{n}"))
}

fn value(n: usize, version: i64) -> Vec<u8> {
    format!("value {n} v{version}").into_bytes()
}

#[tokio::test]
async fn sixty_secrets_take_three_batch_calls() {
    let moto = MotoServer::start();
    let provider = moto.connect("batch").await;
    let mut items = Vec::new();
    for n in 0..60 {
        let stored = provider.put_value(&ctx(n, 1), &value(n, 1)).await.unwrap();
        items.push((ctx(n, 1), stored));
    }
    // Request order differs from write order.
    items.reverse();

    moto.reset_recording();
    let results = provider.resolve_many(&items).await;
    assert_eq!(results.len(), 60);
    for ((ctx, _), result) in items.iter().zip(&results) {
        let n: usize = ctx.key[4..].parse().unwrap();
        assert_eq!(
            result.as_ref().unwrap().expose(),
            value(n, 1).as_slice(),
            "{}",
            ctx.key
        );
    }
    let actions = moto.recorded_actions();
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "BatchGetSecretValue")
            .count(),
        3,
        "{actions:?}"
    );
    assert_eq!(actions.len(), 3, "nothing but the batches: {actions:?}");
}

#[tokio::test]
async fn old_versions_fall_back_to_single_reads_and_duplicates_share_one() {
    let moto = MotoServer::start();
    let provider = moto.connect("pinned").await;
    let mut versions: Vec<(VersionContext, StoredVersion)> = Vec::new();
    for version in 1..=3 {
        let stored = provider
            .put_value(&ctx(0, version), &value(0, version))
            .await
            .unwrap();
        versions.push((ctx(0, version), stored));
    }
    let other = provider.put_value(&ctx(1, 1), &value(1, 1)).await.unwrap();
    let request = vec![
        versions[0].clone(),
        versions[2].clone(),
        versions[0].clone(),
        (ctx(1, 1), other),
        versions[1].clone(),
        versions[2].clone(),
    ];
    moto.reset_recording();
    let results = provider.resolve_many(&request).await;
    let expected = [
        value(0, 1),
        value(0, 3),
        value(0, 1),
        value(1, 1),
        value(0, 2),
        value(0, 3),
    ];
    for (n, (result, want)) in results.iter().zip(&expected).enumerate() {
        assert_eq!(
            result.as_ref().unwrap().expose(),
            want.as_slice(),
            "item {n}"
        );
    }
    let mut actions = moto.recorded_actions();
    actions.sort();
    // One batch for both secrets; one read per distinct old version.
    assert_eq!(
        actions,
        ["BatchGetSecretValue", "GetSecretValue", "GetSecretValue"]
    );
}

#[tokio::test]
async fn failures_stay_with_their_items() {
    let moto = MotoServer::start();
    let provider = moto.connect("errors").await;
    let good = provider.put_value(&ctx(0, 1), &value(0, 1)).await.unwrap();
    let purged = provider.put_value(&ctx(1, 1), &value(1, 1)).await.unwrap();
    provider
        .remove_secret(&ctx(1, 1), &purged, RemoveMode::Delete)
        .await
        .unwrap();
    let archived = provider.put_value(&ctx(2, 1), &value(2, 1)).await.unwrap();
    provider
        .remove_secret(
            &ctx(2, 1),
            &archived,
            RemoveMode::Archive {
                recovery_window_days: 7,
            },
        )
        .await
        .unwrap();
    let garbage = StoredVersion {
        material: "not json".into(),
        provider_version_ref: "v".into(),
    };
    let request = vec![
        (ctx(1, 1), purged),
        (ctx(0, 1), good.clone()),
        (ctx(9, 1), good.clone()),
        (ctx(3, 1), garbage),
        (ctx(2, 1), archived),
    ];
    moto.reset_recording();
    let results = provider.resolve_many(&request).await;
    assert_eq!(results.len(), 5);
    let kinds: Vec<Option<ProviderErrorKind>> = results
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            Some(ProviderErrorKind::NotFound),
            None,
            Some(ProviderErrorKind::Guardrail),
            Some(ProviderErrorKind::Provider),
            Some(ProviderErrorKind::InvalidRequest),
        ]
    );
    assert_eq!(
        results[1].as_ref().unwrap().expose(),
        value(0, 1).as_slice()
    );
    for result in &results {
        if let Err(err) = result {
            assert!(err.cause.is_some() || err.kind != ProviderErrorKind::NotFound);
            assert!(
                !err.message.contains("arn:aws"),
                "raw AWS text: {}",
                err.message
            );
        }
    }
    assert_eq!(moto.recorded_actions(), ["BatchGetSecretValue"]);
}
