//! `coffer watch` as a user runs it: against `coffer serve --dev` on
//! 127.0.0.1:0, a rotation made by another `coffer` process shows up as a
//! line while the watch is running (JSON Lines and the table), later than
//! the client's --timeout (the stream has no deadline), without the value;
//! and the printed resume token continues where the line left off.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Child processes are reaped by their `Drop` guards once started.
#![allow(clippy::zombie_processes)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CANARY: &str = "canary-91b3e0f4-never-in-a-watch-line";

/// A child process killed and reaped on drop, so a failed test leaves none.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn coffer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
    for var in [
        "COFFER_SERVER",
        "COFFER_TENANT",
        "COFFER_CA",
        "COFFER_CERT",
        "COFFER_KEY",
        "COFFER_KEYRING",
        "COFFER_TIMEOUT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Starts `coffer serve --dev` and returns it with its URL.
fn start_server(data_dir: &Path) -> (Process, String) {
    let log = data_dir.join("server.log");
    let child = coffer()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let server = Process(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("listening on ").nth(1) {
            let addr = rest.split(';').next().unwrap().trim().to_owned();
            return (server, format!("http://{addr}"));
        }
        assert!(Instant::now() < deadline, "server did not start: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `coffer secrets …` with the value on stdin; must succeed.
fn secrets(url: &str, args: &[&str], value: &str) -> Output {
    let mut child = coffer()
        .arg("secrets")
        .args(args)
        .args(["--server", url, "--tenant", "acme"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "coffer secrets {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `coffer watch` with its stdout lines arriving on a channel.
fn watch(url: &str, args: &[&str]) -> (Process, mpsc::Receiver<String>) {
    let mut child = coffer()
        .arg("watch")
        .args(args)
        .args(["--server", url, "--tenant", "acme", "--timeout", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    (Process(child), lines)
}

fn next_line(lines: &mpsc::Receiver<String>) -> String {
    let line = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("a line from coffer watch");
    assert!(!line.contains(CANARY), "a value in a watch line: {line}");
    line
}

#[test]
fn a_rotation_in_another_process_shows_up_in_coffer_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(dir.path());
    secrets(&url, &["create", "db", "--value-stdin"], CANARY);

    let (_json_watch, json) = watch(&url, &["--output", "json", "--secret", "db"]);
    let (_table_watch, table) = watch(&url, &[]);
    assert!(next_line(&table).starts_with("TIME "), "a header first");
    // Longer than --timeout: the stream is not cut by the call deadline.
    std::thread::sleep(Duration::from_millis(1500));
    secrets(&url, &["rotate", "db", "--value-stdin"], CANARY);

    let line = next_line(&json);
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "TYPE_ROTATED", "{line}");
    assert_eq!(event["secret"], "tenants/acme/secrets/db");
    assert_eq!(event["version"], "2");
    assert_eq!(event["principal"], "dev:admin");
    let token = event["resumeToken"].as_str().unwrap().to_owned();
    let row = next_line(&table);
    assert!(row.contains(" rotated "), "{row}");
    assert!(row.contains(" db "), "{row}");
    // Its own token: tokens are bound to the stream's filter.
    let row_token = row.rsplit(' ').next().unwrap();
    assert!(row_token.len() > 20 && row_token != token, "{row}");

    // Resuming from the printed token starts right after that rotation.
    secrets(&url, &["rotate", "db", "--value-stdin"], CANARY);
    let (_resumed, resumed) = watch(
        &url,
        &[
            "--output",
            "json",
            "--secret",
            "db",
            "--resume-token",
            &token,
        ],
    );
    let event: serde_json::Value = serde_json::from_str(&next_line(&resumed)).unwrap();
    assert_eq!(
        (&event["type"], &event["version"]),
        (&"TYPE_ROTATED".into(), &"3".into())
    );
}

#[test]
fn a_forged_token_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(dir.path());
    let out = coffer()
        .args(["watch", "--resume-token", "forged", "--server", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("code: INVALID_ARGUMENT"), "{err}");
    assert!(err.contains("resume_token"), "{err}");
}
