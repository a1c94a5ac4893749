//! The files in `deploy/` against the code: every Coffer config there passes
//! `coffer config check` (the compose one with real certificates laid out as
//! the container sees them, the Kubernetes one with its TLS files allowed to
//! be missing, as they are mounted only in the pod), every YAML file parses,
//! and the ports, paths, env vars, Secret names and grace periods that the
//! Dockerfile, compose.yaml and the manifests repeat agree with the configs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml::Value as Yaml;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(path: impl AsRef<Path>) -> String {
    let path = deploy().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn toml(path: &str) -> toml::Table {
    read(path).parse().unwrap()
}

/// Every document of a YAML file.
fn yaml(path: &str) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn one_yaml(path: &str) -> Yaml {
    let mut docs = yaml(path);
    assert_eq!(docs.len(), 1, "{path}");
    docs.remove(0)
}

/// The binary with no `COFFER_*` variables from the test's environment.
fn coffer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COFFER_") {
            command.env_remove(name);
        }
    }
    command
}

fn run_ok(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn addr(config: &toml::Table, section: &str, key: &str) -> SocketAddr {
    config[section][key].as_str().unwrap().parse().unwrap()
}

fn port(config: &toml::Table, section: &str, key: &str) -> u16 {
    addr(config, section, key).port()
}

fn int(config: &toml::Table, section: &str, key: &str) -> i64 {
    config[section][key].as_integer().unwrap()
}

fn s(value: &Yaml) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}

/// The JSON-array arguments of the Dockerfile instruction `name` (its last
/// occurrence, continuation lines joined).
fn dockerfile_exec(dockerfile: &str, name: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .rev()
        .find(|line| line.starts_with(name))
        .unwrap_or_else(|| panic!("no {name}"));
    let array = &line[line.find('[').unwrap()..=line.rfind(']').unwrap()];
    serde_json::from_str(array).unwrap()
}

#[test]
fn every_toml_file_in_deploy_is_checked_here() {
    let mut found = Vec::new();
    let mut dirs = vec![deploy()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                found.push(path.strip_prefix(deploy()).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    assert_eq!(
        found,
        [
            "compose/coffer.toml",
            "compose/policy.toml",
            "k8s/coffer.toml",
            "k8s/policy.toml"
        ],
        "a new config in deploy/ needs its check in this file"
    );
}

#[test]
fn the_compose_config_checks_with_its_files_in_place() {
    // The container's /etc/coffer: both files, and certs/ from `coffer dev certs`.
    let dir = tempfile::tempdir().unwrap();
    for file in ["coffer.toml", "policy.toml"] {
        std::fs::copy(deploy().join("compose").join(file), dir.path().join(file)).unwrap();
    }
    let policy = toml("compose/policy.toml");
    let principal = policy["grant"][0]["principal"].as_str().unwrap();
    run_ok(
        coffer()
            .args(["dev", "certs", "--principal", principal, "--out"])
            .arg(dir.path().join("certs")),
    );
    let compose = one_yaml("compose.yaml");
    let env = &compose["services"]["coffer"]["environment"];
    let out = run_ok(
        coffer()
            .args(["config", "check"])
            .arg(dir.path().join("coffer.toml"))
            // The overlay vars compose.yaml sets, with a value of their kind.
            .env(
                "COFFER_DATABASE__URL",
                s(&env["COFFER_DATABASE__URL"]).replace("${POSTGRES_PASSWORD}", "pw"),
            ),
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
}

#[test]
fn the_kubernetes_config_checks_but_for_the_tls_files_of_the_pod() {
    let config = deploy().join("k8s/coffer.toml");
    let out = run_ok(
        coffer()
            .args(["config", "check", "--allow-missing-files"])
            .arg(&config)
            .env(
                "COFFER_DATABASE__URL",
                "postgres://coffer:pw@db:5432/coffer",
            ),
    );
    // The policy beside it was found and parsed; only the TLS files were not there.
    let notes = String::from_utf8_lossy(&out.stderr);
    assert_eq!(notes.lines().count(), 3, "{notes}");
    assert!(
        notes.lines().all(|l| l.starts_with("note: tls.")),
        "{notes}"
    );
    // Without the flag the missing files are errors.
    let out = coffer()
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn every_yaml_file_parses() {
    for path in [
        "compose.yaml",
        "compose/otel-collector.yaml",
        "k8s/kustomization.yaml",
        "k8s/namespace.yaml",
        "k8s/serviceaccount.yaml",
        "k8s/certificates.yaml",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "k8s/pdb.yaml",
        "k8s/secrets.example.yaml",
    ] {
        for doc in yaml(path) {
            if path.starts_with("k8s/") {
                assert!(
                    doc["apiVersion"].is_string() && doc["kind"].is_string(),
                    "{path}"
                );
            }
        }
    }
}

#[test]
fn the_image_and_compose_agree_with_the_compose_config() {
    let dockerfile = read("Dockerfile");
    let config = toml("compose/coffer.toml");
    let health = dockerfile_exec(&dockerfile, "HEALTHCHECK");
    assert_eq!(health[..2], ["/usr/local/bin/coffer", "health"]);
    let server = &health[health.iter().position(|a| a == "--server").unwrap() + 1];
    assert_eq!(
        *server,
        format!(
            "http://127.0.0.1:{}",
            port(&config, "server", "health_listen")
        ),
        "the HEALTHCHECK calls the plaintext health listener"
    );
    let expose: Vec<u16> = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    for (section, key) in [
        ("server", "listen"),
        ("server", "health_listen"),
        ("metrics", "listen"),
    ] {
        assert!(
            expose.contains(&port(&config, section, key)),
            "{section}.{key}"
        );
    }
    assert!(dockerfile.contains("\nUSER 65532:65532\n"), "non-root");
    let image_cmd = dockerfile_exec(&dockerfile, "CMD");

    let compose = one_yaml("compose.yaml");
    let coffer = &compose["services"]["coffer"];
    let command: Vec<&str> = coffer["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert_eq!(
        command, image_cmd,
        "compose runs the image's default command"
    );
    let config_path = Path::new(command[2]);
    let mounts: Vec<(&str, &str)> = coffer["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| {
            let mut parts = s(v).split(':');
            (parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    let base = config_path.parent().unwrap();
    let policy = config["authz"]["policy_file"].as_str().unwrap();
    let certs = Path::new(config["tls"]["cert_file"].as_str().unwrap())
        .parent()
        .unwrap();
    for (source, target) in [
        ("./compose/coffer.toml", config_path.to_path_buf()),
        ("./compose/policy.toml", base.join(policy)),
        ("./compose/certs", base.join(certs)),
    ] {
        assert!(
            mounts.contains(&(source, target.to_str().unwrap())),
            "{source} must be mounted at {}: {mounts:?}",
            target.display()
        );
    }
    let published: Vec<&str> = coffer["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    for (section, key) in [("server", "listen"), ("metrics", "listen")] {
        let p = port(&config, section, key);
        assert!(
            published.contains(&format!("127.0.0.1:{p}:{p}").as_str()),
            "{published:?}"
        );
    }
    let env = coffer["environment"].as_mapping().unwrap();
    assert!(env.contains_key("COFFER_DATABASE__URL"));
    assert!(
        env.contains_key("COFFER_KEYRING"),
        "the default [keys] keyring_env"
    );
    assert!(config.get("keys").is_none());
    let grace: i64 = s(&coffer["stop_grace_period"])
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(grace > int(&config, "server", "shutdown_grace_secs"));

    // The collector receives what the config sends and scrapes what it serves.
    let otlp: SocketAddr = "0.0.0.0:4317".parse().unwrap();
    let collector = one_yaml("compose/otel-collector.yaml");
    let receivers = &collector["receivers"];
    assert_eq!(
        s(&receivers["otlp"]["protocols"]["grpc"]["endpoint"]),
        otlp.to_string()
    );
    assert_eq!(
        config["telemetry"]["otlp_endpoint"].as_str().unwrap(),
        format!("http://otel-collector:{}", otlp.port())
    );
    assert!(compose["services"]["otel-collector"].is_mapping());
    let target =
        &receivers["prometheus"]["config"]["scrape_configs"][0]["static_configs"][0]["targets"][0];
    assert_eq!(
        s(target),
        format!("coffer:{}", port(&config, "metrics", "listen"))
    );
    for pipeline in ["traces", "metrics"] {
        assert!(collector["service"]["pipelines"][pipeline]["exporters"].is_sequence());
    }
}

#[test]
fn the_kubernetes_manifests_agree_with_the_kubernetes_config() {
    let config = toml("k8s/coffer.toml");
    let kustomization = one_yaml("k8s/kustomization.yaml");
    let namespace = s(&kustomization["namespace"]);
    let resources: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert!(
        !resources.contains(&"secrets.example.yaml"),
        "never applied from git"
    );
    let generated = &kustomization["configMapGenerator"][0];
    let files: Vec<&str> = generated["files"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert_eq!(files, ["coffer.toml", "policy.toml"]);

    let deployment = one_yaml("k8s/deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert_eq!(args[..2], ["serve", "--config"]);
    let config_path = Path::new(args[2]);
    assert_eq!(config_path.file_name().unwrap(), "coffer.toml");
    let policy = config["authz"]["policy_file"].as_str().unwrap();
    assert_eq!(policy, "policy.toml", "beside coffer.toml in the ConfigMap");

    let mount = |name: &str| {
        container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| s(&m["name"]) == name)
            .map(|m| s(&m["mountPath"]).to_owned())
            .unwrap_or_else(|| panic!("no mount {name}"))
    };
    let volume = |name: &str| {
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| s(&v["name"]) == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    assert_eq!(Path::new(&mount("config")), config_path.parent().unwrap());
    assert_eq!(
        s(&volume("config")["configMap"]["name"]),
        s(&generated["name"])
    );

    // TLS: cert-manager's Secret, with its file names, where the config looks.
    let certificates = yaml("k8s/certificates.yaml");
    let server_cert = certificates
        .iter()
        .find(|d| s(&d["metadata"]["name"]) == "coffer-server")
        .unwrap();
    let tls = volume("tls");
    assert_eq!(
        s(&tls["secret"]["secretName"]),
        s(&server_cert["spec"]["secretName"])
    );
    for (key, file) in [
        ("cert_file", "tls.crt"),
        ("key_file", "tls.key"),
        ("client_ca_file", "ca.crt"),
    ] {
        assert_eq!(
            Path::new(config["tls"][key].as_str().unwrap()),
            Path::new(&mount("tls")).join(file),
            "tls.{key}"
        );
    }
    let service = one_yaml("k8s/service.yaml");
    let dns: Vec<&str> = server_cert["spec"]["dnsNames"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    let service_name = s(&service["metadata"]["name"]);
    assert!(
        dns.contains(&format!("{service_name}.{namespace}.svc").as_str()),
        "{dns:?}"
    );

    // Ports, probes and the Service.
    let container_port = |name: &str| {
        container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| s(&p["name"]) == name)
            .map(|p| u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap())
            .unwrap_or_else(|| panic!("no port {name}"))
    };
    assert_eq!(container_port("grpc"), port(&config, "server", "listen"));
    assert_eq!(
        container_port("health"),
        port(&config, "server", "health_listen")
    );
    assert_eq!(
        container_port("metrics"),
        port(&config, "metrics", "listen")
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["grpc"]["port"].as_u64(),
            Some(u64::from(container_port("health"))),
            "{probe} calls the plaintext health listener"
        );
    }
    assert_eq!(&service["spec"]["selector"], labels);
    for p in service["spec"]["ports"].as_sequence().unwrap() {
        container_port(s(&p["targetPort"]));
    }
    let pdb = one_yaml("k8s/pdb.yaml");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);

    // Secrets through env vars, named as in the example Secrets.
    let secrets = yaml("k8s/secrets.example.yaml");
    let env = container["env"].as_sequence().unwrap();
    let keyring_env = config["keys"]["keyring_env"].as_str().unwrap();
    for var in [keyring_env, "COFFER_DATABASE__URL"] {
        let entry = env
            .iter()
            .find(|e| s(&e["name"]) == var)
            .unwrap_or_else(|| panic!("{var}"));
        let reference = &entry["valueFrom"]["secretKeyRef"];
        let secret = secrets
            .iter()
            .find(|d| d["metadata"]["name"] == reference["name"])
            .unwrap_or_else(|| panic!("no example Secret for {var}"));
        let placeholder = s(&secret["stringData"][s(&reference["key"])]);
        assert!(placeholder.starts_with("REPLACE"), "{placeholder}");
        if var == keyring_env {
            assert!(
                coffer_crypto::Keyring::from_json(placeholder).is_err(),
                "a mistakenly applied placeholder must not pass for a keyring"
            );
        }
    }

    // Shutdown fits in the grace period; the pod runs as the image's user.
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap();
    assert!(grace > pause + int(&config, "server", "shutdown_grace_secs"));
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(65532));
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        s(&one_yaml("k8s/namespace.yaml")["metadata"]["name"]),
        namespace
    );
}
