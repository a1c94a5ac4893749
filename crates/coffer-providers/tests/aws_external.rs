//! External references on moto: linking reads no value, the namespace
//! guardrail, pinned versus current versions, and Coffer never changing
//! the remote secret.
#![allow(clippy::unwrap_used)]

use coffer_providers::testing::MotoServer;
use coffer_providers::{ProviderErrorKind, RemoveMode, VersionContext};

#[tokio::test]
async fn linking_describes_only_and_resolves_the_linked_secret() {
    let moto = MotoServer::start();
    let arn = moto
        .create_secret("prod/payments/api-key", "remote value 1")
        .await;
    let provider = moto.connect("prod").await;
    let ctx = VersionContext::new("acme", "payments.api-key", 1);

    moto.reset_recording();
    let by_name = provider
        .link_external(&ctx, "prod/payments/api-key", "")
        .await
        .unwrap();
    let by_arn = provider.link_external(&ctx, &arn, "").await.unwrap();
    assert_eq!(
        moto.recorded_actions(),
        ["DescribeSecret", "DescribeSecret"]
    );
    // Whatever form was given, the canonical reference is the ARN.
    assert_eq!(by_name.external_ref, arn);
    assert_eq!(by_arn.external_ref, arn);
    assert_eq!(by_name.stored, by_arn.stored);
    let material: serde_json::Value = serde_json::from_str(&by_name.stored.material).unwrap();
    assert_eq!(material["external"], true);
    assert_eq!(material["name"], "prod/payments/api-key");
    assert_eq!(by_name.stored.provider_version_ref, "");

    // Unpinned follows AWSCURRENT; a pinned link keeps its version.
    let current_id = moto
        .describe(&arn)
        .await
        .unwrap()
        .version_stages
        .into_keys()
        .next()
        .unwrap();
    let pinned = provider
        .link_external(
            &VersionContext::new("acme", "payments.api-key", 2),
            &arn,
            &current_id,
        )
        .await
        .unwrap();
    assert_eq!(pinned.stored.provider_version_ref, current_id);
    moto.sdk_client()
        .put_secret_value()
        .secret_id(&arn)
        .secret_string("remote value 2")
        .send()
        .await
        .unwrap();
    let current = provider.resolve(&ctx, &by_name.stored).await.unwrap();
    assert_eq!(current.expose(), b"remote value 2");
    let old = provider
        .resolve(
            &VersionContext::new("acme", "payments.api-key", 2),
            &pinned.stored,
        )
        .await
        .unwrap();
    assert_eq!(old.expose(), b"remote value 1");
}

#[tokio::test]
async fn references_inside_the_managed_namespace_are_refused() {
    let moto = MotoServer::start();
    let provider = moto.connect("prod").await;
    let managed_ctx = VersionContext::new("acme", "db", 1);
    let managed = provider.put_value(&managed_ctx, b"managed").await.unwrap();
    let managed_arn = serde_json::from_str::<serde_json::Value>(&managed.material).unwrap()["arn"]
        .as_str()
        .unwrap()
        .to_owned();
    // A foreign secret someone put inside the namespace is guarded too.
    moto.create_secret("coffer/prod/other/x", "v").await;

    let ctx = VersionContext::new("acme", "linked", 1);
    let partial_arn = managed_arn.rsplit_once('-').unwrap().0.to_owned();
    moto.reset_recording();
    for reference in [
        "coffer/prod/acme/db",
        "Coffer/Prod/acme/db",
        managed_arn.as_str(),
        partial_arn.as_str(),
        "coffer/prod/other/x",
    ] {
        let err = provider
            .link_external(&ctx, reference, "")
            .await
            .unwrap_err();
        assert_eq!(
            err.kind,
            ProviderErrorKind::Guardrail,
            "{reference}: {err:?}"
        );
        assert!(err.message.contains("coffer/prod/"), "{}", err.message);
    }
    assert_eq!(
        moto.recorded_actions(),
        Vec::<String>::new(),
        "refused before any call"
    );
    // A partial ARN outside the namespace links to the canonical ARN.
    let outside = moto.create_secret("team/x", "v").await;
    let linked = provider
        .link_external(&ctx, outside.rsplit_once('-').unwrap().0, "")
        .await
        .unwrap();
    assert_eq!(linked.external_ref, outside);
    // Other namespaces of the same prefix are not this vault's.
    let other_vault = moto.connect("staging").await;
    other_vault
        .link_external(&ctx, "coffer/prod/acme/db", "")
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_missing_and_deleted_references_are_refused() {
    let moto = MotoServer::start();
    let provider = moto.connect("prod").await;
    let arn = moto.create_secret("team/secret", "v").await;
    let ctx = VersionContext::new("acme", "linked", 1);

    for (reference, version, kind) in [
        ("not a name", "", ProviderErrorKind::InvalidRequest),
        ("arn:aws:s3:::bucket", "", ProviderErrorKind::InvalidRequest),
        ("team/missing", "", ProviderErrorKind::NotFound),
        (
            "team/secret",
            "no-such-version-id-0000000000000000",
            ProviderErrorKind::NotFound,
        ),
    ] {
        let err = provider
            .link_external(&ctx, reference, version)
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{reference}: {err:?}");
    }
    moto.sdk_client()
        .delete_secret()
        .secret_id(&arn)
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let err = provider.link_external(&ctx, &arn, "").await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::InvalidRequest);
    assert!(
        err.message.contains("scheduled for deletion"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn coffer_never_changes_an_external_secret() {
    let moto = MotoServer::start();
    let arn = moto.create_secret("shared/token", "shared value").await;
    let provider = moto.connect("prod").await;
    let ctx = VersionContext::new("acme", "shared.token", 1);
    let linked = provider.link_external(&ctx, &arn, "").await.unwrap();

    moto.reset_recording();
    provider
        .destroy_version(&ctx, &linked.stored)
        .await
        .unwrap();
    for mode in [
        RemoveMode::Archive {
            recovery_window_days: 7,
        },
        RemoveMode::Delete,
    ] {
        provider
            .remove_secret(&ctx, &linked.stored, mode)
            .await
            .unwrap();
    }
    provider.restore_secret(&ctx, &linked.stored).await.unwrap();
    assert_eq!(
        moto.recorded_actions(),
        Vec::<String>::new(),
        "no remote call"
    );
    let remote = moto.describe(&arn).await.unwrap();
    assert_eq!(remote.deleted_date, None);
    assert_eq!(
        provider
            .resolve(&ctx, &linked.stored)
            .await
            .unwrap()
            .expose(),
        b"shared value"
    );
    // External material of one version does not resolve as another.
    let err = provider
        .resolve(
            &VersionContext::new("acme", "shared.token", 2),
            &linked.stored,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Guardrail);
}
