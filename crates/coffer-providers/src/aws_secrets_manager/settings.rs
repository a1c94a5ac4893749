//! Checks of an AWS vault's settings ([`validate`]) and their defaults.

use crate::config::{AwsSecretsManagerConfig, ConfigViolation};

/// First segment of managed names when the vault sets no `name_prefix`.
pub const DEFAULT_NAME_PREFIX: &str = "coffer";
/// Second segment of managed names when the vault sets no `namespace`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Longest `name_prefix` and `namespace`. With the longest tenant (63) and
/// key (120) a managed name stays far below AWS's 512 characters.
const MAX_SEGMENT_CHARS: usize = 64;
/// AWS's limit on tag values.
const MAX_TAG_VALUE_CHARS: usize = 256;
const MIN_RECOVERY_WINDOW_DAYS: i32 = 7;
const MAX_RECOVERY_WINDOW_DAYS: i32 = 30;

/// Checks every setting; `Ok` carries warnings for an admin.
pub(super) fn validate(
    config: &AwsSecretsManagerConfig,
) -> Result<Vec<String>, Vec<ConfigViolation>> {
    let mut violations = Vec::new();
    let mut warnings = Vec::new();
    let mut refuse = |field: &str, description: String| {
        violations.push(ConfigViolation::new(format!("config.{field}"), description));
    };

    if config.region.is_empty() {
        warnings.push(
            "no region set: the server's default chain (AWS_REGION or its profile) decides, and connecting fails without one"
                .to_owned(),
        );
    } else if !is_region(&config.region) {
        refuse(
            "region",
            "must be an AWS region such as us-east-1 or eu-central-2".to_owned(),
        );
    }

    if !config.endpoint_url.is_empty() {
        match check_endpoint_url(&config.endpoint_url) {
            Ok(Some(warning)) => warnings.push(warning),
            Ok(None) => {}
            Err(description) => refuse("endpoint_url", description),
        }
    }

    for (field, value) in [
        ("name_prefix", &config.name_prefix),
        ("namespace", &config.namespace),
    ] {
        if value.is_empty() {
            continue;
        }
        if value.chars().count() > MAX_SEGMENT_CHARS {
            refuse(
                field,
                format!("must be at most {MAX_SEGMENT_CHARS} characters"),
            );
        } else if !value.bytes().all(is_segment_byte) {
            refuse(
                field,
                "may contain only letters, digits and _ + = . @ - (no /: it is one segment of the managed name)"
                    .to_owned(),
            );
        }
    }

    if !config.kms_key_id.is_empty() && !is_kms_key_id(&config.kms_key_id) {
        refuse(
            "kms_key_id",
            "must be a KMS key id, a key or alias ARN, or alias/NAME".to_owned(),
        );
    }

    for (field, value) in [
        ("owner_tag", &config.owner_tag),
        ("environment_tag", &config.environment_tag),
    ] {
        if let Err(description) = check_tag_value(value) {
            refuse(field, description);
        }
    }

    let days = config.recovery_window_days;
    if days != 0 && !(MIN_RECOVERY_WINDOW_DAYS..=MAX_RECOVERY_WINDOW_DAYS).contains(&days) {
        refuse(
            "recovery_window_days",
            format!(
                "must be 0 (the delete request decides) or from {MIN_RECOVERY_WINDOW_DAYS} to {MAX_RECOVERY_WINDOW_DAYS}"
            ),
        );
    }

    if violations.is_empty() {
        Ok(warnings)
    } else {
        Err(violations)
    }
}

/// `[a-z]{2}(-[a-z]+)+-\d+`, e.g. `us-east-1`, `us-gov-west-1`.
fn is_region(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split('-').collect();
    let [country, middle @ .., number] = parts.as_slice() else {
        return false;
    };
    country.len() == 2
        && country.bytes().all(|b| b.is_ascii_lowercase())
        && !middle.is_empty()
        && middle
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.len() <= 2
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// An http(s) URL with a host and optional port and path; no user info (it
/// would be a credential), query or fragment. `Ok(Some)` is a warning.
fn check_endpoint_url(raw: &str) -> Result<Option<String>, String> {
    let (scheme, rest) = if let Some(rest) = raw.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = raw.strip_prefix("http://") {
        ("http", rest)
    } else {
        return Err("must start with https:// (or http:// for a local test endpoint)".to_owned());
    };
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain white space".to_owned());
    }
    if raw.contains('?') || raw.contains('#') {
        return Err("must not have a query or fragment".to_owned());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "must not carry user info (user:password@): vault settings never hold credentials; the server uses the default credential chain"
                .to_owned(),
        );
    }
    let (host, port) = split_host_port(authority)?;
    if host.is_empty() {
        return Err("must name a host".to_owned());
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
    {
        return Err("has an invalid port".to_owned());
    }
    let valid_host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if !valid_host {
        return Err("has an invalid host".to_owned());
    }
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.starts_with("127.") || host == "[::1]";
    Ok((scheme == "http" && !loopback).then(|| {
        "endpoint_url uses plain http to a host that is not loopback: requests and secret values cross the network unencrypted; use https".to_owned()
    }))
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if authority.starts_with('[') {
        let Some(end) = authority.find(']') else {
            return Err("has an invalid host".to_owned());
        };
        let (host, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err("has an invalid host".to_owned()),
        };
    }
    Ok(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'=' | b'.' | b'@' | b'-')
}

/// A key id (UUID or `mrk-…`), `alias/NAME`, or a KMS key or alias ARN.
fn is_kms_key_id(raw: &str) -> bool {
    if let Some(alias) = raw.strip_prefix("alias/") {
        return is_alias_name(alias);
    }
    if let Some(rest) = raw.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, service, region, account, resource] = parts.as_slice() else {
            return false;
        };
        return partition.starts_with("aws")
            && *service == "kms"
            && is_region(region)
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && (resource.strip_prefix("key/").is_some_and(is_key_id)
                || resource.strip_prefix("alias/").is_some_and(is_alias_name));
    }
    is_key_id(raw)
}

fn is_key_id(raw: &str) -> bool {
    if let Some(hex) = raw.strip_prefix("mrk-") {
        return hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    let groups: Vec<&str> = raw.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_alias_name(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 250
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
}

/// A tag value AWS accepts that does not look like a credential.
fn check_tag_value(raw: &str) -> Result<(), String> {
    if raw.chars().count() > MAX_TAG_VALUE_CHARS {
        return Err(format!("must be at most {MAX_TAG_VALUE_CHARS} characters"));
    }
    if !raw.chars().all(|c| {
        c.is_alphanumeric()
            || c == ' '
            || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
    }) {
        return Err("may contain only letters, digits, spaces and _ . : / = + - @".to_owned());
    }
    if looks_like_credential(raw) {
        return Err(
            "looks like a credential; tags are readable by anyone who can list secrets, so put no credentials in them"
                .to_owned(),
        );
    }
    Ok(())
}

/// An AWS access key id (`AKIA…`/`ASIA…` + 16), or a 40-character
/// base64-ish word mixing cases and digits (the shape of a secret key).
fn looks_like_credential(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let access_key = bytes.windows(20).any(|w| {
        (w.starts_with(b"AKIA") || w.starts_with(b"ASIA"))
            && w[4..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    });
    let secret_key = raw
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '+'))
        .any(|word| {
            word.len() >= 40
                && word.bytes().any(|b| b.is_ascii_uppercase())
                && word.bytes().any(|b| b.is_ascii_lowercase())
                && word.bytes().any(|b| b.is_ascii_digit())
        });
    access_key || secret_key
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config() -> AwsSecretsManagerConfig {
        AwsSecretsManagerConfig {
            region: "eu-west-1".into(),
            ..AwsSecretsManagerConfig::default()
        }
    }

    fn refused(config: &AwsSecretsManagerConfig) -> Vec<ConfigViolation> {
        validate(config).expect_err("must be refused")
    }

    #[test]
    fn defaults_and_a_full_setting_pass() {
        assert_eq!(validate(&config()).unwrap(), Vec::<String>::new());
        let full = AwsSecretsManagerConfig {
            region: "us-gov-west-1".into(),
            endpoint_url: "https://vpce-1a2b.secretsmanager.us-gov-west-1.vpce.amazonaws.com".into(),
            name_prefix: "coffer".into(),
            namespace: "prod.eu@team_a".into(),
            kms_key_id: "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            owner_tag: "platform team".into(),
            environment_tag: "prod:eu/1".into(),
            recovery_window_days: 30,
        };
        assert_eq!(validate(&full).unwrap(), Vec::<String>::new());
        for key in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "alias/coffer/prod",
            "alias/aws/secretsmanager",
            "arn:aws:kms:eu-west-1:123456789012:alias/coffer",
        ] {
            let c = AwsSecretsManagerConfig {
                kms_key_id: key.into(),
                ..config()
            };
            assert!(validate(&c).is_ok(), "{key}");
        }
    }

    #[test]
    fn bad_regions_are_refused() {
        for region in [
            "useast1",
            "us-east",
            "US-EAST-1",
            "u-east-1",
            "us--1",
            "us-east-1a",
            "us-east-123",
        ] {
            let v = refused(&AwsSecretsManagerConfig {
                region: region.into(),
                ..config()
            });
            assert_eq!(v[0].field, "config.region", "{region}");
        }
        let warnings = validate(&AwsSecretsManagerConfig::default()).unwrap();
        assert!(warnings[0].contains("no region"), "{warnings:?}");
    }

    #[test]
    fn bad_endpoints_are_refused_and_credentials_named() {
        let cases = [
            ("ftp://example.com", "https://"),
            ("example.com", "https://"),
            ("https://", "host"),
            ("https://user:pw@example.com", "user info"),
            ("https://example.com/?x=1", "query"),
            ("https://example.com/#top", "fragment"),
            ("https://example.com:99999", "port"),
            ("https://exa mple.com", "white space"),
            ("https://exa_mple.com", "invalid host"),
        ];
        for (url, why) in cases {
            let v = refused(&AwsSecretsManagerConfig {
                endpoint_url: url.into(),
                ..config()
            });
            assert_eq!(v[0].field, "config.endpoint_url", "{url}");
            assert!(
                v[0].description.contains(why),
                "{url}: {}",
                v[0].description
            );
            assert!(!v[0].description.contains("pw@"), "the value leaked");
        }
        let userinfo = refused(&AwsSecretsManagerConfig {
            endpoint_url: "https://AKIAX:s3cr3t@example.com".into(),
            ..config()
        });
        assert!(userinfo[0].description.contains("credential"));
    }

    #[test]
    fn plain_http_off_loopback_is_a_warning() {
        for (url, warned) in [
            ("http://127.0.0.1:5000", false),
            ("http://localhost:4566/", false),
            ("http://[::1]:8080", false),
            ("https://10.0.0.7", false),
            ("http://10.0.0.7:4566", true),
            ("http://[fd00::1]:4566", true),
        ] {
            let warnings = validate(&AwsSecretsManagerConfig {
                endpoint_url: url.into(),
                ..config()
            })
            .unwrap();
            assert_eq!(!warnings.is_empty(), warned, "{url}: {warnings:?}");
        }
    }

    #[test]
    fn prefix_namespace_kms_and_window_are_checked() {
        let cases = [
            AwsSecretsManagerConfig {
                name_prefix: "a/b".into(),
                ..config()
            },
            AwsSecretsManagerConfig {
                namespace: "x".repeat(65),
                ..config()
            },
            AwsSecretsManagerConfig {
                namespace: "prod env".into(),
                ..config()
            },
            AwsSecretsManagerConfig {
                kms_key_id: "my-key".into(),
                ..config()
            },
            AwsSecretsManagerConfig {
                kms_key_id:
                    "arn:aws:s3:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                        .into(),
                ..config()
            },
            AwsSecretsManagerConfig {
                kms_key_id: "alias/".into(),
                ..config()
            },
            AwsSecretsManagerConfig {
                recovery_window_days: 6,
                ..config()
            },
            AwsSecretsManagerConfig {
                recovery_window_days: 31,
                ..config()
            },
            AwsSecretsManagerConfig {
                recovery_window_days: -1,
                ..config()
            },
        ];
        let fields = [
            "config.name_prefix",
            "config.namespace",
            "config.namespace",
            "config.kms_key_id",
            "config.kms_key_id",
            "config.kms_key_id",
            "config.recovery_window_days",
            "config.recovery_window_days",
            "config.recovery_window_days",
        ];
        for (case, field) in cases.iter().zip(fields) {
            let v = refused(case);
            assert_eq!(v.len(), 1, "{case:?}");
            assert_eq!(v[0].field, field, "{case:?}");
        }
    }

    #[test]
    fn tags_are_bounded_and_never_credentials() {
        let cases = [
            ("x".repeat(257), "at most 256"),
            ("team\u{0}a".to_owned(), "may contain only"),
            ("key AKIAIOSFODNN7EXAMPLE".to_owned(), "credential"),
            ("ASIAIOSFODNN7EXAMPLE".to_owned(), "credential"),
            (
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned(),
                "credential",
            ),
        ];
        for (value, why) in cases {
            let v = refused(&AwsSecretsManagerConfig {
                owner_tag: value.clone(),
                environment_tag: value.clone(),
                ..config()
            });
            assert_eq!(v.len(), 2, "{value}");
            assert_eq!(v[0].field, "config.owner_tag");
            assert_eq!(v[1].field, "config.environment_tag");
            assert!(v[0].description.contains(why), "{}", v[0].description);
            assert!(!format!("{v:?}").contains("EXAMPLE"), "a value leaked");
        }
        assert!(
            validate(&AwsSecretsManagerConfig {
                owner_tag: "Équipe paiements".into(),
                environment_tag: "x".repeat(256),
                ..config()
            })
            .is_ok()
        );
    }

    #[test]
    fn every_violation_is_reported() {
        let v = refused(&AwsSecretsManagerConfig {
            region: "nowhere".into(),
            endpoint_url: "ftp://x".into(),
            name_prefix: "a/b".into(),
            namespace: "c d".into(),
            kms_key_id: "k".into(),
            owner_tag: "AKIAIOSFODNN7EXAMPLE".into(),
            environment_tag: "e".repeat(300),
            recovery_window_days: 3,
        });
        assert_eq!(v.len(), 8, "{v:?}");
    }
}
