//! The real grpcurl binary against the real server: reflection (list and
//! describe), health, and the secret lifecycle in JSON, on SQLite and
//! PostgreSQL. `scripts/test` installs grpcurl and exports its path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use coffer_tests::{TestServer, e2e_test};
use serde_json::{Value, json};

fn grpcurl_path() -> String {
    if let Ok(path) = std::env::var("COFFER_TEST_GRPCURL") {
        return path;
    }
    let found = Command::new("grpcurl").arg("-version").output();
    assert!(
        found.is_ok(),
        "grpcurl not found: run the suite with scripts/test, which installs it, or set COFFER_TEST_GRPCURL"
    );
    "grpcurl".to_owned()
}

/// Runs grpcurl with a JSON body on stdin; returns (success, stdout, stderr).
fn grpcurl(server: &TestServer, args: &[&str], body: Option<&Value>) -> (bool, String, String) {
    let mut command = Command::new(grpcurl_path());
    command.arg("-plaintext").arg("-max-time").arg("20");
    if body.is_some() {
        command.arg("-d").arg("@");
    }
    command.arg(server.addr.to_string()).args(args);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn grpcurl");
    if let Some(body) = body {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.to_string().as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Calls a method that must succeed; returns its JSON response.
fn call(server: &TestServer, method: &str, body: Value) -> Value {
    let (ok, stdout, stderr) = grpcurl(server, &[method], Some(&body));
    assert!(ok, "{method} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{method}: bad json {e}: {stdout}"))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

e2e_test!(reflection_and_health, |server: TestServer| async move {
    let (ok, stdout, stderr) = grpcurl(&server, &["list"], None);
    assert!(ok, "{stderr}");
    for service in [
        "coffer.v1.SecretsService",
        "coffer.v1.VaultService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            stdout.lines().any(|l| l == service),
            "{service} missing from: {stdout}"
        );
    }
    let (ok, stdout, stderr) = grpcurl(&server, &["describe", "coffer.v1.SecretsService"], None);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("rpc ResolveSecret"), "{stdout}");
    let (ok, stdout, stderr) = grpcurl(&server, &["describe", "coffer.v1.Secret"], None);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("current_version"), "{stdout}");
    let health = call(&server, "grpc.health.v1.Health/Check", json!({}));
    assert_eq!(health["status"], "SERVING");
    let health = call(
        &server,
        "grpc.health.v1.Health/Check",
        json!({"service": "coffer.v1.SecretsService"}),
    );
    assert_eq!(health["status"], "SERVING");
});

e2e_test!(lifecycle_with_json, |server: TestServer| async move {
    let name = "tenants/demo/secrets/openai-api-key";
    let created = call(
        &server,
        "coffer.v1.SecretsService/CreateSecret",
        json!({
            "parent": "tenants/demo",
            "secretId": "openai-api-key",
            "secret": {"displayName": "OpenAI API key", "labels": {"team": "agents"}},
            "value": b64(b"sk-test-123")
        }),
    );
    assert_eq!(created["name"], name);
    assert_eq!(created["state"], "STATE_ACTIVE");
    assert_eq!(created["currentVersion"], "1");

    let listed = call(
        &server,
        "coffer.v1.SecretsService/ListSecrets",
        json!({"parent": "tenants/demo"}),
    );
    assert_eq!(listed["secrets"][0]["name"], name);

    let resolved = call(
        &server,
        "coffer.v1.SecretsService/ResolveSecret",
        json!({"name": name}),
    );
    assert_eq!(resolved["value"], b64(b"sk-test-123"));
    assert_eq!(resolved["name"], format!("{name}/versions/1"));

    let v2 = call(
        &server,
        "coffer.v1.SecretsService/RotateSecret",
        json!({"name": name, "value": b64(b"sk-test-456")}),
    );
    assert_eq!(v2["version"], "2");
    assert_eq!(v2["isCurrent"], true);
    let resolved = call(
        &server,
        "coffer.v1.SecretsService/ResolveSecret",
        json!({"name": name}),
    );
    assert_eq!(resolved["value"], b64(b"sk-test-456"));
    let old = call(
        &server,
        "coffer.v1.SecretsService/ResolveSecret",
        json!({"name": name, "version": "1"}),
    );
    assert_eq!(old["value"], b64(b"sk-test-123"));

    let versions = call(
        &server,
        "coffer.v1.SecretsService/ListSecretVersions",
        json!({"parent": name}),
    );
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);

    let rolled = call(
        &server,
        "coffer.v1.SecretsService/PromoteSecretVersion",
        json!({"name": format!("{name}/versions/1")}),
    );
    assert_eq!(rolled["currentVersion"], "1");
    let disabled = call(
        &server,
        "coffer.v1.SecretsService/DisableSecretVersion",
        json!({"name": format!("{name}/versions/2")}),
    );
    assert_eq!(disabled["state"], "STATE_DISABLED");
    let destroyed = call(
        &server,
        "coffer.v1.SecretsService/DestroySecretVersion",
        json!({"name": format!("{name}/versions/2")}),
    );
    assert_eq!(destroyed["state"], "STATE_DESTROYED");

    let updated = call(
        &server,
        "coffer.v1.SecretsService/UpdateSecret",
        json!({"secret": {"name": name, "description": "used by agents"}, "updateMask": {"paths": ["description"]}}),
    );
    assert_eq!(updated["description"], "used by agents");

    let deleted = call(
        &server,
        "coffer.v1.SecretsService/DeleteSecret",
        json!({"name": name}),
    );
    assert_eq!(deleted["state"], "STATE_DELETED");
    let restored = call(
        &server,
        "coffer.v1.SecretsService/UndeleteSecret",
        json!({"name": name}),
    );
    assert_eq!(restored["state"], "STATE_ACTIVE");

    // Errors come back with their code and details.
    let (ok, _, stderr) = grpcurl(
        &server,
        &["coffer.v1.SecretsService/CreateSecret"],
        Some(&json!({"parent": "tenants/demo", "secretId": "Not Valid", "value": b64(b"x")})),
    );
    assert!(!ok);
    assert!(stderr.contains("InvalidArgument"), "{stderr}");
    assert!(stderr.contains("secret_id"), "{stderr}");
    // Details decode through reflection: ErrorInfo's reason and domain are readable.
    assert!(
        stderr.contains("BAD_REQUEST") && stderr.contains("coffer"),
        "{stderr}"
    );
    let (ok, _, stderr) = grpcurl(
        &server,
        &["coffer.v1.SecretsService/GetSecret"],
        Some(&json!({"name": "tenants/demo/secrets/nope"})),
    );
    assert!(!ok);
    assert!(stderr.contains("NotFound"), "{stderr}");
});

e2e_test!(vaults_with_json, |server: TestServer| async move {
    let moto = coffer_providers::testing::MotoServer::start();
    let providers = call(
        &server,
        "coffer.v1.VaultService/ListProviders",
        json!({"parent": "tenants/acme"}),
    );
    let ids: Vec<&str> = providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["local_encrypted", "aws_secrets_manager"]);

    // The config oneof in JSON: one key per provider.
    let vault = call(
        &server,
        "coffer.v1.VaultService/CreateVault",
        json!({"parent": "tenants/acme", "vaultId": "aws", "vault": {
            "awsSecretsManager": {"region": "us-east-1", "endpointUrl": moto.endpoint(), "namespace": "grpcurl"}
        }}),
    );
    assert_eq!(vault["name"], "tenants/acme/vaults/aws");
    assert_eq!(vault["provider"], "aws_secrets_manager");
    assert_eq!(vault["state"], "STATE_READY");
    call(
        &server,
        "coffer.v1.VaultService/SetDefaultVault",
        json!({"name": "tenants/acme/vaults/aws"}),
    );
    let secret = call(
        &server,
        "coffer.v1.SecretsService/CreateSecret",
        json!({"parent": "tenants/acme", "secretId": "in-aws",
               "secret": {"provider": "aws_secrets_manager"}, "value": b64(b"aws value")}),
    );
    assert_eq!(secret["vault"], "tenants/acme/vaults/aws");
    let resolved = call(
        &server,
        "coffer.v1.SecretsService/ResolveSecret",
        json!({"name": "tenants/acme/secrets/in-aws"}),
    );
    assert_eq!(resolved["value"], b64(b"aws value"));

    // Import preview over the wire: the managed secret is guarded.
    moto.create_secret("team/api-token", "remote").await;
    let preview = call(
        &server,
        "coffer.v1.VaultService/PreviewRemoteImport",
        json!({"vault": "tenants/acme/vaults/aws", "pageSize": 10}),
    );
    let candidates = preview["candidates"].as_array().unwrap();
    let ready = candidates
        .iter()
        .find(|c| c["remoteName"] == "team/api-token")
        .unwrap();
    assert_eq!(ready["status"], "STATUS_READY");
    assert_eq!(ready["suggestedKey"], "team-api-token");
    let guarded = candidates
        .iter()
        .find(|c| c["remoteName"] == "coffer/grpcurl/acme/in-aws")
        .unwrap();
    assert_eq!(guarded["conflicts"], json!(["CONFLICT_PROVIDER_GUARDRAIL"]));

    // Bad settings are a BadRequest naming the field.
    let (ok, _, stderr) = grpcurl(
        &server,
        &["coffer.v1.VaultService/CreateVault"],
        Some(
            &json!({"parent": "tenants/acme", "vaultId": "bad", "vault": {
                "awsSecretsManager": {"region": "not a region"}
            }}),
        ),
    );
    assert!(!ok);
    assert!(stderr.contains("InvalidArgument"), "{stderr}");
    assert!(stderr.contains("region"), "{stderr}");
});
