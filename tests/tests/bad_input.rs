//! Bad input over the wire: each kind gets the right gRPC code, a BadRequest
//! or ErrorInfo detail where it applies, and leaves the database exactly as it
//! was (compared row by row before and after), on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer_core::filter::SecretFilter;
use coffer_core::record::{SecretRecord, VersionRecord};
use coffer_proto::v1;
use coffer_tests::{TestServer, e2e_test, reason, violated_fields};
use tonic::Code;

const PARENT: &str = "tenants/acme";
const NAME: &str = "tenants/acme/secrets/existing";

fn create(key: &str, value: Vec<u8>) -> v1::CreateSecretRequest {
    v1::CreateSecretRequest {
        parent: PARENT.into(),
        secret_id: key.into(),
        secret: None,
        source: Some(v1::create_secret_request::Source::Value(value)),
        request_id: String::new(),
    }
}

/// Every secret (deleted included) and every version of each, for tenants
/// the tests touch.
async fn snapshot(server: &TestServer) -> Vec<(SecretRecord, Vec<VersionRecord>)> {
    let mut out = Vec::new();
    for tenant in ["acme", "globex"] {
        let tenant = coffer_core::TenantId::parse(tenant, "t").unwrap();
        let secrets = server
            .store
            .list_secrets(&tenant, &SecretFilter::default(), true, None, 10_000)
            .await
            .unwrap();
        for secret in secrets {
            let versions = server
                .store
                .list_versions(&secret.uid, None, 10_000)
                .await
                .unwrap();
            out.push((secret, versions));
        }
    }
    out
}

fn expect(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code) -> tonic::Status {
    let status = result.expect_err("the call should have failed");
    assert_eq!(status.code(), code, "wrong code: {status:?}");
    assert!(!status.message().is_empty());
    // Messages start lowercase (they are sentences for operators, not titles).
    assert!(
        !status.message().starts_with(char::is_uppercase),
        "{status:?}"
    );
    status
}

e2e_test!(
    bad_input_is_refused_and_changes_nothing,
    |server: TestServer| async move {
        let mut client = server.secrets();
        let created = client
            .create_secret(create("existing", b"original".to_vec()))
            .await
            .unwrap()
            .into_inner();
        client
            .rotate_secret(v1::RotateSecretRequest {
                name: NAME.into(),
                source: Some(v1::rotate_secret_request::Source::Value(b"second".to_vec())),
                ..Default::default()
            })
            .await
            .unwrap();
        client
            .disable_secret_version(v1::DisableSecretVersionRequest {
                name: format!("{NAME}/versions/1"),
                etag: String::new(),
            })
            .await
            .unwrap();
        client
            .create_secret(create("disabled", b"x".to_vec()))
            .await
            .unwrap();
        client
            .update_secret(v1::UpdateSecretRequest {
                secret: Some(v1::Secret {
                    name: "tenants/acme/secrets/disabled".into(),
                    state: v1::secret::State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["state".into()],
                }),
            })
            .await
            .unwrap();
        client
            .create_secret(create("destroyed", b"x".to_vec()))
            .await
            .unwrap();
        client
            .rotate_secret(v1::RotateSecretRequest {
                name: "tenants/acme/secrets/destroyed".into(),
                source: Some(v1::rotate_secret_request::Source::Value(b"y".to_vec())),
                ..Default::default()
            })
            .await
            .unwrap();
        client
            .destroy_secret_version(v1::DestroySecretVersionRequest {
                name: "tenants/acme/secrets/destroyed/versions/1".into(),
                etag: String::new(),
            })
            .await
            .unwrap();
        // The largest value that is allowed.
        client
            .create_secret(create("just-fits", vec![b'x'; 64 * 1024]))
            .await
            .unwrap();
        client
            .delete_secret(v1::DeleteSecretRequest {
                name: "tenants/acme/secrets/just-fits".into(),
                force: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let before = snapshot(&server).await;

        // Invalid keys.
        for key in [
            "Bad Key",
            "-leading",
            "UPPER",
            "",
            &"k".repeat(121),
            "a/b",
            "ümlaut",
        ] {
            let status = expect(
                client.create_secret(create(key, b"v".to_vec())).await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), vec!["secret_id"], "key {key:?}");
            assert_eq!(reason(&status), "BAD_REQUEST");
        }
        // Values: 64 KiB + 1, and empty.
        let status = expect(
            client
                .create_secret(create("too-big", vec![b'x'; 64 * 1024 + 1]))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["value"]);
        expect(
            client.create_secret(create("empty", Vec::new())).await,
            Code::InvalidArgument,
        );
        expect(
            client
                .rotate_secret(v1::RotateSecretRequest {
                    name: NAME.into(),
                    source: Some(v1::rotate_secret_request::Source::Value(vec![
                        0;
                        64 * 1024 + 1
                    ])),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        let mut no_source = create("no-source", Vec::new());
        no_source.source = None;
        expect(client.create_secret(no_source).await, Code::InvalidArgument);

        // Malformed resource names.
        for parent in [
            "",
            "tenants",
            "tenants/",
            "tenant/acme",
            "tenants/ACME",
            "tenants/acme/extra",
        ] {
            let mut req = create("fine", b"v".to_vec());
            req.parent = parent.into();
            let status = expect(client.create_secret(req).await, Code::InvalidArgument);
            assert_eq!(violated_fields(&status), vec!["parent"]);
        }
        for name in [
            "",
            "tenants/acme/secrets/",
            "tenants/acme/secrets/a/b",
            "secrets/a",
            "tenants/acme/keys/a",
        ] {
            expect(
                client
                    .get_secret(v1::GetSecretRequest { name: name.into() })
                    .await,
                Code::InvalidArgument,
            );
        }
        for name in [
            format!("{NAME}/versions/0"),
            format!("{NAME}/versions/latest"),
            format!("{NAME}/versions/-1"),
            format!("{NAME}/versions/"),
        ] {
            expect(
                client
                    .get_secret_version(v1::GetSecretVersionRequest { name: name.clone() })
                    .await,
                Code::InvalidArgument,
            );
            expect(
                client
                    .destroy_secret_version(v1::DestroySecretVersionRequest {
                        name,
                        etag: String::new(),
                    })
                    .await,
                Code::InvalidArgument,
            );
        }

        // Page tokens: garbage, and a token from another query.
        let status = expect(
            client
                .list_secrets(v1::ListSecretsRequest {
                    parent: PARENT.into(),
                    page_token: "garbage!".into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["page_token"]);
        let page = client
            .list_secrets(v1::ListSecretsRequest {
                parent: PARENT.into(),
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!page.next_page_token.is_empty());
        expect(
            client
                .list_secrets(v1::ListSecretsRequest {
                    parent: "tenants/globex".into(),
                    page_token: page.next_page_token.clone(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        expect(
            client
                .list_secrets(v1::ListSecretsRequest {
                    parent: PARENT.into(),
                    page_size: -1,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        expect(
            client
                .list_secrets(v1::ListSecretsRequest {
                    parent: PARENT.into(),
                    filter: "name = \"x\" OR 1=1".into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );

        // Wrong etags.
        let stale = "r999";
        let status = expect(
            client
                .update_secret(v1::UpdateSecretRequest {
                    secret: Some(v1::Secret {
                        name: NAME.into(),
                        description: "x".into(),
                        etag: stale.into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["description".into()],
                    }),
                })
                .await,
            Code::Aborted,
        );
        assert_eq!(reason(&status), "ETAG_MISMATCH");
        expect(
            client
                .delete_secret(v1::DeleteSecretRequest {
                    name: NAME.into(),
                    etag: stale.into(),
                    ..Default::default()
                })
                .await,
            Code::Aborted,
        );
        expect(
            client
                .rotate_secret(v1::RotateSecretRequest {
                    name: NAME.into(),
                    source: Some(v1::rotate_secret_request::Source::Value(b"v".to_vec())),
                    etag: created.etag.clone(),
                    ..Default::default()
                })
                .await,
            Code::Aborted,
        );
        expect(
            client
                .enable_secret_version(v1::EnableSecretVersionRequest {
                    name: format!("{NAME}/versions/1"),
                    etag: stale.into(),
                })
                .await,
            Code::Aborted,
        );

        // Bad update requests.
        expect(
            client
                .update_secret(v1::UpdateSecretRequest {
                    secret: Some(v1::Secret {
                        name: NAME.into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["provider".into()],
                    }),
                })
                .await,
            Code::InvalidArgument,
        );
        expect(
            client
                .update_secret(v1::UpdateSecretRequest {
                    secret: Some(v1::Secret {
                        name: NAME.into(),
                        state: v1::secret::State::Deleted as i32,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["state".into()],
                    }),
                })
                .await,
            Code::InvalidArgument,
        );
        let mut bad_labels = create("labels", b"v".to_vec());
        bad_labels.secret = Some(v1::Secret {
            labels: [("Bad Key".to_owned(), "v".to_owned())].into(),
            ..Default::default()
        });
        expect(
            client.create_secret(bad_labels).await,
            Code::InvalidArgument,
        );
        let mut bad_request_id = create("reqid", b"v".to_vec());
        bad_request_id.request_id = "not-a-uuid".into();
        expect(
            client.create_secret(bad_request_id).await,
            Code::InvalidArgument,
        );
        expect(
            client
                .delete_secret(v1::DeleteSecretRequest {
                    name: NAME.into(),
                    recovery_window_days: 3,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );

        // Unknown secrets and versions.
        let missing = "tenants/acme/secrets/missing";
        let status = expect(
            client
                .get_secret(v1::GetSecretRequest {
                    name: missing.into(),
                })
                .await,
            Code::NotFound,
        );
        assert_eq!(reason(&status), "SECRET_NOT_FOUND");
        expect(
            client
                .rotate_secret(v1::RotateSecretRequest {
                    name: missing.into(),
                    source: Some(v1::rotate_secret_request::Source::Value(b"v".to_vec())),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
        );
        expect(
            client
                .resolve_secret(v1::ResolveSecretRequest {
                    name: missing.into(),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
        );
        let status = expect(
            client
                .get_secret_version(v1::GetSecretVersionRequest {
                    name: format!("{NAME}/versions/99"),
                })
                .await,
            Code::NotFound,
        );
        assert_eq!(reason(&status), "VERSION_NOT_FOUND");
        expect(
            client
                .resolve_secret(v1::ResolveSecretRequest {
                    name: NAME.into(),
                    version: "99".into(),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
        );
        expect(
            client
                .resolve_secret(v1::ResolveSecretRequest {
                    name: NAME.into(),
                    version: "v1".into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );

        // Resolving a disabled secret, a disabled version and a destroyed version.
        let status = expect(
            client
                .resolve_secret(v1::ResolveSecretRequest {
                    name: "tenants/acme/secrets/disabled".into(),
                    ..Default::default()
                })
                .await,
            Code::FailedPrecondition,
        );
        assert_eq!(reason(&status), "SECRET_NOT_ACTIVE");
        let status = expect(
            client
                .resolve_secret(v1::ResolveSecretRequest {
                    name: NAME.into(),
                    version: "1".into(),
                    ..Default::default()
                })
                .await,
            Code::FailedPrecondition,
        );
        assert_eq!(reason(&status), "VERSION_DISABLED");
        let status = expect(
            client
                .resolve_secret(v1::ResolveSecretRequest {
                    name: "tenants/acme/secrets/destroyed".into(),
                    version: "1".into(),
                    ..Default::default()
                })
                .await,
            Code::FailedPrecondition,
        );
        assert_eq!(reason(&status), "VERSION_DESTROYED");

        // Duplicates.
        let status = expect(
            client
                .create_secret(create("existing", b"v".to_vec()))
                .await,
            Code::AlreadyExists,
        );
        assert_eq!(reason(&status), "SECRET_ALREADY_EXISTS");

        // Vaults: a malformed id, a provider that does not exist, settings
        // of another provider, and a vault that is not there.
        let mut vaults = server.vaults();
        for (vault_id, provider, config) in [
            ("Not_An_Id", "local_encrypted", None),
            ("ok-id", "no_such_provider", None),
            (
                "ok-id",
                "local_encrypted",
                Some(v1::vault::Config::AwsSecretsManager(Default::default())),
            ),
        ] {
            let status = expect(
                vaults
                    .create_vault(v1::CreateVaultRequest {
                        parent: PARENT.into(),
                        vault_id: vault_id.into(),
                        vault: Some(v1::Vault {
                            provider: provider.into(),
                            config,
                            ..Default::default()
                        }),
                    })
                    .await,
                Code::InvalidArgument,
            );
            assert!(!violated_fields(&status).is_empty(), "{status:?}");
        }
        let status = expect(
            vaults
                .get_vault(v1::GetVaultRequest {
                    name: format!("{PARENT}/vaults/missing"),
                })
                .await,
            Code::NotFound,
        );
        assert_eq!(reason(&status), "VAULT_NOT_FOUND");
        // A secret cannot be written into a vault that does not exist.
        let mut missing_vault = create("in-missing-vault", b"v".to_vec());
        missing_vault.secret = Some(v1::Secret {
            vault: format!("{PARENT}/vaults/missing"),
            ..Default::default()
        });
        expect(client.create_secret(missing_vault).await, Code::NotFound);

        let after = snapshot(&server).await;
        assert_eq!(before, after, "a refused request changed the database");
    }
);

e2e_test!(
    malformed_consumer_paths_are_refused_before_the_audit_trail,
    |server: TestServer| async move {
        let mut client = server.secrets();
        client
            .create_secret(create("existing", b"original".to_vec()))
            .await
            .unwrap();
        let head_before = server
            .store
            .audit_head(&coffer_core::TenantId::parse("acme", "tenant").unwrap())
            .await
            .unwrap();
        let consumer = Some(v1::Consumer {
            kind: "agent".into(),
            id: "a1".into(),
        });
        for (config_path, consumer) in [
            ("x".repeat(1024 * 1024 - 1024), consumer.clone()),
            ("env..DOUBLE_DOT".to_owned(), consumer.clone()),
            ("env.HAS SPACE".to_owned(), consumer.clone()),
            ("env.OK".to_owned(), None),
            (String::new(), consumer.clone()),
        ] {
            let request = v1::ResolveSecretRequest {
                name: NAME.into(),
                consumer: consumer.clone(),
                config_path: config_path.clone(),
                ..Default::default()
            };
            let status = expect(
                client.resolve_secret(request.clone()).await,
                Code::InvalidArgument,
            );
            let fields = violated_fields(&status);
            assert!(
                fields == ["config_path"] || fields == ["consumer"],
                "{fields:?}"
            );
            // In a batch the item alone is refused, naming its index.
            let batch = client
                .batch_resolve_secrets(v1::BatchResolveSecretsRequest {
                    parent: "tenants/acme".into(),
                    requests: vec![request],
                })
                .await
                .unwrap()
                .into_inner();
            match batch.results[0].result.as_ref().unwrap() {
                v1::batch_resolve_result::Result::Error(status) => {
                    assert_eq!(status.code, Code::InvalidArgument as i32, "{status:?}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Nothing was audited: a malformed path names nothing to resolve.
        let head_after = server
            .store
            .audit_head(&coffer_core::TenantId::parse("acme", "tenant").unwrap())
            .await
            .unwrap();
        assert_eq!(
            head_before.map(|h| h.seq),
            head_after.map(|h| h.seq),
            "refused resolves must not be audited"
        );
    }
);
