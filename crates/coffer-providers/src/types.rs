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
    /// The secret's server-assigned uid (differs between two secrets that
    /// reused a key). Providers derive idempotency tokens from it; empty when
    /// the caller has none.
    pub secret_uid: String,
}

impl VersionContext {
    pub fn new(tenant: impl Into<String>, key: impl Into<String>, version: i64) -> Self {
        VersionContext {
            tenant: tenant.into(),
            key: key.into(),
            version,
            secret_uid: String::new(),
        }
    }

    pub fn with_secret_uid(mut self, uid: impl Into<String>) -> Self {
        self.secret_uid = uid.into();
        self
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

/// How [`crate::SecretProvider::remove_secret`] removes a remote secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveMode {
    /// Keep it recoverable for this many days (a soft delete).
    Archive { recovery_window_days: i64 },
    /// Remove it for good (a purge).
    Delete,
}

/// What [`crate::SecretProvider::link_external`] stored, and the remote
/// secret's canonical reference (e.g. its ARN, whatever form was given), so
/// the same remote secret is recognised however it was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedExternal {
    pub stored: StoredVersion,
    pub external_ref: String,
}

/// One remote secret that could be imported by reference. Safe metadata
/// only: no value, no tag contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSecret {
    /// Canonical reference (the AWS ARN).
    pub external_ref: String,
    /// The remote name (e.g. `prod/db/password`).
    pub name: String,
    pub create_time: Option<i64>,
    pub last_changed_time: Option<i64>,
    pub last_accessed_time: Option<i64>,
    pub tag_count: usize,
    /// Inside the provider's own managed namespace: a guardrail refuses to
    /// link it as an external reference.
    pub guarded: bool,
}

/// One page of [`crate::SecretProvider::list_remote`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemotePage {
    pub secrets: Vec<RemoteSecret>,
    /// `None` on the last page.
    pub next_page_token: Option<String>,
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
