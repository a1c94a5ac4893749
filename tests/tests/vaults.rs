//! VaultService end to end with the built-in provider: the catalog, vault
//! CRUD, defaults and disable (also racing each other), secrets written
//! through a tenant's default vault, resolution refused while a vault is
//! disabled, and a secret moved to another vault by a rotation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer_proto::v1;
use coffer_tests::{TestServer, e2e_test, reason};
use tonic::Code;

const PARENT: &str = "tenants/acme";

fn local_vault(id: &str) -> v1::CreateVaultRequest {
    v1::CreateVaultRequest {
        parent: PARENT.into(),
        vault_id: id.into(),
        vault: Some(v1::Vault {
            provider: "local_encrypted".into(),
            display_name: format!("Local {id}"),
            ..Default::default()
        }),
    }
}

fn vault_name(id: &str) -> String {
    format!("{PARENT}/vaults/{id}")
}

async fn resolve(server: &TestServer, key: &str) -> Result<Vec<u8>, tonic::Status> {
    server
        .secrets()
        .resolve_secret(v1::ResolveSecretRequest {
            name: format!("{PARENT}/secrets/{key}"),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().value)
}

e2e_test!(providers_and_vault_crud, |server: TestServer| async move {
    let mut vaults = server.vaults();
    let providers = vaults
        .list_providers(v1::ListProvidersRequest {
            parent: PARENT.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .providers;
    let local = providers
        .iter()
        .find(|p| p.id == "local_encrypted")
        .unwrap();
    assert!(local.configured && local.supports_managed_values);
    let aws = providers
        .iter()
        .find(|p| p.id == "aws_secrets_manager")
        .unwrap();
    assert!(aws.supports_external_references && aws.supports_remote_listing);

    let created = vaults
        .create_vault(local_vault("main"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.name, vault_name("main"));
    assert_eq!(created.state, v1::vault::State::Ready as i32);
    assert!(!created.is_default);
    assert!(matches!(
        created.config,
        Some(v1::vault::Config::LocalEncrypted(_))
    ));
    let status = vaults.create_vault(local_vault("main")).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "VAULT_ALREADY_EXISTS");

    let got = vaults
        .get_vault(v1::GetVaultRequest {
            name: vault_name("main"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    // Pages of one, disabled vaults included.
    for id in ["second", "third"] {
        vaults.create_vault(local_vault(id)).await.unwrap();
    }
    vaults
        .disable_vault(v1::DisableVaultRequest {
            name: vault_name("third"),
            etag: String::new(),
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = vaults
            .list_vaults(v1::ListVaultsRequest {
                parent: PARENT.into(),
                page_size: 1,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.vaults.into_iter().map(|v| v.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        vec![
            vault_name("main"),
            vault_name("second"),
            vault_name("third")
        ]
    );

    // Update: display name with a stale etag is refused, then applied.
    let stale = vaults
        .update_vault(v1::UpdateVaultRequest {
            vault: Some(v1::Vault {
                name: vault_name("main"),
                display_name: "Renamed".into(),
                etag: "r999".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let renamed = vaults
        .update_vault(v1::UpdateVaultRequest {
            vault: Some(v1::Vault {
                name: vault_name("main"),
                display_name: "Renamed".into(),
                etag: created.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.display_name, "Renamed");
    assert_ne!(renamed.etag, created.etag);

    // A vault's provider cannot change through its config.
    let status = vaults
        .update_vault(v1::UpdateVaultRequest {
            vault: Some(v1::Vault {
                name: vault_name("main"),
                config: Some(v1::vault::Config::AwsSecretsManager(Default::default())),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["config".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Health: the built-in provider's self-test passes.
    let checked = vaults
        .check_vault_health(v1::CheckVaultHealthRequest {
            name: vault_name("main"),
        })
        .await
        .unwrap()
        .into_inner();
    let health = checked.health.unwrap();
    assert_eq!(health.status, "ok");
    assert!(health.check_time.is_some());

    // Another tenant's vault answers like a missing one.
    let status = vaults
        .get_vault(v1::GetVaultRequest {
            name: "tenants/globex/vaults/main".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
});

e2e_test!(
    secrets_follow_the_default_vault_and_stop_when_it_is_disabled,
    |server: TestServer| async move {
        let mut vaults = server.vaults();
        let mut secrets = server.secrets();
        vaults.create_vault(local_vault("team")).await.unwrap();
        vaults.create_vault(local_vault("other")).await.unwrap();

        // Before any default: the built-in store.
        let builtin = secrets
            .create_secret(v1::CreateSecretRequest {
                parent: PARENT.into(),
                secret_id: "builtin".into(),
                source: Some(v1::create_secret_request::Source::Value(b"b".to_vec())),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(builtin.vault, "");

        let default = vaults
            .set_default_vault(v1::SetDefaultVaultRequest {
                name: vault_name("team"),
                etag: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(default.is_default);
        let in_default = secrets
            .create_secret(v1::CreateSecretRequest {
                parent: PARENT.into(),
                secret_id: "in-default".into(),
                source: Some(v1::create_secret_request::Source::Value(b"d1".to_vec())),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(in_default.vault, vault_name("team"));
        assert_eq!(in_default.provider, "local_encrypted");
        assert_eq!(resolve(&server, "in-default").await.unwrap(), b"d1");

        // Moving the default to another vault clears the first.
        vaults
            .set_default_vault(v1::SetDefaultVaultRequest {
                name: vault_name("other"),
                etag: String::new(),
            })
            .await
            .unwrap();
        let team = vaults
            .get_vault(v1::GetVaultRequest {
                name: vault_name("team"),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!team.is_default);

        // Disabled: resolves stop with VAULT_DISABLED, nothing else changes.
        let disabled = vaults
            .disable_vault(v1::DisableVaultRequest {
                name: vault_name("team"),
                etag: team.etag.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(disabled.state, v1::vault::State::Disabled as i32);
        assert!(disabled.disable_time.is_some());
        let status = resolve(&server, "in-default").await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "VAULT_DISABLED");
        assert_eq!(resolve(&server, "builtin").await.unwrap(), b"b");
        // A disabled vault never becomes the default, nor takes new secrets.
        let status = vaults
            .set_default_vault(v1::SetDefaultVaultRequest {
                name: vault_name("team"),
                etag: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&status), "VAULT_DISABLED");
        let status = secrets
            .create_secret(v1::CreateSecretRequest {
                parent: PARENT.into(),
                secret_id: "into-disabled".into(),
                secret: Some(v1::Secret {
                    vault: vault_name("team"),
                    ..Default::default()
                }),
                source: Some(v1::create_secret_request::Source::Value(b"x".to_vec())),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&status), "VAULT_DISABLED");

        // Moving the secret out is a rotation; the old version stays where it
        // was written, so it resolves again only once its vault is enabled.
        let moved = secrets
            .rotate_secret(v1::RotateSecretRequest {
                name: format!("{PARENT}/secrets/in-default"),
                source: Some(v1::rotate_secret_request::Source::Value(b"d2".to_vec())),
                vault: vault_name("other"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(moved.version, 2);
        let secret = secrets
            .get_secret(v1::GetSecretRequest {
                name: format!("{PARENT}/secrets/in-default"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(secret.vault, vault_name("other"));
        assert_eq!(resolve(&server, "in-default").await.unwrap(), b"d2");
        let old = secrets
            .resolve_secret(v1::ResolveSecretRequest {
                name: format!("{PARENT}/secrets/in-default"),
                version: "1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&old), "VAULT_DISABLED");

        // Re-enable through UpdateVault's state.
        let enabled = vaults
            .update_vault(v1::UpdateVaultRequest {
                vault: Some(v1::Vault {
                    name: vault_name("team"),
                    state: v1::vault::State::Ready as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["state".into()],
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(enabled.state, v1::vault::State::Ready as i32);
        assert!(enabled.disable_time.is_none());
        let old = secrets
            .resolve_secret(v1::ResolveSecretRequest {
                name: format!("{PARENT}/secrets/in-default"),
                version: "1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(old.value, b"d1");

        // Audit: every vault change is on the record.
        let events = secrets
            .list_audit_events(v1::ListAuditEventsRequest {
                parent: PARENT.into(),
                filter: r#"action = "vault.disable""#.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].resource, vault_name("team"));
    }
);

e2e_test!(
    set_default_and_disable_race_never_leave_a_disabled_default,
    |server: TestServer| async move {
        let mut vaults = server.vaults();
        for round in 0..8 {
            let ids = [format!("a{round}"), format!("b{round}")];
            for id in &ids {
                vaults.create_vault(local_vault(id)).await.unwrap();
            }
            // Four racers per round: set-default and disable of both vaults.
            let mut tasks = Vec::new();
            for id in &ids {
                let mut setter = server.vaults();
                let name = vault_name(id);
                tasks.push(tokio::spawn(async move {
                    let _ = setter
                        .set_default_vault(v1::SetDefaultVaultRequest {
                            name,
                            etag: String::new(),
                        })
                        .await;
                }));
                let mut disabler = server.vaults();
                let name = vault_name(id);
                tasks.push(tokio::spawn(async move {
                    let _ = disabler
                        .disable_vault(v1::DisableVaultRequest {
                            name,
                            etag: String::new(),
                        })
                        .await;
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let all = vaults
                .list_vaults(v1::ListVaultsRequest {
                    parent: PARENT.into(),
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .vaults;
            let defaults: Vec<_> = all.iter().filter(|v| v.is_default).collect();
            assert!(defaults.len() <= 1, "round {round}: {defaults:?}");
            for vault in &all {
                assert!(
                    !(vault.is_default && vault.state == v1::vault::State::Disabled as i32),
                    "round {round}: {} is a disabled default",
                    vault.name
                );
            }
            // Both were disabled, so neither may be the default now.
            assert!(defaults.is_empty(), "round {round}: {defaults:?}");
        }
    }
);
