//! WatchSecrets over the wire, on SQLite and PostgreSQL: every kind of change
//! arrives in order and without its value; resuming with a token after a
//! disconnect or a restart loses and repeats nothing; a change made on one
//! replica reaches a watcher on another; a resolver sees only the secrets
//! bound to its consumer; forged, foreign and expired tokens are refused;
//! shutdown ends open streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use coffer_proto::v1;
use coffer_proto::v1::secret_change_event::Type;
use coffer_server::app::WatchOptions;
use coffer_tests::{Db, TestServer, e2e_test, reason};
use prost::Message;
use tonic::Code;
use tonic::codec::Streaming;

const PARENT: &str = "tenants/acme";
const CANARY: &[u8] = b"canary-7d41c0de-never-in-a-watch-event";

type Watch = Streaming<v1::WatchSecretsResponse>;

fn name(key: &str) -> String {
    format!("{PARENT}/secrets/{key}")
}

fn agent(id: &str) -> Option<v1::Consumer> {
    Some(v1::Consumer {
        kind: "agent".into(),
        id: id.into(),
    })
}

fn watch_request(resume_token: &str) -> v1::WatchSecretsRequest {
    v1::WatchSecretsRequest {
        parent: PARENT.into(),
        resume_token: resume_token.into(),
        ..Default::default()
    }
}

/// Opens a stream and checks its first message: no events, a token.
async fn open(
    client: &mut v1::secrets_service_client::SecretsServiceClient<tonic::transport::Channel>,
    req: v1::WatchSecretsRequest,
) -> Watch {
    let mut stream = client.watch_secrets(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("a first message");
    assert!(first.events.is_empty(), "{first:?}");
    assert!(!first.resume_token.is_empty());
    stream
}

/// The next `n` events (skipping empty messages), within 10 s; each message
/// is checked for the canary.
async fn next_events(stream: &mut Watch, n: usize) -> Vec<v1::SecretChangeEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < n {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived: {events:?}", events.len()))
            .unwrap()
            .expect("the stream ended");
        assert_no_canary(&message);
        events.extend(message.events);
    }
    assert_eq!(events.len(), n, "more events than expected: {events:?}");
    events
}

fn assert_no_canary(message: &v1::WatchSecretsResponse) {
    let bytes = message.encode_to_vec();
    assert!(!bytes.windows(CANARY.len()).any(|w| w == CANARY));
    assert!(!format!("{message:?}").contains(std::str::from_utf8(CANARY).unwrap()));
}

/// (type, secret key or binding consumer id, version) for compact asserts.
fn summary(event: &v1::SecretChangeEvent) -> (Type, String, i64) {
    let subject = match (&event.secret, &event.consumer) {
        (secret, _) if !secret.is_empty() => secret.rsplit('/').next().unwrap().to_owned(),
        (_, Some(consumer)) => consumer.id.clone(),
        _ => String::new(),
    };
    (event.r#type(), subject, event.version)
}

async fn expect_one(stream: &mut Watch, kind: Type, subject: &str, version: i64) {
    let event = next_events(stream, 1).await.remove(0);
    assert_eq!(summary(&event), (kind, subject.to_owned(), version));
}

fn value(bytes: &[u8]) -> Option<v1::create_secret_request::Source> {
    Some(v1::create_secret_request::Source::Value(bytes.to_vec()))
}

fn rotation(key: &str, stage_only: bool) -> v1::RotateSecretRequest {
    v1::RotateSecretRequest {
        name: name(key),
        source: Some(v1::rotate_secret_request::Source::Value(CANARY.to_vec())),
        stage_only,
        ..Default::default()
    }
}

async fn create(server: &TestServer, key: &str) {
    server
        .secrets()
        .create_secret(v1::CreateSecretRequest {
            parent: PARENT.into(),
            secret_id: key.into(),
            source: value(CANARY),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn rotate(server: &TestServer, key: &str) {
    server
        .secrets()
        .rotate_secret(rotation(key, false))
        .await
        .unwrap();
}

fn update_state(key: &str, state: v1::secret::State) -> v1::UpdateSecretRequest {
    v1::UpdateSecretRequest {
        secret: Some(v1::Secret {
            name: name(key),
            state: state as i32,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["state".into()],
        }),
    }
}

fn binding(key: &str, consumer: &str, path: &str) -> v1::CreateBindingRequest {
    v1::CreateBindingRequest {
        parent: PARENT.into(),
        binding: Some(v1::Binding {
            secret: name(key),
            consumer: agent(consumer),
            config_path: path.into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

e2e_test!(
    every_kind_of_change_arrives_in_order,
    |server: TestServer| async move {
        let mut client = server.secrets();
        let mut stream = open(&mut client, watch_request("")).await;
        let version = |v: i64| format!("{}/versions/{v}", name("db"));

        // Each change is awaited before the next, as a live watcher sees them.
        create(&server, "db").await;
        expect_one(&mut stream, Type::Created, "db", 1).await;
        rotate(&server, "db").await;
        expect_one(&mut stream, Type::Rotated, "db", 2).await;
        client.rotate_secret(rotation("db", true)).await.unwrap();
        expect_one(&mut stream, Type::VersionStaged, "db", 3).await;
        // A resolve is audited but is no change.
        client
            .resolve_secret(v1::ResolveSecretRequest {
                name: name("db"),
                ..Default::default()
            })
            .await
            .unwrap();
        let promote = v1::PromoteSecretVersionRequest {
            name: version(3),
            etag: String::new(),
        };
        client.promote_secret_version(promote).await.unwrap();
        expect_one(&mut stream, Type::Rotated, "db", 3).await;
        let v1_name = version(1);
        client
            .disable_secret_version(v1::DisableSecretVersionRequest {
                name: v1_name.clone(),
                etag: String::new(),
            })
            .await
            .unwrap();
        expect_one(&mut stream, Type::VersionDisabled, "db", 1).await;
        client
            .enable_secret_version(v1::EnableSecretVersionRequest {
                name: v1_name.clone(),
                etag: String::new(),
            })
            .await
            .unwrap();
        expect_one(&mut stream, Type::VersionEnabled, "db", 1).await;
        client
            .destroy_secret_version(v1::DestroySecretVersionRequest {
                name: v1_name,
                etag: String::new(),
            })
            .await
            .unwrap();
        expect_one(&mut stream, Type::VersionDestroyed, "db", 1).await;
        client
            .update_secret(v1::UpdateSecretRequest {
                secret: Some(v1::Secret {
                    name: name("db"),
                    display_name: "Database".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            })
            .await
            .unwrap();
        expect_one(&mut stream, Type::SecretUpdated, "db", 0).await;
        client
            .update_secret(update_state("db", v1::secret::State::Disabled))
            .await
            .unwrap();
        expect_one(&mut stream, Type::SecretDisabled, "db", 0).await;
        client
            .update_secret(update_state("db", v1::secret::State::Active))
            .await
            .unwrap();
        expect_one(&mut stream, Type::SecretEnabled, "db", 0).await;

        let created = client
            .create_binding(binding("db", "a1", "env.DB"))
            .await
            .unwrap()
            .into_inner();
        let event = next_events(&mut stream, 1).await.remove(0);
        assert_eq!(summary(&event), (Type::BindingChanged, "a1".into(), 0));
        assert_eq!(event.binding, created.name);
        assert_eq!(event.config_path, "env.DB");
        client
            .sync_bindings(v1::SyncBindingsRequest {
                parent: PARENT.into(),
                consumer: agent("a1"),
                config_path_prefix: "env.".into(),
                bindings: Vec::new(),
            })
            .await
            .unwrap();
        let event = next_events(&mut stream, 1).await.remove(0);
        assert_eq!(summary(&event), (Type::BindingChanged, "a1".into(), 0));
        assert_eq!(
            (event.binding.as_str(), event.config_path.as_str()),
            ("", "env.")
        );

        let delete = |force| v1::DeleteSecretRequest {
            name: name("db"),
            force,
            recovery_window_days: 7,
            ..Default::default()
        };
        client.delete_secret(delete(false)).await.unwrap();
        expect_one(&mut stream, Type::SecretDeleted, "db", 0).await;
        client
            .undelete_secret(v1::UndeleteSecretRequest {
                name: name("db"),
                etag: String::new(),
            })
            .await
            .unwrap();
        expect_one(&mut stream, Type::SecretUndeleted, "db", 0).await;
        let mut purge = delete(true);
        purge.recovery_window_days = 0;
        client.delete_secret(purge).await.unwrap();
        let event = next_events(&mut stream, 1).await.remove(0);
        assert_eq!(summary(&event), (Type::SecretPurged, "db".into(), 0));
        assert_eq!(event.principal, "dev:admin");
        assert!(event.audit_event.starts_with("tenants/acme/auditEvents/"));
        assert!(event.time.is_some());
    }
);

e2e_test!(
    a_secrets_filter_limits_the_stream,
    |server: TestServer| async move {
        let mut client = server.secrets();
        create(&server, "a").await;
        let mut req = watch_request("");
        req.secrets = vec![name("a")];
        let mut stream = open(&mut client, req).await;
        create(&server, "b").await;
        client
            .create_binding(binding("a", "a1", "env.A"))
            .await
            .unwrap();
        rotate(&server, "b").await;
        rotate(&server, "a").await;
        // Only a's rotation: b and the binding change were filtered out before it.
        expect_one(&mut stream, Type::Rotated, "a", 2).await;

        let mut other = watch_request("");
        other.secrets = vec!["tenants/globex/secrets/a".into()];
        let err = client.watch_secrets(other).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
);

e2e_test!(
    resuming_after_a_disconnect_loses_and_repeats_nothing,
    |server: TestServer| async move {
        let mut client = server.secrets();
        let mut stream = open(&mut client, watch_request("")).await;
        create(&server, "a").await;
        rotate(&server, "a").await;
        let seen = next_events(&mut stream, 2).await;
        let token = seen[1].resume_token.clone();
        drop(stream);

        // Missed while disconnected.
        rotate(&server, "a").await;
        create(&server, "b").await;
        let mut stream = open(&mut client, watch_request(&token)).await;
        let missed = next_events(&mut stream, 2).await;
        assert_eq!(summary(&missed[0]), (Type::Rotated, "a".into(), 3));
        assert_eq!(summary(&missed[1]), (Type::Created, "b".into(), 1));
        // The next event is the next change, not a repeat.
        rotate(&server, "b").await;
        expect_one(&mut stream, Type::Rotated, "b", 2).await;

        // A token from an earlier event replays from there, in the same order.
        let mut stream = open(&mut client, watch_request(&seen[0].resume_token)).await;
        let replayed: Vec<_> = next_events(&mut stream, 4)
            .await
            .iter()
            .map(summary)
            .collect();
        assert_eq!(
            replayed,
            [
                (Type::Rotated, "a".into(), 2),
                (Type::Rotated, "a".into(), 3),
                (Type::Created, "b".into(), 1),
                (Type::Rotated, "b".into(), 2),
            ]
        );
    }
);

e2e_test!(
    resuming_after_a_restart_loses_nothing,
    |server: TestServer| async move {
        let mut client = server.secrets();
        let mut stream = open(&mut client, watch_request("")).await;
        create(&server, "a").await;
        let token = next_events(&mut stream, 1).await.remove(0).resume_token;
        drop(stream);
        rotate(&server, "a").await;

        // A new process on the same database, with nothing in memory.
        let restarted = server.start_replica(WatchOptions::default()).await;
        server.stop().await;
        rotate(&restarted, "a").await;
        let mut client = restarted.secrets();
        let mut stream = open(&mut client, watch_request(&token)).await;
        let events: Vec<_> = next_events(&mut stream, 2)
            .await
            .iter()
            .map(summary)
            .collect();
        assert_eq!(
            events,
            [
                (Type::Rotated, "a".into(), 2),
                (Type::Rotated, "a".into(), 3)
            ]
        );
        drop(stream);
        restarted.stop().await;
    }
);

e2e_test!(
    a_change_on_one_replica_reaches_a_watcher_on_another,
    |server: TestServer| async move {
        create(&server, "a").await;
        let replica = server.start_replica(WatchOptions::default()).await;
        let mut watcher = replica.secrets();
        let mut stream = open(&mut watcher, watch_request("")).await;
        for version in 2..=4 {
            let started = Instant::now();
            rotate(&server, "a").await;
            expect_one(&mut stream, Type::Rotated, "a", version).await;
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "the rotation took {:?} to reach the other replica",
                started.elapsed()
            );
        }
        drop(stream);
        replica.stop().await;
    }
);

e2e_test!(
    bad_and_expired_tokens_are_refused,
    |server: TestServer| async move {
        let mut client = server.secrets();
        let mut stream = open(&mut client, watch_request("")).await;
        create(&server, "a").await;
        let token = next_events(&mut stream, 1).await.remove(0).resume_token;
        drop(stream);

        let invalid = |err: tonic::Status| {
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains("resume_token"), "{err:?}");
        };
        invalid(
            client
                .watch_secrets(watch_request("forged"))
                .await
                .unwrap_err(),
        );
        // Another tenant's stream, and another filter, do not take this token.
        let mut foreign = watch_request(&token);
        foreign.parent = "tenants/globex".into();
        invalid(client.watch_secrets(foreign).await.unwrap_err());
        let mut filtered = watch_request(&token);
        filtered.consumer = agent("a1");
        invalid(client.watch_secrets(filtered).await.unwrap_err());
        // A well-formed token past the end of the chain was not issued here.
        let scope = coffer_core::page::query_scope(&["watch", "acme", ""]);
        let ahead = coffer_core::page::encode(&scope, "1000000");
        invalid(
            client
                .watch_secrets(watch_request(&ahead))
                .await
                .unwrap_err(),
        );

        // A replica that replays at most 3 events: the token is 4 behind.
        for _ in 0..4 {
            rotate(&server, "a").await;
        }
        let narrow = server
            .start_replica(WatchOptions {
                max_replay_events: 3,
                ..WatchOptions::default()
            })
            .await;
        let err = narrow
            .secrets()
            .watch_secrets(watch_request(&token))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (Code::OutOfRange, "WATCH_TOKEN_EXPIRED")
        );
        assert!(err.message().contains("without a resume_token"), "{err:?}");
        // Within the window, the same server replays.
        open(&mut server.secrets(), watch_request(&token)).await;

        // A replica that replays only the last millisecond.
        let short = server
            .start_replica(WatchOptions {
                max_replay_age: Duration::from_millis(1),
                ..WatchOptions::default()
            })
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let err = short
            .secrets()
            .watch_secrets(watch_request(&token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange);
        narrow.stop().await;
        short.stop().await;
    }
);

e2e_test!(
    closing_watches_ends_open_streams,
    |server: TestServer| async move {
        let mut client = server.secrets();
        let mut stream = open(&mut client, watch_request("")).await;
        server.coffer.close_watches();
        let err = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("the stream ended")
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (Code::Unavailable, "SHUTTING_DOWN")
        );
        let err = client.watch_secrets(watch_request("")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        tokio::time::timeout(Duration::from_secs(10), server.stop())
            .await
            .expect("the server stopped");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_ends_open_watches() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let mut client = server.secrets();
    let mut stream = open(&mut client, watch_request("")).await;
    // Well within the drain's grace period, which would cut the stream too.
    tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("shutdown waited for an open watch");
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

const ADMIN: &str = "spiffe://corp/admin";
const RESOLVER: &str = "spiffe://corp/orchestrator";
const POLICY: &str = r#"
[[grant]]
principal = "spiffe://corp/admin"
tenants = ["acme"]
roles = ["admin"]

[[grant]]
principal = "spiffe://corp/orchestrator"
tenants = ["acme"]
roles = ["resolver"]
"#;

async fn resolver_sees_only_bound_secrets(db: Db) {
    let Some(server) = TestServer::start_mtls(db, POLICY).await else {
        return;
    };
    let mut admin = server.secrets_as(ADMIN);
    for key in ["a", "b", "c"] {
        admin
            .create_secret(v1::CreateSecretRequest {
                parent: PARENT.into(),
                secret_id: key.into(),
                source: value(CANARY),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let bound_a = admin
        .create_binding(binding("a", "a1", "env.A"))
        .await
        .unwrap()
        .into_inner();
    admin
        .create_binding(binding("b", "a2", "env.B"))
        .await
        .unwrap();

    let mut resolver = server.secrets_as(RESOLVER);
    let err = resolver.watch_secrets(watch_request("")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut req = watch_request("");
    req.consumer = agent("a1");
    let mut stream = open(&mut resolver, req).await;

    let rotate_as_admin = |key: &'static str| {
        let mut admin = server.secrets_as(ADMIN);
        async move { admin.rotate_secret(rotation(key, false)).await.unwrap() }
    };
    rotate_as_admin("b").await;
    rotate_as_admin("c").await;
    rotate_as_admin("a").await;
    admin
        .create_binding(binding("c", "a1", "env.C"))
        .await
        .unwrap();
    rotate_as_admin("c").await;
    admin
        .delete_binding(v1::DeleteBindingRequest {
            name: bound_a.name,
            etag: String::new(),
        })
        .await
        .unwrap();
    rotate_as_admin("a").await;
    rotate_as_admin("b").await;
    // Another consumer's binding change is not this stream's either.
    admin
        .create_binding(binding("c", "a2", "env.C"))
        .await
        .unwrap();
    rotate_as_admin("c").await;

    let events = next_events(&mut stream, 5).await;
    let summaries: Vec<_> = events.iter().map(summary).collect();
    assert_eq!(
        summaries,
        [
            (Type::Rotated, "a".into(), 2),
            (Type::BindingChanged, "a1".into(), 0),
            (Type::Rotated, "c".into(), 3),
            (Type::BindingChanged, "a1".into(), 0),
            (Type::Rotated, "c".into(), 4),
        ]
    );
    assert!(events.iter().all(|e| e.principal.is_empty()), "{events:?}");
    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_sees_only_bound_secrets_sqlite() {
    resolver_sees_only_bound_secrets(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_sees_only_bound_secrets_postgres() {
    resolver_sees_only_bound_secrets(Db::Postgres).await;
}
