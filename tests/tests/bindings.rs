//! Bindings and consumer-scoped resolution, on SQLite and PostgreSQL: the
//! resolution matrix (bound, unbound, wrong path, pinned vs latest, disabled,
//! destroyed, deleted), ResolveBindings with required and optional entries,
//! and SyncBindings replacing exactly one prefix, atomically.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use coffer_proto::v1;
use coffer_tests::{TestServer, e2e_test, reason, violated_fields};
use tonic::Code;

const PARENT: &str = "tenants/acme";

fn agent(id: &str) -> Option<v1::Consumer> {
    Some(v1::Consumer {
        kind: "agent".into(),
        id: id.into(),
    })
}

fn secret_name(key: &str) -> String {
    format!("{PARENT}/secrets/{key}")
}

async fn create_secret(server: &TestServer, key: &str, value: &[u8]) {
    server
        .secrets()
        .create_secret(v1::CreateSecretRequest {
            parent: PARENT.into(),
            secret_id: key.into(),
            source: Some(v1::create_secret_request::Source::Value(value.to_vec())),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn rotate(server: &TestServer, key: &str, value: &[u8]) {
    server
        .secrets()
        .rotate_secret(v1::RotateSecretRequest {
            name: secret_name(key),
            source: Some(v1::rotate_secret_request::Source::Value(value.to_vec())),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn binding(key: &str, path: &str, selector: &str, required: Option<bool>) -> v1::Binding {
    v1::Binding {
        secret: secret_name(key),
        config_path: path.into(),
        version_selector: selector.into(),
        required,
        ..Default::default()
    }
}

async fn bind(server: &TestServer, consumer: &str, b: v1::Binding) -> v1::Binding {
    server
        .secrets()
        .create_binding(v1::CreateBindingRequest {
            parent: PARENT.into(),
            binding: Some(v1::Binding {
                consumer: agent(consumer),
                ..b
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn resolve_as(
    server: &TestServer,
    key: &str,
    consumer: &str,
    path: &str,
    version: &str,
) -> Result<Vec<u8>, tonic::Status> {
    server
        .secrets()
        .resolve_secret(v1::ResolveSecretRequest {
            name: secret_name(key),
            version: version.into(),
            consumer: agent(consumer),
            config_path: path.into(),
            context: HashMap::from([("run_id".to_owned(), "run-1".to_owned())]),
        })
        .await
        .map(|r| r.into_inner().value)
}

fn precondition(result: Result<Vec<u8>, tonic::Status>, expected_reason: &str) {
    let status = result.expect_err("should be refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status), expected_reason, "{status:?}");
}

e2e_test!(resolution_matrix, |server: TestServer| async move {
    create_secret(&server, "openai", b"v1").await;
    rotate(&server, "openai", b"v2").await;
    let created = bind(
        &server,
        "a1",
        binding("openai", "env.OPENAI_API_KEY", "", None),
    )
    .await;
    assert_eq!(created.required, Some(true), "required defaults to true");
    assert!(created.name.starts_with("tenants/acme/bindings/"));
    bind(
        &server,
        "a1",
        binding("openai", "env.OPENAI_PINNED", "1", None),
    )
    .await;

    // Bound, latest.
    assert_eq!(
        resolve_as(&server, "openai", "a1", "env.OPENAI_API_KEY", "")
            .await
            .unwrap(),
        b"v2"
    );
    // Unbound consumer and wrong config path.
    precondition(
        resolve_as(&server, "openai", "a2", "env.OPENAI_API_KEY", "").await,
        "NOT_BOUND",
    );
    precondition(
        resolve_as(&server, "openai", "a1", "env.OTHER", "").await,
        "NOT_BOUND",
    );
    // Pinned: the pin by default, the pin when asked, refused for another version.
    assert_eq!(
        resolve_as(&server, "openai", "a1", "env.OPENAI_PINNED", "")
            .await
            .unwrap(),
        b"v1"
    );
    assert_eq!(
        resolve_as(&server, "openai", "a1", "env.OPENAI_PINNED", "1")
            .await
            .unwrap(),
        b"v1"
    );
    precondition(
        resolve_as(&server, "openai", "a1", "env.OPENAI_PINNED", "2").await,
        "NOT_BOUND",
    );
    // Latest bindings may ask for an older version explicitly.
    assert_eq!(
        resolve_as(&server, "openai", "a1", "env.OPENAI_API_KEY", "1")
            .await
            .unwrap(),
        b"v1"
    );
    // A consumer without a config path is a bad request.
    let err = resolve_as(&server, "openai", "a1", "", "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Disabled and destroyed pinned versions.
    let mut client = server.secrets();
    client
        .disable_secret_version(v1::DisableSecretVersionRequest {
            name: format!("{}/versions/1", secret_name("openai")),
            etag: String::new(),
        })
        .await
        .unwrap();
    precondition(
        resolve_as(&server, "openai", "a1", "env.OPENAI_PINNED", "").await,
        "VERSION_DISABLED",
    );
    client
        .destroy_secret_version(v1::DestroySecretVersionRequest {
            name: format!("{}/versions/1", secret_name("openai")),
            etag: String::new(),
        })
        .await
        .unwrap();
    precondition(
        resolve_as(&server, "openai", "a1", "env.OPENAI_PINNED", "").await,
        "VERSION_DESTROYED",
    );

    // Disabled secret, then deleted secret.
    client
        .update_secret(v1::UpdateSecretRequest {
            secret: Some(v1::Secret {
                name: secret_name("openai"),
                state: v1::secret::State::Disabled as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["state".into()],
            }),
        })
        .await
        .unwrap();
    precondition(
        resolve_as(&server, "openai", "a1", "env.OPENAI_API_KEY", "").await,
        "SECRET_NOT_ACTIVE",
    );
    client
        .update_secret(v1::UpdateSecretRequest {
            secret: Some(v1::Secret {
                name: secret_name("openai"),
                state: v1::secret::State::Active as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["state".into()],
            }),
        })
        .await
        .unwrap();
    client
        .delete_secret(v1::DeleteSecretRequest {
            name: secret_name("openai"),
            ..Default::default()
        })
        .await
        .unwrap();
    precondition(
        resolve_as(&server, "openai", "a1", "env.OPENAI_API_KEY", "").await,
        "SECRET_NOT_ACTIVE",
    );

    // Binding to a missing or deleted secret is refused.
    let err = client
        .create_binding(v1::CreateBindingRequest {
            parent: PARENT.into(),
            binding: Some(v1::Binding {
                consumer: agent("a1"),
                ..binding("missing", "env.X", "", None)
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .create_binding(v1::CreateBindingRequest {
            parent: PARENT.into(),
            binding: Some(v1::Binding {
                consumer: agent("a9"),
                ..binding("openai", "env.X", "", None)
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "SECRET_NOT_ACTIVE")
    );
});

e2e_test!(
    resolve_bindings_required_and_optional,
    |server: TestServer| async move {
        create_secret(&server, "openai", b"sk-openai").await;
        create_secret(&server, "github", b"ghp-token").await;
        create_secret(&server, "flaky", b"flaky-value").await;
        bind(
            &server,
            "a1",
            binding("openai", "env.OPENAI_API_KEY", "", None),
        )
        .await;
        bind(
            &server,
            "a1",
            binding("github", "env.GITHUB_TOKEN", "latest", Some(true)),
        )
        .await;
        bind(
            &server,
            "a1",
            binding("flaky", "env.FLAKY", "", Some(false)),
        )
        .await;
        bind(&server, "a1", binding("github", "webhookSecret", "", None)).await;
        bind(
            &server,
            "a2",
            binding("openai", "env.OPENAI_API_KEY", "", None),
        )
        .await;

        let mut client = server.secrets();
        let request = |prefix: &str| v1::ResolveBindingsRequest {
            parent: PARENT.into(),
            consumer: agent("a1"),
            config_path_prefix: prefix.into(),
            context: HashMap::from([("run_id".to_owned(), "run-42".to_owned())]),
        };
        let all = client
            .resolve_bindings(request("env."))
            .await
            .unwrap()
            .into_inner();
        let paths: Vec<&str> = all.entries.iter().map(|e| e.config_path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["env.FLAKY", "env.GITHUB_TOKEN", "env.OPENAI_API_KEY"]
        );
        assert_eq!(all.entries[2].value, b"sk-openai");
        assert_eq!(all.entries[1].value, b"ghp-token");
        assert_eq!(all.entries[2].version, 1);
        assert_eq!(all.entries[2].secret, secret_name("openai"));

        // An optional binding that fails is reported in its entry.
        client
            .update_secret(v1::UpdateSecretRequest {
                secret: Some(v1::Secret {
                    name: secret_name("flaky"),
                    state: v1::secret::State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["state".into()],
                }),
            })
            .await
            .unwrap();
        let partial = client
            .resolve_bindings(request("env."))
            .await
            .unwrap()
            .into_inner();
        let flaky = &partial.entries[0];
        assert!(flaky.value.is_empty());
        assert_eq!(
            flaky.error.as_ref().unwrap().code,
            Code::FailedPrecondition as i32
        );
        assert!(partial.entries[1].error.is_none());

        // A required one fails the whole call and names the config path.
        client
            .update_secret(v1::UpdateSecretRequest {
                secret: Some(v1::Secret {
                    name: secret_name("github"),
                    state: v1::secret::State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["state".into()],
                }),
            })
            .await
            .unwrap();
        let err = client.resolve_bindings(request("env.")).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(reason(&err), "REQUIRED_BINDINGS_UNRESOLVED");
        assert!(err.message().contains("env.GITHUB_TOKEN"), "{err:?}");
        assert!(!err.message().contains("sk-openai"));
        // Outside the prefix nothing failed.
        let other = client
            .resolve_bindings(request("env.OPENAI"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(other.entries.len(), 1);
    }
);

e2e_test!(
    sync_bindings_replaces_one_prefix_atomically,
    |server: TestServer| async move {
        for key in ["a", "b", "c"] {
            create_secret(&server, key, key.as_bytes()).await;
        }
        // Outside the synced set: another prefix of the same consumer, and another consumer.
        let kept_other_prefix = bind(&server, "a1", binding("a", "webhookSecret", "", None)).await;
        let kept_other_consumer = bind(&server, "a2", binding("a", "env.A", "", None)).await;
        bind(&server, "a1", binding("a", "env.A", "", None)).await;
        bind(&server, "a1", binding("b", "env.B", "", None)).await;
        bind(&server, "a1", binding("c", "env.OLD", "", None)).await;

        let mut client = server.secrets();
        let sync = |bindings: Vec<v1::Binding>| v1::SyncBindingsRequest {
            parent: PARENT.into(),
            consumer: agent("a1"),
            config_path_prefix: "env.".into(),
            bindings,
        };
        let list = |consumer: &str| v1::ListBindingsRequest {
            parent: PARENT.into(),
            consumer: agent(consumer),
            ..Default::default()
        };
        let before = client
            .list_bindings(list("a1"))
            .await
            .unwrap()
            .into_inner()
            .bindings;

        // Atomic: one bad entry (an invalid env name) changes nothing.
        let err = client
            .sync_bindings(sync(vec![
                binding("a", "env.A", "", None),
                binding("b", "env.1BAD", "", None),
            ]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), vec!["bindings[1].config_path"]);
        // A missing secret, found inside the transaction, changes nothing either.
        let err = client
            .sync_bindings(sync(vec![
                binding("a", "env.NEW", "", None),
                binding("missing", "env.M", "", None),
            ]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        // Outside the prefix, or twice the same path: refused.
        let err = client
            .sync_bindings(sync(vec![binding("a", "other.A", "", None)]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = client
            .sync_bindings(sync(vec![
                binding("a", "env.A", "", None),
                binding("b", "env.A", "", None),
            ]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            client
                .list_bindings(list("a1"))
                .await
                .unwrap()
                .into_inner()
                .bindings,
            before
        );

        let synced = client
            .sync_bindings(sync(vec![
                binding("a", "env.A", "", None),           // unchanged
                binding("c", "env.B", "", None),           // retargeted: b -> c
                binding("b", "env.NEW", "1", Some(false)), // created
            ]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (synced.created, synced.deleted, synced.unchanged),
            (2, 2, 1)
        );
        let paths: Vec<(&str, &str)> = synced
            .bindings
            .iter()
            .map(|b| (b.config_path.as_str(), b.secret.as_str()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("env.A", "tenants/acme/secrets/a"),
                ("env.B", "tenants/acme/secrets/c"),
                ("env.NEW", "tenants/acme/secrets/b"),
            ]
        );
        let after = client
            .list_bindings(list("a1"))
            .await
            .unwrap()
            .into_inner()
            .bindings;
        assert_eq!(after.len(), 4, "three under env. plus webhookSecret");
        assert!(after.contains(&kept_other_prefix));
        let other = client
            .list_bindings(list("a2"))
            .await
            .unwrap()
            .into_inner()
            .bindings;
        assert_eq!(other, vec![kept_other_consumer]);

        // Syncing the same set again changes nothing.
        let again = client
            .sync_bindings(sync(vec![
                binding("a", "env.A", "", None),
                binding("c", "env.B", "", None),
                binding("b", "env.NEW", "1", Some(false)),
            ]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((again.created, again.deleted, again.unchanged), (0, 0, 3));
        // An empty desired set removes the prefix's bindings only.
        let cleared = client
            .sync_bindings(sync(vec![]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cleared.deleted, 3);
        let left = client
            .list_bindings(list("a1"))
            .await
            .unwrap()
            .into_inner()
            .bindings;
        assert_eq!(left, vec![kept_other_prefix]);
    }
);

e2e_test!(
    binding_crud_and_bad_input,
    |server: TestServer| async move {
        create_secret(&server, "s", b"v").await;
        let mut client = server.secrets();
        let created = bind(&server, "a1", binding("s", "env.S", "", None)).await;
        let got = client
            .get_binding(v1::GetBindingRequest {
                name: created.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, created);
        // Duplicate (consumer, config path).
        let err = client
            .create_binding(v1::CreateBindingRequest {
                parent: PARENT.into(),
                binding: Some(v1::Binding {
                    consumer: agent("a1"),
                    ..binding("s", "env.S", "", None)
                }),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (Code::AlreadyExists, "BINDING_ALREADY_EXISTS")
        );
        // Bad input.
        for (b, field) in [
            (
                v1::Binding {
                    consumer: agent("a1"),
                    ..binding("s", "env.1X", "", None)
                },
                "binding.config_path",
            ),
            (
                v1::Binding {
                    consumer: agent("a1"),
                    ..binding("s", "env.Y", "x", None)
                },
                "binding.version_selector",
            ),
            (
                v1::Binding {
                    consumer: agent("a1"),
                    ..binding("s", "env.Z", "9", None)
                },
                "binding.version_selector",
            ),
            (
                v1::Binding {
                    consumer: Some(v1::Consumer {
                        kind: "Agent".into(),
                        id: "a".into(),
                    }),
                    ..binding("s", "env.W", "", None)
                },
                "binding.consumer.kind",
            ),
        ] {
            let err = client
                .create_binding(v1::CreateBindingRequest {
                    parent: PARENT.into(),
                    binding: Some(b),
                    request_id: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
            assert_eq!(violated_fields(&err), vec![field]);
        }
        // Listing by secret, then deleting with a stale etag and a good one.
        let by_secret = client
            .list_bindings(v1::ListBindingsRequest {
                parent: PARENT.into(),
                secret: secret_name("s"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_secret.bindings, vec![created.clone()]);
        let err = client
            .delete_binding(v1::DeleteBindingRequest {
                name: created.name.clone(),
                etag: "r99".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Aborted);
        client
            .delete_binding(v1::DeleteBindingRequest {
                name: created.name.clone(),
                etag: created.etag.clone(),
            })
            .await
            .unwrap();
        let err = client
            .get_binding(v1::GetBindingRequest {
                name: created.name.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (Code::NotFound, "BINDING_NOT_FOUND")
        );
        let err = client
            .get_binding(v1::GetBindingRequest {
                name: "tenants/acme/bindings/not-a-uuid".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
);
