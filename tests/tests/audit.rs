//! The audit trail, on SQLite and PostgreSQL: one event per mutation and per
//! resolve outcome with the right fields, no value in any event, a hash chain
//! that verifies untouched and reports the first broken seq after an edit,
//! a deletion or a reorder of stored rows, and gapless seqs under concurrent
//! resolves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use coffer_proto::v1;
use coffer_tests::{TestServer, e2e_test};
use prost::Message;

const PARENT: &str = "tenants/acme";
const CANARY: &str = "canary-9d2e-audit-never";

async fn events(server: &TestServer, filter: &str) -> Vec<v1::AuditEvent> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = server
            .secrets()
            .list_audit_events(v1::ListAuditEventsRequest {
                parent: PARENT.into(),
                filter: filter.into(),
                page_size: 7,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.audit_events);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

async fn verify(server: &TestServer) -> v1::VerifyAuditChainResponse {
    server
        .secrets()
        .verify_audit_chain(v1::VerifyAuditChainRequest {
            parent: PARENT.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

e2e_test!(
    every_mutation_and_resolve_leaves_one_event,
    |server: TestServer| async move {
        let mut client = server.secrets();
        let name = format!("{PARENT}/secrets/openai");
        client
            .create_secret(v1::CreateSecretRequest {
                parent: PARENT.into(),
                secret_id: "openai".into(),
                source: Some(v1::create_secret_request::Source::Value(
                    CANARY.as_bytes().to_vec(),
                )),
                request_id: "7a1c5a8e-3f2b-4e55-9d1e-0c9a9b8f7e61".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        client
            .rotate_secret(v1::RotateSecretRequest {
                name: name.clone(),
                source: Some(v1::rotate_secret_request::Source::Value(
                    format!("{CANARY}-2").into_bytes(),
                )),
                ..Default::default()
            })
            .await
            .unwrap();
        let binding = client
            .create_binding(v1::CreateBindingRequest {
                parent: PARENT.into(),
                binding: Some(v1::Binding {
                    secret: name.clone(),
                    consumer: Some(v1::Consumer {
                        kind: "agent".into(),
                        id: "a1".into(),
                    }),
                    config_path: "env.OPENAI_API_KEY".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let consumer = Some(v1::Consumer {
            kind: "agent".into(),
            id: "a1".into(),
        });
        let context = HashMap::from([("run_id".to_owned(), "run-7".to_owned())]);
        // Allowed, denied (wrong path) and failed (missing version) resolves.
        client
            .resolve_secret(v1::ResolveSecretRequest {
                name: name.clone(),
                consumer: consumer.clone(),
                config_path: "env.OPENAI_API_KEY".into(),
                context: context.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        client
            .resolve_secret(v1::ResolveSecretRequest {
                name: name.clone(),
                consumer: consumer.clone(),
                config_path: "env.WRONG".into(),
                context: context.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        client
            .resolve_secret(v1::ResolveSecretRequest {
                name: name.clone(),
                version: "9".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        client
            .disable_secret_version(v1::DisableSecretVersionRequest {
                name: format!("{name}/versions/1"),
                etag: String::new(),
            })
            .await
            .unwrap();
        client
            .delete_binding(v1::DeleteBindingRequest {
                name: binding.name.clone(),
                etag: String::new(),
            })
            .await
            .unwrap();
        client
            .delete_secret(v1::DeleteSecretRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        // A refused mutation (stale etag) changes nothing and leaves no event.
        client
            .undelete_secret(v1::UndeleteSecretRequest {
                name: name.clone(),
                etag: "r1".into(),
            })
            .await
            .unwrap_err();

        let all = events(&server, "").await;
        let summary: Vec<(&str, i32)> =
            all.iter().map(|e| (e.action.as_str(), e.outcome)).collect();
        use v1::audit_event::Outcome;
        assert_eq!(
            summary,
            vec![
                ("secret.create", Outcome::Success as i32),
                ("secret.rotate", Outcome::Success as i32),
                ("binding.create", Outcome::Success as i32),
                ("secret.resolve", Outcome::Success as i32),
                ("secret.resolve", Outcome::Denied as i32),
                ("secret.resolve", Outcome::Failure as i32),
                ("version.disable", Outcome::Success as i32),
                ("binding.delete", Outcome::Success as i32),
                ("secret.delete", Outcome::Success as i32),
            ]
        );
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=9).collect::<Vec<_>>()
        );
        let create = &all[0];
        assert_eq!(create.resource, name);
        assert_eq!(create.version, 1);
        assert_eq!(create.principal, "dev:admin");
        assert_eq!(create.request_id, "7a1c5a8e-3f2b-4e55-9d1e-0c9a9b8f7e61");
        let resolved = &all[3];
        assert_eq!(resolved.version, 2);
        assert_eq!(resolved.consumer, consumer);
        assert_eq!(resolved.config_path, "env.OPENAI_API_KEY");
        assert_eq!(resolved.context, context);
        assert!(resolved.reason.is_empty());
        assert_eq!(all[4].reason, "NOT_BOUND");
        assert_eq!(all[5].reason, "VERSION_NOT_FOUND");
        assert_eq!(all[0].prev_hash, "0".repeat(64));
        assert_eq!(all[1].prev_hash, all[0].hash);

        // No value in any event, in any encoding.
        for event in &all {
            let bytes = event.encode_to_vec();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(CANARY), "a value leaked into {event:?}");
        }
        // Filters.
        let denied = events(&server, "outcome = DENIED").await;
        assert_eq!(denied.len(), 1);
        let resolves = events(
            &server,
            r#"action = "secret.resolve" AND consumer = "agent/a1""#,
        )
        .await;
        assert_eq!(resolves.len(), 2);
        let by_secret = events(&server, &format!("secret = \"{name}\"")).await;
        assert_eq!(by_secret.len(), 7, "binding events name the binding");
        let future = events(&server, "time >= \"2100-01-01T00:00:00Z\"").await;
        assert!(future.is_empty());
        // last_resolve_time moves soon after the successful resolve (in a
        // transaction of its own, after the audit batch).
        coffer_tests::wait_until(std::time::Duration::from_secs(5), || {
            let mut client = client.clone();
            let name = name.clone();
            async move {
                let secret = client
                    .get_secret(v1::GetSecretRequest { name })
                    .await
                    .unwrap()
                    .into_inner();
                secret.last_resolve_time.is_some()
            }
        })
        .await
        .expect("last_resolve_time moves after a successful resolve");

        let report = verify(&server).await;
        assert!(report.ok);
        assert_eq!(report.checked, 9);

        // Events outlive the purge of their secret.
        client
            .delete_secret(v1::DeleteSecretRequest {
                name: name.clone(),
                force: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let after_purge = events(&server, "").await;
        assert_eq!(after_purge.len(), 10);
        assert_eq!(after_purge[9].action, "secret.purge");
        assert_eq!(&after_purge[..9], &all[..]);
        assert!(verify(&server).await.ok);
    }
);

/// Builds a chain of `n` events (creates and resolves).
async fn seed_chain(server: &TestServer, n: usize) {
    let mut client = server.secrets();
    client
        .create_secret(v1::CreateSecretRequest {
            parent: PARENT.into(),
            secret_id: "s".into(),
            source: Some(v1::create_secret_request::Source::Value(b"v".to_vec())),
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 1..n {
        client
            .resolve_secret(v1::ResolveSecretRequest {
                name: format!("{PARENT}/secrets/s"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

async fn sql(server: &TestServer, statement: &str) {
    let changed = coffer_store::testing::execute_raw(&server.store, statement).await;
    assert!(changed > 0, "{statement} changed nothing");
}

e2e_test!(
    tampering_is_found_at_the_first_broken_seq,
    |server: TestServer| async move {
        seed_chain(&server, 6).await;
        let report = verify(&server).await;
        assert!(
            report.ok && report.checked == 6 && report.first_broken_seq == 0,
            "{report:?}"
        );

        // Edit one field of seq 4.
        sql(
            &server,
            "UPDATE audit_events SET principal = 'mallory' WHERE tenant = 'acme' AND seq = 4",
        )
        .await;
        let report = verify(&server).await;
        assert!(!report.ok);
        assert_eq!(report.first_broken_seq, 4);
        sql(
            &server,
            "UPDATE audit_events SET principal = 'dev:admin' WHERE tenant = 'acme' AND seq = 4",
        )
        .await;
        assert!(verify(&server).await.ok);

        // Reorder: swap the seqs of rows 2 and 3.
        sql(
            &server,
            "UPDATE audit_events SET seq = -2 WHERE tenant = 'acme' AND seq = 2",
        )
        .await;
        sql(
            &server,
            "UPDATE audit_events SET seq = 2 WHERE tenant = 'acme' AND seq = 3",
        )
        .await;
        sql(
            &server,
            "UPDATE audit_events SET seq = 3 WHERE tenant = 'acme' AND seq = -2",
        )
        .await;
        assert_eq!(verify(&server).await.first_broken_seq, 2);
        sql(
            &server,
            "UPDATE audit_events SET seq = -2 WHERE tenant = 'acme' AND seq = 2",
        )
        .await;
        sql(
            &server,
            "UPDATE audit_events SET seq = 2 WHERE tenant = 'acme' AND seq = 3",
        )
        .await;
        sql(
            &server,
            "UPDATE audit_events SET seq = 3 WHERE tenant = 'acme' AND seq = -2",
        )
        .await;
        assert!(verify(&server).await.ok);

        // Delete the last row: the chain is consistent but shorter than its head.
        sql(
            &server,
            "DELETE FROM audit_events WHERE tenant = 'acme' AND seq = 6",
        )
        .await;
        let report = verify(&server).await;
        assert!(!report.ok);
        assert_eq!(report.first_broken_seq, 6);

        // Delete a middle row.
        sql(
            &server,
            "DELETE FROM audit_events WHERE tenant = 'acme' AND seq = 3",
        )
        .await;
        assert_eq!(verify(&server).await.first_broken_seq, 3);
    }
);

e2e_test!(
    concurrent_resolves_have_gapless_seqs,
    |server: TestServer| async move {
        seed_chain(&server, 1).await;
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let mut client = server.secrets();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    client
                        .resolve_secret(v1::ResolveSecretRequest {
                            name: format!("{PARENT}/secrets/s"),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let all = events(&server, "").await;
        assert_eq!(all.len(), 1 + 32 * 5);
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=161).collect::<Vec<_>>()
        );
        let report = verify(&server).await;
        assert!(report.ok);
        assert_eq!(report.checked, 161);
    }
);
