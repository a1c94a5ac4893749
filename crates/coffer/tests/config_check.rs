//! `coffer config check` and `coffer config example` through the real
//! binary: good and bad files, the env overlay, the files a config names
//! (TLS built as the server builds it, the policy parsed, the keyring's
//! mode), `--allow-missing-files`, and that the example checks as printed
//! and with every setting uncommented. No server starts, no database is
//! touched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

const ADMIN: &str = "spiffe://corp/admin";

/// The binary with no `COFFER_*` variables from the test's environment.
fn coffer(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
    command.current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COFFER_") {
            command.env_remove(name);
        }
    }
    command
}

fn check(dir: &Path, file: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    coffer(dir)
        .args(["config", "check"])
        .args(args)
        .arg(file)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output, file: &str) {
    assert!(out.status.success(), "{}", stderr(out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ok: {file}")
    );
}

/// Fails with exit code 1 and every needle on stderr.
fn assert_fails(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    err
}

/// A directory with dev certificates in certs/, a policy and an mTLS config.
fn mtls_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = coffer(dir.path())
        .args(["dev", "certs", "--out", "certs", "--principal", ADMIN])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("[[grant]]\nprincipal = \"{ADMIN}\"\ntenants = [\"*\"]\nroles = [\"admin\"]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("coffer.toml"),
        "[server]\nlisten = \"0.0.0.0:50051\"\n\n[tls]\ncert_file = \"certs/server.pem\"\nkey_file = \"certs/server.key\"\nclient_ca_file = \"certs/ca.pem\"\n\n[authz]\npolicy_file = \"policy.toml\"\n\n[database]\nurl = \"postgres://coffer@127.0.0.1:1/nowhere\"\n",
    )
    .unwrap();
    dir
}

#[test]
fn a_good_config_checks_without_starting_anything() {
    let dir = mtls_dir();
    let out = check(dir.path(), "coffer.toml", &[], &[]);
    assert_ok(&out, "coffer.toml");
    assert!(
        !dir.path().join(".coffer").exists(),
        "check must not create the data directory"
    );
    // The CLI's own single-underscore vars are not part of the overlay.
    let out = check(
        dir.path(),
        "coffer.toml",
        &[],
        &[("COFFER_DATABASE_URL", "garbage"), ("COFFER_LISTEN", "x")],
    );
    assert_ok(&out, "coffer.toml");
}

#[test]
fn bad_files_and_bad_overlays_fail_naming_key_and_source() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"0.0.0.0:50051\"\nport = 50051\n\n[logs]\nformat = \"json\"\n",
    )
    .unwrap();
    assert_fails(
        &check(dir.path(), "bad.toml", &[], &[]),
        &[
            "bad.toml: unknown key `server.port`",
            "bad.toml: unknown section [logs]",
        ],
    );

    std::fs::write(dir.path().join("good.toml"), "[log]\nformat = \"json\"\n").unwrap();
    assert_ok(&check(dir.path(), "good.toml", &[], &[]), "good.toml");
    assert_fails(
        &check(
            dir.path(),
            "good.toml",
            &[],
            &[("COFFER_LOG__FORMT", "json")],
        ),
        &["COFFER_LOG__FORMT names no config key"],
    );
    assert_fails(
        &check(
            dir.path(),
            "good.toml",
            &[],
            &[("COFFER_TELEMETRY__SAMPLE_RATIO", "2.0")],
        ),
        &["COFFER_TELEMETRY__SAMPLE_RATIO: telemetry.sample_ratio must be 0.0 to 1.0"],
    );
    let err = assert_fails(
        &check(
            dir.path(),
            "good.toml",
            &[],
            &[("COFFER_DATABASE__URL", "mysql://coffer:hunter2@db/coffer")],
        ),
        &["COFFER_DATABASE__URL: database.url must start with"],
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert_fails(
        &check(dir.path(), "missing.toml", &[], &[]),
        &["cannot read config file missing.toml"],
    );
}

#[test]
fn named_files_are_checked_as_the_server_loads_them() {
    let dir = mtls_dir();
    let d = dir.path();

    // A key that does not belong to the certificate.
    std::fs::copy(d.join("certs/server.key"), d.join("server.key.orig")).unwrap();
    std::fs::copy(
        d.join("certs/client-corp-admin.key"),
        d.join("certs/server.key"),
    )
    .unwrap();
    assert_fails(&check(d, "coffer.toml", &[], &[]), &["tls: "]);
    std::fs::copy(d.join("server.key.orig"), d.join("certs/server.key")).unwrap();

    // A policy with a role that does not exist.
    let policy = std::fs::read_to_string(d.join("policy.toml")).unwrap();
    std::fs::write(
        d.join("policy.toml"),
        policy.replace("admin\"]", "owner\"]"),
    )
    .unwrap();
    assert_fails(
        &check(d, "coffer.toml", &[], &[]),
        &["authz.policy_file: ", "policy.toml"],
    );
    std::fs::write(d.join("policy.toml"), &policy).unwrap();
    assert_ok(&check(d, "coffer.toml", &[], &[]), "coffer.toml");

    // A keyring others could read is refused; a missing one is created later.
    std::fs::write(
        d.join("coffer.toml"),
        std::fs::read_to_string(d.join("coffer.toml")).unwrap()
            + "\n[keys]\nkeyring_file = \"keys/master.key\"\n",
    )
    .unwrap();
    let out = check(d, "coffer.toml", &[], &[]);
    assert_ok(&out, "coffer.toml");
    assert!(
        stderr(&out).contains("does not exist yet"),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir(d.join("keys")).unwrap();
    std::fs::write(d.join("keys/master.key"), "{}").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = d.join("keys/master.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_fails(
            &check(d, "coffer.toml", &[], &[]),
            &["keys.keyring_file", "chmod 600"],
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_ok(&check(d, "coffer.toml", &[], &[]), "coffer.toml");
    }

    // Files mounted only at deploy time: an error, unless allowed.
    std::fs::remove_file(d.join("certs/ca.pem")).unwrap();
    assert_fails(
        &check(d, "coffer.toml", &[], &[]),
        &["tls.client_ca_file: cannot read", "ca.pem"],
    );
    let out = check(d, "coffer.toml", &["--allow-missing-files"], &[]);
    assert_ok(&out, "coffer.toml");
    assert!(
        stderr(&out).contains("ca.pem does not exist here; not checked"),
        "{}",
        stderr(&out)
    );
    // ... but files that exist are still checked.
    std::fs::write(d.join("certs/server.pem"), "not a certificate").unwrap();
    assert_fails(
        &check(d, "coffer.toml", &["--allow-missing-files"], &[]),
        &["tls.cert_file"],
    );
}

#[test]
fn the_example_checks_as_printed_and_uncommented() {
    let dir = mtls_dir();
    let out = coffer(dir.path())
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let example = String::from_utf8(out.stdout).unwrap();
    assert!(example.contains("COFFER_PROVIDERS__AWS_SECRETS_MANAGER__ENABLED"));
    std::fs::write(dir.path().join("example.toml"), &example).unwrap();
    assert_ok(&check(dir.path(), "example.toml", &[], &[]), "example.toml");

    // Uncommented, its sample paths are where `coffer dev certs` writes.
    // keyring_env is left out: it excludes keyring_file.
    let uncommented: String = example
        .lines()
        .filter(|line| !line.starts_with("#keyring_env"))
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c == '[' || c.is_ascii_lowercase()) => {
                format!("{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert!(uncommented.contains("\n[tls]\n"), "{uncommented}");
    std::fs::write(dir.path().join("full.toml"), uncommented).unwrap();
    let out = check(dir.path(), "full.toml", &[], &[]);
    assert_ok(&out, "full.toml");
    assert!(
        stderr(&out).contains("/var/lib/coffer/master.key does not exist yet"),
        "{}",
        stderr(&out)
    );
}
