//! The values that cross the provider trait: where a version belongs, what a
//! provider stored for it, the secret bytes, and what a provider can do.

use std::fmt;

use zeroize::Zeroizing;

/// The place of one secret version. Providers that bind ciphertext to its
/// place use [`VersionContext::aad`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionContext {
    pub tenant: String,
    pub key: String,
    pub version: i64,
}

impl VersionContext {
    pub fn new(tenant: impl Into<String>, key: impl Into<String>, version: i64) -> Self {
        VersionContext {
            tenant: tenant.into(),
            key: key.into(),
            version,
        }
    }

    /// Associated data naming this version: `{tenant}/{key}/{version}`.
    /// Unambiguous because tenants and keys never contain `/`.
    pub fn aad(&self) -> Vec<u8> {
        format!("{}/{}/{}", self.tenant, self.key, self.version).into_bytes()
    }
}

/// What a provider stored for one version, kept by Coffer and handed back on
/// resolve. `material` is JSON with a `scheme` field and is opaque to callers;
/// it never holds plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub material: String,
    /// The provider's own version id (e.g. the AWS `VersionId`); empty when
    /// the provider has none.
    pub provider_version_ref: String,
}

/// Secret bytes: zeroized on drop, `Debug` prints only the length, and
/// there is deliberately no `Display` or `Serialize`.
#[derive(Clone, Default)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Zeroizing::new(bytes))
    }

    /// The bytes. Keep the borrow short; never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretValue {
    fn from(bytes: Zeroizing<Vec<u8>>) -> Self {
        SecretValue(bytes)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue([redacted; {} bytes])", self.0.len())
    }
}

/// A provider's identity and capabilities, as `ListProviders` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderDescriptor {
    /// Stable id stored with every secret, e.g. `local_encrypted`.
    pub id: &'static str,
    /// Human-readable name.
    pub label: &'static str,
    /// Coffer can write values into it (`put_value`).
    pub supports_managed_values: bool,
    /// It can point at secrets that already exist remotely (`link_external`).
    pub supports_external_references: bool,
    /// It can list remote secrets for import.
    pub supports_remote_listing: bool,
    /// `resolve_many` is cheaper than a loop of `resolve`.
    pub supports_batch_resolve: bool,
}

/// How [`crate::SecretProvider::remove`] removes a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveMode {
    /// Keep the remote data recoverable (e.g. a recovery window).
    Archive,
    /// Remove it for good.
    Delete,
}

/// Result of a provider health check. `message` is safe to show to admins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderHealth {
    pub ok: bool,
    pub message: String,
}

impl ProviderHealth {
    pub fn ok(message: impl Into<String>) -> Self {
        ProviderHealth {
            ok: true,
            message: message.into(),
        }
    }

    pub fn failing(message: impl Into<String>) -> Self {
        ProviderHealth {
            ok: false,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_names_the_version() {
        let ctx = VersionContext::new("acme", "db.password", 3);
        assert_eq!(ctx.aad(), b"acme/db.password/3");
    }

    #[test]
    fn secret_value_debug_is_redacted() {
        let value = SecretValue::new(b"hunter2".to_vec());
        assert_eq!(format!("{value:?}"), "SecretValue([redacted; 7 bytes])");
        assert_eq!(value.len(), 7);
        assert_eq!(value.expose(), b"hunter2");
        assert_eq!(value.into_inner().as_slice(), b"hunter2");
    }
}
