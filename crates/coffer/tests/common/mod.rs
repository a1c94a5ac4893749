//! What the tests of the real `coffer` binary share: a `coffer` command with
//! no client or server settings inherited from the caller's environment, and
//! a `coffer serve` child process that is killed when the test ends.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to print its "listening on" line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `coffer serve`; killed and reaped on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    /// `host:port` from its "listening on" line.
    pub(crate) addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test, without the env vars that would point it at
/// another server, keyring, config or database.
pub(crate) fn coffer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
    for var in [
        "COFFER_KEYRING",
        "COFFER_CONFIG",
        "COFFER_LISTEN",
        "COFFER_SERVER",
        "COFFER_CA",
        "COFFER_CERT",
        "COFFER_KEY",
        "COFFER_TIMEOUT",
        "COFFER_TENANT",
        "COFFER_DATABASE_URL",
    ] {
        command.env_remove(var);
    }
    command
}

/// Starts `coffer serve` with `args` (and whatever `configure` adds: env
/// vars, more args), its stderr in `log`, and waits for its "listening on"
/// line. Panics with the log if it exits or does not start in time.
pub(crate) fn start_serve(
    log: &Path,
    args: &[&str],
    configure: impl FnOnce(&mut Command),
) -> Server {
    let mut command = coffer();
    command.arg("serve").args(args);
    configure(&mut command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.split("listening on ").nth(1) {
            let addr = rest.split(';').next().unwrap().trim().to_owned();
            return Server { child, addr };
        }
        if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start: {text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `coffer serve --dev` on 127.0.0.1:0 with its data in `dir/data`, on
/// `database_url` when given (else SQLite there).
pub(crate) fn start_dev(
    dir: &Path,
    log_name: &str,
    database_url: Option<&str>,
    configure: impl FnOnce(&mut Command),
) -> Server {
    let data = dir.join("data");
    let data = data.to_str().expect("a UTF-8 temp path");
    let mut args = vec!["--dev", "--listen", "127.0.0.1:0", "--data-dir", data];
    if let Some(url) = database_url {
        args.extend(["--database-url", url]);
    }
    start_serve(&dir.join(log_name), &args, configure)
}
