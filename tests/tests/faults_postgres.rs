//! PostgreSQL stopped under load: a private cluster (initdb + pg_ctl from
//! /usr/lib/postgresql/*/bin, or COFFER_TEST_PG_BINDIR) on a free loopback
//! port, a server on it taking resolves and writes, then `pg_ctl stop -m
//! fast` and `pg_ctl start`. While it is down every call that fails says
//! UNAVAILABLE (never INTERNAL) within the client's deadline, and health is
//! NOT_SERVING; once it is back health is SERVING again without restarting
//! the server, writes succeed, and every write that returned OK is there.
//! Without the PostgreSQL binaries the test fails, unless
//! COFFER_TEST_SKIP_PG_FAULTS=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_proto::v1;
use coffer_server::app::CofferOptions;
use coffer_tests::{TestServer, reason, wait_until};
use tonic_health::pb::health_check_response::ServingStatus;

const PARENT: &str = "tenants/acme";
/// The deadline every load call carries.
const DEADLINE: Duration = Duration::from_secs(4);
/// Room past the deadline for the client to notice.
const SLACK: Duration = Duration::from_millis(500);

/// A throwaway cluster, stopped and removed on drop.
struct Cluster {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn bindir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("COFFER_TEST_PG_BINDIR") {
            return Some(dir.into());
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
            .collect();
        // Newest major version last.
        dirs.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        dirs.pop()
    }

    /// As root, PostgreSQL must run as another OS user.
    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn start_new(bindir: PathBuf) -> Cluster {
        // /tmp, not TMPDIR: the server's OS user must reach the socket directory.
        let dir = tempfile::Builder::new()
            .prefix("coffer-pgfault.")
            .tempdir_in("/tmp")
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { bindir, dir, port };
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self, mode: &str) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn local_secret(key: &str, value: &[u8]) -> v1::CreateSecretRequest {
    v1::CreateSecretRequest {
        parent: PARENT.into(),
        secret_id: key.into(),
        secret: Some(v1::Secret {
            provider: "local_encrypted".into(),
            ..Default::default()
        }),
        source: Some(v1::create_secret_request::Source::Value(value.to_vec())),
        ..Default::default()
    }
}

fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(DEADLINE);
    request
}

/// What the load saw. Its Debug leaves the written values out.
#[derive(Default)]
struct Outcomes {
    ok: u64,
    /// Failures by "CODE/REASON".
    failures: BTreeMap<String, u64>,
    slowest: Duration,
    /// Creates that returned OK: key → value.
    acknowledged: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcomes")
            .field("ok", &self.ok)
            .field("failures", &self.failures)
            .field("slowest", &self.slowest)
            .field("acknowledged", &self.acknowledged.len())
            .finish()
    }
}

fn record(
    outcomes: &Mutex<Outcomes>,
    elapsed: Duration,
    acked: Option<(String, Vec<u8>)>,
    result: Result<(), tonic::Status>,
) {
    let mut outcomes = outcomes.lock().unwrap();
    outcomes.slowest = outcomes.slowest.max(elapsed);
    match result {
        Ok(()) => {
            outcomes.ok += 1;
            if let Some(acked) = acked {
                outcomes.acknowledged.push(acked);
            }
        }
        Err(status) => {
            *outcomes
                .failures
                .entry(format!("{:?}/{}", status.code(), reason(&status)))
                .or_default() += 1;
        }
    }
}

async fn load(server: &TestServer, stop: Arc<AtomicBool>, outcomes: Arc<Mutex<Outcomes>>) {
    let mut secrets = server.secrets();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let started = Instant::now();
        let (acked, result) = if n.is_multiple_of(2) {
            let key = format!("w-{n}");
            let value = format!("written {n}").into_bytes();
            let result = secrets
                .create_secret(with_deadline(local_secret(&key, &value)))
                .await
                .map(|_| ());
            (Some((key, value)), result)
        } else {
            let result = secrets
                .resolve_secret(with_deadline(v1::ResolveSecretRequest {
                    name: format!("{PARENT}/secrets/base-{}", n % 3),
                    ..Default::default()
                }))
                .await
                .map(|_| ());
            (None, result)
        };
        let elapsed = started.elapsed();
        record(&outcomes, elapsed, acked, result);
        // A steady trickle, not a busy loop against a dead database.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_is_unavailable_and_recovers() {
    let Some(bindir) = Cluster::bindir() else {
        assert!(
            std::env::var("COFFER_TEST_SKIP_PG_FAULTS").as_deref() == Ok("1"),
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin: \
             install postgresql, set COFFER_TEST_PG_BINDIR, or set COFFER_TEST_SKIP_PG_FAULTS=1"
        );
        eprintln!("SKIPPED: no PostgreSQL server binaries and COFFER_TEST_SKIP_PG_FAULTS=1");
        return;
    };
    let started = Instant::now();
    let cluster = Cluster::start_new(bindir);
    let server = TestServer::start_on_url(&cluster.url(), CofferOptions::default()).await;
    for i in 0..3 {
        server
            .secrets()
            .create_secret(local_secret(&format!("base-{i}"), b"base"))
            .await
            .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let load_task = load(&server, stop.clone(), outcomes.clone());
    let scenario = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ok_before = outcomes.lock().unwrap().ok;
        assert!(ok_before > 0, "no call succeeded before the stop");

        let stopped_at = Instant::now();
        cluster.stop("fast");
        wait_until(Duration::from_secs(10), || async {
            server.health_status("").await == Some(ServingStatus::NotServing)
        })
        .await
        .expect("health did not turn NOT_SERVING with the database stopped");
        let not_serving_after = stopped_at.elapsed();
        // Let the load run into the dead database until calls fail: each
        // must fail by its deadline.
        let _ = wait_until(DEADLINE + Duration::from_secs(2), || async {
            outcomes.lock().unwrap().failures.values().sum::<u64>() >= 3
        })
        .await;
        let failures_down: u64 = outcomes.lock().unwrap().failures.values().sum();

        let restarted_at = Instant::now();
        cluster.start();
        wait_until(Duration::from_secs(20), || async {
            server.health_status("").await == Some(ServingStatus::Serving)
        })
        .await
        .expect("health did not return to SERVING after the database came back");
        let serving_after = restarted_at.elapsed();
        // Writes come back on the same server.
        let mut n = 0;
        wait_until(Duration::from_secs(10), || {
            n += 1;
            let mut secrets = server.secrets();
            let key = format!("after-{n}");
            async move {
                secrets
                    .create_secret(local_secret(&key, b"after"))
                    .await
                    .is_ok()
            }
        })
        .await
        .expect("writes did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::SeqCst);
        (not_serving_after, failures_down, serving_after)
    };
    let ((), (not_serving_after, failures_down, serving_after)) = tokio::join!(load_task, scenario);

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(
        failures_down > 0,
        "no call failed while the database was down: {outcomes:?}"
    );
    for (kind, count) in &outcomes.failures {
        assert!(
            kind.starts_with("Unavailable/"),
            "{count} calls failed as {kind}: {outcomes:?}"
        );
    }
    assert!(
        outcomes.slowest < DEADLINE + SLACK,
        "a call took {:?}",
        outcomes.slowest
    );
    // Every acknowledged write is there.
    let mut secrets = server.secrets();
    let mut lost = Vec::new();
    for (key, value) in &outcomes.acknowledged {
        match secrets
            .resolve_secret(v1::ResolveSecretRequest {
                name: format!("{PARENT}/secrets/{key}"),
                ..Default::default()
            })
            .await
        {
            Ok(got) if got.get_ref().value == *value => {}
            Ok(_) => lost.push(format!("{key}: another value")),
            Err(status) => lost.push(format!("{key}: {:?}", status.code())),
        }
    }
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let tenant = coffer_core::TenantId::parse("acme", "tenant").unwrap();
    let report = server.coffer.verify_audit_chain(&tenant).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
    eprintln!(
        "postgres stop: calls ok {}, failed {:?}, slowest {:?}, NOT_SERVING after {not_serving_after:?}, \
         SERVING {serving_after:?} after restart, acknowledged writes {} found {} (lost 0), audit checked {}, total {:?}",
        outcomes.ok,
        outcomes.failures,
        outcomes.slowest,
        outcomes.acknowledged.len(),
        outcomes.acknowledged.len(),
        report.checked,
        started.elapsed()
    );
    server.stop().await;
    drop(cluster);
}
