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
    dev_server_with_env(&[])
}

/// A dev server configured through the env overlay (`COFFER_<SECTION>__<KEY>`).
fn dev_server_with_env(env: &[(&str, String)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let child = coffer()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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

/// `coffer health` until it reports SERVING (after the first database
/// ping) or 30 s pass; the last output.
fn wait_serving(url: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = health(url, &[]);
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn coffer_health_exits_zero_only_when_serving() {
    let server = dev_server();
    let url = format!("http://{}", server.addr);
    let out = wait_serving(&url);
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

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary wires the config into the server: the plaintext health-only
/// listener answers probes, `/metrics` serves Prometheus text, and JSON logs
/// carry one line per RPC.
#[test]
fn side_listeners_and_json_logs_follow_the_config() {
    let (health_port, metrics_port) = (free_port(), free_port());
    let server = dev_server_with_env(&[
        (
            "COFFER_SERVER__HEALTH_LISTEN",
            format!("127.0.0.1:{health_port}"),
        ),
        (
            "COFFER_METRICS__LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        ),
        ("COFFER_LOG__FORMAT", "json".to_owned()),
    ]);
    let probe = format!("http://127.0.0.1:{health_port}");
    let out = wait_serving(&probe);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The health-only port serves nothing else.
    let out = coffer()
        .args(["secrets", "list", "--tenant", "acme", "--server", &probe])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // One API call, then its metrics.
    let api = format!("http://{}", server.addr);
    let out = coffer()
        .args(["secrets", "list", "--tenant", "acme", "--server", &api])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = http_get(metrics_port, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("coffer_build_info"), "{metrics}");
    assert!(metrics.contains("coffer_rpc_requests_total"), "{metrics}");

    // The call's line is written as it ends; give it a moment.
    let log_path = server._dir.path().join("server.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        let finished = log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .any(|l| l["message"] == "rpc finished" && l["span"]["rpc.method"].is_string());
        if finished {
            break;
        }
        assert!(Instant::now() < deadline, "no JSON rpc line: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
