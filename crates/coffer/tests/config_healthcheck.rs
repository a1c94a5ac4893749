//! `coffer health`, the command the image's HEALTHCHECK runs (deploy/), on
//! a real server: exit 0 and SERVING while the server serves, exit 1 for an
//! unknown service or when nobody answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::zombie_processes)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary with no `COFFER_*` variables from the test's environment.
fn coffer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COFFER_") {
            command.env_remove(name);
        }
    }
    command
}

/// A dev server (plaintext, SQLite in a temp dir) on a free port.
struct Server {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dev_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let child = coffer()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("listening on ").nth(1) {
            let addr = rest.split(';').next().unwrap().trim().to_owned();
            return Server {
                child,
                addr,
                _dir: dir,
            };
        }
        assert!(Instant::now() < deadline, "server did not start: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn health(server: &str, extra: &[&str]) -> Output {
    coffer()
        .args(["health", "--timeout", "5", "--server", server])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn coffer_health_exits_zero_only_when_serving() {
    let server = dev_server();
    let url = format!("http://{}", server.addr);
    // SERVING once the first database ping succeeded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = health(&url, &[]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
    let out = health(&url, &["--service", "coffer.v1.SecretsService"]);
    assert!(out.status.success());

    let out = health(&url, &["--service", "no.such.Service"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"));

    drop(server);
    let out = health(&url, &[]);
    assert_eq!(out.status.code(), Some(1), "nobody listening");
}
