//! `local_encrypted`: values sealed with envelope encryption
//! ([`coffer_crypto::Keyring`]) and stored as material in Coffer's own
//! database.
//!
//! Material format: the [`SealedValue`] fields next to a scheme tag,
//! `{"scheme":"local_encrypted/v1","kek_id":"kek-1","dek_nonce":"<b64>",
//! "wrapped_dek":"<b64>","nonce":"<b64>","ciphertext":"<b64>"}`. The
//! ciphertext is bound to `tenant/key/version`, so material copied to another
//! version, key or tenant does not decrypt.

use std::sync::Arc;

use async_trait::async_trait;
use coffer_crypto::{CryptoError, Keyring, SealedValue};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigViolation, VaultConfig};
use crate::error::ProviderError;
use crate::provider::{ProviderFactory, SecretProvider};
use crate::types::{
    ProviderDescriptor, ProviderHealth, RemoveMode, SecretValue, StoredVersion, VersionContext,
};

/// Provider id stored with every secret kept by this provider.
pub const PROVIDER_ID: &str = "local_encrypted";
/// Scheme tag of the material this provider writes.
pub const SCHEME: &str = "local_encrypted/v1";

/// What this provider is and can do.
pub const DESCRIPTOR: ProviderDescriptor = ProviderDescriptor {
    id: PROVIDER_ID,
    label: "Built-in encrypted store",
    supports_managed_values: true,
    supports_external_references: false,
    supports_remote_listing: false,
    supports_batch_resolve: false,
};

/// The built-in encrypted store.
#[derive(Debug, Clone)]
pub struct LocalEncryptedProvider {
    keyring: Arc<Keyring>,
}

#[derive(Serialize, Deserialize)]
struct Material {
    scheme: String,
    #[serde(flatten)]
    sealed: SealedValue,
}

impl LocalEncryptedProvider {
    pub fn new(keyring: Arc<Keyring>) -> Self {
        LocalEncryptedProvider { keyring }
    }

    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// Re-wraps a stored version's DEK under the active KEK (for
    /// `coffer keys rewrap`). `None` when it already uses the active KEK; the
    /// value's ciphertext is unchanged either way.
    pub fn rewrap(&self, stored: &StoredVersion) -> Result<Option<StoredVersion>, ProviderError> {
        let sealed = parse_material(&stored.material)?;
        let Some(rewrapped) = self.keyring.rewrap(&sealed).map_err(crypto_error)? else {
            return Ok(None);
        };
        tracing::debug!(
            from_kek = %sealed.kek_id,
            to_kek = %rewrapped.kek_id,
            "re-wrapped a data key"
        );
        Ok(Some(StoredVersion {
            material: encode_material(rewrapped)?,
            provider_version_ref: stored.provider_version_ref.clone(),
        }))
    }

    /// The KEK id that wraps this material, or `None` when it is not
    /// `local_encrypted/v1` material (used to tell which KEKs are still in use).
    pub fn kek_id_of(material: &str) -> Option<String> {
        parse_material(material).ok().map(|sealed| sealed.kek_id)
    }
}

/// Every local_encrypted vault shares the deployment's keyring, so the
/// factory hands out itself.
#[async_trait]
impl ProviderFactory for LocalEncryptedProvider {
    fn descriptor(&self) -> ProviderDescriptor {
        DESCRIPTOR
    }

    fn validate_config(&self, config: &VaultConfig) -> Result<Vec<String>, Vec<ConfigViolation>> {
        match config {
            VaultConfig::LocalEncrypted => Ok(Vec::new()),
            other => Err(vec![ConfigViolation::new(
                "config",
                format!(
                    "a local_encrypted vault takes local_encrypted settings, not {}",
                    other.provider_id()
                ),
            )]),
        }
    }

    async fn connect(
        &self,
        config: &VaultConfig,
    ) -> Result<Arc<dyn SecretProvider>, ProviderError> {
        match config {
            VaultConfig::LocalEncrypted => Ok(Arc::new(self.clone())),
            other => Err(ProviderError::invalid_request(format!(
                "a local_encrypted vault cannot use {} settings",
                other.provider_id()
            ))),
        }
    }
}

#[async_trait]
impl SecretProvider for LocalEncryptedProvider {
    fn descriptor(&self) -> ProviderDescriptor {
        DESCRIPTOR
    }

    async fn put_value(
        &self,
        ctx: &VersionContext,
        value: &[u8],
    ) -> Result<StoredVersion, ProviderError> {
        let sealed = self.keyring.seal(&ctx.aad(), value).map_err(crypto_error)?;
        Ok(StoredVersion {
            material: encode_material(sealed)?,
            provider_version_ref: String::new(),
        })
    }

    async fn resolve(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<SecretValue, ProviderError> {
        let sealed = parse_material(&stored.material)?;
        let plaintext = self
            .keyring
            .open(&sealed, &ctx.aad())
            .map_err(crypto_error)?;
        Ok(SecretValue::from(plaintext))
    }

    /// Nothing to do here: the material lives in Coffer's own database, and
    /// the caller drops it from the version's row.
    async fn destroy_version(
        &self,
        _ctx: &VersionContext,
        _stored: &StoredVersion,
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Nothing to do here either: the caller keeps (soft delete) or drops
    /// (purge) the rows that hold the material.
    async fn remove_secret(
        &self,
        _ctx: &VersionContext,
        _stored: &StoredVersion,
        _mode: RemoveMode,
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn health_check(&self) -> ProviderHealth {
        // Proves the keyring can seal and open with its active KEK.
        const PROBE_AAD: &[u8] = b"coffer-health-check";
        let round_trip = self
            .keyring
            .seal(PROBE_AAD, b"probe")
            .and_then(|sealed| self.keyring.open(&sealed, PROBE_AAD));
        match round_trip {
            Ok(value) if value.as_slice() == b"probe" => ProviderHealth::ok(format!(
                "keyring ready; active key {}",
                self.keyring.active_kek_id()
            )),
            Ok(_) => ProviderHealth::failing("keyring self-test returned a wrong value"),
            Err(err) => ProviderHealth::failing(format!("keyring self-test failed: {err}")),
        }
    }
}

fn encode_material(sealed: SealedValue) -> Result<String, ProviderError> {
    serde_json::to_string(&Material {
        scheme: SCHEME.to_owned(),
        sealed,
    })
    .map_err(|e| ProviderError::provider("could not encode the sealed value").with_cause(e))
}

fn parse_material(material: &str) -> Result<SealedValue, ProviderError> {
    #[derive(Deserialize)]
    struct Scheme {
        scheme: String,
    }
    let scheme: Scheme = serde_json::from_str(material).map_err(|e| {
        ProviderError::provider("the stored material of this version is malformed")
            .with_cause(format!("local_encrypted material is not valid json: {e}"))
    })?;
    if scheme.scheme != SCHEME {
        return Err(ProviderError::provider(
            "the stored material of this version belongs to another provider or format",
        )
        .with_cause(format!(
            "unknown scheme {:?}, expected {SCHEME}",
            scheme.scheme
        )));
    }
    let parsed: Material = serde_json::from_str(material).map_err(|e| {
        ProviderError::provider("the stored material of this version is malformed")
            .with_cause(format!("invalid {SCHEME} material: {e}"))
    })?;
    Ok(parsed.sealed)
}

fn crypto_error(err: CryptoError) -> ProviderError {
    match err {
        CryptoError::Decrypt => ProviderError::provider(
            "the stored value could not be decrypted; it is corrupted or does not belong to this version",
        )
        .with_cause(err),
        CryptoError::UnknownKek(_) => ProviderError::provider(
            "the stored value was sealed under a key that is not in this server's keyring",
        )
        .with_cause(err),
        CryptoError::Random | CryptoError::Encrypt => {
            ProviderError::provider("the built-in encrypted store failed").with_cause(err)
        }
    }
}
