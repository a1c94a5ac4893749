//! AIP-style resource names: `tenants/{tenant}`, `tenants/{t}/secrets/{key}`
//! and `tenants/{t}/secrets/{key}/versions/{n}`. Parsing validates every
//! segment, so a parsed name is always well-formed.

use std::fmt;

use crate::error::{Error, Result};

const TENANT_MAX: usize = 63;
/// The longest secret key.
pub const KEY_MAX: usize = 120;

/// A tenant id: `[a-z0-9][a-z0-9._-]{0,62}` or a UUID (kept in lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Validates a tenant id; `field` names the request field for the error.
    pub fn parse(raw: &str, field: &str) -> Result<Self> {
        if let Ok(uuid) = uuid::Uuid::try_parse(raw) {
            return Ok(TenantId(uuid.hyphenated().to_string()));
        }
        if is_slug(raw, TENANT_MAX) {
            Ok(TenantId(raw.to_owned()))
        } else {
            Err(Error::invalid_field(
                field,
                "tenant must match [a-z0-9][a-z0-9._-]{0,62} or be a uuid",
            ))
        }
    }

    /// Parses `tenants/{tenant}`.
    pub fn from_parent(parent: &str, field: &str) -> Result<Self> {
        match parent.strip_prefix("tenants/") {
            Some(rest) if !rest.contains('/') => Self::parse(rest, field),
            _ => Err(malformed(field, "tenants/{tenant}")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `tenants/{tenant}`.
    pub fn resource_name(&self) -> String {
        format!("tenants/{}", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret key: `[a-z0-9][a-z0-9_.-]{0,119}`. Immutable once created.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn parse(raw: &str, field: &str) -> Result<Self> {
        if is_key(raw) {
            Ok(SecretKey(raw.to_owned()))
        } else {
            Err(Error::invalid_field(
                field,
                "secret key must match [a-z0-9][a-z0-9_.-]{0,119}",
            ))
        }
    }

    /// Derives a key from a human name: lowercase, runs of characters outside
    /// `[a-z0-9_.-]` become `-`, leading and trailing `-` (and leading `_`/`.`)
    /// are trimmed, at most 120 characters. An empty result is an error.
    pub fn normalize(seed: &str, field: &str) -> Result<Self> {
        let mut out = String::with_capacity(seed.len().min(KEY_MAX));
        let mut in_run = false;
        for ch in seed.chars().flat_map(char::to_lowercase) {
            if ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '_' | '.' | '-') {
                out.push(ch);
                in_run = false;
            } else if !in_run {
                out.push('-');
                in_run = true;
            }
        }
        let trimmed = out
            .trim_start_matches(['-', '_', '.'])
            .chars()
            .take(KEY_MAX)
            .collect::<String>();
        let trimmed = trimmed.trim_end_matches('-');
        if trimmed.is_empty() {
            return Err(Error::invalid_field(
                field,
                "no usable characters to derive a secret key from; give a key explicitly",
            ));
        }
        Self::parse(trimmed, field)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `tenants/{tenant}/secrets/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretName {
    pub tenant: TenantId,
    pub key: SecretKey,
}

impl SecretName {
    pub fn new(tenant: TenantId, key: SecretKey) -> Self {
        SecretName { tenant, key }
    }

    pub fn parse(raw: &str, field: &str) -> Result<Self> {
        let parts: Vec<&str> = raw.split('/').collect();
        match parts.as_slice() {
            ["tenants", tenant, "secrets", key] => Ok(SecretName {
                tenant: TenantId::parse(tenant, field)?,
                key: SecretKey::parse(key, field)?,
            }),
            _ => Err(malformed(field, "tenants/{tenant}/secrets/{key}")),
        }
    }

    pub fn version(&self, version: i64) -> VersionName {
        VersionName {
            secret: self.clone(),
            version,
        }
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenants/{}/secrets/{}", self.tenant, self.key)
    }
}

/// `tenants/{tenant}/secrets/{key}/versions/{n}` with n ≥ 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionName {
    pub secret: SecretName,
    pub version: i64,
}

impl VersionName {
    pub fn parse(raw: &str, field: &str) -> Result<Self> {
        let expected = "tenants/{tenant}/secrets/{key}/versions/{n}";
        let Some((secret, version)) = raw.rsplit_once("/versions/") else {
            return Err(malformed(field, expected));
        };
        let secret = SecretName::parse(secret, field).map_err(|_| malformed(field, expected))?;
        let version = parse_version_number(version)
            .ok_or_else(|| Error::invalid_field(field, "version must be a number from 1"))?;
        Ok(VersionName { secret, version })
    }
}

impl fmt::Display for VersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/versions/{}", self.secret, self.version)
    }
}

/// The longest vault id.
pub const VAULT_ID_MAX: usize = 63;

/// `tenants/{tenant}/vaults/{vault}`; a vault id is
/// `[a-z]([a-z0-9-]{0,61}[a-z0-9])?` (AIP-122 resource ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VaultName {
    pub tenant: TenantId,
    pub vault_id: String,
}

impl VaultName {
    pub fn new(tenant: TenantId, vault_id: &str, field: &str) -> Result<Self> {
        if is_vault_id(vault_id) {
            Ok(VaultName {
                tenant,
                vault_id: vault_id.to_owned(),
            })
        } else {
            Err(Error::invalid_field(
                field,
                "vault id must match [a-z]([a-z0-9-]{0,61}[a-z0-9])?",
            ))
        }
    }

    pub fn parse(raw: &str, field: &str) -> Result<Self> {
        let parts: Vec<&str> = raw.split('/').collect();
        match parts.as_slice() {
            ["tenants", tenant, "vaults", vault] => {
                Self::new(TenantId::parse(tenant, field)?, vault, field)
            }
            _ => Err(malformed(field, "tenants/{tenant}/vaults/{vault}")),
        }
    }
}

impl fmt::Display for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenants/{}/vaults/{}", self.tenant, self.vault_id)
    }
}

fn is_vault_id(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= VAULT_ID_MAX
        && bytes[0].is_ascii_lowercase()
        && !raw.ends_with('-')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// A positive decimal version number without sign or leading zeros.
pub fn parse_version_number(raw: &str) -> Option<i64> {
    if raw.is_empty() || raw.len() > 18 || raw.starts_with('0') {
        return None;
    }
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

fn malformed(field: &str, expected: &str) -> Error {
    Error::invalid_field(
        field,
        format!("must be a resource name of the form {expected}"),
    )
}

fn is_slug(raw: &str, max: usize) -> bool {
    let bytes = raw.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

fn is_key(raw: &str) -> bool {
    is_slug(raw, KEY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_well_formed_names() {
        let name = SecretName::parse("tenants/acme/secrets/openai.key", "name").unwrap();
        assert_eq!(name.tenant.as_str(), "acme");
        assert_eq!(name.key.as_str(), "openai.key");
        assert_eq!(name.to_string(), "tenants/acme/secrets/openai.key");
        let version = VersionName::parse("tenants/acme/secrets/k/versions/12", "name").unwrap();
        assert_eq!(version.version, 12);
        assert_eq!(version.to_string(), "tenants/acme/secrets/k/versions/12");
    }

    #[test]
    fn uuid_tenants_are_lowercased() {
        let t = TenantId::parse("6F9619FF-8B86-D011-B42D-00C04FC964FF", "parent").unwrap();
        assert_eq!(t.as_str(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "tenants/",
            "tenants/acme",
            "tenants/acme/secrets/",
            "tenants/Acme/secrets/k",
            "tenants/acme/secrets/K",
            "tenants/acme/secrets/k/extra",
            "projects/acme/secrets/k",
            "tenants/acme/secrets/-k",
            "tenants/acme/secrets/k k",
        ] {
            assert!(SecretName::parse(bad, "name").is_err(), "{bad:?} accepted");
        }
        for bad in [
            "tenants/acme/secrets/k/versions/0",
            "tenants/acme/secrets/k/versions/-1",
            "tenants/acme/secrets/k/versions/01",
            "tenants/acme/secrets/k/versions/latest",
            "tenants/acme/secrets/k/versions/",
            "tenants/acme/secrets/k/versions/99999999999999999999",
        ] {
            assert!(VersionName::parse(bad, "name").is_err(), "{bad:?} accepted");
        }
        assert!(SecretKey::parse(&"a".repeat(121), "k").is_err());
        assert!(SecretKey::parse(&"a".repeat(120), "k").is_ok());
        assert!(TenantId::parse(&"a".repeat(64), "t").is_err());
    }

    #[test]
    fn normalizes_display_names_into_keys() {
        let key = |s: &str| SecretKey::normalize(s, "display_name").map(|k| k.to_string());
        assert_eq!(key("OpenAI API Key").unwrap(), "openai-api-key");
        assert_eq!(
            key("  --Stripe__live!!key--  ").unwrap(),
            "stripe__live-key"
        );
        assert_eq!(key("prod/db/password").unwrap(), "prod-db-password");
        assert_eq!(key(&"x".repeat(300)).unwrap().len(), 120);
        assert!(key("!!!").is_err());
        assert!(key("").is_err());
    }

    #[test]
    fn vault_names() {
        let name = VaultName::parse("tenants/acme/vaults/aws-prod", "vault").unwrap();
        assert_eq!(name.vault_id, "aws-prod");
        assert_eq!(name.to_string(), "tenants/acme/vaults/aws-prod");
        for bad in [
            "tenants/acme/vaults/",
            "tenants/acme/vaults/Prod",
            "tenants/acme/vaults/1prod",
            "tenants/acme/vaults/prod-",
            "tenants/acme/vaults/a_b",
            "tenants/acme/secrets/x",
            "tenants/acme/vaults/a/b",
        ] {
            assert!(VaultName::parse(bad, "vault").is_err(), "{bad}");
        }
        let long = format!("tenants/acme/vaults/{}", "a".repeat(64));
        assert!(VaultName::parse(&long, "vault").is_err());
    }
}
