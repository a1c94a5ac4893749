//! Managed AWS secrets on moto: names, tags, versions, idempotent writes,
//! delete with a recovery window, restore, purge, and the managed-name
//! guardrail.
#![allow(clippy::unwrap_used)]

use coffer_providers::aws_secrets_manager::SCHEME;
use coffer_providers::testing::MotoServer;
use coffer_providers::{
    AwsSecretsManagerFactory, ProviderErrorKind, ProviderFactory, RemoveMode, StoredVersion,
    VaultConfig, VersionContext,
};

const UID: &str = "0f0e0d0c-uid-of-db-password";

fn ctx(version: i64) -> VersionContext {
    VersionContext::new("acme", "db.password", version).with_secret_uid(UID)
}

fn material(stored: &StoredVersion) -> serde_json::Value {
    serde_json::from_str(&stored.material).unwrap()
}

#[tokio::test]
async fn create_rotate_twice_and_resolve_each_version() {
    let moto = MotoServer::start();
    let provider = moto.connect("prod").await;
    let name = "coffer/prod/acme/db.password";

    let mut stored = Vec::new();
    for (version, value) in [(1, &b"v1-value"[..]), (2, b"v2-value"), (3, b"\x00\xffv3")] {
        stored.push(provider.put_value(&ctx(version), value).await.unwrap());
    }
    for (n, s) in stored.iter().enumerate() {
        let m = material(s);
        assert_eq!(m["scheme"], SCHEME);
        assert_eq!(m["name"], name);
        assert_eq!(m["version"], n as i64 + 1);
        assert_eq!(m["external"], false);
        assert!(
            m["arn"]
                .as_str()
                .unwrap()
                .contains(":secret:coffer/prod/acme/db.password-")
        );
        assert!(!s.provider_version_ref.is_empty());
        assert!(!s.material.contains("value"), "material holds no value");
    }
    // One remote secret; three AWS versions, the last one current.
    assert_eq!(material(&stored[0])["arn"], material(&stored[2])["arn"]);
    let remote = moto.describe(name).await.unwrap();
    assert_eq!(remote.version_stages.len(), 3);
    assert_eq!(
        remote.version_stages[&stored[2].provider_version_ref],
        ["AWSCURRENT"]
    );
    assert_eq!(
        remote.version_stages[&stored[1].provider_version_ref],
        ["AWSPREVIOUS"]
    );
    assert_eq!(remote.tags["coffer:managed"], "true");
    assert_eq!(remote.tags["coffer:tenant"], "acme");
    assert_eq!(remote.tags["coffer:key"], "db.password");
    assert!(!remote.tags.contains_key("coffer:owner"));

    // Each version resolves by its own stored version, oldest last.
    for (n, expected) in [
        (2usize, &b"\x00\xffv3"[..]),
        (0, b"v1-value"),
        (1, b"v2-value"),
    ] {
        let value = provider
            .resolve(&ctx(n as i64 + 1), &stored[n])
            .await
            .unwrap();
        assert_eq!(value.expose(), expected, "version {}", n + 1);
    }
    moto.reset_recording();
    provider.resolve(&ctx(1), &stored[0]).await.unwrap();
    assert_eq!(moto.recorded_actions(), ["GetSecretValue"]);
}

#[tokio::test]
async fn writes_are_idempotent_and_tagged_as_configured() {
    let moto = MotoServer::start();
    let config = VaultConfig::AwsSecretsManager(coffer_providers::AwsSecretsManagerConfig {
        owner_tag: "platform".into(),
        environment_tag: "test".into(),
        kms_key_id: "alias/coffer-test".into(),
        ..moto.vault_config("tags")
    });
    let provider = MotoServer::factory().connect(&config).await.unwrap();
    let first = provider.put_value(&ctx(1), b"same").await.unwrap();
    // A retried CreateSecret and PutSecretValue land on the same versions.
    let again = provider.put_value(&ctx(1), b"same").await.unwrap();
    assert_eq!(first, again);
    let second = provider.put_value(&ctx(2), b"next").await.unwrap();
    let second_again = provider.put_value(&ctx(2), b"next").await.unwrap();
    assert_eq!(second, second_again);
    let remote = moto.describe("coffer/tags/acme/db.password").await.unwrap();
    assert_eq!(
        remote.version_stages.len(),
        2,
        "{:?}",
        remote.version_stages
    );
    assert_eq!(remote.tags["coffer:owner"], "platform");
    assert_eq!(remote.tags["coffer:environment"], "test");
    assert_eq!(remote.kms_key_id.as_deref(), Some("alias/coffer-test"));

    // The same version with another value is a conflict, not an overwrite.
    let err = provider.put_value(&ctx(2), b"different").await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Conflict, "{err:?}");
    assert!(!format!("{err:?}").contains("different"));
    let value = provider.resolve(&ctx(2), &second).await.unwrap();
    assert_eq!(value.expose(), b"next");
}

#[tokio::test]
async fn delete_with_recovery_window_restore_then_purge() {
    let moto = MotoServer::start();
    let provider = moto.connect("lifecycle").await;
    let name = "coffer/lifecycle/acme/db.password";
    let stored = provider.put_value(&ctx(1), b"lifecycle").await.unwrap();

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    provider
        .remove_secret(
            &ctx(1),
            &stored,
            RemoveMode::Archive {
                recovery_window_days: 9,
            },
        )
        .await
        .unwrap();
    let deleted = moto
        .describe(name)
        .await
        .unwrap()
        .deleted_date
        .expect("scheduled for deletion");
    let days = (deleted - before) as f64 / 86_400.0;
    assert!((8.9..9.1).contains(&days), "recovery window of {days} days");
    let err = provider.resolve(&ctx(1), &stored).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::InvalidRequest, "{err:?}");
    // Archiving again is a no-op.
    provider
        .remove_secret(
            &ctx(1),
            &stored,
            RemoveMode::Archive {
                recovery_window_days: 9,
            },
        )
        .await
        .unwrap();

    provider.restore_secret(&ctx(1), &stored).await.unwrap();
    assert_eq!(moto.describe(name).await.unwrap().deleted_date, None);
    assert_eq!(
        provider.resolve(&ctx(1), &stored).await.unwrap().expose(),
        b"lifecycle"
    );

    provider
        .remove_secret(&ctx(1), &stored, RemoveMode::Delete)
        .await
        .unwrap();
    assert!(moto.describe(name).await.is_none(), "purged for good");
    provider
        .remove_secret(&ctx(1), &stored, RemoveMode::Delete)
        .await
        .unwrap();
    let err = provider.restore_secret(&ctx(1), &stored).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::NotFound);
    let err = provider.resolve(&ctx(1), &stored).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::NotFound);
}

#[tokio::test]
async fn the_vault_recovery_window_wins_and_is_clamped_per_request() {
    let moto = MotoServer::start();
    let vault_window = VaultConfig::AwsSecretsManager(coffer_providers::AwsSecretsManagerConfig {
        recovery_window_days: 21,
        ..moto.vault_config("window")
    });
    let provider = MotoServer::factory().connect(&vault_window).await.unwrap();
    let plain = moto.connect("window").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (key, client, request_days, expected) in [
        ("a", &provider, 7, 21.0),
        ("b", &plain, 90, 30.0),
        ("c", &plain, 1, 7.0),
    ] {
        let ctx = VersionContext::new("acme", key, 1);
        let stored = client.put_value(&ctx, b"v").await.unwrap();
        client
            .remove_secret(
                &ctx,
                &stored,
                RemoveMode::Archive {
                    recovery_window_days: request_days,
                },
            )
            .await
            .unwrap();
        let deleted = moto
            .describe(&format!("coffer/window/acme/{key}"))
            .await
            .unwrap()
            .deleted_date
            .unwrap();
        let days = (deleted - now) as f64 / 86_400.0;
        assert!(
            (days - expected).abs() < 0.1,
            "{key}: {days} days, want {expected}"
        );
    }
}

#[tokio::test]
async fn a_leftover_scheduled_for_deletion_is_restored_and_reused() {
    let moto = MotoServer::start();
    let provider = moto.connect("reuse").await;
    let old = provider.put_value(&ctx(1), b"old").await.unwrap();
    provider
        .remove_secret(
            &ctx(1),
            &old,
            RemoveMode::Archive {
                recovery_window_days: 7,
            },
        )
        .await
        .unwrap();
    // The key is purged in Coffer while the remote delete stays pending,
    // then created again (a new secret uid).
    let fresh =
        VersionContext::new("acme", "db.password", 1).with_secret_uid("new-uid-after-purge");
    let stored = provider.put_value(&fresh, b"new").await.unwrap();
    let remote = moto
        .describe("coffer/reuse/acme/db.password")
        .await
        .unwrap();
    assert_eq!(remote.deleted_date, None);
    assert_eq!(material(&stored)["arn"], material(&old)["arn"]);
    assert_eq!(
        provider.resolve(&fresh, &stored).await.unwrap().expose(),
        b"new"
    );
}

#[tokio::test]
async fn a_foreign_secret_at_the_managed_name_is_never_written() {
    let moto = MotoServer::start();
    moto.create_secret("coffer/guard/acme/db.password", "not coffer's")
        .await;
    let provider = moto.connect("guard").await;
    let err = provider.put_value(&ctx(1), b"mine").await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Guardrail, "{err:?}");
    assert!(
        err.message.contains("coffer/guard/acme/db.password"),
        "{}",
        err.message
    );
    let remote = moto
        .describe("coffer/guard/acme/db.password")
        .await
        .unwrap();
    assert_eq!(remote.version_stages.len(), 1, "nothing was written");
}

#[tokio::test]
async fn a_secret_moved_into_the_vault_starts_at_its_version() {
    let moto = MotoServer::start();
    let provider = moto.connect("moved").await;
    // Version 4 is the first this vault sees (the secret was rotated into it).
    let stored = provider.put_value(&ctx(4), b"moved").await.unwrap();
    assert_eq!(material(&stored)["version"], 4);
    assert_eq!(
        provider.resolve(&ctx(4), &stored).await.unwrap().expose(),
        b"moved"
    );
    let remote = moto
        .describe("coffer/moved/acme/db.password")
        .await
        .unwrap();
    assert_eq!(remote.tags["coffer:key"], "db.password");
}

#[tokio::test]
async fn drifted_material_is_refused_without_a_remote_call() {
    let moto = MotoServer::start();
    let provider = moto.connect("drift").await;
    let stored = provider.put_value(&ctx(1), b"drift").await.unwrap();
    let other = provider
        .put_value(&VersionContext::new("acme", "other", 1), b"other value")
        .await
        .unwrap();
    let other_arn = material(&other)["arn"].as_str().unwrap().to_owned();

    let mut drifted_arn = material(&stored);
    drifted_arn["arn"] = other_arn.clone().into();
    let mut drifted_name = material(&stored);
    drifted_name["name"] = "coffer/drift/acme/other".into();
    drifted_name["arn"] = other_arn.into();
    // The same material under another namespace's vault.
    let elsewhere = moto.connect("elsewhere").await;

    moto.reset_recording();
    for m in [drifted_arn, drifted_name] {
        let stored = StoredVersion {
            material: m.to_string(),
            provider_version_ref: stored.provider_version_ref.clone(),
        };
        for err in [
            provider.resolve(&ctx(1), &stored).await.unwrap_err(),
            provider
                .destroy_version(&ctx(1), &stored)
                .await
                .unwrap_err(),
            provider
                .remove_secret(&ctx(1), &stored, RemoveMode::Delete)
                .await
                .unwrap_err(),
            provider.restore_secret(&ctx(1), &stored).await.unwrap_err(),
        ] {
            assert_eq!(err.kind, ProviderErrorKind::Guardrail, "{err:?}");
        }
    }
    let err = elsewhere.resolve(&ctx(1), &stored).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Guardrail);
    let results = provider
        .resolve_many(&[
            (ctx(2), stored.clone()),
            (VersionContext::new("acme", "other", 1), stored.clone()),
        ])
        .await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().unwrap_err().kind == ProviderErrorKind::Guardrail)
    );
    assert_eq!(
        moto.recorded_actions(),
        Vec::<String>::new(),
        "a guardrail refusal made a call"
    );
    assert!(moto.describe("coffer/drift/acme/other").await.is_some());
}

#[tokio::test]
async fn destroy_version_drops_its_labels_but_keeps_current() {
    let moto = MotoServer::start();
    let provider = moto.connect("destroy").await;
    let v1 = provider.put_value(&ctx(1), b"one").await.unwrap();
    let v2 = provider.put_value(&ctx(2), b"two").await.unwrap();
    provider.destroy_version(&ctx(1), &v1).await.unwrap();
    provider.destroy_version(&ctx(2), &v2).await.unwrap();
    let remote = moto
        .describe("coffer/destroy/acme/db.password")
        .await
        .unwrap();
    assert_eq!(
        remote
            .version_stages
            .get(&v1.provider_version_ref)
            .map(Vec::len)
            .unwrap_or(0),
        0,
        "AWSPREVIOUS dropped: {:?}",
        remote.version_stages
    );
    assert_eq!(
        remote.version_stages[&v2.provider_version_ref],
        ["AWSCURRENT"]
    );
    assert_eq!(
        provider.resolve(&ctx(2), &v2).await.unwrap().expose(),
        b"two"
    );
}

#[tokio::test]
async fn no_value_in_errors_or_debug_output() {
    let canary = "aws-canary-5b1e77";
    let moto = MotoServer::start();
    let provider = moto.connect("canary").await;
    let stored = provider
        .put_value(&ctx(1), canary.as_bytes())
        .await
        .unwrap();
    let value = provider.resolve(&ctx(1), &stored).await.unwrap();
    let mut shown = vec![
        format!("{value:?}"),
        format!("{stored:?}"),
        format!("{provider:?}"),
        format!("{:?}", MotoServer::factory()),
    ];
    // Failures around the value: conflict, guardrail, not found, unavailable.
    shown.push(format!(
        "{:?}",
        provider.put_value(&ctx(1), b"other").await.unwrap_err()
    ));
    shown.push(format!(
        "{:?}",
        provider.resolve(&ctx(2), &stored).await.unwrap_err()
    ));
    provider
        .remove_secret(&ctx(1), &stored, RemoveMode::Delete)
        .await
        .unwrap();
    shown.push(format!(
        "{:?}",
        provider.resolve(&ctx(1), &stored).await.unwrap_err()
    ));
    drop(moto);
    shown.push(format!(
        "{:?}",
        provider.resolve(&ctx(1), &stored).await.unwrap_err()
    ));
    for text in shown {
        assert!(!text.contains(canary), "the value leaked: {text}");
        assert!(!text.contains("testing\""), "a credential leaked: {text}");
    }
}

#[tokio::test]
async fn settings_are_checked_before_connecting() {
    let factory = AwsSecretsManagerFactory::new(MotoServer::provider_options());
    let bad = VaultConfig::AwsSecretsManager(coffer_providers::AwsSecretsManagerConfig {
        region: "us-east-1".into(),
        endpoint_url: "https://user:secret@example.com".into(),
        ..Default::default()
    });
    let violations = factory.validate_config(&bad).unwrap_err();
    assert_eq!(violations[0].field, "config.endpoint_url");
    let err = factory.connect(&bad).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::InvalidRequest);
    assert!(!err.message.contains("secret@"), "{}", err.message);
    let local = factory
        .validate_config(&VaultConfig::LocalEncrypted)
        .unwrap_err();
    assert_eq!(local[0].field, "config");
    assert!(factory.connect(&VaultConfig::LocalEncrypted).await.is_err());
    assert!(format!("{factory:?}").contains("[redacted]"));
}
