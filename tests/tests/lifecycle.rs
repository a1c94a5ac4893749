//! The whole secret lifecycle over the wire, on SQLite and PostgreSQL:
//! create, read, list, update, rotate (and staged rotation), promote and
//! roll back, version disable/enable/destroy, resolve, batch resolve, soft
//! delete, undelete, forced purge, the reaper, request-id idempotency and
//! concurrent rotations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};

use coffer_proto::v1::{self, secret, secret_version};
use coffer_tests::{TestServer, e2e_test, reason};
use tonic::Code;

const PARENT: &str = "tenants/acme";

fn create(key: &str, value: &[u8]) -> v1::CreateSecretRequest {
    v1::CreateSecretRequest {
        parent: PARENT.into(),
        secret_id: key.into(),
        secret: Some(v1::Secret {
            display_name: format!("Display {key}"),
            labels: HashMap::from([("env".to_owned(), "prod".to_owned())]),
            ..Default::default()
        }),
        source: Some(v1::create_secret_request::Source::Value(value.to_vec())),
        request_id: String::new(),
    }
}

fn rotate(name: &str, value: &[u8], stage_only: bool) -> v1::RotateSecretRequest {
    v1::RotateSecretRequest {
        name: name.into(),
        source: Some(v1::rotate_secret_request::Source::Value(value.to_vec())),
        stage_only,
        ..Default::default()
    }
}

fn resolve_req(name: &str, version: &str) -> v1::ResolveSecretRequest {
    v1::ResolveSecretRequest {
        name: name.into(),
        version: version.into(),
        ..Default::default()
    }
}

async fn resolve(server: &TestServer, name: &str, version: &str) -> Result<Vec<u8>, tonic::Status> {
    server
        .secrets()
        .resolve_secret(resolve_req(name, version))
        .await
        .map(|r| r.into_inner().value)
}

e2e_test!(
    create_get_resolve_rotate_promote,
    |server: TestServer| async move {
        let mut client = server.secrets();
        let created = client
            .create_secret(create("openai-key", b"sk-one\x00\xff"))
            .await
            .unwrap()
            .into_inner();
        let name = "tenants/acme/secrets/openai-key";
        assert_eq!(created.name, name);
        assert_eq!(created.state, secret::State::Active as i32);
        assert_eq!(created.mode, secret::Mode::Managed as i32);
        assert_eq!(created.provider, "local_encrypted");
        assert_eq!(created.current_version, 1);
        assert_eq!(created.display_name, "Display openai-key");
        assert!(!created.uid.is_empty() && !created.etag.is_empty());

        let got = client
            .get_secret(v1::GetSecretRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, created);
        assert_eq!(resolve(&server, name, "").await.unwrap(), b"sk-one\x00\xff");

        let v2 = client
            .rotate_secret(rotate(name, b"sk-two", false))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v2.version, 2);
        assert!(v2.is_current);
        assert_eq!(v2.name, format!("{name}/versions/2"));
        assert_eq!(v2.created_by, "dev:admin");
        assert_eq!(resolve(&server, name, "latest").await.unwrap(), b"sk-two");
        assert_eq!(
            resolve(&server, name, "1").await.unwrap(),
            b"sk-one\x00\xff"
        );

        // A staged rotation adds v3 without making it current.
        let v3 = client
            .rotate_secret(rotate(name, b"sk-three", true))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v3.version, 3);
        assert!(!v3.is_current);
        assert_eq!(resolve(&server, name, "").await.unwrap(), b"sk-two");
        assert_eq!(resolve(&server, name, "3").await.unwrap(), b"sk-three");

        let promoted = client
            .promote_secret_version(v1::PromoteSecretVersionRequest {
                name: format!("{name}/versions/3"),
                etag: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(promoted.current_version, 3);
        assert_eq!(promoted.latest_version, 3);
        assert_eq!(resolve(&server, name, "").await.unwrap(), b"sk-three");

        // Roll back to v2 with the secret's etag.
        let rolled_back = client
            .promote_secret_version(v1::PromoteSecretVersionRequest {
                name: format!("{name}/versions/2"),
                etag: promoted.etag.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rolled_back.current_version, 2);
        assert_eq!(resolve(&server, name, "").await.unwrap(), b"sk-two");

        let versions = client
            .list_secret_versions(v1::ListSecretVersionsRequest {
                parent: name.into(),
                page_size: 2,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            versions
                .versions
                .iter()
                .map(|v| v.version)
                .collect::<Vec<_>>(),
            vec![3, 2]
        );
        assert_eq!(
            versions
                .versions
                .iter()
                .map(|v| v.is_current)
                .collect::<Vec<_>>(),
            vec![false, true]
        );
        let rest = client
            .list_secret_versions(v1::ListSecretVersionsRequest {
                parent: name.into(),
                page_size: 2,
                page_token: versions.next_page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            rest.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(rest.next_page_token.is_empty());
        // Fingerprints: keyed, hex, distinct for distinct values.
        let fingerprints: BTreeSet<_> = versions
            .versions
            .iter()
            .chain(&rest.versions)
            .map(|v| v.fingerprint.clone())
            .collect();
        assert_eq!(fingerprints.len(), 3);
    }
);

e2e_test!(
    version_states_and_destroy,
    |server: TestServer| async move {
        let mut client = server.secrets();
        let name = "tenants/acme/secrets/db-password";
        client
            .create_secret(create("db-password", b"v1-value"))
            .await
            .unwrap();
        client
            .rotate_secret(rotate(name, b"v2-value", false))
            .await
            .unwrap();
        let v1_name = format!("{name}/versions/1");
        let v2_name = format!("{name}/versions/2");

        // The current version can be neither disabled nor destroyed.
        for status in [
            client
                .disable_secret_version(v1::DisableSecretVersionRequest {
                    name: v2_name.clone(),
                    etag: String::new(),
                })
                .await
                .unwrap_err(),
            client
                .destroy_secret_version(v1::DestroySecretVersionRequest {
                    name: v2_name.clone(),
                    etag: String::new(),
                })
                .await
                .unwrap_err(),
        ] {
            assert_eq!(status.code(), Code::FailedPrecondition);
            assert_eq!(reason(&status), "VERSION_IS_CURRENT");
        }

        let disabled = client
            .disable_secret_version(v1::DisableSecretVersionRequest {
                name: v1_name.clone(),
                etag: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(disabled.state, secret_version::State::Disabled as i32);
        let err = resolve(&server, name, "1").await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (Code::FailedPrecondition, "VERSION_DISABLED")
        );
        // A disabled version cannot be promoted.
        let err = client
            .promote_secret_version(v1::PromoteSecretVersionRequest {
                name: v1_name.clone(),
                etag: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "VERSION_DISABLED");

        let enabled = client
            .enable_secret_version(v1::EnableSecretVersionRequest {
                name: v1_name.clone(),
                etag: disabled.etag,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(enabled.state, secret_version::State::Enabled as i32);
        assert_eq!(resolve(&server, name, "1").await.unwrap(), b"v1-value");

        let destroyed = client
            .destroy_secret_version(v1::DestroySecretVersionRequest {
                name: v1_name.clone(),
                etag: enabled.etag,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(destroyed.state, secret_version::State::Destroyed as i32);
        assert!(destroyed.destroy_time.is_some());
        let err = resolve(&server, name, "1").await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (Code::FailedPrecondition, "VERSION_DESTROYED")
        );
        // Destroyed is final.
        let err = client
            .enable_secret_version(v1::EnableSecretVersionRequest {
                name: v1_name.clone(),
                etag: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "VERSION_DESTROYED");
        // The material is gone from the database, not only hidden.
        let uid = client
            .get_secret(v1::GetSecretRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner()
            .uid;
        let stored = server.store.get_version(&uid, 1).await.unwrap().unwrap();
        assert_eq!(stored.material, None);
        assert!(
            server
                .store
                .get_version(&uid, 2)
                .await
                .unwrap()
                .unwrap()
                .material
                .is_some()
        );
    }
);

e2e_test!(update_disable_and_etags, |server: TestServer| async move {
    let mut client = server.secrets();
    let name = "tenants/acme/secrets/stripe";
    let created = client
        .create_secret(create("stripe", b"sk_live"))
        .await
        .unwrap()
        .into_inner();

    let updated = client
        .update_secret(v1::UpdateSecretRequest {
            secret: Some(v1::Secret {
                name: name.into(),
                display_name: "Stripe live key".into(),
                description: "payments".into(),
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
    assert_eq!(updated.display_name, "Stripe live key");
    assert_eq!(updated.description, "", "description was not in the mask");
    assert_ne!(updated.etag, created.etag);

    // The old etag is stale now.
    let stale = client
        .update_secret(v1::UpdateSecretRequest {
            secret: Some(v1::Secret {
                name: name.into(),
                description: "x".into(),
                etag: created.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale), "ETAG_MISMATCH");

    let disabled = client
        .update_secret(v1::UpdateSecretRequest {
            secret: Some(v1::Secret {
                name: name.into(),
                state: secret::State::Disabled as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["state".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disabled.state, secret::State::Disabled as i32);
    let err = resolve(&server, name, "").await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "SECRET_NOT_ACTIVE")
    );

    client
        .update_secret(v1::UpdateSecretRequest {
            secret: Some(v1::Secret {
                name: name.into(),
                state: secret::State::Active as i32,
                labels: HashMap::from([("team".to_owned(), "payments".to_owned())]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["state".into(), "labels".into()],
            }),
        })
        .await
        .unwrap();
    assert_eq!(resolve(&server, name, "").await.unwrap(), b"sk_live");

    // Display names are unique per tenant.
    client.create_secret(create("other", b"x")).await.unwrap();
    let err = client
        .update_secret(v1::UpdateSecretRequest {
            secret: Some(v1::Secret {
                name: "tenants/acme/secrets/other".into(),
                display_name: "Stripe live key".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::AlreadyExists, "DISPLAY_NAME_TAKEN")
    );
});

e2e_test!(list_paging_and_filters, |server: TestServer| async move {
    let mut client = server.secrets();
    for i in 0..7 {
        let mut req = create(&format!("key-{i}"), b"v");
        if i % 2 == 0 {
            req.secret
                .as_mut()
                .unwrap()
                .labels
                .insert("team".into(), "red".into());
        }
        client.create_secret(req).await.unwrap();
    }
    // Another tenant's secrets never show up.
    let mut foreign = create("key-0", b"v");
    foreign.parent = "tenants/globex".into();
    client.create_secret(foreign).await.unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_secrets(v1::ListSecretsRequest {
                parent: PARENT.into(),
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.secrets.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..7)
        .map(|i| format!("tenants/acme/secrets/key-{i}"))
        .collect();
    assert_eq!(seen, expected);

    let red = client
        .list_secrets(v1::ListSecretsRequest {
            parent: PARENT.into(),
            filter: r#"labels.team = "red" AND state = ACTIVE"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(red.secrets.len(), 4);

    // Deleted secrets are hidden unless asked for.
    client
        .delete_secret(v1::DeleteSecretRequest {
            name: "tenants/acme/secrets/key-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let visible = client
        .list_secrets(v1::ListSecretsRequest {
            parent: PARENT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(visible.secrets.len(), 6);
    let all = client
        .list_secrets(v1::ListSecretsRequest {
            parent: PARENT.into(),
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.secrets.len(), 7);
    let deleted = client
        .list_secrets(v1::ListSecretsRequest {
            parent: PARENT.into(),
            filter: "state = DELETED".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.secrets.len(), 1);
});

e2e_test!(
    delete_undelete_purge_and_reaper,
    |server: TestServer| async move {
        let mut client = server.secrets();
        let name = "tenants/acme/secrets/temp";
        let created = client
            .create_secret(create("temp", b"first"))
            .await
            .unwrap()
            .into_inner();

        let deleted = client
            .delete_secret(v1::DeleteSecretRequest {
                name: name.into(),
                etag: created.etag.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(deleted.state, secret::State::Deleted as i32);
        let window = deleted.purge_time.unwrap().seconds - deleted.delete_time.unwrap().seconds;
        assert_eq!(window, 30 * 86_400, "default recovery window is 30 days");
        // Still readable as metadata, not resolvable, and its key stays reserved.
        client
            .get_secret(v1::GetSecretRequest { name: name.into() })
            .await
            .unwrap();
        let err = resolve(&server, name, "").await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let err = client
            .create_secret(create("temp", b"second"))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (Code::AlreadyExists, "SECRET_PENDING_DELETION")
        );
        assert!(err.message().contains("undelete"));
        let err = client
            .rotate_secret(rotate(name, b"nope", false))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);

        let restored = client
            .undelete_secret(v1::UndeleteSecretRequest {
                name: name.into(),
                etag: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(restored.state, secret::State::Active as i32);
        assert!(restored.purge_time.is_none());
        assert_eq!(resolve(&server, name, "").await.unwrap(), b"first");
        let err = client
            .undelete_secret(v1::UndeleteSecretRequest {
                name: name.into(),
                etag: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "SECRET_NOT_DELETED");

        // A 7-day window on request.
        let deleted = client
            .delete_secret(v1::DeleteSecretRequest {
                name: name.into(),
                recovery_window_days: 7,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            deleted.purge_time.unwrap().seconds - deleted.delete_time.unwrap().seconds,
            7 * 86_400
        );

        // Force purges at once and frees the key for a new secret.
        client
            .delete_secret(v1::DeleteSecretRequest {
                name: name.into(),
                force: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let err = client
            .get_secret(v1::GetSecretRequest { name: name.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let reborn = client
            .create_secret(create("temp", b"second"))
            .await
            .unwrap()
            .into_inner();
        assert_ne!(reborn.uid, created.uid);
        assert_eq!(resolve(&server, name, "").await.unwrap(), b"second");
        let tombstone = server.store.get_version(&created.uid, 1).await.unwrap();
        assert!(tombstone.is_none(), "purged versions are removed");

        // The reaper purges a deletion whose window has passed, and only that one.
        client.create_secret(create("expired", b"x")).await.unwrap();
        client.create_secret(create("recent", b"y")).await.unwrap();
        for key in ["expired", "recent"] {
            client
                .delete_secret(v1::DeleteSecretRequest {
                    name: format!("tenants/acme/secrets/{key}"),
                    recovery_window_days: 7,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let tenant = coffer_core::TenantId::parse("acme", "t").unwrap();
        let key = coffer_core::SecretKey::parse("expired", "k").unwrap();
        let mut record = server
            .store
            .get_secret(&tenant, &key)
            .await
            .unwrap()
            .unwrap();
        let expected = record.revision;
        record.purge_time = Some(coffer_core::record::now_micros() - 1);
        record.revision += 1;
        let tx = server.store.begin().await.unwrap();
        tx.update_secret(&record, expected).await.unwrap();
        tx.commit().await.unwrap();
        let coffer = coffer_server::Coffer::new(
            server.store.clone(),
            coffer_providers::ProviderRegistry::builder()
                .register(std::sync::Arc::new(
                    coffer_providers::local_encrypted::LocalEncryptedProvider::new(
                        server.keyring.clone(),
                    ),
                ))
                .unwrap()
                .build(),
            server.keyring.clone(),
        );
        let report = coffer.reap_once().await.unwrap();
        assert_eq!(report.purged, 1);
        let err = client
            .get_secret(v1::GetSecretRequest {
                name: "tenants/acme/secrets/expired".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        client
            .get_secret(v1::GetSecretRequest {
                name: "tenants/acme/secrets/recent".into(),
            })
            .await
            .unwrap();
    }
);

e2e_test!(request_id_idempotency, |server: TestServer| async move {
    let mut client = server.secrets();
    let request_id = "0b8f0b2e-2c4e-4d38-9d39-1f0c1c7d6a11";
    let mut req = create("idem", b"value-a");
    req.request_id = request_id.into();
    let first = client
        .create_secret(req.clone())
        .await
        .unwrap()
        .into_inner();
    let replay = client
        .create_secret(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.uid, replay.uid);
    assert_eq!(replay.current_version, 1);

    // Same id, different request: refused, nothing written.
    let mut other = create("idem-other", b"value-a");
    other.request_id = request_id.into();
    let err = client.create_secret(other).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::AlreadyExists, "REQUEST_ID_REUSED")
    );
    let err = client
        .get_secret(v1::GetSecretRequest {
            name: "tenants/acme/secrets/idem-other".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut rot = rotate(&first.name, b"value-b", false);
    rot.request_id = "5d0f7d7e-64a5-4c1a-9a53-2a9c7f1d0c22".into();
    let v2 = client
        .rotate_secret(rot.clone())
        .await
        .unwrap()
        .into_inner();
    let again = client.rotate_secret(rot).await.unwrap().into_inner();
    assert_eq!(v2.version, 2);
    assert_eq!(again.version, 2);
    let secret = client
        .get_secret(v1::GetSecretRequest {
            name: first.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        secret.latest_version, 2,
        "the replayed rotation wrote nothing"
    );
});

e2e_test!(
    concurrent_rotations_get_consecutive_versions,
    |server: TestServer| async move {
        let name = "tenants/acme/secrets/hot";
        server
            .secrets()
            .create_secret(create("hot", b"v1"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let mut client = server.secrets();
            tasks.push(tokio::spawn(async move {
                client
                    .rotate_secret(rotate(name, format!("value-{i}").as_bytes(), false))
                    .await
                    .map(|r| r.into_inner().version)
            }));
        }
        let mut versions = Vec::new();
        for task in tasks {
            versions.push(task.await.unwrap().unwrap());
        }
        versions.sort_unstable();
        assert_eq!(versions, (2..=21).collect::<Vec<_>>());
        let secret = server
            .secrets()
            .get_secret(v1::GetSecretRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(secret.latest_version, 21);
        // Every version resolves to a value some task wrote.
        for version in 2..=21 {
            let value = resolve(&server, name, &version.to_string()).await.unwrap();
            assert!(String::from_utf8(value).unwrap().starts_with("value-"));
        }
    }
);

e2e_test!(
    batch_resolve_reports_per_item,
    |server: TestServer| async move {
        let mut client = server.secrets();
        client.create_secret(create("a", b"value-a")).await.unwrap();
        client.create_secret(create("b", b"value-b")).await.unwrap();
        client
            .update_secret(v1::UpdateSecretRequest {
                secret: Some(v1::Secret {
                    name: "tenants/acme/secrets/b".into(),
                    state: secret::State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["state".into()],
                }),
            })
            .await
            .unwrap();
        let response = client
            .batch_resolve_secrets(v1::BatchResolveSecretsRequest {
                parent: PARENT.into(),
                requests: vec![
                    resolve_req("tenants/acme/secrets/a", ""),
                    resolve_req("tenants/acme/secrets/b", ""),
                    resolve_req("tenants/acme/secrets/missing", ""),
                    resolve_req("tenants/globex/secrets/a", ""),
                    resolve_req("not a name", ""),
                    resolve_req("tenants/acme/secrets/a", "1"),
                ],
            })
            .await
            .unwrap()
            .into_inner();
        use v1::batch_resolve_result::Result as Item;
        let codes: Vec<i32> = response
            .results
            .iter()
            .map(|r| match r.result.as_ref().unwrap() {
                Item::Resolved(_) => 0,
                Item::Error(status) => status.code,
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                0,
                Code::FailedPrecondition as i32,
                Code::NotFound as i32,
                Code::InvalidArgument as i32,
                Code::InvalidArgument as i32,
                0
            ]
        );
        match response.results[0].result.as_ref().unwrap() {
            Item::Resolved(resolved) => {
                assert_eq!(resolved.value, b"value-a");
                assert_eq!(resolved.version, 1);
            }
            Item::Error(_) => unreachable!(),
        }

        let too_many = v1::BatchResolveSecretsRequest {
            parent: PARENT.into(),
            requests: (0..101)
                .map(|_| resolve_req("tenants/acme/secrets/a", ""))
                .collect(),
        };
        let err = client.batch_resolve_secrets(too_many).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
);
