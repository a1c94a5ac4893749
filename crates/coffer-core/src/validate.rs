//! Limits and field checks shared by every entry point (gRPC, CLI, import).
//! Each check names the request field it was given, so errors become
//! `google.rpc.BadRequest` field violations.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::name::parse_version_number;

/// The largest value a version may hold.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
pub const MAX_DISPLAY_NAME_CHARS: usize = 120;
pub const MAX_DESCRIPTION_CHARS: usize = 2048;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_VALUE_CHARS: usize = 256;
pub const MAX_EXTERNAL_REF_CHARS: usize = 2048;
/// Longest remote version id (AWS VersionIds are 32–64 characters).
pub const MAX_VERSION_REF_CHARS: usize = 256;
/// The largest page any list returns.
pub const MAX_PAGE_SIZE: usize = 1000;
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Items in one BatchResolveSecrets call.
pub const MAX_BATCH_RESOLVE: usize = 100;
pub const DEFAULT_RECOVERY_WINDOW_DAYS: i64 = 30;
pub const MIN_RECOVERY_WINDOW_DAYS: i64 = 7;
pub const MAX_RECOVERY_WINDOW_DAYS: i64 = 30;

/// A secret value: 1 byte to 64 KiB. The error never echoes the value.
pub fn value(value: &[u8], field: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_field(field, "value must not be empty"));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::invalid_field(
            field,
            format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES} bytes",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// A display name: at most 120 characters, no control characters.
pub fn display_name(raw: &str, field: &str) -> Result<()> {
    bounded_text(raw, MAX_DISPLAY_NAME_CHARS, field)?;
    if raw.trim() != raw {
        return Err(Error::invalid_field(
            field,
            "must not start or end with white space",
        ));
    }
    Ok(())
}

/// A description: at most 2048 characters, no control characters but newlines and tabs.
pub fn description(raw: &str, field: &str) -> Result<()> {
    if raw.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::invalid_field(
            field,
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if raw
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Labels: at most 64; keys `[a-z][a-z0-9_.-]{0,62}`; values at most 256
/// characters without control characters.
pub fn labels(labels: &BTreeMap<String, String>, field: &str) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid_field(
            field,
            format!("at most {MAX_LABELS} labels are allowed"),
        ));
    }
    for (key, value) in labels {
        if !is_label_key(key) {
            return Err(Error::invalid_field(
                format!("{field}.{}", printable(key)),
                "label keys must match [a-z][a-z0-9_.-]{0,62}",
            ));
        }
        bounded_text(value, MAX_LABEL_VALUE_CHARS, &format!("{field}.{key}"))?;
    }
    Ok(())
}

/// An optional request id: empty or a UUID.
pub fn request_id(raw: &str, field: &str) -> Result<Option<String>> {
    if raw.is_empty() {
        return Ok(None);
    }
    uuid::Uuid::try_parse(raw)
        .map(|id| Some(id.hyphenated().to_string()))
        .map_err(|_| Error::invalid_field(field, "request_id must be a uuid"))
}

/// A page size: 0 means the default, larger than the maximum is capped.
pub fn page_size(raw: i32, field: &str) -> Result<usize> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::invalid_field(
            field,
            "page_size must not be negative",
        )),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// A recovery window in days: 0 means the default (30), else 7 to 30.
pub fn recovery_window_days(raw: i32, field: &str) -> Result<i64> {
    match i64::from(raw) {
        0 => Ok(DEFAULT_RECOVERY_WINDOW_DAYS),
        n if (MIN_RECOVERY_WINDOW_DAYS..=MAX_RECOVERY_WINDOW_DAYS).contains(&n) => Ok(n),
        _ => Err(Error::invalid_field(
            field,
            format!(
                "recovery window must be {MIN_RECOVERY_WINDOW_DAYS} to {MAX_RECOVERY_WINDOW_DAYS} days"
            ),
        )),
    }
}

/// A remote secret's reference (an ARN or a name): required, bounded, no
/// whitespace or control characters.
pub fn external_ref(raw: &str, field: &str) -> Result<()> {
    if raw.is_empty() {
        return Err(Error::invalid_field(
            field,
            "give the remote secret's reference (e.g. an AWS secret ARN or name)",
        ));
    }
    remote_id(raw, MAX_EXTERNAL_REF_CHARS, field)
}

/// An optional remote version id to pin.
pub fn version_ref(raw: &str, field: &str) -> Result<()> {
    remote_id(raw, MAX_VERSION_REF_CHARS, field)
}

fn remote_id(raw: &str, max: usize, field: &str) -> Result<()> {
    if raw.chars().count() > max {
        return Err(Error::invalid_field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid_field(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// Which version a resolve asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    /// The secret's current version.
    Current,
    /// One version by number.
    Number(i64),
}

impl VersionSelector {
    /// Empty or `latest` selects the current version; else a number from 1.
    pub fn parse(raw: &str, field: &str) -> Result<Self> {
        match raw {
            "" | "latest" => Ok(VersionSelector::Current),
            n => parse_version_number(n)
                .map(VersionSelector::Number)
                .ok_or_else(|| {
                    Error::invalid_field(
                        field,
                        "version must be empty, `latest` or a number from 1",
                    )
                }),
        }
    }
}

/// Fragments of setting names that hold credentials. Vault configuration
/// never carries credentials (providers use their platform's default chain),
/// so a setting whose name contains one is refused rather than stored.
const CREDENTIAL_KEY_FRAGMENTS: [&str; 13] = [
    "access_key",
    "secret_key",
    "secret_access",
    "session_token",
    "token",
    "password",
    "passwd",
    "private_key",
    "credential",
    "api_key",
    "apikey",
    "client_secret",
    "auth",
];

/// Whether a configuration key names a credential (`aws_secret_access_key`,
/// `token`, `privateKey`, `db-password`, …). Case, `-` and `.` are ignored,
/// and camelCase is split, so spellings of one name all match.
pub fn is_credential_like_key(key: &str) -> bool {
    let mut normalized = String::with_capacity(key.len() + 4);
    let mut previous_lower = false;
    for ch in key.chars() {
        if ch.is_uppercase() && previous_lower {
            normalized.push('_');
        }
        previous_lower = ch.is_lowercase() || ch.is_ascii_digit();
        match ch {
            '-' | '.' | ' ' => normalized.push('_'),
            _ => normalized.extend(ch.to_lowercase()),
        }
    }
    CREDENTIAL_KEY_FRAGMENTS
        .iter()
        .any(|fragment| normalized.contains(fragment))
}

fn bounded_text(raw: &str, max: usize, field: &str) -> Result<()> {
    if raw.chars().count() > max {
        return Err(Error::invalid_field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn is_label_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// A label key fit to appear in an error message (bounded, no control characters).
fn printable(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_limits() {
        assert!(value(b"", "value").is_err());
        assert!(value(&vec![0u8; MAX_VALUE_BYTES], "value").is_ok());
        let err = value(&vec![7u8; MAX_VALUE_BYTES + 1], "value").unwrap_err();
        assert_eq!(err.violations()[0].field, "value");
        assert!(err.message().contains("65537 bytes"));
    }

    #[test]
    fn label_rules() {
        let ok: BTreeMap<_, _> = [("env".to_owned(), "prod".to_owned())].into();
        assert!(labels(&ok, "labels").is_ok());
        let bad_key: BTreeMap<_, _> = [("Env".to_owned(), "x".to_owned())].into();
        assert!(labels(&bad_key, "labels").is_err());
        let too_many: BTreeMap<_, _> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(labels(&too_many, "labels").is_err());
    }

    #[test]
    fn selectors_and_windows() {
        assert_eq!(
            VersionSelector::parse("", "v").unwrap(),
            VersionSelector::Current
        );
        assert_eq!(
            VersionSelector::parse("latest", "v").unwrap(),
            VersionSelector::Current
        );
        assert_eq!(
            VersionSelector::parse("3", "v").unwrap(),
            VersionSelector::Number(3)
        );
        assert!(VersionSelector::parse("0", "v").is_err());
        assert!(VersionSelector::parse("x", "v").is_err());
        assert_eq!(recovery_window_days(0, "r").unwrap(), 30);
        assert!(recovery_window_days(6, "r").is_err());
        assert!(recovery_window_days(31, "r").is_err());
        assert_eq!(page_size(5000, "p").unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1, "p").is_err());
    }

    #[test]
    fn remote_references() {
        assert!(external_ref("arn:aws:secretsmanager:us-east-1:1:secret:a-AbCdEf", "f").is_ok());
        assert!(external_ref("", "f").is_err());
        assert!(external_ref("a b", "f").is_err());
        assert!(external_ref(&"a".repeat(2049), "f").is_err());
        assert!(version_ref("", "f").is_ok());
        assert!(version_ref("\n", "f").is_err());
        assert!(version_ref(&"v".repeat(257), "f").is_err());
    }

    #[test]
    fn credential_like_keys() {
        for key in [
            "aws_secret_access_key",
            "AWS_ACCESS_KEY_ID",
            "accessKeyId",
            "secretAccessKey",
            "session-token",
            "token",
            "password",
            "db.password",
            "privateKey",
            "private_key_pem",
            "credentials",
            "api_key",
            "clientSecret",
            "authorization",
        ] {
            assert!(is_credential_like_key(key), "{key} should be refused");
        }
        for key in [
            "region",
            "endpoint_url",
            "name_prefix",
            "namespace",
            "kms_key_id",
            "owner_tag",
            "environment_tag",
            "recovery_window_days",
        ] {
            assert!(!is_credential_like_key(key), "{key} should be accepted");
        }
    }
}
