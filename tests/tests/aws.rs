//! AWS Secrets Manager end to end, against a real moto server: managed
//! secrets written through a default vault (create, rotate, resolve each
//! version, delete with a recovery window, undelete, purge), import by
//! reference (preview pages, duplicates, guardrails, chunked commits, no value
//! read), batch resolution through BatchGetSecretValue, and an outage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use coffer_proto::v1;
use coffer_providers::testing::MotoServer;
use coffer_tests::{TestServer, e2e_test, reason};
use tonic::Code;

const PARENT: &str = "tenants/acme";
const VAULT: &str = "tenants/acme/vaults/aws";

/// Creates the AWS vault on `moto` (namespace `e2e`) and makes it the default.
async fn aws_vault(server: &TestServer, moto: &MotoServer) -> v1::Vault {
    let config = moto.vault_config("e2e");
    let mut vaults = server.vaults();
    vaults
        .create_vault(v1::CreateVaultRequest {
            parent: PARENT.into(),
            vault_id: "aws".into(),
            vault: Some(v1::Vault {
                provider: "aws_secrets_manager".into(),
                config: Some(v1::vault::Config::AwsSecretsManager(
                    v1::AwsSecretsManagerConfig {
                        region: config.region,
                        endpoint_url: config.endpoint_url,
                        namespace: config.namespace,
                        recovery_window_days: 7,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    vaults
        .set_default_vault(v1::SetDefaultVaultRequest {
            name: VAULT.into(),
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn create_in_aws(key: &str, value: &[u8]) -> v1::CreateSecretRequest {
    v1::CreateSecretRequest {
        parent: PARENT.into(),
        secret_id: key.into(),
        secret: Some(v1::Secret {
            provider: "aws_secrets_manager".into(),
            ..Default::default()
        }),
        source: Some(v1::create_secret_request::Source::Value(value.to_vec())),
        ..Default::default()
    }
}

async fn resolve(server: &TestServer, key: &str, version: &str) -> Result<Vec<u8>, tonic::Status> {
    server
        .secrets()
        .resolve_secret(v1::ResolveSecretRequest {
            name: format!("{PARENT}/secrets/{key}"),
            version: version.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().value)
}

e2e_test!(
    managed_secrets_live_in_aws,
    |server: TestServer| async move {
        let moto = MotoServer::start();
        aws_vault(&server, &moto).await;
        let mut secrets = server.secrets();
        let created = secrets
            .create_secret(create_in_aws("db-password", b"v1 \x00 binary"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.provider, "aws_secrets_manager");
        assert_eq!(created.vault, VAULT);
        let remote_name = "coffer/e2e/acme/db-password";
        let remote = moto
            .describe(remote_name)
            .await
            .expect("managed secret in aws");
        assert_eq!(remote.tags["coffer:managed"], "true");

        for value in [b"v2".as_slice(), b"v3"] {
            secrets
                .rotate_secret(v1::RotateSecretRequest {
                    name: created.name.clone(),
                    source: Some(v1::rotate_secret_request::Source::Value(value.to_vec())),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        assert_eq!(resolve(&server, "db-password", "").await.unwrap(), b"v3");
        assert_eq!(resolve(&server, "db-password", "2").await.unwrap(), b"v2");
        assert_eq!(
            resolve(&server, "db-password", "1").await.unwrap(),
            b"v1 \x00 binary"
        );
        // Each Coffer version is pinned to its own AWS VersionId.
        let versions = secrets
            .list_secret_versions(v1::ListSecretVersionsRequest {
                parent: created.name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .versions;
        let refs: std::collections::BTreeSet<_> = versions
            .iter()
            .map(|v| v.provider_version_ref.clone())
            .collect();
        assert_eq!(refs.len(), 3, "{versions:?}");
        let remote = moto.describe(remote_name).await.unwrap();
        for version_ref in &refs {
            assert!(
                remote.version_stages.contains_key(version_ref),
                "{remote:?}"
            );
        }

        // Soft delete: the AWS secret is scheduled for deletion (window visible).
        secrets
            .delete_secret(v1::DeleteSecretRequest {
                name: created.name.clone(),
                recovery_window_days: 7,
                ..Default::default()
            })
            .await
            .unwrap();
        let deleted = moto.describe(remote_name).await.unwrap();
        assert!(deleted.deleted_date.is_some(), "{deleted:?}");
        // Undelete restores it, and it resolves again.
        secrets
            .undelete_secret(v1::UndeleteSecretRequest {
                name: created.name.clone(),
                etag: String::new(),
            })
            .await
            .unwrap();
        assert!(
            moto.describe(remote_name)
                .await
                .unwrap()
                .deleted_date
                .is_none()
        );
        assert_eq!(resolve(&server, "db-password", "").await.unwrap(), b"v3");
        // Deleted again, then purged before its window ends: a forced purge
        // deletes it without recovery.
        secrets
            .delete_secret(v1::DeleteSecretRequest {
                name: created.name.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        secrets
            .delete_secret(v1::DeleteSecretRequest {
                name: created.name.clone(),
                force: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(moto.describe(remote_name).await.is_none());
        // The namespace decides where managed secrets live: it cannot change.
        let status = server
            .vaults()
            .update_vault(v1::UpdateVaultRequest {
                vault: Some(v1::Vault {
                    name: VAULT.into(),
                    config: Some(v1::vault::Config::AwsSecretsManager(
                        v1::AwsSecretsManagerConfig {
                            region: "us-east-1".into(),
                            endpoint_url: moto.endpoint(),
                            namespace: "elsewhere".into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["config".into()],
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("namespace"), "{status:?}");
        // The key is free again, and a new secret under it writes afresh.
        secrets
            .create_secret(create_in_aws("db-password", b"reborn"))
            .await
            .unwrap();
        assert_eq!(
            resolve(&server, "db-password", "").await.unwrap(),
            b"reborn"
        );
    }
);

e2e_test!(
    import_by_reference_reads_no_value,
    |server: TestServer| async move {
        let moto = MotoServer::start();
        aws_vault(&server, &moto).await;
        moto.seed_secrets("team/app-", 250).await;
        // A managed secret sits in Coffer's own namespace: a guardrail case.
        server
            .secrets()
            .create_secret(create_in_aws("managed", b"m"))
            .await
            .unwrap();
        moto.reset_recording();

        let mut vaults = server.vaults();
        let preview_all = async |vaults: &mut v1::vault_service_client::VaultServiceClient<
            tonic::transport::Channel,
        >| {
            let mut candidates = Vec::new();
            let mut token = String::new();
            let mut pages = 0;
            loop {
                let page = vaults
                    .preview_remote_import(v1::PreviewRemoteImportRequest {
                        vault: VAULT.into(),
                        query: String::new(),
                        page_size: 100,
                        page_token: token.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                pages += 1;
                candidates.extend(page.candidates);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            (candidates, pages)
        };
        let (candidates, pages) = preview_all(&mut vaults).await;
        assert_eq!(candidates.len(), 251, "250 seeded + 1 managed");
        assert!(pages >= 3, "{pages} pages");
        let ready: Vec<_> = candidates
            .iter()
            .filter(|c| c.status == v1::import_candidate::Status::Ready as i32)
            .collect();
        assert_eq!(ready.len(), 250);
        let guarded = candidates
            .iter()
            .find(|c| c.remote_name == "coffer/e2e/acme/managed")
            .unwrap();
        assert_eq!(
            guarded.status,
            v1::import_candidate::Status::Conflict as i32
        );
        assert_eq!(
            guarded.conflicts,
            vec![v1::import_candidate::Conflict::ProviderGuardrail as i32]
        );
        let first = ready[0];
        assert!(first.suggested_key.starts_with("team-app-"), "{first:?}");
        assert_eq!(first.metadata["tag_count"], "1");
        assert!(first.metadata.contains_key("create_time"));

        // Commit the READY rows 100 at a time, plus the guardrail row.
        let mut imported = 0;
        for chunk in ready.chunks(100) {
            let response = vaults
                .commit_remote_import(v1::CommitRemoteImportRequest {
                    vault: VAULT.into(),
                    rows: chunk
                        .iter()
                        .map(|c| v1::ImportRow {
                            external_ref: c.external_ref.clone(),
                            key: c.suggested_key.clone(),
                            display_name: c.suggested_display_name.clone(),
                            ..Default::default()
                        })
                        .collect(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(response.failed, 0, "{response:?}");
            imported += response.imported;
        }
        assert_eq!(imported, 250);
        let refused = vaults
            .commit_remote_import(v1::CommitRemoteImportRequest {
                vault: VAULT.into(),
                rows: vec![
                    v1::ImportRow {
                        external_ref: guarded.external_ref.clone(),
                        key: "sneaky".into(),
                        ..Default::default()
                    },
                    // Already imported: skipped, however it is named.
                    v1::ImportRow {
                        external_ref: first.remote_name.clone(),
                        key: "again".into(),
                        ..Default::default()
                    },
                ],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((refused.failed, refused.skipped), (1, 1), "{refused:?}");
        assert!(
            refused.results[0].reason.contains("namespace"),
            "{refused:?}"
        );
        assert_eq!(
            refused.results[1].secret,
            format!("{PARENT}/secrets/{}", first.suggested_key)
        );

        // A second preview marks every imported one DUPLICATE.
        let (again, _) = preview_all(&mut vaults).await;
        let duplicates = again
            .iter()
            .filter(|c| c.status == v1::import_candidate::Status::Duplicate as i32)
            .count();
        assert_eq!(duplicates, 250);

        // Nothing read a value, ever.
        let actions = moto.recorded_actions();
        assert!(actions.contains(&"ListSecrets".to_owned()), "{actions:?}");
        for forbidden in ["GetSecretValue", "BatchGetSecretValue"] {
            assert!(!actions.contains(&forbidden.to_owned()), "{actions:?}");
        }

        // Imported secrets resolve once bound.
        let mut secrets = server.secrets();
        let secret = format!("{PARENT}/secrets/{}", first.suggested_key);
        secrets
            .create_binding(v1::CreateBindingRequest {
                parent: PARENT.into(),
                binding: Some(v1::Binding {
                    secret: secret.clone(),
                    consumer: Some(v1::Consumer {
                        kind: "agent".into(),
                        id: "importer".into(),
                    }),
                    config_path: "env.APP".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        let entries = secrets
            .resolve_bindings(v1::ResolveBindingsRequest {
                parent: PARENT.into(),
                consumer: Some(v1::Consumer {
                    kind: "agent".into(),
                    id: "importer".into(),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert_eq!(entries.len(), 1);
        let number = first.remote_name.trim_start_matches("team/app-");
        let n: usize = number.parse().unwrap();
        assert_eq!(entries[0].value, format!("seed value {n}").into_bytes());
    }
);

e2e_test!(
    batch_resolve_uses_batch_get_secret_value,
    |server: TestServer| async move {
        let moto = MotoServer::start();
        aws_vault(&server, &moto).await;
        let mut secrets = server.secrets();
        for n in 0..60 {
            secrets
                .create_secret(create_in_aws(
                    &format!("k{n:02}"),
                    format!("value {n}").as_bytes(),
                ))
                .await
                .unwrap();
        }
        moto.reset_recording();
        let requests: Vec<_> = (0..60)
            .map(|n| v1::ResolveSecretRequest {
                name: format!("{PARENT}/secrets/k{n:02}"),
                ..Default::default()
            })
            .collect();
        let results = secrets
            .batch_resolve_secrets(v1::BatchResolveSecretsRequest {
                parent: PARENT.into(),
                requests,
            })
            .await
            .unwrap()
            .into_inner()
            .results;
        assert_eq!(results.len(), 60);
        for (n, result) in results.into_iter().enumerate() {
            match result.result {
                Some(v1::batch_resolve_result::Result::Resolved(resolved)) => {
                    assert_eq!(resolved.value, format!("value {n}").into_bytes());
                }
                other => panic!("item {n}: {other:?}"),
            }
        }
        let batches = moto.action_count("BatchGetSecretValue");
        assert!(
            (1..=3).contains(&batches),
            "{batches} BatchGetSecretValue calls"
        );
        assert_eq!(moto.action_count("GetSecretValue"), 0);
    }
);

e2e_test!(
    an_unreachable_vault_answers_unavailable_and_changes_nothing,
    |server: TestServer| async move {
        let mut moto = MotoServer::start();
        aws_vault(&server, &moto).await;
        let mut secrets = server.secrets();
        secrets
            .create_secret(create_in_aws("api-key", b"k1"))
            .await
            .unwrap();
        let before = stored_secret(&server, "api-key").await;

        moto.stop();
        let started = Instant::now();
        let status = resolve(&server, "api-key", "").await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(reason(&status), "PROVIDER_UNAVAILABLE");
        // The harness's provider allows 3 s per operation, retries included.
        assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
        let status = secrets
            .rotate_secret(v1::RotateSecretRequest {
                name: format!("{PARENT}/secrets/api-key"),
                source: Some(v1::rotate_secret_request::Source::Value(b"k2".to_vec())),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");

        let health = server
            .vaults()
            .check_vault_health(v1::CheckVaultHealthRequest { name: VAULT.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(health.state, v1::vault::State::Warning as i32);
        let report = health.health.unwrap();
        assert_eq!(report.status, "failing");
        assert!(!report.message.is_empty());

        // Nothing changed in the database.
        let after = stored_secret(&server, "api-key").await;
        assert_eq!(after.latest_version, before.latest_version);
        assert_eq!(after.revision, before.revision);

        // Back: moto restarts empty, so write afresh and resolve.
        moto.restart();
        let health = server
            .vaults()
            .check_vault_health(v1::CheckVaultHealthRequest { name: VAULT.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(health.state, v1::vault::State::Ready as i32);
        secrets
            .create_secret(create_in_aws("after-outage", b"ok"))
            .await
            .unwrap();
        assert_eq!(resolve(&server, "after-outage", "").await.unwrap(), b"ok");
    }
);

/// The store's view of one secret of tenant `acme`.
async fn stored_secret(server: &TestServer, key: &str) -> coffer_core::record::SecretRecord {
    let tenant = coffer_core::TenantId::parse("acme", "tenant").unwrap();
    let key = coffer_core::SecretKey::parse(key, "key").unwrap();
    server
        .store
        .get_secret(&tenant, &key)
        .await
        .unwrap()
        .unwrap()
}
