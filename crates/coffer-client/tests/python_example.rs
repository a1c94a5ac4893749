//! The Python example (`examples/python/`) against a real server with
//! mutual TLS: generate.py makes the stubs, then coffer_example.py resolves
//! a bound secret as a resolver and follows WatchSecrets through a rotation.
//! Needs a Python with the example's requirements: scripts/test provides it
//! as COFFER_TEST_PYTHON; without it the test fails, it is never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use coffer_tests::{Db, TestServer};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const POLICY: &str = r#"
[[grant]]
principal = "test:harness"
tenants = ["acme"]
roles = ["admin"]

[[grant]]
principal = "spiffe://corp/python"
tenants = ["acme"]
roles = ["resolver"]
"#;

const FIRST: &[u8] = b"py-canary-first";
const SECOND: &[u8] = b"py-canary-second-longer";

fn python() -> String {
    if let Ok(path) = std::env::var("COFFER_TEST_PYTHON") {
        return path;
    }
    let usable = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        usable,
        "no python with grpcio and grpcio-tools: run the suite with scripts/test, or set \
         COFFER_TEST_PYTHON to one with examples/python/requirements.txt installed"
    );
    "python3".to_owned()
}

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_resolves_over_mtls_and_follows_a_rotation() {
    let python = python();
    let server = TestServer::start_mtls(Db::Sqlite, POLICY).await.unwrap();
    create(&server, "db", FIRST).await;
    server
        .secrets()
        .create_binding(v1::CreateBindingRequest {
            parent: PARENT.into(),
            binding: Some(v1::Binding {
                secret: name("db"),
                consumer: Some(v1::Consumer {
                    kind: "service".into(),
                    id: "py".into(),
                }),
                config_path: "env.DB".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let setup = server.mtls.as_ref().unwrap();
    let identity = setup.pki.client("spiffe://corp/python");
    std::fs::write(dir.path().join("ca.pem"), &setup.pki.ca_pem).unwrap();
    std::fs::write(dir.path().join("client.pem"), &identity.cert).unwrap();
    std::fs::write(dir.path().join("client.key"), &identity.key).unwrap();
    let stubs = dir.path().join("stubs");

    let generated = Command::new(&python)
        .arg(example_dir().join("generate.py"))
        .arg("--out")
        .arg(&stubs)
        .output()
        .await
        .unwrap();
    assert!(
        generated.status.success(),
        "generate.py failed: {}",
        String::from_utf8_lossy(&generated.stderr)
    );

    let path = |name: &str| dir.path().join(name);
    let mut child = Command::new(&python)
        .arg(example_dir().join("coffer_example.py"))
        .args(["--server", &format!("127.0.0.1:{}", server.addr.port())])
        .args(["--server-name", &setup.server_name, "--tenant", TENANT])
        .arg("--ca")
        .arg(path("ca.pem"))
        .arg("--cert")
        .arg(path("client.pem"))
        .arg("--key")
        .arg(path("client.key"))
        .args([
            "--secret",
            "db",
            "--consumer",
            "service:py",
            "--config-path",
            "env.DB",
        ])
        .args(["--events", "1", "--timeout", "30"])
        .arg("--stubs")
        .arg(&stubs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    let mut next_line = async || {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the example printed nothing for 30 s")
            .unwrap()
            .expect("the example ended early");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        output.push(line);
        value
    };

    let watching = next_line().await;
    assert_eq!(watching["watching"]["secret"], name("db"));
    let resolved = next_line().await;
    assert_eq!(resolved["resolved"]["version"], 1);
    assert_eq!(resolved["resolved"]["length"], FIRST.len());

    let version = rotate(&server, "db", SECOND).await;
    let event = next_line().await;
    assert_eq!(event["event"]["type"], "TYPE_ROTATED", "{event}");
    assert_eq!(event["event"]["secret"], name("db"));
    assert_eq!(event["event"]["version"], version);
    let resolved = next_line().await;
    assert_eq!(resolved["resolved"]["version"], version);
    assert_eq!(resolved["resolved"]["length"], SECOND.len());

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "the example failed: {stderr}");
    let everything = format!("{}{stderr}", output.join("\n"));
    assert!(
        !everything.contains("py-canary"),
        "a value was printed: {everything}"
    );
}
