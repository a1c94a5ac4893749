//! The decrypted-value cache on the resolve path, on SQLite and PostgreSQL:
//! a second resolve of a version is served without its provider (proved by
//! corrupting the stored ciphertext after the first resolve), and every
//! change the metadata checks guard — rotate, version disable and destroy,
//! secret disable, delete and purge, binding change, vault disable — shows on
//! the very next resolve. Also the byte bound, the cache turned off, and that
//! no value reaches the cache's `Debug`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use coffer_core::{Principal, SecretName};
use coffer_proto::v1::{self, secret};
use coffer_providers::ProviderRegistry;
use coffer_providers::local_encrypted::LocalEncryptedProvider;
use coffer_server::Coffer;
use coffer_server::app::{CofferOptions, ResolveRequest, ValueCacheOptions, ValueCacheStats};
use coffer_tests::{TestServer, e2e_test, reason};
use tonic::Code;

const PARENT: &str = "tenants/acme";

fn secret_name(key: &str) -> String {
    format!("{PARENT}/secrets/{key}")
}

async fn create(server: &TestServer, key: &str, value: &[u8], vault: &str) -> v1::Secret {
    server
        .secrets()
        .create_secret(v1::CreateSecretRequest {
            parent: PARENT.into(),
            secret_id: key.into(),
            secret: Some(v1::Secret {
                vault: vault.into(),
                ..Default::default()
            }),
            source: Some(v1::create_secret_request::Source::Value(value.to_vec())),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
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

async fn resolve(server: &TestServer, key: &str, version: &str) -> Result<Vec<u8>, tonic::Status> {
    server
        .secrets()
        .resolve_secret(v1::ResolveSecretRequest {
            name: secret_name(key),
            version: version.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().value)
}

fn refused(result: Result<Vec<u8>, tonic::Status>, code: Code, expected_reason: &str) {
    let status = result.expect_err("should be refused");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (code, expected_reason),
        "{status:?}"
    );
}

/// Replaces a version's stored ciphertext with material no provider can
/// read: from then on only the cache can answer for it.
async fn corrupt_material(server: &TestServer, uid: &str, version: i64) {
    let tx = server.store.begin().await.unwrap();
    let mut record = tx.get_version(uid, version).await.unwrap().unwrap();
    let expected = record.revision;
    record.material = Some(r#"{"scheme":"corrupted-by-test"}"#.to_owned());
    record.revision += 1;
    tx.update_version(&record, expected).await.unwrap();
    tx.commit().await.unwrap();
}

/// Another set of use cases on the same database and keyring, with its own
/// value-cache settings, called directly rather than over the wire.
fn coffer_with(server: &TestServer, value_cache: ValueCacheOptions) -> Coffer {
    let providers = ProviderRegistry::builder()
        .register(Arc::new(LocalEncryptedProvider::new(
            server.keyring.clone(),
        )))
        .unwrap()
        .build();
    Coffer::configured(
        server.store.clone(),
        providers,
        server.keyring.clone(),
        CofferOptions {
            value_cache,
            ..CofferOptions::default()
        },
    )
}

async fn resolve_direct(coffer: &Coffer, key: &str) -> coffer_core::Result<Vec<u8>> {
    let request = ResolveRequest {
        name: SecretName::parse(&secret_name(key), "name").unwrap(),
        version: String::new(),
        consumer: None,
        config_path: String::new(),
        context: BTreeMap::new(),
    };
    coffer
        .resolve_secret(&Principal::dev_admin(), &request)
        .await
        .map(|resolved| resolved.value.expose().to_vec())
}

fn stats(server: &TestServer) -> ValueCacheStats {
    server.coffer.value_cache_stats()
}

e2e_test!(
    a_second_resolve_skips_the_provider,
    |server: TestServer| async move {
        let created = create(&server, "hot", b"hot-value-1", "").await;
        assert_eq!(resolve(&server, "hot", "").await.unwrap(), b"hot-value-1");
        let first = stats(&server);
        assert_eq!((first.entries, first.hits, first.misses), (1, 0, 1));

        corrupt_material(&server, &created.uid, 1).await;
        // The provider could not decrypt this any more: the cache answers.
        assert_eq!(resolve(&server, "hot", "").await.unwrap(), b"hot-value-1");
        assert_eq!(resolve(&server, "hot", "1").await.unwrap(), b"hot-value-1");
        let batch = server
            .secrets()
            .batch_resolve_secrets(v1::BatchResolveSecretsRequest {
                parent: PARENT.into(),
                requests: vec![v1::ResolveSecretRequest {
                    name: secret_name("hot"),
                    ..Default::default()
                }],
            })
            .await
            .unwrap()
            .into_inner();
        match batch.results[0].result.as_ref().unwrap() {
            v1::batch_resolve_result::Result::Resolved(resolved) => {
                assert_eq!(resolved.value, b"hot-value-1");
            }
            v1::batch_resolve_result::Result::Error(status) => panic!("{status:?}"),
        }
        let after = stats(&server);
        assert_eq!((after.entries, after.hits, after.misses), (1, 3, 1));

        // Every hit is still audited, like a provider resolve.
        let resolves = server
            .secrets()
            .list_audit_events(v1::ListAuditEventsRequest {
                parent: PARENT.into(),
                filter: r#"action = "secret.resolve" AND outcome = SUCCESS"#.into(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resolves.audit_events.len(), 4);

        // With the cache off the same resolve reaches the provider, which
        // now fails: the hits above really skipped it.
        let uncached = coffer_with(&server, ValueCacheOptions::disabled());
        assert!(resolve_direct(&uncached, "hot").await.is_err());
        assert_eq!(uncached.value_cache_stats(), ValueCacheStats::default());

        // A rotation's new version is resolved at once.
        rotate(&server, "hot", b"hot-value-2").await;
        assert_eq!(resolve(&server, "hot", "").await.unwrap(), b"hot-value-2");
        assert_eq!(stats(&server).entries, 2);
    }
);

e2e_test!(
    destroy_and_disable_evict_the_version,
    |server: TestServer| async move {
        let created = create(&server, "db", b"db-old-password", "").await;
        rotate(&server, "db", b"db-new-password").await;
        assert_eq!(
            resolve(&server, "db", "1").await.unwrap(),
            b"db-old-password"
        );
        assert_eq!(
            resolve(&server, "db", "2").await.unwrap(),
            b"db-new-password"
        );
        let both = stats(&server);
        assert_eq!(both.entries, 2);

        let mut client = server.secrets();
        let version_1 = format!("{}/versions/1", secret_name("db"));
        client
            .disable_secret_version(v1::DisableSecretVersionRequest {
                name: version_1.clone(),
                etag: String::new(),
            })
            .await
            .unwrap();
        refused(
            resolve(&server, "db", "1").await,
            Code::FailedPrecondition,
            "VERSION_DISABLED",
        );
        assert_eq!(stats(&server).entries, 1);
        client
            .enable_secret_version(v1::EnableSecretVersionRequest {
                name: version_1.clone(),
                etag: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(
            resolve(&server, "db", "1").await.unwrap(),
            b"db-old-password"
        );
        let refilled = stats(&server);
        assert_eq!(
            (refilled.entries, refilled.bytes),
            (both.entries, both.bytes)
        );

        client
            .destroy_secret_version(v1::DestroySecretVersionRequest {
                name: version_1,
                etag: String::new(),
            })
            .await
            .unwrap();
        refused(
            resolve(&server, "db", "1").await,
            Code::FailedPrecondition,
            "VERSION_DESTROYED",
        );
        let destroyed = stats(&server);
        assert_eq!(destroyed.entries, 1);
        assert!(destroyed.bytes < both.bytes);
        // Gone from the database too.
        let row = server
            .store
            .get_version(&created.uid, 1)
            .await
            .unwrap()
            .unwrap();
        assert!(row.material.is_none());
        assert_eq!(
            resolve(&server, "db", "").await.unwrap(),
            b"db-new-password"
        );
    }
);

e2e_test!(
    secret_disable_delete_and_purge_show_at_once,
    |server: TestServer| async move {
        create(&server, "svc", b"svc-value", "").await;
        create(&server, "other", b"other-value", "").await;
        assert_eq!(resolve(&server, "svc", "").await.unwrap(), b"svc-value");
        assert_eq!(resolve(&server, "other", "").await.unwrap(), b"other-value");
        assert_eq!(stats(&server).entries, 2);
        let mut client = server.secrets();

        let set_state = |state: secret::State| v1::UpdateSecretRequest {
            secret: Some(v1::Secret {
                name: secret_name("svc"),
                state: state as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["state".into()],
            }),
        };
        client
            .update_secret(set_state(secret::State::Disabled))
            .await
            .unwrap();
        refused(
            resolve(&server, "svc", "").await,
            Code::FailedPrecondition,
            "SECRET_NOT_ACTIVE",
        );
        client
            .update_secret(set_state(secret::State::Active))
            .await
            .unwrap();
        assert_eq!(resolve(&server, "svc", "").await.unwrap(), b"svc-value");

        client
            .delete_secret(v1::DeleteSecretRequest {
                name: secret_name("svc"),
                ..Default::default()
            })
            .await
            .unwrap();
        refused(
            resolve(&server, "svc", "").await,
            Code::FailedPrecondition,
            "SECRET_NOT_ACTIVE",
        );
        client
            .delete_secret(v1::DeleteSecretRequest {
                name: secret_name("svc"),
                force: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let err = resolve(&server, "svc", "").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        // The purged secret's values left the cache; the other stayed.
        assert_eq!(stats(&server).entries, 1);
        assert_eq!(resolve(&server, "other", "").await.unwrap(), b"other-value");

        // A new secret reusing the key is not served the old value.
        create(&server, "svc", b"svc-reborn", "").await;
        assert_eq!(resolve(&server, "svc", "").await.unwrap(), b"svc-reborn");
    }
);

e2e_test!(
    binding_changes_show_at_once,
    |server: TestServer| async move {
        create(&server, "api", b"api-v1", "").await;
        rotate(&server, "api", b"api-v2").await;
        let consumer = Some(v1::Consumer {
            kind: "agent".into(),
            id: "a1".into(),
        });
        let bind = |selector: &str| v1::CreateBindingRequest {
            parent: PARENT.into(),
            binding: Some(v1::Binding {
                consumer: consumer.clone(),
                secret: secret_name("api"),
                config_path: "env.API".into(),
                version_selector: selector.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let as_consumer = || v1::ResolveSecretRequest {
            name: secret_name("api"),
            consumer: consumer.clone(),
            config_path: "env.API".into(),
            context: HashMap::new(),
            ..Default::default()
        };
        let mut client = server.secrets();
        let binding = client.create_binding(bind("")).await.unwrap().into_inner();
        let value = |r: tonic::Response<v1::ResolveSecretResponse>| r.into_inner().value;
        assert_eq!(
            value(client.resolve_secret(as_consumer()).await.unwrap()),
            b"api-v2"
        );

        client
            .delete_binding(v1::DeleteBindingRequest {
                name: binding.name,
                etag: binding.etag,
            })
            .await
            .unwrap();
        let err = client.resolve_secret(as_consumer()).await.unwrap_err();
        assert_eq!(reason(&err), "NOT_BOUND");

        // Re-bound with a pin to version 1: the pin, not the cached current
        // version, decides.
        client.create_binding(bind("1")).await.unwrap();
        assert_eq!(
            value(client.resolve_secret(as_consumer()).await.unwrap()),
            b"api-v1"
        );
    }
);

e2e_test!(
    vault_disable_shows_at_once,
    |server: TestServer| async move {
        let vault = format!("{PARENT}/vaults/main");
        server
            .vaults()
            .create_vault(v1::CreateVaultRequest {
                parent: PARENT.into(),
                vault_id: "main".into(),
                vault: Some(v1::Vault {
                    provider: "local_encrypted".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        create(&server, "in-vault", b"vaulted-value", &vault).await;
        assert_eq!(
            resolve(&server, "in-vault", "").await.unwrap(),
            b"vaulted-value"
        );
        assert_eq!(stats(&server).entries, 1);
        server
            .vaults()
            .disable_vault(v1::DisableVaultRequest {
                name: vault,
                etag: String::new(),
            })
            .await
            .unwrap();
        refused(
            resolve(&server, "in-vault", "").await,
            Code::FailedPrecondition,
            "VAULT_DISABLED",
        );
        assert_eq!(stats(&server).hits, 0);
    }
);

e2e_test!(
    the_byte_bound_evicts_least_recently_used,
    |server: TestServer| async move {
        for key in ["k1", "k2", "k3"] {
            create(&server, key, &[b'x'; 1000], "").await;
        }
        // Room for two of these values (and their bookkeeping), not three.
        let coffer = coffer_with(
            &server,
            ValueCacheOptions {
                enabled: true,
                max_bytes: 2600,
            },
        );
        resolve_direct(&coffer, "k1").await.unwrap();
        resolve_direct(&coffer, "k2").await.unwrap();
        resolve_direct(&coffer, "k1").await.unwrap();
        let two = coffer.value_cache_stats();
        assert_eq!((two.entries, two.hits, two.evictions), (2, 1, 0));
        resolve_direct(&coffer, "k3").await.unwrap();
        let bounded = coffer.value_cache_stats();
        assert_eq!((bounded.entries, bounded.evictions), (2, 1));
        assert!(bounded.bytes <= 2600 && bounded.bytes > 2000, "{bounded:?}");
        // k2 was the least recently used: it went, k1 stayed.
        resolve_direct(&coffer, "k1").await.unwrap();
        assert_eq!(coffer.value_cache_stats().hits, 2);
        resolve_direct(&coffer, "k2").await.unwrap();
        assert_eq!(coffer.value_cache_stats().misses, 4);

        // Off: nothing is held, every resolve still works.
        let off = coffer_with(&server, ValueCacheOptions::disabled());
        for _ in 0..2 {
            assert_eq!(resolve_direct(&off, "k1").await.unwrap(), [b'x'; 1000]);
        }
        assert_eq!(off.value_cache_stats(), ValueCacheStats::default());
    }
);

e2e_test!(
    debug_never_shows_a_cached_value,
    |server: TestServer| async move {
        create(&server, "printed", b"never-print-me-42", "").await;
        assert_eq!(
            resolve(&server, "printed", "").await.unwrap(),
            b"never-print-me-42"
        );
        assert_eq!(stats(&server).entries, 1);
        let debug = format!("{:?}", server.coffer);
        assert!(debug.contains("ValueCache"), "{debug}");
        assert!(!debug.contains("never-print-me-42"), "{debug}");
    }
);
