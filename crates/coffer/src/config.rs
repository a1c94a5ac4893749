//! The server's configuration: one TOML file plus an environment overlay,
//! `COFFER_<SECTION>__<KEY>` (`COFFER_DATABASE__URL`,
//! `COFFER_PROVIDERS__AWS_SECRETS_MANAGER__ENABLED`), applied in the order
//! defaults → file → env and validated before anything starts. Unknown keys
//! are errors that name the key and the file or env var; so is an overlay var
//! that names no key. Relative paths in the file resolve against the file's
//! directory, so a config works from any working directory (paths from env
//! vars stay as given). Values that can hold a credential are `SecretString`s
//! and no message repeats them.
//!
//! [`keys`] lists every key; [`sources`] merges file and env; [`rules`]
//! checks what types cannot; this module holds the typed result. Command-line flags of
//! `coffer serve` and their single-underscore env vars (`COFFER_LISTEN`,
//! `COFFER_DATABASE_URL`) still override the merged result.

pub(crate) mod keys;
mod rules;
mod sources;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use coffer_core::authz::Role;
use coffer_providers::registry::ProviderLimits;
use coffer_server::app::{AuditWriterOptions, MetadataCacheOptions, ValueCacheOptions};
use coffer_server::{Rate, RateLimits};
use secrecy::SecretString;
use serde::Deserialize;

use self::sources::{Merged, Origin};

/// The default env var for `[keys] keyring_env`.
pub(crate) const DEFAULT_KEYRING_ENV: &str = "COFFER_KEYRING";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) server: ServerSection,
    pub(crate) tls: Option<TlsSection>,
    pub(crate) authz: Option<AuthzSection>,
    pub(crate) database: DatabaseSection,
    pub(crate) keys: KeysSection,
    pub(crate) log: LogSection,
    pub(crate) telemetry: TelemetrySection,
    pub(crate) metrics: MetricsSection,
    pub(crate) cache: CacheSection,
    pub(crate) audit: AuditSection,
    pub(crate) limits: LimitsSection,
    pub(crate) providers: ProvidersSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerSection {
    /// `None`: `--listen`, else 127.0.0.1:50051.
    pub(crate) listen: Option<SocketAddr>,
    /// Plaintext, grpc.health.v1 only, for probes without a client certificate.
    pub(crate) health_listen: Option<SocketAddr>,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_response_bytes: usize,
    pub(crate) request_timeout_secs: u64,
    pub(crate) shutdown_grace_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: None,
            health_listen: None,
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 20,
        }
    }
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DatabaseSection {
    /// `sqlite://PATH` or `postgres://…`; may carry a password.
    pub(crate) url: Option<SecretString>,
    pub(crate) pool_size: u32,
    pub(crate) auto_migrate: bool,
    /// PostgreSQL's per-statement limit in milliseconds; 0 turns it off.
    pub(crate) statement_timeout_ms: u64,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        DatabaseSection {
            url: None,
            pool_size: 10,
            auto_migrate: true,
            statement_timeout_ms: 5000,
        }
    }
}

impl DatabaseSection {
    /// The store's pool and timeout settings from this section.
    pub(crate) fn store_options(&self) -> coffer_store::StoreOptions {
        coffer_store::StoreOptions {
            max_connections: self.pool_size,
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            ..coffer_store::StoreOptions::default()
        }
    }
}

/// Where the keyring comes from: at most one of the two is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KeysSection {
    pub(crate) keyring_file: Option<PathBuf>,
    /// The name of the env var holding the keyring JSON (not the JSON).
    pub(crate) keyring_env: Option<String>,
}

impl KeysSection {
    /// The env var to read the keyring from when it is set.
    pub(crate) fn keyring_env_name(&self) -> &str {
        self.keyring_env.as_deref().unwrap_or(DEFAULT_KEYRING_ENV)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSection {
    /// A `tracing_subscriber::EnvFilter` directive.
    pub(crate) level: String,
    pub(crate) format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".to_owned(),
            format: LogFormat::Pretty,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Json,
    #[default]
    Pretty,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TelemetrySection {
    /// An http(s) URL of an OTLP/gRPC collector; `None`: no export.
    pub(crate) otlp_endpoint: Option<String>,
    pub(crate) service_name: String,
    pub(crate) sample_ratio: f64,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            service_name: "coffer".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsSection {
    /// Where `/metrics` is served; `None`: no metrics listener.
    pub(crate) listen: Option<SocketAddr>,
}

/// The resolve path's caches (DESIGN §8, docs/PERFORMANCE.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CacheSection {
    pub(crate) values_enabled: bool,
    pub(crate) values_max_bytes: usize,
    pub(crate) metadata_enabled: bool,
    pub(crate) metadata_ttl_ms: u64,
    pub(crate) metadata_max_bytes: usize,
}

impl Default for CacheSection {
    fn default() -> Self {
        let values = ValueCacheOptions::default();
        let metadata = MetadataCacheOptions::default();
        CacheSection {
            values_enabled: values.enabled,
            values_max_bytes: values.max_bytes,
            metadata_enabled: metadata.enabled,
            metadata_ttl_ms: u64::try_from(metadata.ttl.as_millis()).unwrap_or(u64::MAX),
            metadata_max_bytes: metadata.max_bytes,
        }
    }
}

impl CacheSection {
    pub(crate) fn value_cache(&self) -> ValueCacheOptions {
        ValueCacheOptions {
            enabled: self.values_enabled,
            max_bytes: self.values_max_bytes,
        }
    }

    pub(crate) fn metadata_cache(&self) -> MetadataCacheOptions {
        MetadataCacheOptions {
            enabled: self.metadata_enabled,
            ttl: Duration::from_millis(self.metadata_ttl_ms),
            max_bytes: self.metadata_max_bytes,
        }
    }
}

/// The group-commit writer of resolve audit events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuditSection {
    pub(crate) max_batch: usize,
    pub(crate) max_delay_us: u64,
    pub(crate) queue: usize,
}

impl Default for AuditSection {
    fn default() -> Self {
        let options = AuditWriterOptions::default();
        AuditSection {
            max_batch: options.max_batch,
            max_delay_us: u64::try_from(options.max_delay.as_micros()).unwrap_or(u64::MAX),
            queue: options.queue,
        }
    }
}

impl AuditSection {
    pub(crate) fn writer(&self) -> AuditWriterOptions {
        AuditWriterOptions {
            max_batch: self.max_batch,
            max_delay: Duration::from_micros(self.max_delay_us),
            queue: self.queue,
        }
    }
}

/// `[limits]`: per-principal request rates and the bound on concurrent
/// provider calls per vault (docs/SECURITY.md "Rate limits").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsSection {
    /// Every principal's sustained rate; `None`: no default limit.
    pub(crate) requests_per_second: Option<f64>,
    /// `None`: the rate rounded up.
    pub(crate) burst: Option<u32>,
    /// Per-principal and per-role rates that replace the default (see
    /// [`RateOverrides`]). The key keeps its first name although the file
    /// now holds role rates too.
    pub(crate) principal_overrides_file: Option<PathBuf>,
    pub(crate) provider_concurrency_per_vault: u32,
    pub(crate) provider_queue_timeout_ms: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let providers = ProviderLimits::default();
        LimitsSection {
            requests_per_second: None,
            burst: None,
            principal_overrides_file: None,
            provider_concurrency_per_vault: providers
                .concurrency_per_vault
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(u32::MAX),
            provider_queue_timeout_ms: u64::try_from(providers.queue_timeout.as_millis())
                .unwrap_or(u64::MAX),
        }
    }
}

/// The overrides file (`limits.principal_overrides_file`):
/// `[[principal]]` tables of `id`, `requests_per_second` and optional
/// `burst`, and `[[role]]` tables of `name` (a role of the policy),
/// `requests_per_second` and optional `burst`. A principal's own entry wins
/// over its roles' rates, which win over the default
/// (`coffer_server::limits`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateOverrides {
    #[serde(default)]
    principal: Vec<RateOverride>,
    #[serde(default)]
    role: Vec<RoleRate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateOverride {
    id: String,
    requests_per_second: f64,
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleRate {
    /// An unknown role name fails the parse, naming the roles there are.
    name: Role,
    requests_per_second: f64,
    burst: Option<u32>,
}

/// A burst left unset: the rate rounded up, at least 1.
fn default_burst(per_second: f64) -> u32 {
    let ceil = per_second.ceil();
    if ceil >= f64::from(u32::MAX) {
        u32::MAX
    } else if ceil >= 1.0 {
        ceil as u32
    } else {
        1
    }
}

impl LimitsSection {
    /// The rate limits: the default rate, and the principal and role rates
    /// of the overrides file read now.
    pub(crate) fn rate_limits(&self) -> anyhow::Result<RateLimits> {
        let rate = |per_second: f64, burst: Option<u32>| {
            Rate::new(
                per_second,
                burst.unwrap_or_else(|| default_burst(per_second)),
            )
        };
        let default = match self.requests_per_second {
            Some(per_second) => Some(rate(per_second, self.burst).ok_or_else(|| {
                anyhow::anyhow!("limits.requests_per_second and limits.burst must be positive")
            })?),
            None => None,
        };
        let mut principals = std::collections::HashMap::new();
        let mut roles = std::collections::BTreeMap::new();
        if let Some(path) = &self.principal_overrides_file {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("reading limits.principal_overrides_file {}", path.display())
            })?;
            let file: RateOverrides = toml::from_str(&text).with_context(|| {
                format!("parsing limits.principal_overrides_file {}", path.display())
            })?;
            for entry in file.principal {
                let parsed = rate(entry.requests_per_second, entry.burst).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: the rate of principal {:?} must be positive, with a burst of at least 1",
                        path.display(),
                        entry.id
                    )
                })?;
                if principals.insert(entry.id.clone(), parsed).is_some() {
                    anyhow::bail!(
                        "{}: principal {:?} is listed twice",
                        path.display(),
                        entry.id
                    );
                }
            }
            for entry in file.role {
                let parsed = rate(entry.requests_per_second, entry.burst).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: the rate of role {:?} must be positive, with a burst of at least 1",
                        path.display(),
                        entry.name.as_str()
                    )
                })?;
                if roles.insert(entry.name, parsed).is_some() {
                    anyhow::bail!(
                        "{}: role {:?} is listed twice",
                        path.display(),
                        entry.name.as_str()
                    );
                }
            }
        }
        Ok(RateLimits {
            default,
            principals,
            roles,
            ..RateLimits::default()
        })
    }

    pub(crate) fn provider_limits(&self) -> ProviderLimits {
        ProviderLimits {
            concurrency_per_vault: usize::try_from(self.provider_concurrency_per_vault).ok(),
            queue_timeout: Duration::from_millis(self.provider_queue_timeout_ms),
        }
    }
}

/// Which optional providers this deployment offers, and their client
/// settings. The built-in `local_encrypted` provider is always on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ProvidersSection {
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

/// Everything wrong with a configuration, one line per problem, each naming
/// the key and the file or env var it came from.
#[derive(Debug)]
pub(crate) struct Invalid(pub(crate) Vec<String>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the configuration is not valid:")?;
        for problem in &self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

impl Config {
    /// Defaults, then the file (when given), then the process's overlay env
    /// vars.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let env = overlay_env()?;
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                Config::from_sources(Some((&text, path)), &env)
            }
            None => Config::from_sources(None, &env),
        }
    }

    /// Defaults, then `file` (its text, and its path for messages and as the
    /// base of relative paths), then `env`. The process env is not read.
    pub(crate) fn from_sources(
        file: Option<(&str, &Path)>,
        env: &[(String, String)],
    ) -> anyhow::Result<Config> {
        let mut merged = Merged::default();
        if let Some((text, path)) = file {
            merged
                .add_file(text, path)
                .map_err(|message| Invalid(vec![message]))?;
        }
        merged.add_env(env);
        merged.check_required();
        if !merged.problems.is_empty() {
            return Err(Invalid(merged.problems).into());
        }
        let mut config: Config =
            toml::Value::Table(merged.table)
                .try_into()
                .map_err(|err: toml::de::Error| {
                    Invalid(vec![format!("config: {}", err.message().trim_end())])
                })?;
        let problems: Vec<String> = config
            .problems()
            .into_iter()
            .map(|p| {
                let mut origins: Vec<&str> = Vec::new();
                for key in &p.keys {
                    if let Some(origin) = merged.origins.get(*key).map(Origin::label)
                        && !origins.contains(&origin)
                    {
                        origins.push(origin);
                    }
                }
                let origin = if origins.is_empty() {
                    "config".to_owned()
                } else {
                    origins.join(" and ")
                };
                format!("{origin}: {}", p.message)
            })
            .collect();
        if !problems.is_empty() {
            return Err(Invalid(problems).into());
        }
        if let Some((_, path)) = file {
            let base = path.parent().unwrap_or_else(|| Path::new("."));
            config.resolve_paths(base, |key| {
                matches!(merged.origins.get(key), Some(Origin::File(_)))
            });
        }
        Ok(config)
    }

    /// Makes relative paths that came from the file relative to its directory.
    fn resolve_paths(&mut self, base: &Path, from_file: impl Fn(&str) -> bool) {
        let resolve = |key: &str, path: &mut PathBuf| {
            if from_file(key) && path.is_relative() {
                *path = base.join(&*path);
            }
        };
        if let Some(tls) = &mut self.tls {
            resolve("tls.cert_file", &mut tls.cert_file);
            resolve("tls.key_file", &mut tls.key_file);
            resolve("tls.client_ca_file", &mut tls.client_ca_file);
        }
        if let Some(authz) = &mut self.authz {
            resolve("authz.policy_file", &mut authz.policy_file);
        }
        if let Some(keyring) = &mut self.keys.keyring_file {
            resolve("keys.keyring_file", keyring);
        }
    }
}

/// The process's overlay env vars (`COFFER_…__…`); a non-UTF-8 value of one
/// is an error, other vars are not looked at.
fn overlay_env() -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| keys::is_overlay_var(n)) else {
            continue;
        };
        let Ok(value) = value.into_string() else {
            anyhow::bail!("env var {name} is not valid UTF-8");
        };
        vars.push((name.to_owned(), value));
    }
    Ok(vars)
}

/// The `[[role]]` tables of the overrides file. (The rest of the config's
/// tests live in `config/tests.rs`.)
#[cfg(test)]
mod role_rate_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// `[limits]` with a default of 2/s and `overrides` as the overrides
    /// file; the directory must outlive the section.
    fn limits_with(overrides: &str) -> (tempfile::TempDir, LimitsSection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.toml");
        std::fs::write(&path, overrides).unwrap();
        let limits = LimitsSection {
            requests_per_second: Some(2.0),
            principal_overrides_file: Some(path),
            ..LimitsSection::default()
        };
        (dir, limits)
    }

    fn error(overrides: &str) -> String {
        let (_dir, limits) = limits_with(overrides);
        let err = format!("{:#}", limits.rate_limits().unwrap_err());
        assert!(err.contains("rates.toml"), "the file is not named: {err}");
        err
    }

    #[test]
    fn config_role_tables_are_parsed_next_to_principals() {
        let (_dir, limits) = limits_with(
            r#"
[[principal]]
id = "spiffe://corp/batch"
requests_per_second = 500.0

[[role]]
name = "resolver"
requests_per_second = 50.0
burst = 200

[[role]]
name = "viewer"
requests_per_second = 0.5
"#,
        );
        let limits = limits.rate_limits().unwrap();
        assert!(limits.is_enabled());
        assert_eq!(limits.roles.len(), 2);
        let resolver = limits.roles[&Role::Resolver];
        assert_eq!((resolver.per_second(), resolver.burst()), (50.0, 200));
        // An unset burst is the rate rounded up, at least 1, as for principals.
        let viewer = limits.roles[&Role::Viewer];
        assert_eq!((viewer.per_second(), viewer.burst()), (0.5, 1));
        assert!(!limits.roles.contains_key(&Role::Admin));
        // Own entry, then the most generous role, then the default.
        assert_eq!(
            limits
                .rate_with_roles("spiffe://corp/batch", [Role::Resolver])
                .map(|r| r.per_second()),
            Some(500.0)
        );
        assert_eq!(
            limits.rate_with_roles("ci", [Role::Viewer, Role::Resolver]),
            Some(resolver)
        );
        assert_eq!(limits.rate_with_roles("ci", [Role::Admin]), limits.default);

        // A file of role tables alone is enough to enable limits.
        let (_dir, mut alone) =
            limits_with("[[role]]\nname = \"admin\"\nrequests_per_second = 9\n");
        alone.requests_per_second = None;
        let alone = alone.rate_limits().unwrap();
        assert!(alone.default.is_none() && alone.principals.is_empty());
        assert!(alone.is_enabled());
    }

    #[test]
    fn config_unknown_role_names_are_rejected() {
        let err = error("[[role]]\nname = \"root\"\nrequests_per_second = 1.0\n");
        assert!(
            err.contains("parsing limits.principal_overrides_file"),
            "{err}"
        );
        assert!(err.contains("root") && err.contains("resolver"), "{err}");
        // Role names are lowercase, exactly as in the policy file.
        error("[[role]]\nname = \"Admin\"\nrequests_per_second = 1.0\n");
        // Principal keys are not role keys.
        error("[[role]]\nid = \"admin\"\nrequests_per_second = 1.0\n");
    }

    #[test]
    fn config_duplicate_roles_are_rejected() {
        let err = error(
            "[[role]]\nname = \"viewer\"\nrequests_per_second = 1.0\n\
             [[role]]\nname = \"viewer\"\nrequests_per_second = 2.0\n",
        );
        assert!(err.contains("role \"viewer\" is listed twice"), "{err}");
        // The same name as a principal id and a role is no clash.
        let (_dir, limits) = limits_with(
            "[[principal]]\nid = \"viewer\"\nrequests_per_second = 1.0\n\
             [[role]]\nname = \"viewer\"\nrequests_per_second = 2.0\n",
        );
        limits.rate_limits().unwrap();
    }

    #[test]
    fn config_bad_role_rates_are_rejected() {
        for bad in [
            "requests_per_second = 0.0",
            "requests_per_second = -1.0",
            "requests_per_second = nan",
            "requests_per_second = inf",
            "requests_per_second = 1.0\nburst = 0",
        ] {
            let err = error(&format!("[[role]]\nname = \"editor\"\n{bad}\n"));
            assert!(
                err.contains("the rate of role \"editor\" must be positive"),
                "{bad}: {err}"
            );
        }
        // A rate is required.
        let err = error("[[role]]\nname = \"editor\"\nburst = 3\n");
        assert!(err.contains("requests_per_second"), "{err}");
    }
}
