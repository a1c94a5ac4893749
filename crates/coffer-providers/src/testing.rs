//! A real moto server for the AWS provider's tests (feature `testing`), used
//! by this crate's tests, coffer-server's and the end-to-end tests.
//!
//! [`MotoServer::start`] runs the `moto_server` named by
//! `COFFER_TEST_MOTO_SERVER`, else the one on `PATH`, else the workspace's
//! `.venv/bin/moto_server` (which `scripts/test` installs), on a free
//! loopback port, and kills it on drop. When the binary is a venv script, it
//! runs under that venv's interpreter with a watchdog that exits when the
//! test process dies, so a killed test leaves no server behind.
//!
//! Moto's request recorder is on from the start (into the server's own
//! temporary directory): [`MotoServer::reset_recording`] and
//! [`MotoServer::recorded_actions`] tell which Secrets Manager actions were
//! called since, e.g. to prove an import never read a value. The recording
//! holds request bodies, so it is deleted with the server.
//!
//! Helpers panic on failure: they are for tests only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use aws_sdk_secretsmanager as sdk;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::types::Tag;
use aws_smithy_http_client::tls;
use futures::stream::{self, StreamExt};
use tempfile::TempDir;

use crate::aws_secrets_manager::{AwsProviderOptions, AwsSecretsManagerFactory};
use crate::config::{AwsSecretsManagerConfig, VaultConfig};
use crate::provider::{ProviderFactory, SecretProvider};

/// Region every test vault and the seeding client use.
pub const TEST_REGION: &str = "us-east-1";
/// The dummy credentials moto accepts.
pub const TEST_ACCESS_KEY_ID: &str = "testing";
pub const TEST_SECRET_ACCESS_KEY: &str = "testing";

const ENV_BINARY: &str = "COFFER_TEST_MOTO_SERVER";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs moto's server module and exits when the parent (the test process)
/// goes away, even if it was killed before it could drop the server.
const WATCHDOG: &str = "\
import os, sys, threading, time
parent = os.getppid()
def watch():
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(sys.argv[1:])
";

/// One moto_server process on a loopback port.
#[derive(Debug)]
pub struct MotoServer {
    binary: PathBuf,
    /// The venv interpreter the binary's shebang names, if any.
    python: Option<PathBuf>,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// What DescribeSecret says about a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDescription {
    pub arn: String,
    pub name: String,
    /// When the secret is scheduled for deletion (seconds since the epoch).
    pub deleted_date: Option<i64>,
    /// VersionId → staging labels.
    pub version_stages: BTreeMap<String, Vec<String>>,
    pub tags: BTreeMap<String, String>,
    pub kms_key_id: Option<String>,
}

impl MotoServer {
    /// Starts a server and waits until it answers. Panics, saying how to
    /// install moto, when there is no moto_server.
    pub fn start() -> MotoServer {
        let binary = find_binary();
        let python = venv_interpreter(&binary);
        let dir = tempfile::Builder::new()
            .prefix("coffer-moto-")
            .tempdir()
            .expect("create a temporary directory for moto_server");
        let port = free_port();
        let mut server = MotoServer {
            binary,
            python,
            port,
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// `http://127.0.0.1:PORT`, the vault's `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (its state is lost). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Killing a process that already exited fails harmlessly.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts a fresh one on the same port (moto keeps
    /// no state across restarts).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freezes the server (SIGSTOP): connections are accepted but never
    /// answered, so calls run into their timeouts. State is kept.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`MotoServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// A vault of this server: region [`TEST_REGION`], `endpoint_url` set,
    /// the default prefix, and `namespace`.
    pub fn vault_config(&self, namespace: &str) -> AwsSecretsManagerConfig {
        AwsSecretsManagerConfig {
            region: TEST_REGION.to_owned(),
            endpoint_url: self.endpoint(),
            namespace: namespace.to_owned(),
            ..AwsSecretsManagerConfig::default()
        }
    }

    /// Provider options for tests: moto's dummy credentials (never the
    /// process environment), 1 s to connect, 3 s per operation, 2 attempts.
    pub fn provider_options() -> AwsProviderOptions {
        AwsProviderOptions {
            connect_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(3),
            max_attempts: 2,
            static_credentials: Some((
                TEST_ACCESS_KEY_ID.to_owned(),
                TEST_SECRET_ACCESS_KEY.to_owned(),
            )),
        }
    }

    /// A provider factory with [`MotoServer::provider_options`].
    pub fn factory() -> AwsSecretsManagerFactory {
        AwsSecretsManagerFactory::new(Self::provider_options())
    }

    /// A client of the vault [`MotoServer::vault_config`] describes.
    pub async fn connect(&self, namespace: &str) -> Arc<dyn SecretProvider> {
        let config = VaultConfig::AwsSecretsManager(self.vault_config(namespace));
        Self::factory()
            .connect(&config)
            .await
            .expect("connect a provider to moto")
    }

    /// A plain SDK client of this server (for seeding and inspecting).
    pub fn sdk_client(&self) -> sdk::Client {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = sdk::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(TEST_REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new(
                TEST_ACCESS_KEY_ID,
                TEST_SECRET_ACCESS_KEY,
                None,
                None,
                "moto",
            ))
            .http_client(http_client)
            .build();
        sdk::Client::from_conf(config)
    }

    /// Creates a secret with a string value; returns its ARN.
    pub async fn create_secret(&self, name: &str, value: &str) -> String {
        self.sdk_client()
            .create_secret()
            .name(name)
            .secret_string(value)
            .tags(Tag::builder().key("team").value("seed").build())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "seed {name} in moto: {}",
                    sdk::error::DisplayErrorContext(e)
                )
            })
            .arn
            .expect("CreateSecret returns an ARN")
    }

    /// Creates `count` secrets `{name_prefix}0000`, `{name_prefix}0001`, …
    /// with values `seed value N` and one tag; returns their ARNs in order.
    pub async fn seed_secrets(&self, name_prefix: &str, count: usize) -> Vec<String> {
        stream::iter(0..count)
            .map(|n| async move {
                self.create_secret(&format!("{name_prefix}{n:04}"), &format!("seed value {n}"))
                    .await
            })
            .buffered(8)
            .collect()
            .await
    }

    /// DescribeSecret; `None` when the secret does not exist (e.g. purged).
    pub async fn describe(&self, secret_id: &str) -> Option<RemoteDescription> {
        let out = match self
            .sdk_client()
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
        {
            Ok(out) => out,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return None;
            }
            Err(err) => panic!(
                "describe {secret_id} in moto: {}",
                sdk::error::DisplayErrorContext(err)
            ),
        };
        Some(RemoteDescription {
            arn: out.arn.unwrap_or_default(),
            name: out.name.unwrap_or_default(),
            deleted_date: out.deleted_date.map(|d| d.secs()),
            version_stages: out
                .version_ids_to_stages
                .unwrap_or_default()
                .into_iter()
                .collect(),
            tags: out
                .tags
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| Some((t.key?, t.value?)))
                .collect(),
            kms_key_id: out.kms_key_id,
        })
    }

    /// Forgets every request recorded so far.
    pub fn reset_recording(&self) {
        let (status, _) = self
            .http("POST", "/moto-api/recorder/reset-recording")
            .expect("reset moto's recorder");
        assert_eq!(status, 200, "moto's recorder reset answered {status}");
    }

    /// The Secrets Manager actions (`GetSecretValue`, …) called since the
    /// last reset, in order.
    pub fn recorded_actions(&self) -> Vec<String> {
        let (status, body) = self
            .http("GET", "/moto-api/recorder/download-recording")
            .expect("download moto's recording");
        assert_eq!(status, 200, "moto's recorder answered {status}");
        body.lines()
            .filter(|line| !line.trim().is_empty())
            .filter_map(|line| {
                let entry: serde_json::Value =
                    serde_json::from_str(line).expect("a recorded request is JSON");
                let headers = entry.get("headers")?.as_object()?;
                let target = headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("x-amz-target"))?
                    .1
                    .as_str()?;
                target.strip_prefix("secretsmanager.").map(str::to_owned)
            })
            .collect()
    }

    /// How many times `action` was called since the last reset.
    pub fn action_count(&self, action: &str) -> usize {
        self.recorded_actions()
            .iter()
            .filter(|a| *a == action)
            .count()
    }

    fn spawn(&mut self) {
        let log_path = self.dir.path().join("moto_server.log");
        let log = File::create(&log_path).expect("create moto_server's log");
        let recording = self.dir.path().join("recording.jsonl");
        File::create(&recording).expect("create moto's recording file");
        let mut command = match &self.python {
            Some(python) => {
                let mut command = Command::new(python);
                command.arg("-c").arg(WATCHDOG);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "True")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share moto_server's log"))
            .stderr(log);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "could not start {}: {e}; run scripts/test, which installs moto_server into .venv/bin",
                self.binary.display()
            )
        });
        self.child = Some(child);
        self.wait_until_ready(&log_path);
    }

    fn wait_until_ready(&mut self, log_path: &Path) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "moto_server exited ({status}) before answering; its log:\n{}",
                    tail(log_path)
                );
            }
            if matches!(
                self.http("GET", "/moto-api/recorder/download-recording"),
                Ok((200, _))
            ) {
                return;
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "moto_server did not answer on port {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.port,
                    tail(log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A bodiless HTTP/1.0 request to moto's own API: the status and body.
    fn http(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            self.port
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
        Ok((status, body.to_owned()))
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("moto_server is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} moto_server failed");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `COFFER_TEST_MOTO_SERVER`, else `moto_server` on `PATH`, else the
/// workspace's `.venv/bin/moto_server`.
fn find_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(ENV_BINARY).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{ENV_BINARY}={} is not a file; run scripts/test, which installs moto_server into .venv/bin",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("moto_server"));
    let in_venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    on_path
        .chain(std::iter::once(in_venv))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found (not in {ENV_BINARY}, on PATH or in .venv/bin); run scripts/test, which installs it into .venv/bin/moto_server, or set {ENV_BINARY}"
            )
        })
}

/// The interpreter of a venv script (its `#!` line), when it exists.
fn venv_interpreter(binary: &Path) -> Option<PathBuf> {
    let mut head = [0u8; 512];
    let read = File::open(binary).ok()?.read(&mut head).ok()?;
    let first_line = std::str::from_utf8(&head[..read]).ok()?.lines().next()?;
    let interpreter = PathBuf::from(first_line.strip_prefix("#!")?.trim());
    interpreter.is_file().then_some(interpreter)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("find a free loopback port")
        .port()
}

/// The last lines of a log, for a panic message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
