//! The real grpcurl binary against an mTLS server: with `-cacert/-cert/-key`
//! it lists services, describes one and makes an authorized call; without
//! `-cert` the handshake fails; a foreign tenant answers NOT_FOUND.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use coffer_tests::{Db, TestServer};

const POLICY: &str = r#"
[[grant]]
principal = "spiffe://corp/ci"
tenants = ["demo"]
roles = ["admin"]
"#;

fn grpcurl_path() -> String {
    std::env::var("COFFER_TEST_GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned())
}

/// Runs grpcurl with the given TLS files and an optional JSON body; returns
/// (success, stdout, stderr).
fn grpcurl(
    server: &TestServer,
    tls: &[&str],
    body: Option<&str>,
    args: &[&str],
) -> (bool, String, String) {
    let mut command = Command::new(grpcurl_path());
    command.args(["-max-time", "20"]).args(tls);
    if let Some(body) = body {
        command.arg("-d").arg(body);
    }
    let output = command
        .arg(server.addr.to_string())
        .args(args)
        .output()
        .expect("grpcurl not found: run with scripts/test or set COFFER_TEST_GRPCURL");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_with_client_certificates() {
    let server = TestServer::start_mtls(Db::Sqlite, POLICY)
        .await
        .expect("sqlite server");
    let setup = server.mtls.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = setup.pki.client("spiffe://corp/ci");
    let ca = write(dir.path(), "ca.pem", &setup.pki.ca_pem);
    let cert = write(dir.path(), "client.pem", &client.cert);
    let key = write(dir.path(), "client.key", &client.key);
    let tls = ["-cacert", &ca, "-cert", &cert, "-key", &key];

    let (ok, stdout, stderr) = grpcurl(&server, &tls, None, &["list"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.lines().any(|l| l == "coffer.v1.SecretsService"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = grpcurl(
        &server,
        &tls,
        None,
        &["describe", "coffer.v1.SecretsService"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("rpc ResolveSecret"), "{stdout}");

    let body = r#"{"parent": "tenants/demo", "secretId": "api-key", "value": "c2stMTIz"}"#;
    let (ok, stdout, stderr) = grpcurl(
        &server,
        &tls,
        Some(body),
        &["coffer.v1.SecretsService/CreateSecret"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("tenants/demo/secrets/api-key"), "{stdout}");

    // Another tenant: NOT_FOUND, as if it did not exist.
    let (ok, _, stderr) = grpcurl(
        &server,
        &tls,
        Some(r#"{"parent": "tenants/other"}"#),
        &["coffer.v1.SecretsService/ListSecrets"],
    );
    assert!(!ok);
    assert!(stderr.contains("NotFound"), "{stderr}");

    // Without a client certificate the handshake fails: nothing is listed.
    let (ok, stdout, stderr) = grpcurl(
        &server,
        &["-cacert", &ca, "-connect-timeout", "3"],
        None,
        &["list"],
    );
    assert!(!ok, "listed without a client certificate: {stdout}");
    assert!(!stdout.contains("coffer.v1"), "{stdout}");
    assert!(!stderr.is_empty());
    server.stop().await;
}
