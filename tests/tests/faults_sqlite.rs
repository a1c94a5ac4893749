//! SQLite storage faults while the server runs: the database lives on a
//! small tmpfs the test mounts, which is then filled to the last byte. Writes
//! must fail with UNAVAILABLE (DATABASE_UNAVAILABLE), never INTERNAL and
//! never a panic or a hang; reads of existing secrets keep working; health
//! turns NOT_SERVING once a write failed for lack of space (every audited
//! call, resolves included, fails then); and once space is back the same
//! server reports SERVING and takes writes again without a restart, every
//! write that was acknowledged is there with its value, and the audit chain
//! verifies.
//!
//! A read-only database: the server's directory is reached through a bind
//! mount that is remounted read-only while no server holds the file (Linux
//! refuses to make a mount read-only while a file on it is open for
//! writing, so it cannot happen under a running pool, nor does `chattr +i`
//! reach open descriptors; the test runs as root, so permissions do not bind
//! it). With no other process holding the database, SQLite cannot create
//! the WAL's `-shm` file and even opening fails: a clear UNAVAILABLE at
//! start. With another process holding it open through a writable path (a
//! backup, the migration CLI, an old replica), a server starts read-only:
//! writes and resolves answer UNAVAILABLE saying the database cannot be
//! written, metadata reads work, health is NOT_SERVING; once the mount is
//! writable again the same server takes writes, and nothing acknowledged is
//! lost and `PRAGMA integrity_check` is clean.
//!
//! Mounting needs CAP_SYS_ADMIN: without it the tests say so and pass,
//! unless COFFER_TEST_REQUIRE_MOUNT is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use coffer_proto::v1;
use coffer_server::app::CofferOptions;
use coffer_store::{Store, StoreOptions};
use coffer_tests::{TestServer, reason, wait_until};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const PARENT: &str = "tenants/acme";
/// Longer than SQLite's busy timeout (5 s): a write that waits for the lock
/// still ends well inside it.
const CALL_BOUND: Duration = Duration::from_secs(8);

/// A tmpfs mounted on a temp dir, unmounted (lazily) on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Result<SmallFs, String> {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|err| format!("cannot run mount: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(SmallFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Mounts a small tmpfs, or `None` (after a SKIPPED note) when this process
/// may not mount and COFFER_TEST_REQUIRE_MOUNT is unset.
fn mount_or_skip(size: &str) -> Option<SmallFs> {
    match SmallFs::mount(size) {
        Ok(fs) => Some(fs),
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a small tmpfs ({why}); run as root to test this");
            assert!(
                std::env::var_os("COFFER_TEST_REQUIRE_MOUNT").is_none(),
                "COFFER_TEST_REQUIRE_MOUNT is set but a tmpfs cannot be mounted: {why}"
            );
            None
        }
    }
}

/// A second view of a directory (`mount --bind`) whose read-only flag the
/// test flips; the files stay writable through the original path.
struct BindMount {
    dir: tempfile::TempDir,
}

impl BindMount {
    fn of(source: &Path) -> BindMount {
        let dir = tempfile::tempdir().unwrap();
        run_mount(&[
            "--bind",
            &source.display().to_string(),
            &dir.path().display().to_string(),
        ]);
        BindMount { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn set_read_only(&self, read_only: bool) {
        let flags = if read_only {
            "remount,bind,ro"
        } else {
            "remount,bind,rw"
        };
        run_mount(&["-o", flags, &self.dir.path().display().to_string()]);
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn run_mount(args: &[&str]) {
    let output = Command::new("mount").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "mount {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Polls overall health until it is `want`; how long that took.
async fn wait_health(server: &TestServer, want: ServingStatus, within: Duration) -> Duration {
    let started = Instant::now();
    wait_until(within, || async {
        server.health_status("").await == Some(want)
    })
    .await
    .unwrap_or_else(|()| panic!("health did not become {want:?} within {within:?}"));
    started.elapsed()
}

/// Fills the filesystem holding `path` with a ballast file until ENOSPC.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(err) => {
                assert_eq!(
                    err.raw_os_error(),
                    Some(28),
                    "filling stopped on something else than ENOSPC: {err}"
                );
                break;
            }
        }
    }
    // Tail bytes smaller than a chunk.
    while let Ok(n @ 1..) = file.write(&[0u8; 512]) {
        written += n as u64;
    }
    let _ = file.flush();
    written
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

async fn resolve(server: &TestServer, key: &str) -> Result<Vec<u8>, tonic::Status> {
    server
        .secrets()
        .resolve_secret(v1::ResolveSecretRequest {
            name: format!("{PARENT}/secrets/{key}"),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().value)
}

/// A value of `len` bytes that names its key and version (never a real secret).
fn value_of(key: &str, version: usize, len: usize) -> Vec<u8> {
    let mut value = format!("{key}@{version}:").into_bytes();
    value.resize(len, b'x');
    value
}

/// The `key@n` tag a test value starts with (never the whole value).
fn label(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == b':').unwrap_or(0);
    String::from_utf8_lossy(&value[..end]).into_owned()
}

async fn stored_secret(server: &TestServer, key: &str) -> coffer_core::record::SecretRecord {
    let tenant = coffer_core::TenantId::parse("acme", "tenant").unwrap();
    let key = coffer_core::SecretKey::parse(key, "key").unwrap();
    server
        .store
        .get_secret(&tenant, &key)
        .await
        .unwrap()
        .unwrap()
}

/// One write against the full disk: OK, or a storage error that is not INTERNAL.
fn check_refusal(what: &str, status: &tonic::Status) {
    assert!(
        matches!(status.code(), Code::Unavailable | Code::ResourceExhausted),
        "{what}: {status:?}"
    );
    assert_ne!(reason(status), "INTERNAL", "{what}: {status:?}");
    assert!(
        !status.message().to_ascii_lowercase().contains("sqlite"),
        "{what}: the database's own text reached the client: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_cleanly_and_recovers_without_restart() {
    let Some(fs) = mount_or_skip("8m") else {
        return;
    };
    let started = Instant::now();
    let db_path: PathBuf = fs.path().join("coffer.db");
    let server = TestServer::start_sqlite_at(&db_path, CofferOptions::default()).await;
    let mut secrets = server.secrets();

    // Acknowledged writes: key → latest value.
    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    for n in 0..5 {
        let key = format!("before-{n}");
        let value = value_of(&key, 1, 256);
        secrets
            .create_secret(local_secret(&key, &value))
            .await
            .unwrap();
        acknowledged.push((key, value));
    }
    // Warm the pool's connections and the WAL with reads.
    for (key, value) in &acknowledged {
        assert_eq!(&resolve(&server, key).await.unwrap(), value);
    }

    let ballast = fs.path().join("ballast");
    let filled = fill(&ballast);

    // Writes until a few are refused: a WAL with free pages may still take some.
    let mut attempted = 0;
    let mut refused = 0;
    let mut refusals = Vec::new();
    for n in 0..200 {
        if refused >= 6 {
            break;
        }
        attempted += 1;
        let (what, result) = if n % 2 == 0 {
            let key = format!("during-{n}");
            let value = value_of(&key, 1, 8 * 1024);
            let call = secrets.create_secret(local_secret(&key, &value));
            let result = tokio::time::timeout(CALL_BOUND, call)
                .await
                .expect("a create on a full disk hung");
            (Some((key, value)), result.map(|_| ()))
        } else {
            let key = format!("before-{}", n % 5);
            let value = value_of(&key, n + 1, 8 * 1024);
            let call = secrets.rotate_secret(v1::RotateSecretRequest {
                name: format!("{PARENT}/secrets/{key}"),
                source: Some(v1::rotate_secret_request::Source::Value(value.clone())),
                ..Default::default()
            });
            let result = tokio::time::timeout(CALL_BOUND, call)
                .await
                .expect("a rotate on a full disk hung");
            (Some((key, value)), result.map(|_| ()))
        };
        match result {
            Ok(()) => {
                let (key, value) = what.unwrap();
                match acknowledged.iter_mut().find(|(k, _)| *k == key) {
                    Some(entry) => entry.1 = value,
                    None => acknowledged.push((key, value)),
                }
            }
            Err(status) => {
                check_refusal("write on a full disk", &status);
                refused += 1;
                refusals.push(format!("{n}:{:?}/{}", status.code(), reason(&status)));
            }
        }
    }
    assert!(
        refused > 0,
        "{attempted} writes on a full disk ({filled} bytes of ballast) all succeeded"
    );

    // Reads of what is there: resolve audits, so it may be refused too, but
    // only as UNAVAILABLE, and a value returned is the acknowledged one.
    let mut reads_ok = 0;
    let mut stale_reads = Vec::new();
    let mut reads_refused = Vec::new();
    for (key, value) in &acknowledged {
        let result = tokio::time::timeout(CALL_BOUND, resolve(&server, key))
            .await
            .expect("a resolve on a full disk hung");
        match result {
            Ok(got) => {
                if got != *value {
                    let stored = stored_secret(&server, key).await;
                    stale_reads.push(format!(
                        "{key}: resolved {}, acknowledged {}, stored latest_version {}",
                        label(&got),
                        label(value),
                        stored.latest_version
                    ));
                }
                reads_ok += 1;
            }
            Err(status) if status.code() == Code::NotFound => {
                stale_reads.push(format!(
                    "{key}: acknowledged {} but NOT_FOUND",
                    label(value)
                ));
            }
            Err(status) => {
                check_refusal("resolve on a full disk", &status);
                reads_refused.push(format!("{:?}/{}", status.code(), reason(&status)));
            }
        }
    }
    // Metadata reads do not write.
    let listed = secrets
        .list_secrets(v1::ListSecretsRequest {
            parent: PARENT.into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("listing on a full disk")
        .into_inner()
        .secrets
        .len();
    // Checked after recovery, with the rest; here only that listing answers.
    let listed_during = listed;
    // Reads answer, but every audited call fails: health says so, probing
    // with a write once one failed for lack of space.
    let not_serving_after =
        wait_health(&server, ServingStatus::NotServing, Duration::from_secs(5)).await;

    // Space back: health comes back on its own, and the same server takes
    // writes again.
    std::fs::remove_file(&ballast).unwrap();
    let recovered = Instant::now();
    let serving_after = wait_health(&server, ServingStatus::Serving, Duration::from_secs(10)).await;
    let mut n = 0;
    wait_until(Duration::from_secs(10), || {
        n += 1;
        let key = format!("after-{n}");
        let value = value_of(&key, 1, 256);
        let mut secrets = server.secrets();
        async move {
            secrets
                .create_secret(local_secret(&key, &value))
                .await
                .is_ok()
        }
    })
    .await
    .expect("writes did not come back after space was freed");
    let recovery = recovered.elapsed();
    let key = "after-check".to_owned();
    let value = value_of(&key, 1, 256);
    secrets
        .create_secret(local_secret(&key, &value))
        .await
        .unwrap();
    acknowledged.push((key, value));

    // Every acknowledged write is there with its last acknowledged value.
    let mut lost = Vec::new();
    for (key, value) in &acknowledged {
        match resolve(&server, key).await {
            Ok(got) if got == *value => {}
            Ok(got) => lost.push(format!(
                "{key}: acknowledged {}, resolved {}",
                label(value),
                label(&got)
            )),
            Err(status) => lost.push(format!(
                "{key}: acknowledged {}, resolve {:?}",
                label(value),
                status.code()
            )),
        }
    }
    let tenant = coffer_core::TenantId::parse("acme", "tenant").unwrap();
    let report = server.coffer.verify_audit_chain(&tenant).await.unwrap();

    let summary = format!(
        "full disk: ballast {filled} B, writes attempted {attempted}, refused {refused} ({refusals:?}), \
         resolves ok {reads_ok} refused {reads_refused:?} stale {}, acknowledged {} lost {}, \
         writes back after {recovery:?}, listed during {listed_during}, health NOT_SERVING after \
         {not_serving_after:?} and SERVING again {serving_after:?} after space came back, \
         audit chain {report:?}, total {:?}",
        stale_reads.len(),
        acknowledged.len(),
        lost.len(),
        started.elapsed()
    );
    eprintln!("{summary}");
    assert!(
        stale_reads.is_empty(),
        "acknowledged writes invisible while the disk was full: {stale_reads:?}\n{summary}"
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost after space came back: {lost:?}\n{summary}"
    );
    assert_eq!(report.first_broken_seq, None, "{report:?}");
    assert!(report.checked > 0, "{report:?}");
    server.stop().await;
}

/// Starts a server on a read-only view of its database. See the module docs
/// for what happens with and without another process holding the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_refuses_writes_cleanly_and_loses_nothing() {
    let Some(fs) = mount_or_skip("16m") else {
        return;
    };
    let view = BindMount::of(fs.path());
    let writable_url = format!("sqlite://{}", fs.path().join("coffer.db").display());

    // Acknowledged writes, made through the view while it is writable.
    let first =
        TestServer::start_sqlite_at(&view.path().join("coffer.db"), CofferOptions::default()).await;
    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    for n in 0..4 {
        let key = format!("before-{n}");
        let value = value_of(&key, 1, 256);
        first
            .secrets()
            .create_secret(local_secret(&key, &value))
            .await
            .unwrap();
        acknowledged.push((key, value));
    }
    let value = value_of("before-0", 2, 256);
    first
        .secrets()
        .rotate_secret(v1::RotateSecretRequest {
            name: format!("{PARENT}/secrets/before-0"),
            source: Some(v1::rotate_secret_request::Source::Value(value.clone())),
            ..Default::default()
        })
        .await
        .unwrap();
    acknowledged[0].1 = value;
    // Stop it and close every handle on the view: only then may the mount
    // turn read-only.
    let mut first = first;
    first.begin_shutdown();
    first.wait_stopped(Duration::from_secs(30)).await.unwrap();
    first.store.close().await.unwrap();
    view.set_read_only(true);

    // Nobody holds the database: SQLite cannot create the WAL index, and
    // opening fails with a clear UNAVAILABLE (not a panic, not INTERNAL).
    let err = tokio::time::timeout(
        CALL_BOUND,
        Store::connect(&first.database_url, StoreOptions::default()),
    )
    .await
    .expect("opening a read-only database hung")
    .expect_err("a database on a read-only mount without its WAL files opened");
    assert_eq!(err.code(), coffer_core::ErrorCode::Unavailable, "{err:?}");

    // Another process holds it open through the writable path (its WAL
    // files exist): a server on the read-only view starts read-only.
    let keeper = Store::connect(&writable_url, StoreOptions::default())
        .await
        .unwrap();
    let server = first.start_replica_with(CofferOptions::default()).await;
    let mut secrets = server.secrets();

    let key = "during-create".to_owned();
    let value = value_of(&key, 1, 256);
    let create = tokio::time::timeout(
        CALL_BOUND,
        secrets.create_secret(local_secret(&key, &value)),
    )
    .await
    .expect("a create on a read-only database hung");
    let rotate = tokio::time::timeout(
        CALL_BOUND,
        secrets.rotate_secret(v1::RotateSecretRequest {
            name: format!("{PARENT}/secrets/before-1"),
            source: Some(v1::rotate_secret_request::Source::Value(value_of(
                "before-1", 2, 256,
            ))),
            ..Default::default()
        }),
    )
    .await
    .expect("a rotate on a read-only database hung");
    let resolved = tokio::time::timeout(CALL_BOUND, resolve(&server, "before-2"))
        .await
        .expect("a resolve on a read-only database hung");
    for (what, status) in [
        ("create", create.map(|_| ()).unwrap_err()),
        ("rotate", rotate.map(|_| ()).unwrap_err()),
        ("resolve", resolved.map(|_| ()).unwrap_err()),
    ] {
        check_refusal(&format!("{what} on a read-only database"), &status);
        assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
        assert!(
            status.message().contains("cannot be written"),
            "{what}: the message does not say the database cannot be written: {status:?}"
        );
    }
    // Metadata reads need no write.
    let got = secrets
        .get_secret(v1::GetSecretRequest {
            name: format!("{PARENT}/secrets/before-3"),
        })
        .await
        .expect("get on a read-only database")
        .into_inner();
    assert_eq!(got.name, format!("{PARENT}/secrets/before-3"));
    let listed = secrets
        .list_secrets(v1::ListSecretsRequest {
            parent: PARENT.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list on a read-only database")
        .into_inner()
        .secrets
        .len();
    assert_eq!(listed, acknowledged.len());
    let not_serving_after =
        wait_health(&server, ServingStatus::NotServing, Duration::from_secs(5)).await;

    // Writable again: the same server, without a restart.
    view.set_read_only(false);
    let serving_after = wait_health(&server, ServingStatus::Serving, Duration::from_secs(10)).await;
    let key = "after".to_owned();
    let value = value_of(&key, 1, 256);
    secrets
        .create_secret(local_secret(&key, &value))
        .await
        .expect("a create once the database is writable again");
    acknowledged.push((key, value));
    let value = value_of("before-1", 3, 256);
    secrets
        .rotate_secret(v1::RotateSecretRequest {
            name: format!("{PARENT}/secrets/before-1"),
            source: Some(v1::rotate_secret_request::Source::Value(value.clone())),
            ..Default::default()
        })
        .await
        .expect("a rotate once the database is writable again");
    acknowledged[1].1 = value;

    let mut lost = Vec::new();
    for (key, value) in &acknowledged {
        match resolve(&server, key).await {
            Ok(got) if got == *value => {}
            Ok(got) => lost.push(format!(
                "{key}: acknowledged {}, resolved {}",
                label(value),
                label(&got)
            )),
            Err(status) => lost.push(format!(
                "{key}: acknowledged {}, resolve {status:?}",
                label(value)
            )),
        }
    }
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // The refused create left nothing behind.
    let refused = resolve(&server, "during-create").await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let tenant = coffer_core::TenantId::parse("acme", "tenant").unwrap();
    let report = server.coffer.verify_audit_chain(&tenant).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
    let problems = keeper.integrity_check().await.unwrap();
    assert!(problems.is_empty(), "integrity_check: {problems:?}");
    eprintln!(
        "read-only database: health NOT_SERVING after {not_serving_after:?}, SERVING again \
         {serving_after:?} after the mount turned writable, acknowledged {} lost 0, audit chain {report:?}",
        acknowledged.len()
    );
    server.stop().await;
    keeper.close().await.unwrap();
}
