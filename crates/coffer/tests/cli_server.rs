//! The real `coffer` binary end to end: `coffer serve --dev` on 127.0.0.1:0
//! (SQLite, and PostgreSQL through `--database-url`), driven by the CLI's own
//! `secrets` commands, then `keys rotate|rewrap` and `migrate status`, with the
//! server logging at debug level. A canary value goes through create, rotate
//! and resolve and must never appear in the server log or any CLI error.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Server processes are reaped by `Drop for Server` once started; the lint
// cannot see through the start-up loop.
#![allow(clippy::zombie_processes)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CANARY: &str = "canary-3f9c1e77-never-log-me";

/// A `coffer serve --dev` process and its log file.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

fn storage_args(data_dir: &Path, database_url: Option<&str>) -> Vec<String> {
    let mut args = vec!["--data-dir".to_owned(), data_dir.display().to_string()];
    if let Some(url) = database_url {
        args.push("--database-url".to_owned());
        args.push(url.to_owned());
    }
    args
}

fn start_server(data_dir: &Path, database_url: Option<&str>, log_name: &str) -> Server {
    let log = data_dir.join(log_name);
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .args(storage_args(data_dir, database_url))
        .env("RUST_LOG", "debug")
        .env_remove("COFFER_KEYRING")
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
                log,
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

impl Drop for Server {
    /// A failed test must not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// SIGTERM, then wait: a graceful shutdown exits 0.
    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "server exited with {exit:?}");
        std::fs::read_to_string(&self.log).unwrap()
    }
}

fn run(args: &[&str], stdin: &[u8], envs: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("COFFER_KEYRING")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A `coffer secrets …` call against the server that must succeed.
fn secrets(server: &Server, args: &[&str], stdin: &[u8]) -> String {
    let out = secrets_output(server, args, stdin, &[]);
    assert!(
        out.status.success(),
        "coffer secrets {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn secrets_output(server: &Server, args: &[&str], stdin: &[u8], envs: &[(&str, &str)]) -> Output {
    let mut full = vec!["secrets"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--server", &server.url, "--tenant", "acme"]);
    let out = run(&full, stdin, envs);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(CANARY),
        "a value leaked into CLI stderr for {args:?}"
    );
    out
}

/// Any client command (not only `secrets …`) against the server.
fn run_client(server: &Server, args: &[&str]) -> Output {
    let mut full: Vec<&str> = args.to_vec();
    full.extend_from_slice(&["--server", &server.url, "--tenant", "acme"]);
    let out = run(&full, b"", &[]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(CANARY),
        "a value leaked into CLI stderr for {args:?}"
    );
    out
}

/// A client command that must succeed; returns stdout.
fn client_ok(server: &Server, args: &[&str]) -> String {
    let out = run_client(server, args);
    assert!(
        out.status.success(),
        "coffer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad json {e}: {text}"))
}

fn full_cycle(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    let server = start_server(data_dir, database_url, "server-1.log");

    let created = json(&secrets(
        &server,
        &[
            "create",
            "openai-key",
            "--display-name",
            "OpenAI key",
            "--label",
            "team=agents",
            "--value-stdin",
            "--output",
            "json",
        ],
        format!("{CANARY}-v1").as_bytes(),
    ));
    assert_eq!(created["name"], "tenants/acme/secrets/openai-key");
    assert_eq!(created["currentVersion"], "1");
    let table = secrets(&server, &["get", "openai-key"], b"");
    assert!(table.contains("openai-key"), "{table}");

    let value_file = data_dir.join("value.txt");
    std::fs::write(&value_file, format!("{CANARY}-v2")).unwrap();
    secrets(
        &server,
        &[
            "rotate",
            "openai-key",
            "--value-file",
            value_file.to_str().unwrap(),
        ],
        b"",
    );
    let staged = secrets_output(
        &server,
        &[
            "rotate",
            "openai-key",
            "--stage-only",
            "--value-env",
            "STAGED_VALUE",
        ],
        b"",
        &[("STAGED_VALUE", &format!("{CANARY}-v3"))],
    );
    assert!(
        staged.status.success(),
        "{}",
        String::from_utf8_lossy(&staged.stderr)
    );

    assert_eq!(
        secrets(&server, &["resolve", "openai-key"], b""),
        format!("{CANARY}-v2")
    );
    assert_eq!(
        secrets(&server, &["resolve", "openai-key", "--version", "1"], b""),
        format!("{CANARY}-v1")
    );
    secrets(&server, &["promote", "openai-key", "3"], b"");
    assert_eq!(
        secrets(&server, &["resolve", "openai-key"], b""),
        format!("{CANARY}-v3")
    );

    let versions = json(&secrets(
        &server,
        &["versions", "list", "openai-key", "--output", "json"],
        b"",
    ));
    assert_eq!(versions["versions"].as_array().unwrap().len(), 3);
    secrets(&server, &["versions", "disable", "openai-key", "1"], b"");
    secrets(&server, &["versions", "enable", "openai-key", "1"], b"");
    secrets(
        &server,
        &["update", "openai-key", "--description", "used by agents"],
        b"",
    );
    let listed = json(&secrets(&server, &["list", "--output", "json"], b""));
    assert_eq!(listed["secrets"][0]["description"], "used by agents");

    // Errors: a clear line, the reason, exit code 1, and never the value.
    let missing = secrets_output(&server, &["resolve", "nope"], b"", &[]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("SECRET_NOT_FOUND"), "{stderr}");
    let current = secrets_output(
        &server,
        &["versions", "destroy", "openai-key", "3"],
        b"",
        &[],
    );
    assert_eq!(current.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&current.stderr).contains("VERSION_IS_CURRENT"));
    let duplicate = secrets_output(
        &server,
        &["create", "openai-key", "--value-stdin"],
        format!("{CANARY}-dup").as_bytes(),
        &[],
    );
    assert_eq!(duplicate.status.code(), Some(1));

    secrets(
        &server,
        &["create", "scratch", "--value-stdin"],
        b"scratch-value",
    );
    secrets(&server, &["delete", "scratch"], b"");
    secrets(&server, &["undelete", "scratch"], b"");
    secrets(&server, &["delete", "scratch", "--force"], b"");
    let gone = secrets_output(&server, &["get", "scratch"], b"", &[]);
    assert_eq!(gone.status.code(), Some(1));

    // Bindings from a file, the run's environment in one call, and the audit trail.
    let desired = data_dir.join("desired.toml");
    std::fs::write(
        &desired,
        "[[bindings]]\nsecret = \"openai-key\"\nconfig_path = \"env.OPENAI_API_KEY\"\n",
    )
    .unwrap();
    let synced = client_ok(
        &server,
        &[
            "bindings",
            "sync",
            "--consumer",
            "agent:a-42",
            "--prefix",
            "env.",
            "--file",
            desired.to_str().unwrap(),
        ],
    );
    assert!(synced.contains("created 1"), "{synced}");
    let env = client_ok(
        &server,
        &[
            "resolve-bindings",
            "--consumer",
            "agent:a-42",
            "--prefix",
            "env.",
            "--context",
            "run_id=r-1",
            "--format",
            "env",
        ],
    );
    assert_eq!(env, format!("OPENAI_API_KEY={CANARY}-v3\n"));
    let unbound = run_client(
        &server,
        &[
            "resolve-bindings",
            "--consumer",
            "agent:a-7",
            "--prefix",
            "env.",
            "--format",
            "env",
        ],
    );
    assert!(
        unbound.status.success(),
        "no bindings is an empty environment"
    );
    assert!(unbound.stdout.is_empty());
    let verified = client_ok(&server, &["audit", "verify"]);
    assert!(verified.contains("ok"), "{verified}");
    let export = data_dir.join("audit.jsonl");
    client_ok(
        &server,
        &["audit", "export", "--out", export.to_str().unwrap()],
    );
    let exported = std::fs::read_to_string(&export).unwrap();
    assert!(exported.lines().count() > 10, "{exported}");
    assert!(exported.lines().all(|l| json(l)["hash"].is_string()));
    assert!(exported.contains("secret.resolve") && exported.contains("binding.sync"));
    assert!(
        !exported.contains(CANARY),
        "a value leaked into the audit trail"
    );

    let log = server.stop();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "the server did not log at debug level"
    );
    // Lines go out through a writer thread; the last ones, logged just
    // before exit, are written too.
    assert!(
        log.contains("server stopped"),
        "the last lines are missing: {log}"
    );
    assert!(
        !log.contains(CANARY),
        "the canary value appeared in the server log"
    );

    // KEK rotation and rewrap with the server stopped, then everything still resolves.
    let storage = storage_args(data_dir, database_url);
    let storage: Vec<&str> = storage.iter().map(String::as_str).collect();
    let rotated = run(&[&["keys", "rotate"][..], &storage].concat(), b"", &[]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let rewrapped = run(&[&["keys", "rewrap"][..], &storage].concat(), b"", &[]);
    assert!(
        rewrapped.status.success(),
        "{}",
        String::from_utf8_lossy(&rewrapped.stderr)
    );
    let report = String::from_utf8_lossy(&rewrapped.stdout).into_owned();
    assert!(report.contains("rewrapped 3 versions"), "{report}");
    let again = run(&[&["keys", "rewrap"][..], &storage].concat(), b"", &[]);
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .contains("rewrapped 0 versions, 3 already under the active KEK")
    );
    let keys = run(&[&["keys", "list"][..], &storage].concat(), b"", &[]);
    assert_eq!(String::from_utf8_lossy(&keys.stdout).lines().count(), 2);
    let status = run(&[&["migrate", "status"][..], &storage].concat(), b"", &[]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.lines().count() >= 1 && status.lines().all(|l| l.starts_with("applied")),
        "{status}"
    );

    let server = start_server(data_dir, database_url, "server-2.log");
    assert_eq!(
        secrets(&server, &["resolve", "openai-key"], b""),
        format!("{CANARY}-v3")
    );
    assert_eq!(
        secrets(&server, &["resolve", "openai-key", "--version", "1"], b""),
        format!("{CANARY}-v1")
    );
    let log = server.stop();
    assert!(!log.contains(CANARY));
}

#[test]
fn cli_lifecycle_keys_and_canary_on_sqlite() {
    full_cycle(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lifecycle_keys_and_canary_on_postgres() {
    let Some(url) = coffer_store::testing::fresh_postgres_url().await else {
        return;
    };
    tokio::task::spawn_blocking(move || full_cycle(Some(&url)))
        .await
        .unwrap();
}

#[test]
fn dev_mode_refuses_non_loopback_and_serve_needs_dev() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = run(
        &[
            "serve",
            "--dev",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            data,
        ],
        b"",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let out = run(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data],
        b"",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dev"));
}

#[test]
fn a_group_readable_keyring_stops_startup() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // First start creates the keyring 0600.
    let server = start_server(dir.path(), None, "first.log");
    server.stop();
    let keyring = dir.path().join("master.key");
    let mode = std::fs::metadata(&keyring).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = run(
        &[
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
        ],
        b"",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
}
