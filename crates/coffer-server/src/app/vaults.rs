//! Vault use cases: the provider catalog, create/get/list/update, disable,
//! set-default and health checks, plus the lookups the rest of the app uses
//! to reach the vault a version lives in.
//!
//! Default and disabled state are decided under one lock: SetDefaultVault,
//! DisableVault and UpdateVault lock every vault of the tenant and provider
//! in id order (`WriteTx::lock_provider_vaults`), so "a disabled vault is
//! never the default" holds under races, and the database's partial unique
//! index backs "one default per tenant and provider".

use std::sync::Arc;
use std::time::Duration;

use coffer_core::record::{VaultRecord, VaultState, etag_matches, now_micros};
use coffer_core::{
    Error, ErrorCode, FieldViolation, Principal, Reason, Result, TenantId, VaultName, page,
    validate,
};
use coffer_providers::{ProviderDescriptor, SecretProvider, VaultConfig};
use coffer_store::WriteTx;

use super::Coffer;
use super::audit::EventBuilder;

/// How long CheckVaultHealth waits for a provider before reporting it failing.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Health status values stored with a vault.
const HEALTH_OK: &str = "ok";
const HEALTH_FAILING: &str = "failing";
const HEALTH_WARNING: &str = "warning";

/// A validated-on-use CreateVault request.
#[derive(Debug)]
pub struct CreateVault {
    pub name: VaultName,
    /// Empty: taken from the config.
    pub provider: String,
    pub display_name: String,
    /// `None` when the request carried no config (only valid for providers
    /// without settings, or to take every default).
    pub config: Option<VaultConfig>,
}

/// The fields an UpdateVault may change; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct VaultPatch {
    pub display_name: Option<String>,
    /// Replaces the whole config.
    pub config: Option<VaultConfig>,
    /// READY re-enables a disabled vault; DISABLED disables it.
    pub state: Option<VaultState>,
}

/// One page of vaults and the token of the next.
#[derive(Debug)]
pub struct VaultPage {
    pub vaults: Vec<VaultRecord>,
    pub next_page_token: String,
}

impl Coffer {
    /// Every provider Coffer knows and whether this deployment configured it.
    pub fn provider_catalog(&self) -> Vec<(ProviderDescriptor, bool)> {
        self.inner.providers.catalog()
    }

    pub async fn create_vault(
        &self,
        principal: &Principal,
        req: CreateVault,
    ) -> Result<VaultRecord> {
        let config = match (req.config, req.provider.as_str()) {
            (Some(config), "") => config,
            (Some(config), provider) if provider == config.provider_id() => config,
            (Some(config), provider) => {
                return Err(Error::invalid_field(
                    "vault.provider",
                    format!(
                        "provider {provider:?} does not match the {} settings given",
                        config.provider_id()
                    ),
                ));
            }
            (None, "") => {
                return Err(Error::invalid_field(
                    "vault.provider",
                    "give a provider (local_encrypted, aws_secrets_manager) or its settings",
                ));
            }
            (None, provider) => empty_config(provider)?,
        };
        let display_name = if req.display_name.is_empty() {
            req.name.vault_id.clone()
        } else {
            req.display_name
        };
        validate::display_name(&display_name, "vault.display_name")?;
        let warnings = self.validate_vault_config(&config)?;

        let now = now_micros();
        let (health_status, health_message) = warnings_as_health(&warnings);
        let vault = VaultRecord {
            uid: uuid::Uuid::now_v7().to_string(),
            tenant: req.name.tenant.clone(),
            vault_id: req.name.vault_id.clone(),
            provider: config.provider_id().to_owned(),
            display_name,
            state: if warnings.is_empty() {
                VaultState::Ready
            } else {
                VaultState::Warning
            },
            is_default: false,
            config: config.to_json(),
            health_status,
            health_message,
            health_check_time: None,
            create_time: now,
            update_time: now,
            disable_time: None,
            revision: 1,
        };
        let tx = self.store().begin().await?;
        tx.insert_vault(&vault).await?;
        audit_vault(&tx, principal, "vault.create", &vault).await?;
        tx.commit().await?;
        Ok(vault)
    }

    pub async fn get_vault(&self, name: &VaultName) -> Result<VaultRecord> {
        self.store()
            .get_vault(&name.tenant, &name.vault_id)
            .await?
            .ok_or_else(|| vault_not_found(name))
    }

    pub async fn list_vaults(
        &self,
        tenant: &TenantId,
        page_size: i32,
        page_token: &str,
    ) -> Result<VaultPage> {
        let limit = validate::page_size(page_size, "page_size")?;
        let scope = page::query_scope(&["vaults", tenant.as_str()]);
        let after = page::decode(page_token, &scope, "page_token")?;
        let mut vaults = self
            .store()
            .list_vaults(tenant, after.as_deref(), limit + 1)
            .await?;
        let next_page_token = if vaults.len() > limit {
            vaults.truncate(limit);
            vaults
                .last()
                .map(|last| page::encode(&scope, &last.vault_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(VaultPage {
            vaults,
            next_page_token,
        })
    }

    pub async fn update_vault(
        &self,
        principal: &Principal,
        name: &VaultName,
        etag: &str,
        patch: VaultPatch,
    ) -> Result<VaultRecord> {
        if let Some(display_name) = &patch.display_name {
            validate::display_name(display_name, "vault.display_name")?;
            if display_name.is_empty() {
                return Err(Error::invalid_field(
                    "vault.display_name",
                    "display name must not be empty",
                ));
            }
        }
        if patch.state == Some(VaultState::Warning) {
            return Err(Error::invalid_field(
                "vault.state",
                "state can be set to READY (enable) or DISABLED; WARNING is reported by health checks",
            ));
        }
        // A vault's provider never changes, so it can be read before the lock.
        let provider = self.get_vault(name).await?.provider;
        let warnings = match &patch.config {
            Some(config) if config.provider_id() != provider => {
                return Err(Error::invalid_field(
                    "vault.config",
                    format!(
                        "a {provider} vault takes {provider} settings; a vault's provider cannot change"
                    ),
                ));
            }
            Some(config) => Some(self.validate_vault_config(config)?),
            None => None,
        };

        let tx = self.store().begin().await?;
        let mut vault = lock_vault(&tx, name, &provider).await?;
        check_vault_etag(etag, &vault, name)?;
        if let Some(config) = &patch.config
            && let Some(setting) = stored_config(&vault)?.relocating_change(config)
        {
            return Err(Error::invalid_field(
                format!("vault.config.{setting}"),
                format!(
                    "{setting} decides where this vault's secrets live and cannot change; create a new vault and rotate secrets into it"
                ),
            ));
        }
        let expected = vault.revision;
        let now = now_micros();
        if let Some(display_name) = patch.display_name {
            vault.display_name = display_name;
        }
        if let (Some(config), Some(warnings)) = (patch.config, warnings) {
            vault.config = config.to_json();
            // New settings make the last health check stale.
            (vault.health_status, vault.health_message) = warnings_as_health(&warnings);
            vault.health_check_time = None;
            if vault.state != VaultState::Disabled {
                vault.state = if warnings.is_empty() {
                    VaultState::Ready
                } else {
                    VaultState::Warning
                };
            }
        }
        match patch.state {
            Some(VaultState::Disabled) if vault.state != VaultState::Disabled => {
                disable_in_place(&mut vault, now);
            }
            Some(VaultState::Ready) if vault.state == VaultState::Disabled => {
                vault.state = if vault.health_status == HEALTH_OK || vault.health_status.is_empty()
                {
                    VaultState::Ready
                } else {
                    VaultState::Warning
                };
                vault.disable_time = None;
            }
            _ => {}
        }
        vault.update_time = now;
        vault.revision += 1;
        tx.update_vault(&vault, expected).await?;
        audit_vault(&tx, principal, "vault.update", &vault).await?;
        tx.commit().await?;
        Ok(vault)
    }

    /// Soft: the vault stays (secrets point at it) but stops serving, and it
    /// stops being the default. Disabling a disabled vault is a no-op.
    pub async fn disable_vault(
        &self,
        principal: &Principal,
        name: &VaultName,
        etag: &str,
    ) -> Result<VaultRecord> {
        let provider = self.get_vault(name).await?.provider;
        let tx = self.store().begin().await?;
        let mut vault = lock_vault(&tx, name, &provider).await?;
        check_vault_etag(etag, &vault, name)?;
        if vault.state == VaultState::Disabled {
            return Ok(vault);
        }
        let expected = vault.revision;
        disable_in_place(&mut vault, now_micros());
        vault.revision += 1;
        tx.update_vault(&vault, expected).await?;
        audit_vault(&tx, principal, "vault.disable", &vault).await?;
        tx.commit().await?;
        Ok(vault)
    }

    /// Makes this vault the tenant's default for its provider (the previous
    /// default, if any, stops being one). A disabled vault is refused.
    pub async fn set_default_vault(
        &self,
        principal: &Principal,
        name: &VaultName,
        etag: &str,
    ) -> Result<VaultRecord> {
        let provider = self.get_vault(name).await?.provider;
        let tx = self.store().begin().await?;
        let mut vault = lock_vault(&tx, name, &provider).await?;
        check_vault_etag(etag, &vault, name)?;
        if vault.state == VaultState::Disabled {
            return Err(vault_disabled(
                &vault.name(),
                "enable it before making it the default",
            ));
        }
        if vault.is_default {
            return Ok(vault);
        }
        let now = now_micros();
        for mut other in tx
            .lock_provider_vaults(&vault.tenant, &vault.provider)
            .await?
        {
            if other.is_default && other.uid != vault.uid {
                let expected = other.revision;
                other.is_default = false;
                other.update_time = now;
                other.revision += 1;
                tx.update_vault(&other, expected).await?;
            }
        }
        let expected = vault.revision;
        vault.is_default = true;
        vault.update_time = now;
        vault.revision += 1;
        tx.update_vault(&vault, expected).await?;
        audit_vault(&tx, principal, "vault.set_default", &vault).await?;
        tx.commit().await?;
        Ok(vault)
    }

    /// Runs the provider's check (bounded in time) and stores its outcome.
    /// A failing check moves a READY vault to WARNING and back when it passes;
    /// a disabled vault stays disabled.
    pub async fn check_vault_health(
        &self,
        principal: &Principal,
        name: &VaultName,
    ) -> Result<VaultRecord> {
        let vault = self.get_vault(name).await?;
        let client = self.client_of(&vault).await?;
        let health = match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, client.health_check()).await {
            Ok(health) => health,
            Err(_) => coffer_providers::ProviderHealth::failing(format!(
                "the provider did not answer within {} s",
                HEALTH_CHECK_TIMEOUT.as_secs()
            )),
        };
        if !health.ok {
            tracing::warn!(vault = %name, message = %health.message, "vault health check failed");
        }

        let tx = self.store().begin().await?;
        let mut vault = lock_vault(&tx, name, &vault.provider).await?;
        let expected = vault.revision;
        vault.health_status = if health.ok { HEALTH_OK } else { HEALTH_FAILING }.to_owned();
        vault.health_message = health.message;
        vault.health_check_time = Some(now_micros());
        if vault.state != VaultState::Disabled {
            vault.state = if health.ok {
                VaultState::Ready
            } else {
                VaultState::Warning
            };
        }
        vault.revision += 1;
        tx.update_vault(&vault, expected).await?;
        audit_vault(&tx, principal, "vault.check_health", &vault).await?;
        tx.commit().await?;
        Ok(vault)
    }

    /// The parsed settings and cached client of a vault, disabled or not
    /// (callers that serve values check the state first).
    pub(crate) async fn client_of(&self, vault: &VaultRecord) -> Result<Arc<dyn SecretProvider>> {
        let config = stored_config(vault)?;
        Ok(self
            .inner
            .providers
            .client(&vault.uid, vault.revision, &config)
            .await?)
    }

    /// The client of the place a version lives: a vault resource name, or
    /// empty for the built-in local store. Refuses a disabled vault.
    pub(crate) async fn location_client(
        &self,
        tenant: &TenantId,
        vault: &str,
    ) -> Result<Arc<dyn SecretProvider>> {
        self.location_client_via(tenant, vault, false).await
    }

    /// [`Coffer::location_client`] for the resolve path: the vault record
    /// comes through the metadata cache.
    pub(crate) async fn cached_location_client(
        &self,
        tenant: &TenantId,
        vault: &str,
    ) -> Result<Arc<dyn SecretProvider>> {
        self.location_client_via(tenant, vault, true).await
    }

    async fn location_client_via(
        &self,
        tenant: &TenantId,
        vault: &str,
        through_cache: bool,
    ) -> Result<Arc<dyn SecretProvider>> {
        if vault.is_empty() {
            return Ok(self.inner.providers.builtin().await?);
        }
        let name = VaultName::parse(vault, "vault").map_err(|_| {
            Error::internal(format_args!("stored vault name {vault:?} is malformed"))
        })?;
        let record = if through_cache {
            self.cached_vault(tenant, &name.vault_id).await?
        } else {
            self.store()
                .get_vault(tenant, &name.vault_id)
                .await?
                .map(Arc::new)
        };
        let record = record
            .ok_or_else(|| Error::internal(format_args!("stored vault {vault} does not exist")))?;
        if record.state == VaultState::Disabled {
            return Err(vault_disabled(
                vault,
                "enable it (UpdateVault with state READY) or rotate the secret into another vault",
            ));
        }
        self.client_of(&record).await
    }

    /// A usable vault named by a request field: same tenant, exists, enabled.
    pub(crate) async fn usable_vault(
        &self,
        tenant: &TenantId,
        raw: &str,
        field: &str,
    ) -> Result<VaultRecord> {
        let name = VaultName::parse(raw, field)?;
        if &name.tenant != tenant {
            return Err(Error::invalid_field(
                field,
                "the vault must belong to the secret's tenant",
            ));
        }
        let vault = self.get_vault(&name).await?;
        if vault.state == VaultState::Disabled {
            return Err(vault_disabled(
                &vault.name(),
                "enable it, or choose another vault",
            ));
        }
        Ok(vault)
    }

    /// Provider-level checks of a vault's settings; violations become
    /// BadRequest field violations under `vault.`.
    fn validate_vault_config(&self, config: &VaultConfig) -> Result<Vec<String>> {
        let provider_id = config.provider_id();
        let factory = self.inner.providers.get(provider_id).ok_or_else(|| {
            Error::failed_precondition(
                Reason::ProviderNotConfigured,
                format!("this deployment does not offer the {provider_id} provider"),
            )
            .with_metadata("provider", provider_id)
        })?;
        factory.validate_config(config).map_err(config_violations)
    }
}

/// The settings of a provider given by id only.
fn empty_config(provider: &str) -> Result<VaultConfig> {
    VaultConfig::from_json(provider, "{}").map_err(|violations| {
        Error::invalid_fields(
            violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: format!("vault.{}", v.field),
                    description: v.description,
                })
                .collect(),
        )
    })
}

/// Provider violations as BadRequest field violations.
pub(crate) fn config_violations(violations: Vec<coffer_providers::ConfigViolation>) -> Error {
    Error::invalid_fields(
        violations
            .into_iter()
            .map(|v| FieldViolation {
                field: format!("vault.{}", v.field),
                description: v.description,
            })
            .collect(),
    )
}

/// The settings a vault row holds. They were validated when written, so a
/// failure here is corruption (or a downgrade), not caller error.
fn stored_config(vault: &VaultRecord) -> Result<VaultConfig> {
    VaultConfig::from_json(&vault.provider, &vault.config).map_err(|violations| {
        Error::internal(format_args!(
            "stored settings of vault {} are invalid: {violations:?}",
            vault.uid
        ))
    })
}

fn warnings_as_health(warnings: &[String]) -> (String, String) {
    if warnings.is_empty() {
        (String::new(), String::new())
    } else {
        (HEALTH_WARNING.to_owned(), warnings.join("; "))
    }
}

fn disable_in_place(vault: &mut VaultRecord, now: i64) {
    vault.state = VaultState::Disabled;
    vault.is_default = false;
    vault.disable_time = Some(now);
    vault.update_time = now;
}

/// Locks every vault of the named vault's provider, in id order (the one
/// lock order of all vault changes, so they serialize and never deadlock),
/// and returns the named one as it is under the lock. `provider` comes from
/// an unlocked read: a vault's provider never changes.
async fn lock_vault(tx: &WriteTx, name: &VaultName, provider: &str) -> Result<VaultRecord> {
    tx.lock_provider_vaults(&name.tenant, provider)
        .await?
        .into_iter()
        .find(|v| v.vault_id == name.vault_id)
        .ok_or_else(|| vault_not_found(name))
}

fn check_vault_etag(etag: &str, vault: &VaultRecord, name: &VaultName) -> Result<()> {
    if etag_matches(etag, vault.revision) {
        Ok(())
    } else {
        Err(Error::etag_mismatch(&name.to_string()))
    }
}

async fn audit_vault(
    tx: &WriteTx,
    principal: &Principal,
    action: &str,
    vault: &VaultRecord,
) -> Result<()> {
    let event = EventBuilder::new(&vault.tenant, principal, action, vault.name()).success();
    tx.append_audit(vec![event]).await.map(|_| ())
}

pub fn vault_not_found(name: &VaultName) -> Error {
    Error::not_found(Reason::VaultNotFound, &name.to_string())
}

pub(crate) fn vault_disabled(name: &str, hint: &str) -> Error {
    Error::new(
        ErrorCode::FailedPrecondition,
        Reason::VaultDisabled,
        format!("vault {name} is disabled; {hint}"),
    )
    .with_metadata("resource", name)
}
