//! The server's TOML config file (`coffer serve --config FILE`). Unknown keys
//! are rejected; relative paths are resolved against the file's directory so
//! a config works from any working directory. Command-line options and their
//! env vars override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) server: ServerSection,
    pub(crate) tls: Option<TlsSection>,
    pub(crate) authz: Option<AuthzSection>,
    #[serde(default)]
    pub(crate) database: DatabaseSection,
    #[serde(default)]
    pub(crate) keys: KeysSection,
    #[serde(default)]
    pub(crate) providers: ProvidersSection,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    pub(crate) listen: Option<SocketAddr>,
}

/// Mutual TLS: the server's certificate and key, and the CA clients must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSection {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) client_ca_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthzSection {
    pub(crate) policy_file: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatabaseSection {
    /// `sqlite://PATH` or `postgres://…`.
    pub(crate) url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeysSection {
    pub(crate) keyring_file: Option<PathBuf>,
}

/// Which optional providers this deployment offers, and their client
/// settings. The built-in `local_encrypted` provider is always on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProvidersSection {
    #[serde(default)]
    pub(crate) aws_secrets_manager: AwsSection,
}

/// `[providers.aws_secrets_manager]`. Credentials never go here: the server
/// uses the AWS default credential chain (environment, profile, instance or
/// task role). Region and endpoint are per vault.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AwsSection {
    pub(crate) enabled: bool,
    pub(crate) connect_timeout_ms: u64,
    pub(crate) operation_timeout_ms: u64,
    /// Attempts per call, first included (standard retry mode, with backoff).
    pub(crate) max_attempts: u32,
}

impl Default for AwsSection {
    fn default() -> Self {
        AwsSection {
            enabled: true,
            connect_timeout_ms: 3_000,
            operation_timeout_ms: 10_000,
            max_attempts: 3,
        }
    }
}

impl AwsSection {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=60_000).contains(&self.connect_timeout_ms),
            "providers.aws_secrets_manager.connect_timeout_ms must be 1 to 60000"
        );
        anyhow::ensure!(
            (1..=300_000).contains(&self.operation_timeout_ms),
            "providers.aws_secrets_manager.operation_timeout_ms must be 1 to 300000"
        );
        anyhow::ensure!(
            (1..=10).contains(&self.max_attempts),
            "providers.aws_secrets_manager.max_attempts must be 1 to 10"
        );
        Ok(())
    }
}

impl Config {
    /// Reads and parses a config file, resolving its relative paths.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Config::parse(&text, base)
            .with_context(|| format!("config file {} is not valid", path.display()))
    }

    pub(crate) fn parse(text: &str, base: &Path) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text)?;
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut config.tls {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
            resolve(&mut tls.client_ca_file);
        }
        if let Some(authz) = &mut config.authz {
            resolve(&mut authz.policy_file);
        }
        if let Some(keyring) = &mut config.keys.keyring_file {
            resolve(keyring);
        }
        config.providers.aws_secrets_manager.check()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
    fn paths_resolve_against_the_config_directory() {
        let config = Config::parse(FULL, Path::new("/srv/coffer")).unwrap();
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
        assert!(aws.enabled);
        assert_eq!(aws.operation_timeout_ms, 2000);
        assert_eq!(
            aws.connect_timeout_ms, 3000,
            "unset keys keep their default"
        );
    }

    #[test]
    fn provider_settings_are_checked() {
        let base = Path::new(".");
        let err = Config::parse(
            "[providers.aws_secrets_manager]\noperation_timeout_ms = 0",
            base,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("operation_timeout_ms"),
            "{err:#}"
        );
        let err = Config::parse(
            "[providers.aws_secrets_manager]\naws_secret_access_key = \"x\"",
            base,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("aws_secret_access_key"),
            "{err:#}"
        );
        assert!(Config::parse("[providers.gcp]\n", base).is_err());
    }

    #[test]
    fn unknown_keys_and_missing_fields_are_rejected() {
        let base = Path::new(".");
        let err = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nport = 2", base).unwrap_err();
        assert!(format!("{err:#}").contains("port"), "{err:#}");
        assert!(Config::parse("[tls]\ncert_file = \"a\"\nkey_file = \"b\"", base).is_err());
        assert!(Config::parse("[tsl]\n", base).is_err());
        assert_eq!(Config::parse("", base).unwrap(), Config::default());
    }
}
