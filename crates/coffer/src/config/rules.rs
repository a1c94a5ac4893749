//! The rules a merged configuration must follow beyond its types: ranges,
//! formats, and those between keys (keyring file or env, [tls] with
//! [authz], listeners on distinct ports). Each broken rule names its keys,
//! so that the caller can say which file or env var set them.

use secrecy::ExposeSecret;

use super::keys;
use super::{AwsSection, Config, KeysSection, LimitsSection, LogSection, TelemetrySection};

/// A rule broken by the merged values, with the keys involved.
pub(super) struct Problem {
    pub(super) keys: Vec<&'static str>,
    pub(super) message: String,
}

fn problem(key: &'static str, message: impl Into<String>) -> Problem {
    Problem {
        keys: vec![key],
        message: message.into(),
    }
}

impl Config {
    /// The rules on values and between keys.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let server = &self.server;
        for (key, value) in [
            ("server.max_request_bytes", server.max_request_bytes),
            ("server.max_response_bytes", server.max_response_bytes),
        ] {
            if !(1024..=256 * 1024 * 1024).contains(&value) {
                out.push(problem(key, format!("{key} must be 1024 to 268435456")));
            }
        }
        if !(1..=3600).contains(&server.request_timeout_secs) {
            out.push(problem(
                "server.request_timeout_secs",
                "server.request_timeout_secs must be 1 to 3600",
            ));
        }
        if server.shutdown_grace_secs > 3600 {
            out.push(problem(
                "server.shutdown_grace_secs",
                "server.shutdown_grace_secs must be 0 to 3600",
            ));
        }
        out.extend(self.listener_clashes());
        match (&self.tls, &self.authz) {
            (Some(_), None) => out.push(problem(
                "tls.cert_file",
                "[tls] needs [authz] policy_file: without a policy nobody could call",
            )),
            (None, Some(_)) => out.push(problem(
                "authz.policy_file",
                "[authz] needs [tls]: principals come from client certificates",
            )),
            _ => {}
        }
        if let Some(url) = &self.database.url {
            let url = url.expose_secret();
            // The URL may hold a password: the message never shows it.
            if !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                out.push(problem(
                    "database.url",
                    "database.url must start with sqlite:, postgres:// or postgresql://",
                ));
            }
        }
        if !(1..=1000).contains(&self.database.pool_size) {
            out.push(problem(
                "database.pool_size",
                "database.pool_size must be 1 to 1000",
            ));
        }
        out.extend(self.keys.problems());
        out.extend(self.log.problems());
        out.extend(self.telemetry.problems());
        out.extend(self.cache_and_audit_problems());
        out.extend(self.limits.problems());
        out.extend(self.providers.aws_secrets_manager.problems());
        out
    }

    /// Two listeners on one port would fail at bind; say so before.
    fn listener_clashes(&self) -> Vec<Problem> {
        let listeners = [
            ("server.listen", self.server.listen),
            ("server.health_listen", self.server.health_listen),
            ("metrics.listen", self.metrics.listen),
        ];
        let mut out = Vec::new();
        for (i, (a_key, a)) in listeners.iter().enumerate() {
            for (b_key, b) in &listeners[i + 1..] {
                let (Some(a), Some(b)) = (a, b) else { continue };
                let same_ip =
                    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
                // Port 0 picks a free port each time: no clash.
                if a.port() != 0 && a.port() == b.port() && same_ip {
                    out.push(Problem {
                        keys: vec![a_key, b_key],
                        message: format!("{a_key} and {b_key} both use port {}", a.port()),
                    });
                }
            }
        }
        out
    }
}

/// `key` must lie in `range`.
fn in_range(
    out: &mut Vec<Problem>,
    key: &'static str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) {
    if !range.contains(&value) {
        out.push(problem(
            key,
            format!("{key} must be {} to {}", range.start(), range.end()),
        ));
    }
}

impl Config {
    fn cache_and_audit_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let (cache, audit) = (&self.cache, &self.audit);
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        in_range(
            &mut out,
            "cache.values_max_bytes",
            wide(cache.values_max_bytes),
            65_536..=17_179_869_184,
        );
        in_range(
            &mut out,
            "cache.metadata_ttl_ms",
            cache.metadata_ttl_ms,
            1..=3_600_000,
        );
        in_range(
            &mut out,
            "cache.metadata_max_bytes",
            wide(cache.metadata_max_bytes),
            65_536..=17_179_869_184,
        );
        in_range(
            &mut out,
            "audit.max_batch",
            wide(audit.max_batch),
            1..=10_000,
        );
        in_range(
            &mut out,
            "audit.max_delay_us",
            audit.max_delay_us,
            0..=1_000_000,
        );
        in_range(&mut out, "audit.queue", wide(audit.queue), 1..=1_000_000);
        out
    }
}

impl LimitsSection {
    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Some(rate) = self.requests_per_second
            && !(0.001..=1_000_000.0).contains(&rate)
        {
            out.push(problem(
                "limits.requests_per_second",
                format!("limits.requests_per_second must be 0.001 to 1000000, not {rate}"),
            ));
        }
        if let Some(burst) = self.burst {
            in_range(&mut out, "limits.burst", u64::from(burst), 1..=1_000_000);
            if self.requests_per_second.is_none() {
                out.push(Problem {
                    keys: vec!["limits.burst", "limits.requests_per_second"],
                    message: "limits.burst needs limits.requests_per_second".to_owned(),
                });
            }
        }
        in_range(
            &mut out,
            "limits.provider_concurrency_per_vault",
            u64::from(self.provider_concurrency_per_vault),
            1..=100_000,
        );
        in_range(
            &mut out,
            "limits.provider_queue_timeout_ms",
            self.provider_queue_timeout_ms,
            0..=60_000,
        );
        out
    }
}

impl KeysSection {
    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.keyring_file.is_some() && self.keyring_env.is_some() {
            out.push(Problem {
                keys: vec!["keys.keyring_file", "keys.keyring_env"],
                message: "set keys.keyring_file or keys.keyring_env, not both".to_owned(),
            });
        }
        let name = self.keyring_env_name();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            out.push(problem(
                "keys.keyring_env",
                "keys.keyring_env must be an env var name (letters, digits, _), not its value",
            ));
        } else if keys::is_overlay_var(name) {
            out.push(problem(
                "keys.keyring_env",
                format!("keys.keyring_env {name} would be read as a config key (COFFER_…__…); pick a name without __"),
            ));
        }
        out
    }
}

impl LogSection {
    fn problems(&self) -> Vec<Problem> {
        match tracing_subscriber::EnvFilter::try_new(&self.level) {
            Ok(_) => Vec::new(),
            Err(err) => vec![problem(
                "log.level",
                format!("log.level is not a valid filter directive: {err}"),
            )],
        }
    }
}

impl TelemetrySection {
    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Some(endpoint) = &self.otlp_endpoint {
            let valid = endpoint
                .parse::<tonic::transport::Uri>()
                .ok()
                .and_then(|uri| Some((uri.scheme_str()?.to_owned(), uri.authority()?.clone())))
                .is_some_and(|(scheme, authority)| {
                    matches!(scheme.as_str(), "http" | "https")
                        && !authority.host().is_empty()
                        && !authority.as_str().contains('@')
                });
            if !valid {
                out.push(problem(
                "telemetry.otlp_endpoint",
                    "telemetry.otlp_endpoint must be an http:// or https:// URL with a host and no credentials, e.g. http://otel-collector:4317",
                ));
            }
        }
        if self.service_name.trim().is_empty() || self.service_name.chars().any(char::is_control) {
            out.push(problem(
                "telemetry.service_name",
                "telemetry.service_name must be a non-blank name",
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            out.push(problem(
                "telemetry.sample_ratio",
                format!(
                    "telemetry.sample_ratio must be 0.0 to 1.0, not {}",
                    self.sample_ratio
                ),
            ));
        }
        out
    }
}

impl AwsSection {
    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if !(1..=60_000).contains(&self.connect_timeout_ms) {
            out.push(problem(
                "providers.aws_secrets_manager.connect_timeout_ms",
                "providers.aws_secrets_manager.connect_timeout_ms must be 1 to 60000",
            ));
        }
        if !(1..=300_000).contains(&self.operation_timeout_ms) {
            out.push(problem(
                "providers.aws_secrets_manager.operation_timeout_ms",
                "providers.aws_secrets_manager.operation_timeout_ms must be 1 to 300000",
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            out.push(problem(
                "providers.aws_secrets_manager.max_attempts",
                "providers.aws_secrets_manager.max_attempts must be 1 to 10",
            ));
        }
        out
    }
}
