//! `coffer bench` against the real binary: `coffer serve --dev` on
//! 127.0.0.1:0 with SQLite in a temp dir, every scenario for a short run with
//! small numbers and `--output json` (zero errors, calls made), one
//! `--compare health` run, and a run over mutual TLS with `coffer dev certs`
//! where a principal without a grant is refused at seeding. Figures are not
//! checked: they come from runs by hand, not from timed tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Server processes are reaped by `Drop for Server` once started.
#![allow(clippy::zombie_processes)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{Server, coffer};
use serde_json::Value;

const SMALL: &[&str] = &[
    "--duration",
    "1s",
    "--warmup",
    "100ms",
    "--concurrency",
    "4",
    "--connections",
    "2",
    "--secrets",
    "50",
    "--batch",
    "5",
    "--bindings",
    "3",
    "--output",
    "json",
];

/// Starts `coffer serve` with `args` and its data in `dir/data`.
fn start(dir: &Path, args: &[&str]) -> Server {
    start_logging_to(dir, "server.log", args, &[])
}

/// [`start`] with its log in `log_name` and extra env vars: several servers
/// on one data directory (replicas on one SQLite file).
fn start_logging_to(dir: &Path, log_name: &str, args: &[&str], envs: &[(&str, &str)]) -> Server {
    let data = dir.join("data");
    let args = [args, &["--data-dir", data.to_str().unwrap()]].concat();
    common::start_serve(&dir.join(log_name), &args, |command| {
        command.envs(envs.iter().copied()).env("RUST_LOG", "info");
    })
}

fn bench(scenario: &str, server: &str, extra: &[&str]) -> Output {
    coffer()
        .args(["bench", scenario, "--server", server])
        .args(SMALL)
        .args(extra)
        .output()
        .unwrap()
}

/// The JSON report of a run that must succeed.
fn report(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Calls were made, none failed, and the figures are consistent.
fn assert_clean(run: &Value, scenario: &str) {
    assert_eq!(run["scenario"], scenario, "{run}");
    let calls = run["calls"].as_u64().unwrap();
    assert!(calls > 0, "{run}");
    assert_eq!(run["ok"].as_u64().unwrap(), calls, "{run}");
    assert_eq!(run["errors"], serde_json::json!({}), "{run}");
    assert!(run["throughput"].as_f64().unwrap() > 0.0, "{run}");
    assert!(run["duration_s"].as_f64().unwrap() >= 1.0, "{run}");
    let latency = &run["latency_ms"];
    let [p50, p90, p99, max] = ["p50", "p90", "p99", "max"].map(|p| latency[p].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{run}");
}

#[test]
fn every_scenario_runs_clean_and_compare_gives_a_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--dev", "--listen", "127.0.0.1:0"]);
    let url = format!("http://{}", server.addr);
    let mut tenants = Vec::new();
    for scenario in [
        "health",
        "resolve",
        "resolve-many",
        "batch-resolve",
        "resolve-bindings",
        "write",
        "mixed",
    ] {
        let run = report(&bench(scenario, &url, &[]));
        assert_clean(&run, scenario);
        assert_eq!(run["concurrency"], 4);
        assert_eq!(run["connections"], 2);
        assert!(run.get("baseline").is_none() && run.get("ratio").is_none());
        tenants.push(run["tenant"].as_str().unwrap().to_owned());
    }
    // Each run seeds a fresh tenant of its own.
    tenants.sort();
    tenants.dedup();
    assert_eq!(tenants.len(), 7);
    assert!(tenants.iter().all(|t| t.starts_with("bench-")));

    // A named tenant is reused: the second run finds its secrets and bindings
    // already seeded and still runs clean.
    for _ in 0..2 {
        let run = report(&bench("resolve-bindings", &url, &["--tenant", "reused"]));
        assert_clean(&run, "resolve-bindings");
        assert_eq!(run["tenant"], "reused");
    }

    let run = report(&bench("resolve", &url, &["--compare", "health"]));
    assert_clean(&run, "resolve");
    assert_clean(&run["baseline"], "health");
    let ratio = run["ratio"].as_f64().unwrap();
    let expected =
        run["throughput"].as_f64().unwrap() / run["baseline"]["throughput"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 0.01, "{run}");

    // The table names the scenario and the calls/s column.
    let out = coffer()
        .args(["bench", "health", "--server", &url])
        .args([
            "--duration",
            "200ms",
            "--warmup",
            "0s",
            "--concurrency",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("calls/s") && table.contains("\nhealth "),
        "{table}"
    );

    // Bad input is refused before any load.
    let out = bench("batch-resolve", &url, &["--batch", "101"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--batch"));
}

/// replica-lag rotates on one server and resolves on another over the same
/// database; on SQLite the replica's metadata cache TTL bounds the lag.
#[test]
fn replica_lag_measures_propagation_between_two_servers() {
    let dir = tempfile::tempdir().unwrap();
    let dev = ["--dev", "--listen", "127.0.0.1:0"];
    let primary = start_logging_to(dir.path(), "primary.log", &dev, &[]);
    let ttl = [("COFFER_CACHE__METADATA_TTL_MS", "50")];
    let replica = start_logging_to(dir.path(), "replica.log", &dev, &ttl);
    let (primary, replica) = (
        format!("http://{}", primary.addr),
        format!("http://{}", replica.addr),
    );
    let run = report(&bench("replica-lag", &primary, &["--replica", &replica]));
    assert_clean(&run, "replica-lag");
    // Every round waited for the replica, never longer than its TTL allows.
    assert!(run["latency_ms"]["max"].as_f64().unwrap() < 1000.0, "{run}");

    let out = bench("replica-lag", &primary, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replica"));
}

#[test]
fn bench_runs_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = coffer()
        .args(["dev", "certs", "--out"])
        .arg(&certs)
        .args([
            "--principal",
            "spiffe://corp/bench",
            "--principal",
            "nobody",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        dir.path().join("coffer.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[tls]\ncert_file = \"certs/server.pem\"\nkey_file = \"certs/server.key\"\nclient_ca_file = \"certs/ca.pem\"\n\n[authz]\npolicy_file = \"policy.toml\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[[grant]]\nprincipal = \"spiffe://corp/bench\"\ntenants = [\"*\"]\nroles = [\"admin\"]\n",
    )
    .unwrap();
    let config = dir.path().join("coffer.toml");
    let server = start(dir.path(), &["--config", config.to_str().unwrap()]);
    let url = format!("https://{}", server.addr);
    let tls = |slug: &str| {
        [
            "--ca".to_owned(),
            certs.join("ca.pem").display().to_string(),
            "--cert".to_owned(),
            certs
                .join(format!("client-{slug}.pem"))
                .display()
                .to_string(),
            "--key".to_owned(),
            certs
                .join(format!("client-{slug}.key"))
                .display()
                .to_string(),
        ]
    };
    let admin = tls("corp-bench");
    let admin: Vec<&str> = admin.iter().map(String::as_str).collect();
    let run = report(&bench(
        "resolve",
        &url,
        &[&admin[..], &["--compare", "health"]].concat(),
    ));
    assert_clean(&run, "resolve");
    assert_clean(&run["baseline"], "health");

    // Without a grant, seeding is refused: the run fails before any load and
    // prints no figures.
    let nobody = tls("nobody");
    let nobody: Vec<&str> = nobody.iter().map(String::as_str).collect();
    let out = bench("resolve", &url, &nobody);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The server may hide a tenant outside the grant as not found.
    assert!(
        stderr.contains("code: PERMISSION_DENIED") || stderr.contains("code: NOT_FOUND"),
        "{stderr}"
    );
}
