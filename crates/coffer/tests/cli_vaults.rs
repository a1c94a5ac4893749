//! The real `coffer` binary's `vaults`, `import` and vault-aware `secrets`
//! commands against `coffer serve --dev` on 127.0.0.1:0 (SQLite, and
//! PostgreSQL when one is reachable): providers, the vault lifecycle with one
//! default per provider, secrets written into and moved between vaults, and
//! settings refused before any connection is made.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Server processes are reaped by `Drop for Server` once started.
#![allow(clippy::zombie_processes)]

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CANARY: &str = "canary-5be1d0a2-never-log-me";

/// A `coffer serve --dev` process.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data_dir: &Path, database_url: Option<&str>) -> Server {
    start_server_with_env(data_dir, database_url, &[])
}

/// Starts a dev server with extra environment (e.g. AWS credentials for the
/// default chain).
fn start_server_with_env(
    data_dir: &Path,
    database_url: Option<&str>,
    env: &[(&str, &str)],
) -> Server {
    let log = data_dir.join("server.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
    cmd.args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    let mut child = cmd
        .env_remove("COFFER_KEYRING")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("listening on ").nth(1) {
            let addr = rest.split(';').next().unwrap().trim().to_owned();
            return Server {
                child,
                url: format!("http://{addr}"),
            };
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start: {text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the binary with `stdin`; the COFFER_* environment is cleared so the
/// test decides every option.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env_remove("COFFER_SERVER")
        .env_remove("COFFER_TENANT")
        .env_remove("COFFER_CA")
        .env_remove("COFFER_CERT")
        .env_remove("COFFER_KEY")
        .env_remove("COFFER_KEYRING")
        .env("COFFER_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A client command against `server` in tenant `acme`.
fn client(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    let mut full = args.to_vec();
    full.extend_from_slice(&["--server", &server.url, "--tenant", "acme"]);
    let out = run(&full, stdin);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(CANARY),
        "a value leaked into stderr for {args:?}"
    );
    out
}

/// A client command that must succeed; returns stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    let out = client(server, args, b"");
    assert!(
        out.status.success(),
        "coffer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ok_json(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut full = args.to_vec();
    full.extend_from_slice(&["--output", "json"]);
    let text = ok(server, &full);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad json {e}: {text}"))
}

/// A client command that must fail with exit code 1; returns stderr.
fn fails(server: &Server, args: &[&str]) -> String {
    let out = client(server, args, b"");
    assert_eq!(
        out.status.code(),
        Some(1),
        "coffer {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn vault_lifecycle(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), database_url);

    let providers = ok_json(&server, &["vaults", "providers"]);
    let local = providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "local_encrypted")
        .unwrap_or_else(|| panic!("no local_encrypted provider: {providers}"));
    assert_eq!(local["configured"], true);
    assert_eq!(local["supportsManagedValues"], true);
    let table = ok(&server, &["vaults", "providers"]);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("local_encrypted"), "{table}");

    let a = ok_json(
        &server,
        &[
            "vaults",
            "create",
            "local-a",
            "--provider",
            "local_encrypted",
            "--display-name",
            "Local A",
        ],
    );
    assert_eq!(a["name"], "tenants/acme/vaults/local-a");
    assert_eq!(a["provider"], "local_encrypted");
    assert_eq!(a["displayName"], "Local A");
    assert_eq!(a["state"], "STATE_READY");
    assert!(a["localEncrypted"].is_object(), "{a}");
    let b = ok_json(
        &server,
        &[
            "vaults",
            "create",
            "tenants/acme/vaults/local-b",
            "--provider",
            "local_encrypted",
            "--default",
        ],
    );
    assert_eq!(b["name"], "tenants/acme/vaults/local-b");
    assert_eq!(b["isDefault"], true);
    let again = fails(
        &server,
        &[
            "vaults",
            "create",
            "local-a",
            "--provider",
            "local_encrypted",
        ],
    );
    assert!(again.contains("ALREADY_EXISTS"), "{again}");

    let got = ok(&server, &["vaults", "get", "local-a"]);
    assert!(got.contains("provider        local_encrypted\n"), "{got}");
    assert!(got.contains("default         no\n"), "{got}");
    let listed = ok_json(&server, &["vaults", "list"]);
    assert_eq!(listed["vaults"].as_array().unwrap().len(), 2, "{listed}");
    let paged = ok_json(&server, &["vaults", "list", "--page-size", "1", "--all"]);
    assert_eq!(paged["vaults"].as_array().unwrap().len(), 2, "{paged}");
    let table = ok(&server, &["vaults", "list"]);
    assert!(table.starts_with("ID "), "{table}");

    // One default per provider: making a the default unsets b.
    let a = ok_json(&server, &["vaults", "set-default", "local-a"]);
    assert_eq!(a["isDefault"], true);
    let b = ok_json(&server, &["vaults", "get", "local-b"]);
    assert!(
        b.get("isDefault").is_none() || b["isDefault"] == false,
        "{b}"
    );
    let stale = fails(
        &server,
        &["vaults", "set-default", "local-b", "--etag", "not-the-etag"],
    );
    assert!(stale.contains("ABORTED"), "{stale}");

    let health = ok(&server, &["vaults", "health", "local-a"]);
    assert!(health.contains("status   ok\n"), "{health}");
    let renamed = ok_json(
        &server,
        &["vaults", "update", "local-a", "--display-name", "Local A2"],
    );
    assert_eq!(renamed["displayName"], "Local A2");

    // Secrets written into a named vault, then moved by a rotation.
    let created = client(
        &server,
        &[
            "secrets",
            "create",
            "db-pass",
            "--vault",
            "local-a",
            "--value-stdin",
            "--output",
            "json",
        ],
        format!("{CANARY}-v1").as_bytes(),
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(created["vault"], "tenants/acme/vaults/local-a");
    let rotated = client(
        &server,
        &[
            "secrets",
            "rotate",
            "db-pass",
            "--vault",
            "local-b",
            "--value-stdin",
        ],
        format!("{CANARY}-v2").as_bytes(),
    );
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let moved = ok_json(&server, &["secrets", "get", "db-pass"]);
    assert_eq!(moved["vault"], "tenants/acme/vaults/local-b");
    assert_eq!(
        ok(
            &server,
            &["secrets", "resolve", "db-pass", "--version", "1"]
        ),
        format!("{CANARY}-v1")
    );
    assert_eq!(
        ok(&server, &["secrets", "resolve", "db-pass"]),
        format!("{CANARY}-v2")
    );

    // Disable is soft; a disabled vault never becomes the default; re-enable by state.
    let disabled = ok_json(&server, &["vaults", "disable", "local-b"]);
    assert_eq!(disabled["state"], "STATE_DISABLED");
    let refused = fails(&server, &["vaults", "set-default", "local-b"]);
    assert!(refused.contains("VAULT_DISABLED"), "{refused}");
    assert_eq!(
        ok_json(&server, &["vaults", "list"])["vaults"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "disabled vaults are listed"
    );
    let ready = ok_json(
        &server,
        &["vaults", "update", "local-b", "--state", "ready"],
    );
    assert_eq!(ready["state"], "STATE_READY");

    let missing = fails(&server, &["vaults", "get", "nope"]);
    assert!(missing.contains("NOT_FOUND"), "{missing}");
    assert!(missing.starts_with("error: "), "{missing}");
}

#[test]
fn vault_lifecycle_on_sqlite() {
    vault_lifecycle(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_lifecycle_on_postgres() {
    let Some(url) = coffer_store::testing::fresh_postgres_url().await else {
        return;
    };
    tokio::task::spawn_blocking(move || vault_lifecycle(Some(&url)))
        .await
        .unwrap();
}

/// A listener that nobody is meant to reach: the test fails if the CLI
/// connected to it.
fn silent_server() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn assert_never_contacted(listener: &TcpListener) {
    match listener.accept() {
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(err) => panic!("accept failed: {err}"),
        Ok((_, peer)) => panic!("the cli connected from {peer} although its input was invalid"),
    }
}

#[test]
fn bad_vault_settings_are_refused_before_connecting() {
    let (listener, url) = silent_server();
    let create = |settings: &[&str]| {
        let mut args = vec![
            "vaults",
            "create",
            "aws-prod",
            "--provider",
            "aws_secrets_manager",
            "--server",
            &url,
        ];
        args.extend_from_slice(settings);
        run(&args, b"")
    };

    let out = create(&["--set", &format!("aws_secret_access_key={CANARY}")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: setting aws_secret_access_key looks like a credential"),
        "{err}"
    );
    assert!(err.contains("default credential chain"), "{err}");
    assert!(!err.contains(CANARY), "the value leaked: {err}");

    let out = create(&["--set", "region=eu-west-1", "--set", "regoin=x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown setting regoin"), "{err}");
    assert!(
        err.contains("known settings: region, endpoint_url"),
        "{err}"
    );

    let out = create(&["--set", "recovery_window_days=a-week"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("recovery_window_days must be a whole number")
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aws.json");
    std::fs::write(
        &file,
        format!(r#"{{"region": "eu-west-1", "sessionToken": "{CANARY}"}}"#),
    )
    .unwrap();
    let out = create(&["--config-file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sessionToken looks like a credential"),
        "{err}"
    );
    assert!(!err.contains(CANARY), "{err}");

    let out = run(
        &[
            "vaults",
            "update",
            "aws-prod",
            "--set",
            "api_key=x",
            "--server",
            &url,
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("looks like a credential"));

    assert_never_contacted(&listener);
}

#[test]
fn commit_without_ready_rows_sends_nothing() {
    let (listener, url) = silent_server();
    let preview = r#"{"candidates": [{"externalRef": "prod/db", "suggestedKey": "prod-db",
        "status": "STATUS_DUPLICATE", "conflicts": ["CONFLICT_EXACT_REFERENCE"]}]}"#;
    let out = run(
        &[
            "import",
            "commit",
            "--vault",
            "aws",
            "--from-preview",
            "-",
            "--server",
            &url,
        ],
        preview.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("imported 0, skipped 0, failed 0"),
        "{stdout}"
    );

    let out = run(
        &[
            "import",
            "commit",
            "--vault",
            "aws",
            "--from-preview",
            "-",
            "--server",
            &url,
        ],
        br#"{"secrets": []}"#,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not the json output"));
    assert_never_contacted(&listener);
}

/// AWS through the CLI against a real moto server, with credentials from
/// the server's environment (the default chain, as in production): a
/// managed secret with a canary value, then a preview piped into a commit.
#[test]
fn aws_vault_and_import_from_the_cli() {
    let moto = coffer_providers::testing::MotoServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(moto.seed_secrets("cli/seed-", 5));
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_with_env(
        dir.path(),
        None,
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let endpoint = format!("endpoint_url={}", moto.endpoint());
    ok(
        &server,
        &[
            "vaults",
            "create",
            "aws",
            "--provider",
            "aws_secrets_manager",
            "--set",
            "region=us-east-1",
            "--set",
            &endpoint,
            "--set",
            "namespace=cli",
            "--default",
        ],
    );
    let health = ok(&server, &["vaults", "health", "aws"]);
    assert!(health.contains("ok"), "{health}");

    let out = client(
        &server,
        &[
            "secrets",
            "create",
            "managed-one",
            "--provider",
            "aws_secrets_manager",
            "--value-stdin",
        ],
        CANARY.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = ok(&server, &["secrets", "resolve", "managed-one"]);
    assert_eq!(value, CANARY);

    let preview = ok(
        &server,
        &[
            "import", "preview", "--vault", "aws", "--all", "--output", "json",
        ],
    );
    let file = dir.path().join("preview.json");
    std::fs::write(&file, &preview).unwrap();
    let committed = ok_json(
        &server,
        &[
            "import",
            "commit",
            "--vault",
            "aws",
            "--from-preview",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(committed["imported"], 5, "{committed}");
    let seeded = ok(&server, &["secrets", "resolve", "cli-seed-0003"]);
    assert_eq!(seeded, "seed value 3");

    // One more by hand: a link to a single remote secret.
    let arn = runtime.block_on(moto.create_secret("cli/linked", "linked value"));
    ok(
        &server,
        &["secrets", "link", "linked", "--vault", "aws", "--ref", &arn],
    );
    assert_eq!(
        ok(&server, &["secrets", "resolve", "linked"]),
        "linked value"
    );

    drop(server);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(!log.contains(CANARY), "the server log holds a value");
}
