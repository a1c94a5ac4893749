//! Resolution: turning a secret name (and optional version) into its value.
//! Checks run in DESIGN §5's order — secret exists and is ACTIVE, the version
//! is ENABLED, then the provider decrypts or fetches. Batches check metadata
//! per item and then hand each provider its items in one `resolve_many` call.

use std::collections::BTreeMap;

use coffer_core::record::{SecretRecord, SecretState, VersionRecord};
use coffer_core::validate::{MAX_BATCH_RESOLVE, VersionSelector};
use coffer_core::{Error, Result, SecretName, TenantId, VersionName};
use coffer_providers::{SecretValue, StoredVersion, VersionContext};

use super::secrets::not_active;
use super::versions::{ensure_enabled, version_not_found};
use super::{Coffer, stored_version, version_context};

const MAX_CONTEXT_ENTRIES: usize = 32;
const MAX_CONTEXT_KEY_CHARS: usize = 64;
const MAX_CONTEXT_VALUE_CHARS: usize = 512;

/// One resolve, as parsed from the request.
#[derive(Debug, Clone)]
pub struct ResolveRequest {
    pub name: SecretName,
    /// Empty, `latest` or a number.
    pub version: String,
    pub consumer: Option<(String, String)>,
    pub config_path: String,
    pub context: BTreeMap<String, String>,
}

/// A resolved value and the version it came from.
#[derive(Debug)]
pub struct ResolvedValue {
    pub name: VersionName,
    pub value: SecretValue,
}

/// A resolve that passed every metadata check and awaits its provider.
struct Planned {
    secret: SecretRecord,
    version: VersionRecord,
}

impl Coffer {
    pub async fn resolve_secret(&self, req: &ResolveRequest) -> Result<ResolvedValue> {
        let planned = self.plan_resolve(req, "").await?;
        let ctx = version_context(&planned.secret, planned.version.version);
        let value = self
            .provider(&planned.secret.provider)?
            .resolve(&ctx, &planned_material(&planned)?)
            .await?;
        Ok(ResolvedValue {
            name: planned.secret.name().version(planned.version.version),
            value,
        })
    }

    /// Resolves up to 100 items; each gets a value or its own error.
    pub async fn batch_resolve(
        &self,
        tenant: &TenantId,
        requests: Vec<Result<ResolveRequest>>,
    ) -> Result<Vec<Result<ResolvedValue>>> {
        if requests.len() > MAX_BATCH_RESOLVE {
            return Err(Error::invalid_field(
                "requests",
                format!("at most {MAX_BATCH_RESOLVE} items per batch"),
            ));
        }
        let mut results: Vec<Option<Result<ResolvedValue>>> = Vec::with_capacity(requests.len());
        let mut by_provider: BTreeMap<String, Vec<(usize, Planned)>> = BTreeMap::new();
        for (index, request) in requests.into_iter().enumerate() {
            let field = format!("requests[{index}].name");
            let planned = match request {
                Ok(req) if req.name.tenant != *tenant => Err(Error::invalid_field(
                    field,
                    "every item must name a secret under the request's parent",
                )),
                Ok(req) => {
                    self.plan_resolve(&req, &format!("requests[{index}]."))
                        .await
                }
                Err(err) => Err(err),
            };
            match planned {
                Ok(planned) => {
                    results.push(None);
                    by_provider
                        .entry(planned.secret.provider.clone())
                        .or_default()
                        .push((index, planned));
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        for (provider_id, items) in by_provider {
            let provider = self.provider(&provider_id)?;
            let mut batch: Vec<(VersionContext, StoredVersion)> = Vec::with_capacity(items.len());
            let mut indexes = Vec::with_capacity(items.len());
            for (index, planned) in &items {
                match planned_material(planned) {
                    Ok(stored) => {
                        batch.push((
                            version_context(&planned.secret, planned.version.version),
                            stored,
                        ));
                        indexes.push((*index, planned));
                    }
                    Err(err) => results[*index] = Some(Err(err)),
                }
            }
            let values = provider.resolve_many(&batch).await;
            for ((index, planned), value) in indexes.into_iter().zip(values) {
                results[index] = Some(value.map_err(Error::from).map(|value| ResolvedValue {
                    name: planned.secret.name().version(planned.version.version),
                    value,
                }));
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::internal("batch item was not resolved"))))
            .collect())
    }

    async fn plan_resolve(&self, req: &ResolveRequest, field_prefix: &str) -> Result<Planned> {
        let selector = VersionSelector::parse(&req.version, &format!("{field_prefix}version"))?;
        validate_context(&req.context, &format!("{field_prefix}context"))?;
        if req.consumer.is_some() || !req.config_path.is_empty() {
            return Err(Error::unimplemented(
                "consumer-scoped resolution (bindings)",
            ));
        }
        let secret = self.load_secret(&req.name).await?;
        if secret.state != SecretState::Active {
            return Err(not_active(
                &req.name,
                secret.state,
                "enable or undelete it first",
            ));
        }
        let number = match selector {
            VersionSelector::Current => secret.current_version,
            VersionSelector::Number(n) => n,
        };
        let name = req.name.version(number);
        let version = self
            .store()
            .get_version(&secret.uid, number)
            .await?
            .ok_or_else(|| version_not_found(&name))?;
        ensure_enabled(&name, &version)?;
        Ok(Planned { secret, version })
    }
}

fn planned_material(planned: &Planned) -> Result<StoredVersion> {
    let material = planned.version.material.as_deref().ok_or_else(|| {
        Error::internal(format_args!(
            "enabled version {} of secret {} has no material",
            planned.version.version, planned.secret.uid
        ))
    })?;
    Ok(stored_version(
        material,
        &planned.version.provider_version_ref,
    ))
}

/// The audit context of a resolve (run_id, issue_id, …): bounded so a caller
/// cannot bloat the audit trail.
fn validate_context(context: &BTreeMap<String, String>, field: &str) -> Result<()> {
    if context.len() > MAX_CONTEXT_ENTRIES {
        return Err(Error::invalid_field(
            field,
            format!("at most {MAX_CONTEXT_ENTRIES} context entries are allowed"),
        ));
    }
    for (key, value) in context {
        let key_ok = !key.is_empty()
            && key.chars().count() <= MAX_CONTEXT_KEY_CHARS
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !key_ok {
            return Err(Error::invalid_field(
                field,
                format!(
                    "context keys must be 1 to {MAX_CONTEXT_KEY_CHARS} characters of [A-Za-z0-9_.-]"
                ),
            ));
        }
        if value.chars().count() > MAX_CONTEXT_VALUE_CHARS || value.chars().any(char::is_control) {
            return Err(Error::invalid_field(
                format!("{field}.{key}"),
                format!(
                    "context values must be at most {MAX_CONTEXT_VALUE_CHARS} characters without control characters"
                ),
            ));
        }
    }
    Ok(())
}
