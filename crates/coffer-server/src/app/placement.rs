//! Where versions are written and how their remote copies follow a
//! secret's lifecycle.
//!
//! A new version goes to an explicit vault, else the tenant's default vault
//! for the requested provider, else the built-in local store. Each version
//! records its own provider and vault, so a secret moved to another vault
//! (a rotation with a new `vault`) still resolves its older versions where
//! they were written.
//!
//! Deleting, undeleting, purging and destroying call the provider inside
//! the transaction that holds the secret's row lock: they must not race a
//! change of the secret (destroyed material cannot come back). So that a
//! slow vault cannot take every database connection (or, on SQLite, queue
//! every writer behind the one write lock), such calls into a remote vault
//! take one of a few process-wide slots first — a quarter of the pool on
//! PostgreSQL, one on SQLite — and answer PROVIDER_BUSY with a retry delay
//! when none frees up within [`PROVIDER_SLOT_WAIT`]. Rotations and creates
//! write before their transaction and take no slot.

use std::sync::Arc;
use std::time::Duration;

use coffer_core::record::{SecretMode, SecretRecord, VaultRecord, VaultState, VersionRecord};
use coffer_core::{Error, Reason, Result, TenantId, validate};
use coffer_providers::{RemoveMode, SecretProvider, StoredVersion, VersionContext};
use coffer_store::{Backend, Store};
use tokio::sync::OwnedSemaphorePermit;

use super::secrets::SecretSource;
use super::{Coffer, LOCAL_PROVIDER, stored_version, version_context};

/// How long a lifecycle call waits for a provider slot before it answers
/// PROVIDER_BUSY (it holds a transaction meanwhile, so not long).
pub(crate) const PROVIDER_SLOT_WAIT: Duration = Duration::from_millis(200);

/// How many transactions may wait on a remote provider at once.
pub(crate) fn provider_slots(store: &Store) -> usize {
    match store.backend() {
        Backend::Sqlite => 1,
        Backend::Postgres => {
            let pool = store.pool_usage().iter().map(|p| p.max).max().unwrap_or(4);
            usize::try_from(pool / 4).unwrap_or(1).max(1)
        }
    }
}

/// The place a new version is written to.
#[derive(Debug)]
pub(crate) struct Placement {
    pub(crate) provider: String,
    /// Vault resource name; empty for the built-in local store.
    pub(crate) vault: String,
    pub(crate) client: Arc<dyn SecretProvider>,
}

/// What writing one version produced.
#[derive(Debug)]
pub(crate) struct WrittenVersion {
    pub(crate) stored: StoredVersion,
    pub(crate) mode: SecretMode,
    /// The canonical remote reference for external versions; empty otherwise.
    pub(crate) external_ref: String,
}

/// A version's source after validation, with what identifies it for
/// idempotency (a value's fingerprint, or the reference it links).
#[derive(Debug)]
pub(crate) struct CheckedSource {
    pub(crate) source: SecretSource,
    /// Keyed fingerprint of a value; empty for external references (Coffer
    /// never sees their value).
    pub(crate) fingerprint: String,
    /// What an idempotency key compares: the fingerprint or the reference.
    pub(crate) identity: String,
}

impl Coffer {
    /// Validates a version's source.
    pub(crate) fn check_source(&self, source: SecretSource) -> Result<CheckedSource> {
        match source {
            SecretSource::Value(value) => {
                validate::value(&value, "value")?;
                let fingerprint = self.fingerprint(&value);
                Ok(CheckedSource {
                    identity: fingerprint.clone(),
                    fingerprint,
                    source: SecretSource::Value(value),
                })
            }
            SecretSource::External {
                external_ref,
                version_ref,
            } => {
                validate::external_ref(&external_ref, "external.ref")?;
                validate::version_ref(&version_ref, "external.version_ref")?;
                Ok(CheckedSource {
                    identity: format!("{external_ref}@{version_ref}"),
                    fingerprint: String::new(),
                    source: SecretSource::External {
                        external_ref,
                        version_ref,
                    },
                })
            }
        }
    }

    /// Where CreateSecret writes: `vault` if named, else the tenant's default
    /// vault for `provider`, else (for local_encrypted or no provider) the
    /// tenant's default local vault or the built-in store.
    pub(crate) async fn placement_for_create(
        &self,
        tenant: &TenantId,
        vault: &str,
        provider: &str,
        external: bool,
    ) -> Result<Placement> {
        if !vault.is_empty() {
            let record = self.usable_vault(tenant, vault, "secret.vault").await?;
            if !provider.is_empty() && provider != record.provider {
                return Err(Error::invalid_field(
                    "secret.provider",
                    format!(
                        "the vault's provider is {}, not {provider}; leave provider empty or name a matching vault",
                        record.provider
                    ),
                ));
            }
            return self.placement_in(record).await;
        }
        if provider.is_empty() && external {
            return Err(Error::invalid_field(
                "secret.vault",
                "an external reference needs the vault it lives in: set secret.vault (or secret.provider to use the tenant's default vault of that provider)",
            ));
        }
        let provider = if provider.is_empty() {
            LOCAL_PROVIDER
        } else {
            provider
        };
        if let Some(default) = self.store().default_vault(tenant, provider).await? {
            return self.placement_in(default).await;
        }
        if provider == LOCAL_PROVIDER {
            return Ok(Placement {
                provider: LOCAL_PROVIDER.to_owned(),
                vault: String::new(),
                client: self.inner.providers.builtin().await?,
            });
        }
        if self.inner.providers.get(provider).is_none() {
            return Err(Error::invalid_field(
                "secret.provider",
                format!("unknown or unconfigured provider {provider:?}; see ListProviders"),
            ));
        }
        Err(Error::failed_precondition(
            Reason::NoDefaultVault,
            format!(
                "tenant {tenant} has no default {provider} vault; name one in secret.vault, or make one the default with SetDefaultVault"
            ),
        )
        .with_metadata("provider", provider))
    }

    /// Where RotateSecret writes: `vault` if named (moving the secret there),
    /// else where the secret's newest versions go.
    pub(crate) async fn placement_for_rotate(
        &self,
        secret: &SecretRecord,
        vault: &str,
    ) -> Result<Placement> {
        if !vault.is_empty() && vault != secret.vault {
            let record = self.usable_vault(&secret.tenant, vault, "vault").await?;
            return self.placement_in(record).await;
        }
        Ok(Placement {
            provider: secret.provider.clone(),
            vault: secret.vault.clone(),
            client: self.location_client(&secret.tenant, &secret.vault).await?,
        })
    }

    async fn placement_in(&self, vault: VaultRecord) -> Result<Placement> {
        debug_assert!(vault.state != VaultState::Disabled);
        Ok(Placement {
            provider: vault.provider.clone(),
            vault: vault.name(),
            client: self.client_of(&vault).await?,
        })
    }

    /// Writes a value, or links an external reference, at `placement`.
    pub(crate) async fn write_version(
        &self,
        placement: &Placement,
        ctx: &VersionContext,
        source: &SecretSource,
    ) -> Result<WrittenVersion> {
        match source {
            SecretSource::Value(value) => Ok(WrittenVersion {
                stored: placement.client.put_value(ctx, value).await?,
                mode: SecretMode::Managed,
                external_ref: String::new(),
            }),
            SecretSource::External {
                external_ref,
                version_ref,
            } => {
                let linked = placement
                    .client
                    .link_external(ctx, external_ref, version_ref)
                    .await?;
                Ok(WrittenVersion {
                    stored: linked.stored,
                    mode: SecretMode::ExternalReference,
                    external_ref: linked.external_ref,
                })
            }
        }
    }

    /// The client of the place one version lives.
    pub(crate) async fn version_client(
        &self,
        secret: &SecretRecord,
        version: &VersionRecord,
    ) -> Result<Arc<dyn SecretProvider>> {
        self.location_client(&secret.tenant, &version.vault).await
    }

    /// Applies a secret-level removal to the remote copy of every version
    /// that still has material (soft delete: `Archive`; purge: `Delete`).
    /// Providers make this idempotent and skip external references.
    pub(crate) async fn remove_remote(
        &self,
        secret: &SecretRecord,
        versions: &[VersionRecord],
        mode: RemoveMode,
    ) -> Result<()> {
        let _slot = self.provider_slot(versions).await?;
        for version in versions {
            let Some(material) = &version.material else {
                continue;
            };
            let client = self.remote_client(secret, version).await?;
            client
                .remove_secret(
                    &version_context(secret, version.version),
                    &stored_version(material, &version.provider_version_ref),
                    mode,
                )
                .await?;
        }
        Ok(())
    }

    /// Undoes [`Coffer::remove_remote`] with `Archive` (an undelete).
    pub(crate) async fn restore_remote(
        &self,
        secret: &SecretRecord,
        versions: &[VersionRecord],
    ) -> Result<()> {
        let _slot = self.provider_slot(versions).await?;
        for version in versions {
            let Some(material) = &version.material else {
                continue;
            };
            let client = self.remote_client(secret, version).await?;
            client
                .restore_secret(
                    &version_context(secret, version.version),
                    &stored_version(material, &version.provider_version_ref),
                )
                .await?;
        }
        Ok(())
    }

    /// A slot for provider calls about `versions` made inside a transaction
    /// (see the module docs); none is needed when all of them live in the
    /// built-in store, which only encrypts and decrypts.
    pub(crate) async fn provider_slot(
        &self,
        versions: &[VersionRecord],
    ) -> Result<Option<OwnedSemaphorePermit>> {
        let remote = versions
            .iter()
            .any(|v| v.material.is_some() && v.provider != LOCAL_PROVIDER);
        if !remote {
            return Ok(None);
        }
        let slots = Arc::clone(&self.inner.provider_slots);
        match tokio::time::timeout(PROVIDER_SLOT_WAIT, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // Nothing closes the semaphore; a closed one is busy too.
            Ok(Err(_)) | Err(_) => Err(Error::new(
                coffer_core::ErrorCode::ResourceExhausted,
                Reason::ProviderBusy,
                "too many deletes, undeletes, purges or destroys are waiting on remote vaults; retry later",
            )
            .with_retry_delay(Duration::from_secs(1))),
        }
    }

    /// A version's client for lifecycle operations: unlike resolution these
    /// also run against a disabled vault (deleting a secret must not depend
    /// on its vault being enabled).
    pub(crate) async fn remote_client(
        &self,
        secret: &SecretRecord,
        version: &VersionRecord,
    ) -> Result<Arc<dyn SecretProvider>> {
        match self.version_client(secret, version).await {
            Err(err) if err.reason() == Reason::VaultDisabled => {
                let name = coffer_core::VaultName::parse(&version.vault, "vault")?;
                let vault = self.get_vault(&name).await?;
                self.client_of(&vault).await
            }
            other => other,
        }
    }
}
