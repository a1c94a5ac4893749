//! The role table of DESIGN §5 over the wire: for each role a representative
//! call of every RPC class is allowed or denied (PERMISSION_DENIED), and a
//! tenant without a grant answers exactly like a missing resource.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer_proto::v1;
use coffer_tests::{Db, TestServer};
use tonic::Code;

const ADMIN: &str = "spiffe://corp/admin";
const EDITOR: &str = "spiffe://corp/editor";
const VIEWER: &str = "viewer-cn";
const RESOLVER: &str = "spiffe://corp/orchestrator";

const POLICY: &str = r#"
[[grant]]
principal = "spiffe://corp/admin"
tenants = ["acme"]
roles = ["admin"]

[[grant]]
principal = "spiffe://corp/editor"
tenants = ["acme"]
roles = ["editor"]

[[grant]]
principal = "viewer-cn"
tenants = ["acme"]
roles = ["viewer"]

[[grant]]
principal = "spiffe://corp/orchestrator"
tenants = ["*"]
roles = ["resolver"]

[[grant]]
principal = "spiffe://corp/admin"
tenants = ["globex"]
roles = ["viewer"]
"#;

/// The matrix on SQLite and PostgreSQL, with mTLS and the policy above.
macro_rules! e2e_mtls_test {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let server = TestServer::start_mtls(Db::Sqlite, POLICY)
                    .await
                    .expect("sqlite server");
                ($body)(server).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(server) = TestServer::start_mtls(Db::Postgres, POLICY).await else {
                    return;
                };
                ($body)(server).await;
            }
        }
    };
}

const SECRET: &str = "tenants/acme/secrets/db";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    ReadMetadata,
    Write,
    Destroy,
    DirectResolve,
    ConsumerResolve,
    ManageBindings,
    ReadAudit,
    ManageVaults,
    Watch,
    ConsumerWatch,
}

const CLASSES: [Class; 10] = [
    Class::ReadMetadata,
    Class::Write,
    Class::Destroy,
    Class::DirectResolve,
    Class::ConsumerResolve,
    Class::ManageBindings,
    Class::ReadAudit,
    Class::ManageVaults,
    Class::Watch,
    Class::ConsumerWatch,
];

/// DESIGN §5, written out independently of the code under test.
fn allowed(role: &str, class: Class) -> bool {
    use Class::*;
    match role {
        ADMIN => true,
        EDITOR => matches!(
            class,
            ReadMetadata | Write | ManageBindings | ReadAudit | Watch | ConsumerWatch
        ),
        VIEWER => matches!(class, ReadMetadata | ReadAudit | Watch | ConsumerWatch),
        RESOLVER => matches!(class, ConsumerResolve | ConsumerWatch),
        _ => unreachable!(),
    }
}

fn value(v: &[u8]) -> Option<v1::rotate_secret_request::Source> {
    Some(v1::rotate_secret_request::Source::Value(v.to_vec()))
}

/// One representative call of `class`, made as `principal`.
async fn call(server: &TestServer, principal: &str, class: Class) -> Result<(), tonic::Status> {
    let mut secrets = server.secrets_as(principal);
    match class {
        Class::ReadMetadata => secrets
            .get_secret(v1::GetSecretRequest {
                name: SECRET.into(),
            })
            .await
            .map(drop),
        Class::Write => secrets
            .rotate_secret(v1::RotateSecretRequest {
                name: SECRET.into(),
                source: value(b"rotated"),
                ..Default::default()
            })
            .await
            .map(drop),
        Class::Destroy => secrets
            .destroy_secret_version(v1::DestroySecretVersionRequest {
                name: format!("{SECRET}/versions/1"),
                ..Default::default()
            })
            .await
            .map(drop),
        Class::DirectResolve => secrets
            .resolve_secret(v1::ResolveSecretRequest {
                name: SECRET.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Class::ConsumerResolve => secrets
            .resolve_secret(v1::ResolveSecretRequest {
                name: SECRET.into(),
                consumer: Some(v1::Consumer {
                    kind: "agent".into(),
                    id: "support-bot".into(),
                }),
                config_path: "db.password".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Class::ManageBindings => secrets
            .create_binding(v1::CreateBindingRequest {
                parent: "tenants/acme".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Class::ReadAudit => secrets
            .list_audit_events(v1::ListAuditEventsRequest {
                parent: "tenants/acme".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Class::ManageVaults => server
            .vaults_as(principal)
            .create_vault(v1::CreateVaultRequest {
                parent: "tenants/acme".into(),
                vault_id: "aws-prod".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Class::Watch | Class::ConsumerWatch => {
            let consumer = (class == Class::ConsumerWatch).then(|| v1::Consumer {
                kind: "agent".into(),
                id: "support-bot".into(),
            });
            let mut stream = secrets
                .watch_secrets(v1::WatchSecretsRequest {
                    parent: "tenants/acme".into(),
                    consumer,
                    ..Default::default()
                })
                .await?
                .into_inner();
            // The first message (the starting token) proves the stream opened.
            stream.message().await.map(drop)
        }
    }
}

async fn seed(server: &TestServer) {
    let mut admin = server.secrets_as(ADMIN);
    admin
        .create_secret(v1::CreateSecretRequest {
            parent: "tenants/acme".into(),
            secret_id: "db".into(),
            source: Some(v1::create_secret_request::Source::Value(b"v1".to_vec())),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .rotate_secret(v1::RotateSecretRequest {
            name: SECRET.into(),
            source: value(b"v2"),
            ..Default::default()
        })
        .await
        .unwrap();
}

e2e_mtls_test!(role_matrix, |server: TestServer| async move {
    seed(&server).await;
    // Denied roles first, so the admin's destroy does not change what others see.
    let mut roles = [EDITOR, VIEWER, RESOLVER, ADMIN];
    roles.sort_by_key(|r| *r == ADMIN);
    for role in roles {
        for class in CLASSES {
            let result = call(&server, role, class).await;
            if allowed(role, class) {
                // Allowed: the call gets past authorization. It may still fail
                // for its own reasons (an empty binding, an RPC not built yet,
                // a consumer without a binding), never as a denial.
                if let Err(err) = &result {
                    assert!(
                        !matches!(err.code(), Code::PermissionDenied | Code::NotFound),
                        "{role} {class:?} should be allowed: {err:?}"
                    );
                }
            } else {
                let err = result.expect_err(&format!("{role} {class:?} should be denied"));
                assert_eq!(
                    err.code(),
                    Code::PermissionDenied,
                    "{role} {class:?}: {err:?}"
                );
                assert_eq!(coffer_tests::reason(&err), "PERMISSION_DENIED");
            }
        }
    }
    // The representative calls that work today did work for the admin.
    let destroyed = server
        .secrets_as(ADMIN)
        .get_secret_version(v1::GetSecretVersionRequest {
            name: format!("{SECRET}/versions/1"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(destroyed.state, v1::secret_version::State::Destroyed as i32);
});

/// code, message and details of a status, for exact comparison.
fn parts(status: &tonic::Status) -> (Code, String, Vec<u8>) {
    (
        status.code(),
        status.message().to_owned(),
        status.details().to_vec(),
    )
}

e2e_mtls_test!(
    foreign_tenant_is_a_missing_resource,
    |server: TestServer| async move {
        seed(&server).await;
        // The editor holds nothing on tenant "initech"; the admin is a viewer there.
        let foreign_name = "tenants/initech/secrets/db";
        let mut admin = server.secrets_as(ADMIN);
        // Make the foreign secret exist, through a principal that may.
        server.set_policy(&format!(
        "{POLICY}\n[[grant]]\nprincipal = \"spiffe://corp/admin\"\ntenants = [\"initech\"]\nroles = [\"admin\"]\n"
    ));
        admin
            .create_secret(v1::CreateSecretRequest {
                parent: "tenants/initech".into(),
                secret_id: "db".into(),
                source: Some(v1::create_secret_request::Source::Value(b"x".to_vec())),
                ..Default::default()
            })
            .await
            .unwrap();

        let get = |principal: &'static str, name: &'static str| {
            let mut client = server.secrets_as(principal);
            async move {
                client
                    .get_secret(v1::GetSecretRequest { name: name.into() })
                    .await
                    .unwrap_err()
            }
        };
        let foreign_existing = get(EDITOR, foreign_name).await;
        assert_eq!(foreign_existing.code(), Code::NotFound);
        assert_eq!(coffer_tests::reason(&foreign_existing), "SECRET_NOT_FOUND");

        // The same request, by someone who may look, once the secret is gone.
        admin
            .delete_secret(v1::DeleteSecretRequest {
                name: foreign_name.into(),
                force: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let missing = get(ADMIN, foreign_name).await;
        assert_eq!(parts(&foreign_existing), parts(&missing));
        // And the foreign caller's answer did not change: no existence oracle.
        assert_eq!(parts(&get(EDITOR, foreign_name).await), parts(&missing));

        // Lists, creates and resolves under a foreign parent answer TENANT_NOT_FOUND.
        let mut editor = server.secrets_as(EDITOR);
        let err = editor
            .list_secrets(v1::ListSecretsRequest {
                parent: "tenants/initech".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(coffer_tests::reason(&err), "TENANT_NOT_FOUND");
        assert_eq!(err.message(), "tenants/initech not found");
        let err = editor
            .resolve_secret(v1::ResolveSecretRequest {
                name: "tenants/initech/secrets/db".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(parts(&err), parts(&missing));
    }
);

e2e_mtls_test!(
    denials_are_audited_and_bindings_hide_foreign_tenants,
    |server: TestServer| async move {
        let err = server
            .secrets_as(VIEWER)
            .create_secret(v1::CreateSecretRequest {
                parent: "tenants/acme".into(),
                secret_id: "nope".into(),
                source: Some(v1::create_secret_request::Source::Value(b"v".to_vec())),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        // A probe of a tenant without a grant is recorded in that tenant's trail.
        let id = "0190c3f1-8b2a-7cde-9f00-1234567890ab";
        let err = server
            .secrets_as(EDITOR)
            .get_binding(v1::GetBindingRequest {
                name: format!("tenants/initech/bindings/{id}"),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(coffer_tests::reason(&err), "BINDING_NOT_FOUND");
        assert_eq!(
            err.message(),
            format!("tenants/initech/bindings/{id} not found")
        );

        let denial = |tenant: &'static str| {
            let store = server.store.clone();
            async move {
                let tenant = coffer_core::TenantId::parse(tenant, "t").unwrap();
                let filter = coffer_store::AuditFilter {
                    action: Some("authz.deny".into()),
                    ..Default::default()
                };
                store
                    .list_audit_events(&tenant, &filter, None, 10)
                    .await
                    .unwrap()
            }
        };
        coffer_tests::wait_until(std::time::Duration::from_secs(5), || async {
            denial("acme").await.len() == 1
        })
        .await
        .expect("the viewer's denial was audited");
        let acme = denial("acme").await;
        let event = &acme[0].event;
        assert_eq!(event.principal, VIEWER);
        assert_eq!(event.reason, "PERMISSION_DENIED");
        assert_eq!(event.outcome, coffer_core::record::AuditOutcome::Denied);
        assert_eq!(
            event.context.get("permission").map(String::as_str),
            Some("write_secrets")
        );
        coffer_tests::wait_until(std::time::Duration::from_secs(5), || async {
            denial("initech").await.len() == 1
        })
        .await
        .expect("the foreign probe was audited");
        let initech = denial("initech").await;
        assert_eq!(initech[0].event.principal, EDITOR);
        assert_eq!(initech[0].event.reason, "NO_TENANT_ACCESS");
        assert_eq!(
            initech[0].event.resource,
            format!("tenants/initech/bindings/{id}")
        );
    }
);
