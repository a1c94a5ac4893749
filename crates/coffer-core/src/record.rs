//! The records Coffer keeps, as plain data: what the store reads and writes and
//! what the server turns into API messages. Values are never part of a record;
//! a version's `material` is the provider's opaque, already-protected form.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::name::{SecretKey, SecretName, TenantId};

/// Microseconds since the Unix epoch (UTC). Portable across SQLite and
/// PostgreSQL, sorts correctly, and is cheap to compare in SQL.
pub type UnixMicros = i64;

/// The current time in [`UnixMicros`].
pub fn now_micros() -> UnixMicros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// Defines a string-backed enum with `as_str` / `parse` used by the store.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The lowercase form stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored form.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

string_enum!(
    /// Lifecycle of a secret.
    SecretState { Active => "active", Disabled => "disabled", Deleted => "deleted" }
);
string_enum!(
    /// Lifecycle of a version.
    VersionState { Enabled => "enabled", Disabled => "disabled", Destroyed => "destroyed" }
);
string_enum!(
    /// Whether Coffer wrote the value or points at an existing remote one.
    SecretMode { Managed => "managed", ExternalReference => "external_reference" }
);

/// A secret's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Server-assigned UUID; distinguishes two secrets that reused a key.
    pub uid: String,
    pub tenant: TenantId,
    pub key: SecretKey,
    pub display_name: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub mode: SecretMode,
    pub provider: String,
    /// Vault resource name; empty for the built-in local vault.
    pub vault: String,
    pub external_ref: String,
    pub state: SecretState,
    pub current_version: i64,
    /// The highest version number allocated so far.
    pub latest_version: i64,
    pub create_time: UnixMicros,
    pub update_time: UnixMicros,
    pub rotate_time: Option<UnixMicros>,
    pub last_resolve_time: Option<UnixMicros>,
    pub delete_time: Option<UnixMicros>,
    /// When a deleted secret is due to be purged.
    pub purge_time: Option<UnixMicros>,
    /// Bumped on every change; the etag is derived from it.
    pub revision: i64,
}

impl SecretRecord {
    pub fn name(&self) -> SecretName {
        SecretName::new(self.tenant.clone(), self.key.clone())
    }

    pub fn etag(&self) -> String {
        etag(self.revision)
    }
}

/// One version of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub secret_uid: String,
    pub version: i64,
    pub state: VersionState,
    /// The provider that stores this version's value. A secret moved to
    /// another vault keeps its older versions where they were written.
    pub provider: String,
    /// The vault resource name this version lives in; empty for the
    /// built-in local vault.
    pub vault: String,
    pub provider_version_ref: String,
    /// The provider's opaque material (ciphertext or a remote pointer);
    /// `None` once destroyed.
    pub material: Option<String>,
    /// Keyed HMAC-SHA256 of the value, hex.
    pub fingerprint: String,
    pub create_time: UnixMicros,
    pub created_by: String,
    pub destroy_time: Option<UnixMicros>,
    pub revision: i64,
}

impl VersionRecord {
    pub fn etag(&self) -> String {
        etag(self.revision)
    }
}

/// The etag of a revision. Opaque to clients; compared for equality only.
pub fn etag(revision: i64) -> String {
    format!("r{revision}")
}

/// Checks a caller's optional etag against the current revision.
pub fn etag_matches(given: &str, revision: i64) -> bool {
    given.is_empty() || given == etag(revision)
}

string_enum!(
    /// Operational state of a vault.
    VaultState { Ready => "ready", Warning => "warning", Disabled => "disabled" }
);

/// A configured provider instance of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRecord {
    /// Server-assigned UUID.
    pub uid: String,
    pub tenant: TenantId,
    /// The `{vault}` of `tenants/{t}/vaults/{vault}`.
    pub vault_id: String,
    /// Provider id, e.g. `aws_secrets_manager`.
    pub provider: String,
    pub display_name: String,
    pub state: VaultState,
    /// At most one default per tenant and provider, never a disabled vault.
    pub is_default: bool,
    /// The provider's settings as a JSON object (never credentials).
    pub config: String,
    /// The last health check: `ok` / `failing`, empty before the first.
    pub health_status: String,
    pub health_message: String,
    pub health_check_time: Option<UnixMicros>,
    pub create_time: UnixMicros,
    pub update_time: UnixMicros,
    pub disable_time: Option<UnixMicros>,
    pub revision: i64,
}

impl VaultRecord {
    /// `tenants/{t}/vaults/{vault}`.
    pub fn name(&self) -> String {
        format!("tenants/{}/vaults/{}", self.tenant, self.vault_id)
    }

    pub fn etag(&self) -> String {
        etag(self.revision)
    }
}

/// Who may consume which secret, at which config path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRecord {
    /// The `{id}` of `tenants/{t}/bindings/{id}` (a UUID).
    pub id: String,
    pub tenant: TenantId,
    pub secret_uid: String,
    /// The bound secret's key (joined from the secret, for its name).
    pub secret_key: SecretKey,
    pub consumer_kind: String,
    pub consumer_id: String,
    pub config_path: String,
    /// Empty or `latest` (the current version), or a version number to pin.
    pub version_selector: String,
    pub required: bool,
    pub label: String,
    pub create_time: UnixMicros,
    pub update_time: UnixMicros,
    pub revision: i64,
}

impl BindingRecord {
    /// `tenants/{t}/bindings/{id}`.
    pub fn name(&self) -> String {
        format!("tenants/{}/bindings/{}", self.tenant, self.id)
    }

    pub fn secret_name(&self) -> SecretName {
        SecretName::new(self.tenant.clone(), self.secret_key.clone())
    }

    pub fn etag(&self) -> String {
        etag(self.revision)
    }
}

string_enum!(
    /// How an audited call ended.
    AuditOutcome { Success => "success", Denied => "denied", Failure => "failure" }
);

/// One audit event before it is chained (no seq or hashes yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub tenant: TenantId,
    pub time: UnixMicros,
    pub principal: String,
    /// e.g. `secret.create`, `secret.resolve`, `binding.sync`.
    pub action: String,
    /// The resource acted on (a resource name); never a value.
    pub resource: String,
    /// The version involved, 0 when none.
    pub version: i64,
    pub consumer_kind: String,
    pub consumer_id: String,
    pub config_path: String,
    pub context: BTreeMap<String, String>,
    pub outcome: AuditOutcome,
    /// The error reason (ErrorInfo reason) for DENIED and FAILURE; empty on success.
    pub reason: String,
    pub request_id: String,
}

/// A stored, chained audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEventRecord {
    pub seq: i64,
    pub event: NewAuditEvent,
    pub prev_hash: String,
    pub hash: String,
}
