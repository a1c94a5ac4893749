#![allow(clippy::unwrap_used)]

use std::path::Path;

use secrecy::ExposeSecret;

use super::keys::{KEYS, Key, SECTIONS, Shown};
use super::*;

const FILE: &str = "/srv/coffer/coffer.toml";

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(text: &str, vars: &[(&str, &str)]) -> anyhow::Result<Config> {
    Config::from_sources(Some((text, Path::new(FILE))), &env(vars))
}

/// The error text, asserted to contain every one of `needles`.
fn error(text: &str, vars: &[(&str, &str)], needles: &[&str]) -> String {
    let err = format!("{:#}", load(text, vars).unwrap_err());
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    err
}

const FULL: &str = r#"
    [server]
    listen = "0.0.0.0:50051"
    [tls]
    cert_file = "server.pem"
    key_file = "/etc/coffer/server.key"
    client_ca_file = "ca.pem"
    [authz]
    policy_file = "policy.toml"
    [database]
    url = "postgres://coffer@db/coffer"
    [keys]
    keyring_file = "master.key"
    [providers.aws_secrets_manager]
    enabled = true
    operation_timeout_ms = 2000
"#;

#[test]
fn nothing_set_means_the_defaults() {
    let config = Config::from_sources(None, &[]).unwrap();
    assert_eq!(config.server, ServerSection::default());
    assert_eq!(config.server.max_request_bytes, 1024 * 1024);
    assert_eq!(config.server.max_response_bytes, 16 * 1024 * 1024);
    assert_eq!(config.server.request_timeout_secs, 30);
    assert_eq!(config.server.shutdown_grace_secs, 20);
    assert!(config.tls.is_none() && config.authz.is_none());
    assert!(config.database.url.is_none());
    assert_eq!(config.database.pool_size, 10);
    assert!(config.database.auto_migrate);
    assert_eq!(config.keys, KeysSection::default());
    assert_eq!(config.keys.keyring_env_name(), "COFFER_KEYRING");
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Pretty);
    assert_eq!(config.telemetry.otlp_endpoint, None);
    assert_eq!(config.telemetry.service_name, "coffer");
    assert!((config.telemetry.sample_ratio - 1.0).abs() < f64::EPSILON);
    assert_eq!(config.metrics.listen, None);
    assert_eq!(config.providers, ProvidersSection::default());
    assert!(config.providers.aws_secrets_manager.enabled);
}

#[test]
fn file_paths_resolve_against_its_directory_env_paths_stay() {
    let config = load(FULL, &[]).unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(tls.cert_file, Path::new("/srv/coffer/server.pem"));
    assert_eq!(tls.key_file, Path::new("/etc/coffer/server.key"));
    assert_eq!(
        config.authz.unwrap().policy_file,
        Path::new("/srv/coffer/policy.toml")
    );
    assert_eq!(
        config.keys.keyring_file.unwrap(),
        Path::new("/srv/coffer/master.key")
    );
    assert_eq!(config.server.listen, Some("0.0.0.0:50051".parse().unwrap()));
    let aws = config.providers.aws_secrets_manager;
    assert_eq!(aws.operation_timeout_ms, 2000);
    assert_eq!(
        aws.connect_timeout_ms, 3000,
        "unset keys keep their default"
    );

    let config = load(FULL, &[("COFFER_TLS__CERT_FILE", "certs/other.pem")]).unwrap();
    assert_eq!(
        config.tls.unwrap().cert_file,
        Path::new("certs/other.pem"),
        "a path from the environment is taken as given"
    );
}

#[test]
fn env_overrides_file_overrides_defaults() {
    let file = r#"
        [server]
        request_timeout_secs = 40
        shutdown_grace_secs = 5
        [log]
        format = "json"
        level = "debug"
        [database]
        url = "postgres://file@db/coffer"
        [providers.aws_secrets_manager]
        max_attempts = 5
        connect_timeout_ms = 100
    "#;
    let from_file = load(file, &[]).unwrap();
    assert_eq!(from_file.server.request_timeout_secs, 40);
    assert_eq!(from_file.server.max_request_bytes, 1024 * 1024, "default");
    assert_eq!(from_file.log.format, LogFormat::Json);
    assert_eq!(from_file.providers.aws_secrets_manager.max_attempts, 5);

    let merged = load(
        file,
        &[
            ("COFFER_SERVER__REQUEST_TIMEOUT_SECS", "50"),
            ("COFFER_SERVER__MAX_REQUEST_BYTES", "2048"),
            ("COFFER_LOG__FORMAT", "pretty"),
            ("COFFER_DATABASE__URL", "postgres://env:pw@db/coffer"),
            ("COFFER_DATABASE__AUTO_MIGRATE", "false"),
            ("COFFER_TELEMETRY__SAMPLE_RATIO", "0.25"),
            ("COFFER_TELEMETRY__OTLP_ENDPOINT", "http://collector:4317"),
            ("COFFER_METRICS__LISTEN", "[::]:9090"),
            ("COFFER_PROVIDERS__AWS_SECRETS_MANAGER__ENABLED", "false"),
            ("COFFER_PROVIDERS__AWS_SECRETS_MANAGER__MAX_ATTEMPTS", "2"),
            // Not overlay vars: the CLI's own, and unrelated ones.
            ("COFFER_DATABASE_URL", "not a url"),
            ("COFFER_KEYRING", "{}"),
            ("HOME", "/root"),
        ],
    )
    .unwrap();
    assert_eq!(merged.server.request_timeout_secs, 50, "env beats file");
    assert_eq!(merged.server.shutdown_grace_secs, 5, "file kept");
    assert_eq!(merged.server.max_request_bytes, 2048, "env beats default");
    assert_eq!(merged.log.format, LogFormat::Pretty);
    assert_eq!(merged.log.level, "debug");
    assert_eq!(
        merged.database.url.unwrap().expose_secret(),
        "postgres://env:pw@db/coffer"
    );
    assert!(!merged.database.auto_migrate);
    assert!((merged.telemetry.sample_ratio - 0.25).abs() < f64::EPSILON);
    assert_eq!(
        merged.telemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4317")
    );
    assert_eq!(merged.metrics.listen, Some("[::]:9090".parse().unwrap()));
    let aws = merged.providers.aws_secrets_manager;
    assert!(!aws.enabled);
    assert_eq!(aws.max_attempts, 2);
    assert_eq!(aws.connect_timeout_ms, 100);
}

#[test]
fn env_alone_can_complete_a_section() {
    let config = Config::from_sources(
        None,
        &env(&[
            ("COFFER_TLS__CERT_FILE", "/tls/tls.crt"),
            ("COFFER_TLS__KEY_FILE", "/tls/tls.key"),
            ("COFFER_TLS__CLIENT_CA_FILE", "/tls/ca.crt"),
            ("COFFER_AUTHZ__POLICY_FILE", "/etc/coffer/policy.toml"),
        ]),
    )
    .unwrap();
    assert_eq!(config.tls.unwrap().key_file, Path::new("/tls/tls.key"));

    let file =
        "[tls]\ncert_file = \"a.pem\"\nkey_file = \"a.key\"\n[authz]\npolicy_file = \"p.toml\"\n";
    error(
        file,
        &[],
        &[
            FILE,
            "[tls] needs client_ca_file",
            "COFFER_TLS__CLIENT_CA_FILE",
        ],
    );
    let config = load(file, &[("COFFER_TLS__CLIENT_CA_FILE", "/ca.pem")]).unwrap();
    assert_eq!(config.tls.unwrap().key_file, Path::new("/srv/coffer/a.key"));
}

#[test]
fn unknown_keys_in_the_file_are_named_with_the_file() {
    error(
        "[server]\nlisten = \"127.0.0.1:1\"\nport = 2",
        &[],
        &[FILE, "unknown key `server.port`", "max_request_bytes"],
    );
    error("[tsl]\n", &[], &[FILE, "unknown section [tsl]"]);
    error("[providers.gcp]\n", &[], &[FILE, "[providers.gcp]"]);
    error(
        "[providers.aws_secrets_manager]\naws_secret_access_key = \"x\"",
        &[],
        &[
            FILE,
            "unknown key `providers.aws_secrets_manager.aws_secret_access_key`",
        ],
    );
    error(
        "listen = \"127.0.0.1:1\"\n",
        &[],
        &[FILE, "`listen` is outside any section"],
    );
    error("server = 1\n", &[], &[FILE, "`server` must be a section"]);
    // Several problems are reported together.
    error("[a]\n[b]\n", &[], &["[a]", "[b]"]);
}

#[test]
fn unknown_overlay_vars_are_errors() {
    error(
        "",
        &[("COFFER_DATABSE__URL", "postgres://x@y/z")],
        &["env var COFFER_DATABSE__URL names no config key"],
    );
    error(
        "",
        &[("COFFER_SERVER__PORT", "1")],
        &["COFFER_SERVER__PORT names no config key"],
    );
    error(
        "",
        &[("COFFER_PROVIDERS__AWS__ENABLED", "true")],
        &["COFFER_PROVIDERS__AWS__ENABLED"],
    );
    let err = error(
        "",
        &[("COFFER_DATABSE__URL", "postgres://u:hunter2@y/z")],
        &[],
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn invalid_values_are_rejected_naming_key_and_source() {
    error(
        "[server]\nlisten = \"localhost\"",
        &[],
        &[
            FILE,
            "server.listen must be an IP address and port",
            "\"localhost\"",
        ],
    );
    error(
        "",
        &[("COFFER_METRICS__LISTEN", "9090")],
        &["COFFER_METRICS__LISTEN: metrics.listen must be an IP address and port"],
    );
    error(
        "[telemetry]\nsample_ratio = 2.0",
        &[],
        &[FILE, "telemetry.sample_ratio must be 0.0 to 1.0"],
    );
    error(
        "",
        &[("COFFER_TELEMETRY__SAMPLE_RATIO", "-0.5")],
        &["COFFER_TELEMETRY__SAMPLE_RATIO: telemetry.sample_ratio"],
    );
    error(
        "[log]\nformat = \"xml\"",
        &[],
        &[FILE, "log.format must be one of json, pretty", "xml"],
    );
    error(
        "",
        &[("COFFER_LOG__FORMAT", "xml")],
        &["COFFER_LOG__FORMAT: log.format must be one of json, pretty"],
    );
    error("[log]\nlevel = \"info,[\"", &[], &[FILE, "log.level"]);
    error(
        "[keys]\nkeyring_file = \"master.key\"\nkeyring_env = \"MY_KEYRING\"",
        &[],
        &[FILE, "keyring_file or keys.keyring_env, not both"],
    );
    error(
        "[keys]\nkeyring_file = \"master.key\"",
        &[("COFFER_KEYS__KEYRING_ENV", "MY_KEYRING")],
        &[FILE, "COFFER_KEYS__KEYRING_ENV", "not both"],
    );
    error(
        "[keys]\nkeyring_env = \"{\\\"keks\\\": 1}\"",
        &[],
        &["keys.keyring_env must be an env var name"],
    );
    error(
        "[keys]\nkeyring_env = \"COFFER_KEYS__RING\"",
        &[],
        &["would be read as a config key"],
    );
    error(
        "[database]\npool_size = 0",
        &[],
        &[FILE, "database.pool_size must be 1 to 1000"],
    );
    error(
        "[database]\npool_size = -1",
        &[],
        &[FILE, "database.pool_size must be a whole number"],
    );
    error(
        "",
        &[("COFFER_DATABASE__POOL_SIZE", "ten")],
        &[
            "COFFER_DATABASE__POOL_SIZE: database.pool_size must be a whole number",
            "\"ten\"",
        ],
    );
    error(
        "",
        &[(
            "COFFER_PROVIDERS__AWS_SECRETS_MANAGER__MAX_ATTEMPTS",
            "99999999999",
        )],
        &["max_attempts must be a whole number from 0 to 4294967295"],
    );
    error(
        "",
        &[("COFFER_DATABASE__AUTO_MIGRATE", "yes")],
        &["COFFER_DATABASE__AUTO_MIGRATE: database.auto_migrate must be true or false"],
    );
    error(
        "",
        &[("COFFER_SERVER__LISTEN", "")],
        &["COFFER_SERVER__LISTEN: server.listen is empty"],
    );
    error(
        "[server]\nmax_request_bytes = 10",
        &[],
        &["server.max_request_bytes must be 1024 to 268435456"],
    );
    error(
        "[server]\nrequest_timeout_secs = 0",
        &[],
        &["server.request_timeout_secs must be 1 to 3600"],
    );
    error(
        "[server]\nlisten = true",
        &[],
        &["server.listen must be an IP address and port", "not true"],
    );
    error(
        "[telemetry]\notlp_endpoint = \"ftp://collector:21\"",
        &[],
        &["telemetry.otlp_endpoint must be an http:// or https:// URL"],
    );
    error(
        "[telemetry]\notlp_endpoint = \"collector:4317\"",
        &[],
        &["telemetry.otlp_endpoint"],
    );
    error(
        "[telemetry]\nservice_name = \" \"",
        &[],
        &["telemetry.service_name"],
    );
    error(
        "[providers.aws_secrets_manager]\noperation_timeout_ms = 0",
        &[],
        &[FILE, "operation_timeout_ms must be 1 to 300000"],
    );
    assert!(
        load(
            "[telemetry]\notlp_endpoint = \"https://otel.example:4317\"\nsample_ratio = 0",
            &[]
        )
        .is_ok()
    );
}

#[test]
fn tls_and_authz_come_together() {
    error(
        "[tls]\ncert_file = \"a\"\nkey_file = \"b\"\nclient_ca_file = \"c\"",
        &[],
        &[FILE, "[tls] needs [authz]"],
    );
    error(
        "",
        &[("COFFER_AUTHZ__POLICY_FILE", "/p.toml")],
        &["COFFER_AUTHZ__POLICY_FILE: [authz] needs [tls]"],
    );
    error(
        "[tls]\n[authz]\npolicy_file = \"p\"",
        &[],
        &["[tls] needs cert_file"],
    );
}

#[test]
fn listeners_on_one_port_clash() {
    error(
        "[server]\nlisten = \"0.0.0.0:50051\"\nhealth_listen = \"127.0.0.1:50051\"",
        &[],
        &["server.listen and server.health_listen both use port 50051"],
    );
    error(
        "[server]\nhealth_listen = \"0.0.0.0:9090\"",
        &[("COFFER_METRICS__LISTEN", "0.0.0.0:9090")],
        &[FILE, "COFFER_METRICS__LISTEN", "both use port 9090"],
    );
    load(
        "[server]\nlisten = \"127.0.0.1:0\"\nhealth_listen = \"127.0.0.1:0\"\n[metrics]\nlisten = \"10.0.0.1:9090\"",
        &[("COFFER_SERVER__HEALTH_LISTEN", "10.0.0.2:9090")],
    )
    .unwrap();
}

#[test]
fn secrets_never_reach_debug_or_errors() {
    let secret_url = "postgres://coffer:hunter2@db/coffer";
    let config = load(&format!("[database]\nurl = \"{secret_url}\""), &[]).unwrap();
    assert_eq!(
        config.database.url.as_ref().unwrap().expose_secret(),
        secret_url
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("REDACTED"), "{debug}");

    // A bad URL is refused without being repeated, from the file or the env.
    let err = error(
        "[database]\nurl = \"mysql://coffer:hunter2@db/coffer\"",
        &[],
        &[FILE, "database.url must start with"],
    );
    assert!(!err.contains("hunter2"), "{err}");
    let err = error(
        "",
        &[("COFFER_DATABASE__URL", "mysql://coffer:hunter2@db")],
        &["COFFER_DATABASE__URL: database.url"],
    );
    assert!(!err.contains("hunter2"), "{err}");
    let err = error(
        "[database]\nurl = 5",
        &[],
        &["database.url must be a string"],
    );
    assert!(!err.contains('5'), "{err}");
    // A syntax error gives the position, not the line, which may hold a password.
    let err = error(
        "[database]\nurl = \"postgres://coffer:hunter2@db\nx = 1\n",
        &[],
        &[FILE, "not valid TOML at line 2"],
    );
    assert!(!err.contains("hunter2"), "{err}");
}

/// Every section's keys in [`KEYS`] are exactly the fields of its serde
/// struct: serde lists the fields it expects when it meets an unknown one.
#[test]
fn the_key_list_matches_the_structs() {
    fn expected_fields(table: toml::Table) -> Vec<String> {
        let err = toml::Value::Table(table)
            .try_into::<Config>()
            .unwrap_err()
            .to_string();
        // "unknown field `zz_unknown`, expected one of `a`, `b`", then the
        // table's path on a line of its own.
        let expected = err
            .split("expected")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .unwrap_or_else(|| panic!("{err}"));
        let mut fields: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        fields.sort();
        fields
    }
    let mut sections: Vec<String> = SECTIONS
        .iter()
        .map(|s| s.name.split('.').next().unwrap().to_owned())
        .collect();
    sections.sort();
    sections.dedup();
    let mut top = toml::Table::new();
    top.insert("zz_unknown".into(), toml::Value::Integer(1));
    assert_eq!(expected_fields(top), sections);

    for section in SECTIONS {
        let mut table = toml::Table::new();
        for key in keys::keys_of(section.name) {
            let literal = match key.shown {
                Shown::Default(v) | Shown::Unset(v) | Shown::Required(v) => v,
            };
            let value: toml::Table = format!("v = {literal}").parse().unwrap();
            table.insert(key.name.to_owned(), value["v"].clone());
        }
        table.insert("zz_unknown".into(), toml::Value::Integer(1));
        let mut root = toml::Table::new();
        let mut parts: Vec<&str> = section.name.split('.').collect();
        let last = parts.pop().unwrap();
        let mut inner = toml::Table::new();
        inner.insert(last.to_owned(), toml::Value::Table(table));
        for part in parts.iter().rev() {
            let mut outer = toml::Table::new();
            outer.insert((*part).to_owned(), toml::Value::Table(inner));
            inner = outer;
        }
        root.extend(inner);
        let mut keys: Vec<String> = keys::keys_of(section.name)
            .map(|k| k.name.to_owned())
            .collect();
        keys.sort();
        assert_eq!(expected_fields(root), keys, "section [{}]", section.name);
    }
}

#[test]
fn overlay_var_names() {
    let aws = keys::key("providers.aws_secrets_manager", "enabled").unwrap();
    assert_eq!(
        aws.env_var(),
        "COFFER_PROVIDERS__AWS_SECRETS_MANAGER__ENABLED"
    );
    assert_eq!(
        keys::key("database", "url").unwrap().env_var(),
        "COFFER_DATABASE__URL"
    );
    assert!(keys::is_overlay_var("COFFER_LOG__FORMAT"));
    assert!(!keys::is_overlay_var("COFFER_DATABASE_URL"));
    assert!(!keys::is_overlay_var("OTHER__VAR"));
    for key in KEYS {
        assert!(keys::section(key.section).is_some(), "{}", key.path());
        assert_eq!(
            keys::key_for_env(&key.env_var()).map(Key::path),
            Some(key.path())
        );
    }
}

#[test]
fn the_example_means_the_defaults_and_shows_every_key() {
    let example = crate::config_cmd::example();
    for key in KEYS {
        assert!(
            example.contains(&format!("{} = ", key.name)) && example.contains(&key.env_var()),
            "{} missing from the example",
            key.path()
        );
    }
    let config = load(&example, &[]).unwrap();
    let defaults = Config::default();
    assert_eq!(config.server, defaults.server);
    assert!(config.tls.is_none() && config.authz.is_none());
    assert!(config.database.url.is_none());
    assert_eq!(config.database.pool_size, defaults.database.pool_size);
    assert_eq!(config.database.auto_migrate, defaults.database.auto_migrate);
    assert_eq!(config.keys, defaults.keys);
    assert_eq!(config.log, defaults.log);
    assert_eq!(config.telemetry, defaults.telemetry);
    assert_eq!(config.metrics, defaults.metrics);
    assert_eq!(config.providers, defaults.providers);

    // Every commented-out setting is valid once uncommented (all but
    // keyring_env, which excludes keyring_file).
    let uncommented: String = example
        .lines()
        .filter(|line| !line.starts_with("#keyring_env"))
        .map(|line| {
            let is_setting = line
                .strip_prefix('#')
                .is_some_and(|rest| rest.starts_with(|c: char| c == '[' || c.is_ascii_lowercase()));
            let line = if is_setting { &line[1..] } else { line };
            format!("{line}\n")
        })
        .collect();
    let config = load(&uncommented, &[]).unwrap();
    assert!(config.tls.is_some() && config.authz.is_some());
    assert!(config.database.url.is_some());
    assert!(config.telemetry.otlp_endpoint.is_some());
    assert!(config.metrics.listen.is_some() && config.server.health_listen.is_some());
}

#[test]
fn limits_are_off_by_default_and_bound_providers() {
    let config = load("", &[]).unwrap();
    let limits = config.limits.rate_limits().unwrap();
    assert!(!limits.is_enabled());
    let providers = config.limits.provider_limits();
    assert_eq!(providers.concurrency_per_vault, Some(64));
    assert_eq!(providers.queue_timeout, Duration::from_millis(100));
}

#[test]
fn limits_come_from_file_env_and_the_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = dir.path().join("limits.toml");
    std::fs::write(
        &overrides,
        r#"
[[principal]]
id = "spiffe://corp/batch"
requests_per_second = 500.0
burst = 1000

[[principal]]
id = "spiffe://corp/slow"
requests_per_second = 0.5
"#,
    )
    .unwrap();
    let text = format!(
        "[limits]\nrequests_per_second = 2.5\nprincipal_overrides_file = {:?}\nprovider_queue_timeout_ms = 250",
        overrides.display().to_string()
    );
    let config = load(
        &text,
        &[("COFFER_LIMITS__PROVIDER_CONCURRENCY_PER_VAULT", "8")],
    )
    .unwrap();
    let limits = config.limits.rate_limits().unwrap();
    // An unset burst is the rate rounded up (at least 1).
    let default = limits.default.unwrap();
    assert_eq!((default.per_second(), default.burst()), (2.5, 3));
    let batch = limits.rate_for("spiffe://corp/batch").unwrap();
    assert_eq!((batch.per_second(), batch.burst()), (500.0, 1000));
    let slow = limits.rate_for("spiffe://corp/slow").unwrap();
    assert_eq!((slow.per_second(), slow.burst()), (0.5, 1));
    assert_eq!(limits.rate_for("anyone-else"), Some(default));
    let providers = config.limits.provider_limits();
    assert_eq!(providers.concurrency_per_vault, Some(8));
    assert_eq!(providers.queue_timeout, Duration::from_millis(250));

    // A bad overrides file fails the start, naming the file.
    std::fs::write(
        &overrides,
        "[[principal]]\nid = \"a\"\nrequests_per_second = 0.0\n",
    )
    .unwrap();
    let err = format!("{:#}", config.limits.rate_limits().unwrap_err());
    assert!(
        err.contains("limits.toml") && err.contains("must be positive"),
        "{err}"
    );
    std::fs::write(
        &overrides,
        "[[principal]]\nid = \"a\"\nrequests_per_second = 1.0\n[[principal]]\nid = \"a\"\nrequests_per_second = 2.0\n",
    )
    .unwrap();
    let err = format!("{:#}", config.limits.rate_limits().unwrap_err());
    assert!(err.contains("listed twice"), "{err}");
    std::fs::write(&overrides, "[[principal]]\nid = \"a\"\nrate = 1.0\n").unwrap();
    let err = format!("{:#}", config.limits.rate_limits().unwrap_err());
    assert!(
        err.contains("parsing limits.principal_overrides_file"),
        "{err}"
    );
}

#[test]
fn limit_values_are_checked() {
    error(
        "[limits]\nrequests_per_second = 0.0",
        &[],
        &[FILE, "limits.requests_per_second must be 0.001 to 1000000"],
    );
    error(
        "[limits]\nburst = 10",
        &[],
        &["limits.burst needs limits.requests_per_second"],
    );
    error(
        "[limits]\nrequests_per_second = 1.0\nburst = 0",
        &[],
        &["limits.burst must be 1 to 1000000"],
    );
    error(
        "",
        &[("COFFER_LIMITS__PROVIDER_CONCURRENCY_PER_VAULT", "0")],
        &[
            "COFFER_LIMITS__PROVIDER_CONCURRENCY_PER_VAULT",
            "must be 1 to 100000",
        ],
    );
    error(
        "[limits]\nprovider_queue_timeout_ms = 60001",
        &[],
        &["limits.provider_queue_timeout_ms must be 0 to 60000"],
    );
}

#[test]
fn the_statement_timeout_reaches_the_store_and_zero_turns_it_off() {
    let config = Config::from_sources(None, &[]).unwrap();
    assert_eq!(
        config.database.store_options().statement_timeout,
        std::time::Duration::from_secs(5)
    );
    let config = load(
        "[database]\nstatement_timeout_ms = 250",
        &[("COFFER_DATABASE__POOL_SIZE", "3")],
    )
    .unwrap();
    let options = config.database.store_options();
    assert_eq!(
        options.statement_timeout,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(options.max_connections, 3);
    let config = load("", &[("COFFER_DATABASE__STATEMENT_TIMEOUT_MS", "0")]).unwrap();
    assert!(config.database.store_options().statement_timeout.is_zero());
    error(
        "[database]\nstatement_timeout_ms = -1",
        &[],
        &[FILE, "database.statement_timeout_ms"],
    );
}
