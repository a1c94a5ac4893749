//! The real binary with mutual TLS: `coffer dev certs` makes the PKI,
//! `coffer serve --config` serves it, the CLI calls with `--ca/--cert/--key`,
//! and SIGHUP reloads the policy: a new grant takes effect, a removed one
//! stops working, a broken file is refused and the old policy stays, and
//! calls running across reloads finish. Also: no `[tls]`, no start.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::zombie_processes)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "spiffe://corp/admin";
const BOB: &str = "bob";

struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hangup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGHUP, then wait until the log shows one more reload outcome.
    fn reload(&self, marker: &str) {
        let before = self.log().matches(marker).count();
        self.hangup();
        wait_for(
            || self.log().matches(marker).count() > before,
            || self.log(),
        );
    }
}

fn coffer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
    command
        .env_remove("COFFER_KEYRING")
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_LISTEN");
    command
}

fn wait_for(mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {}", context());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_policy(dir: &Path, grants: &[(&str, &str)]) {
    let text: String = grants
        .iter()
        .map(|(principal, role)| {
            format!("[[grant]]\nprincipal = \"{principal}\"\ntenants = [\"acme\"]\nroles = [\"{role}\"]\n\n")
        })
        .collect();
    std::fs::write(dir.join("policy.toml"), text).unwrap();
}

fn start(dir: &Path) -> Server {
    let log = dir.join("server.log");
    let mut child = coffer()
        .args(["serve", "--config"])
        .arg(dir.join("coffer.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", "info")
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
            return Server { child, addr, log };
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("server did not start: {text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `coffer secrets list` on tenant acme as the client `slug`.
fn list_as(addr: &str, dir: &Path, slug: &str) -> Output {
    let certs = dir.join("certs");
    coffer()
        .args(["secrets", "list", "--tenant", "acme", "--output", "json"])
        .arg("--server")
        .arg(format!("https://{addr}"))
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("client-{slug}.pem")))
        .arg("--key")
        .arg(certs.join(format!("client-{slug}.key")))
        .output()
        .unwrap()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = coffer()
        .args(["dev", "certs", "--out"])
        .arg(dir.path().join("certs"))
        .args(["--principal", ADMIN, "--principal", BOB])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("certs/client-bob.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::write(
        dir.path().join("coffer.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[tls]\ncert_file = \"certs/server.pem\"\nkey_file = \"certs/server.key\"\nclient_ca_file = \"certs/ca.pem\"\n\n[authz]\npolicy_file = \"policy.toml\"\n",
    )
    .unwrap();
    write_policy(dir.path(), &[(ADMIN, "admin")]);
    dir
}

#[test]
fn sighup_reloads_grants_without_a_restart() {
    let dir = setup();
    let server = start(dir.path());
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let admin = list_as(&server.addr, dir.path(), "corp-admin");
    assert!(admin.status.success(), "{}", stderr(&admin));
    let bob = list_as(&server.addr, dir.path(), BOB);
    assert!(!bob.status.success());
    assert!(stderr(&bob).contains("NOT_FOUND"), "{}", stderr(&bob));

    // A new grant takes effect.
    write_policy(dir.path(), &[(ADMIN, "admin"), (BOB, "viewer")]);
    server.reload("reloaded tls certificates and policy");
    let bob = list_as(&server.addr, dir.path(), BOB);
    assert!(bob.status.success(), "{}", stderr(&bob));

    // A broken policy is refused; the last good one stays in force.
    std::fs::write(dir.path().join("policy.toml"), "[[grant]]\nprincipal = 1\n").unwrap();
    server.reload("reload failed");
    assert!(list_as(&server.addr, dir.path(), BOB).status.success());

    // Calls running while the server reloads finish.
    write_policy(dir.path(), &[(ADMIN, "admin"), (BOB, "viewer")]);
    let addr = server.addr.clone();
    let path = dir.path().to_owned();
    let caller = std::thread::spawn(move || {
        (0..8)
            .map(|_| list_as(&addr, &path, BOB))
            .filter(|out| !out.status.success())
            .count()
    });
    let marker = "reloaded tls certificates and policy";
    let reloads_before = server.log().matches(marker).count();
    for _ in 0..4 {
        server.hangup();
        std::thread::sleep(Duration::from_millis(60));
    }
    assert_eq!(caller.join().unwrap(), 0, "calls failed across reloads");
    // Signals may coalesce; wait until no reload is still pending.
    wait_for(
        || server.log().matches(marker).count() > reloads_before,
        || server.log(),
    );
    std::thread::sleep(Duration::from_millis(100));

    // A removed grant stops working.
    write_policy(dir.path(), &[(BOB, "viewer")]);
    server.reload("reloaded tls certificates and policy");
    let admin = list_as(&server.addr, dir.path(), "corp-admin");
    assert!(!admin.status.success());
    assert!(stderr(&admin).contains("NOT_FOUND"), "{}", stderr(&admin));
    assert!(list_as(&server.addr, dir.path(), BOB).status.success());
}

#[test]
fn serve_without_tls_refuses_to_start_unless_dev() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("coffer.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = coffer()
        .args(["serve", "--config"])
        .arg(dir.path().join("coffer.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[tls]"), "{err}");

    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\nport = 1\n",
    )
    .unwrap();
    let out = coffer()
        .args(["serve", "--config"])
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("port"));

    let out = coffer()
        .args(["serve", "--dev", "--listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
