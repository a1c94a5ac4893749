//! Runs the built `coffer` binary on calls that fail before or at connecting,
//! so no server is needed: exit codes, the `error:` line, and that a value
//! never reaches the output.

use std::process::{Command, Output};

fn coffer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env_remove("COFFER_SERVER")
        .env_remove("COFFER_TENANT")
        .env_remove("COFFER_CA")
        .env_remove("COFFER_CERT")
        .env_remove("COFFER_KEY")
        .env("COFFER_TIMEOUT", "5")
        .output()
        .expect("the coffer binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unreachable_server_is_a_clear_error_with_exit_code_1() {
    // Port 1 on loopback refuses connections.
    let out = coffer(&["secrets", "get", "k", "--server", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot connect to http://127.0.0.1:1"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_missing_value_env_fails_before_connecting() {
    let out = coffer(&[
        "secrets",
        "create",
        "k",
        "--value-env",
        "COFFER_TEST_SURELY_UNSET",
        "--server",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        "error: environment variable COFFER_TEST_SURELY_UNSET is not set"
    );
}

#[test]
fn a_bad_key_is_rejected_locally_without_echoing_the_value() {
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["secrets", "create", "Bad Key", "--value-env", "TOKEN"])
        .env("TOKEN", "do-not-print-me")
        .output()
        .expect("the coffer binary runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("secret key must match"), "{err}");
    assert!(!err.contains("do-not-print-me"));
}

#[test]
fn values_as_arguments_are_a_usage_error() {
    let out = coffer(&["secrets", "create", "k", "--value", "s3cr3t"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("s3cr3t"));
}

#[test]
fn raw_output_is_refused_before_any_call_except_for_resolve() {
    let out = coffer(&["secrets", "list", "--output", "raw"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        "error: --output raw is only for `coffer secrets resolve`"
    );
}
