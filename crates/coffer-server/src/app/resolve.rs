//! Resolution: turning a secret name (and optional version, consumer and
//! config path) into its value. Checks run in DESIGN §5's order — secret
//! exists and is ACTIVE, a binding matches when a consumer is named, the
//! version (request's, else the binding's pin, else current) is ENABLED, then
//! the provider decrypts or fetches — or, for a version the decrypted-value
//! cache holds, the cache answers instead of the provider (the checks still
//! run first; see [`super::value_cache`]). Those checks read their records
//! through the metadata cache ([`super::metadata_cache`]), which commit
//! notices keep in step with every write. Batches plan every item first and then
//! hand each provider its items in one `resolve_many` call. Every resolve,
//! allowed, denied or failed, leaves one audit event through the
//! group-commit writer, and no value is returned before its event is durable;
//! each is counted in `coffer_resolves_total` by outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_core::record::{AuditOutcome, BindingRecord, SecretRecord, SecretState, VersionRecord};
use coffer_core::validate::{MAX_BATCH_RESOLVE, VersionSelector};
use coffer_core::{Error, Principal, Reason, Result, SecretName, TenantId, VersionName};
use coffer_providers::{SecretValue, StoredVersion, VersionContext};
use futures::future::join_all;

use super::audit::EventBuilder;
use super::bindings::{parse_selector, validate_config_path, validate_consumer};
use super::secrets::not_active;
use super::value_cache::cacheable;
use super::versions::{ensure_enabled, version_not_found};
use super::{Coffer, stored_version, version_context};
use crate::observe::metrics::record_resolve;

const MAX_CONTEXT_ENTRIES: usize = 32;
const MAX_CONTEXT_KEY_CHARS: usize = 64;
const MAX_CONTEXT_VALUE_CHARS: usize = 512;

/// One resolve, as parsed from the request.
#[derive(Debug, Clone)]
pub struct ResolveRequest {
    pub name: SecretName,
    /// Empty, `latest` or a number.
    pub version: String,
    /// (kind, id) of the consumer the value is for.
    pub consumer: Option<(String, String)>,
    pub config_path: String,
    pub context: BTreeMap<String, String>,
}

/// A resolved value and the version it came from.
#[derive(Debug)]
pub struct ResolvedValue {
    pub name: VersionName,
    pub value: SecretValue,
    /// The secret whose `last_resolve_time` the audit batch moves.
    pub(crate) secret_uid: String,
}

/// A resolve that passed every metadata check and awaits its provider.
#[derive(Debug)]
pub(crate) struct Planned {
    secret: Arc<SecretRecord>,
    version: Arc<VersionRecord>,
    /// The value cache's epoch taken before the metadata was read.
    cache_epoch: u64,
}

/// What an audit event of one resolve names.
#[derive(Debug, Clone)]
struct Subject<'a> {
    tenant: &'a TenantId,
    resource: String,
    consumer: Option<&'a (String, String)>,
    config_path: &'a str,
}

impl Coffer {
    pub async fn resolve_secret(
        &self,
        principal: &Principal,
        req: &ResolveRequest,
    ) -> Result<ResolvedValue> {
        validate_context(&req.context, "context")?;
        validate_consumer_path(req, "")?;
        let planned = self.plan_resolve(req, "").await;
        let mut results = self.resolve_planned(vec![planned]).await;
        let result = results
            .pop()
            .unwrap_or_else(|| Err(Error::internal("resolve produced no result")));
        let subject = Subject {
            tenant: &req.name.tenant,
            resource: req.name.to_string(),
            consumer: req.consumer.as_ref(),
            config_path: &req.config_path,
        };
        self.audit_resolve(principal, &subject, &req.context, result)
            .await
    }

    /// Resolves up to 100 items; each gets a value or its own error.
    pub async fn batch_resolve(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        requests: Vec<Result<ResolveRequest>>,
    ) -> Result<Vec<Result<ResolvedValue>>> {
        if requests.len() > MAX_BATCH_RESOLVE {
            return Err(Error::invalid_field(
                "requests",
                format!("at most {MAX_BATCH_RESOLVE} items per batch"),
            ));
        }
        for (index, request) in requests.iter().enumerate() {
            if let Ok(req) = request {
                validate_context(&req.context, &format!("requests[{index}].context"))?;
            }
        }
        // An item whose consumer or config path is malformed is refused on
        // its own, unaudited like a malformed name: it names nothing.
        let requests: Vec<Result<ResolveRequest>> = requests
            .into_iter()
            .enumerate()
            .map(|(index, request)| {
                let req = request?;
                validate_consumer_path(&req, &format!("requests[{index}]."))?;
                Ok(req)
            })
            .collect();
        self.prefetch_for_resolve(
            tenant,
            requests
                .iter()
                .filter_map(|request| request.as_ref().ok())
                .filter(|req| req.name.tenant == *tenant)
                .map(|req| &req.name.key),
        )
        .await;
        let mut plans = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            plans.push(match request {
                Ok(req) if req.name.tenant != *tenant => Err(Error::invalid_field(
                    format!("requests[{index}].name"),
                    "every item must name a secret under the request's parent",
                )),
                Ok(req) => self.plan_resolve(req, &format!("requests[{index}].")).await,
                Err(err) => Err(err.clone()),
            });
        }
        let results = self.resolve_planned(plans).await;
        let audited = requests
            .iter()
            .zip(results)
            .map(|(request, result)| async move {
                match request {
                    // Items under another parent or with a malformed name are not
                    // a resolve of anything in this tenant: refused, not audited.
                    Ok(req) if req.name.tenant == *tenant => {
                        let subject = Subject {
                            tenant,
                            resource: req.name.to_string(),
                            consumer: req.consumer.as_ref(),
                            config_path: &req.config_path,
                        };
                        self.audit_resolve(principal, &subject, &req.context, result)
                            .await
                    }
                    _ => result,
                }
            });
        Ok(join_all(audited).await)
    }

    /// Plans and resolves a consumer's bindings (ResolveBindings): one result
    /// per binding, in the bindings' order, each audited.
    pub(crate) async fn resolve_binding_set(
        &self,
        principal: &Principal,
        bindings: &[BindingRecord],
        context: &BTreeMap<String, String>,
    ) -> Vec<Result<ResolvedValue>> {
        let names: Vec<SecretName> = bindings.iter().map(BindingRecord::secret_name).collect();
        if let Some(first) = names.first() {
            // A consumer's bindings are all in its tenant.
            self.prefetch_for_resolve(&first.tenant, names.iter().map(|name| &name.key))
                .await;
        }
        let mut plans = Vec::with_capacity(bindings.len());
        for binding in bindings {
            plans.push(self.plan_binding(binding).await);
        }
        let results = self.resolve_planned(plans).await;
        let consumers: Vec<(String, String)> = bindings
            .iter()
            .map(|b| (b.consumer_kind.clone(), b.consumer_id.clone()))
            .collect();
        let audited = bindings.iter().zip(&consumers).zip(results).map(
            |((binding, consumer), result)| async move {
                let subject = Subject {
                    tenant: &binding.tenant,
                    resource: binding.secret_name().to_string(),
                    consumer: Some(consumer),
                    config_path: &binding.config_path,
                };
                self.audit_resolve(principal, &subject, context, result)
                    .await
            },
        );
        join_all(audited).await
    }

    /// Writes the resolve's audit event and waits for it; a value is only
    /// returned once its event is durable.
    async fn audit_resolve(
        &self,
        principal: &Principal,
        subject: &Subject<'_>,
        context: &BTreeMap<String, String>,
        result: Result<ResolvedValue>,
    ) -> Result<ResolvedValue> {
        let version = result.as_ref().map(|r| r.name.version).unwrap_or(0);
        let event = EventBuilder::new(
            subject.tenant,
            principal,
            "secret.resolve",
            subject.resource.clone(),
        )
        .version(version)
        .consumer(subject.consumer, subject.config_path)
        .context(context)
        .outcome(&result);
        let outcome = event.outcome;
        let resolved_uid = result.as_ref().ok().map(|r| r.secret_uid.clone());
        let recorded = self.audit().record(event, resolved_uid).await;
        // Counted as the caller sees it: a value whose event could not be
        // written is not returned, so that resolve is a failure.
        record_resolve(match recorded {
            Ok(()) => outcome.as_str(),
            Err(_) => AuditOutcome::Failure.as_str(),
        });
        recorded?;
        result
    }

    async fn plan_resolve(&self, req: &ResolveRequest, field_prefix: &str) -> Result<Planned> {
        let selector = VersionSelector::parse(&req.version, &format!("{field_prefix}version"))?;
        let cache_epoch = self.inner.values.epoch();
        let secret = self.cached_secret(&req.name).await?;
        if secret.state != SecretState::Active {
            return Err(not_active(
                &req.name,
                secret.state,
                "enable or undelete it first",
            ));
        }
        let pinned = match &req.consumer {
            None => None,
            Some((kind, id)) => {
                let binding = self
                    .cached_binding(&req.name.tenant, kind, id, &req.config_path)
                    .await?
                    .filter(|binding| binding.secret_uid == secret.uid)
                    .ok_or_else(|| not_bound(&req.name, kind, id, &req.config_path))?;
                pin_of(&binding)?
            }
        };
        let number = match (selector, pinned) {
            (VersionSelector::Number(asked), Some(pin)) if asked != pin => {
                return Err(Error::failed_precondition(
                    Reason::NotBound,
                    format!(
                        "the binding pins {} to version {pin}; version {asked} is not bound",
                        req.name
                    ),
                )
                .with_metadata("resource", req.name.to_string()));
            }
            (VersionSelector::Number(n), _) => n,
            (VersionSelector::Current, Some(pin)) => pin,
            (VersionSelector::Current, None) => secret.current_version,
        };
        self.planned_version(secret, number, cache_epoch).await
    }

    async fn plan_binding(&self, binding: &BindingRecord) -> Result<Planned> {
        let name = binding.secret_name();
        let cache_epoch = self.inner.values.epoch();
        let secret = self.cached_secret(&name).await?;
        if secret.state != SecretState::Active {
            return Err(not_active(
                &name,
                secret.state,
                "enable or undelete it first",
            ));
        }
        let number = pin_of(binding)?.unwrap_or(secret.current_version);
        self.planned_version(secret, number, cache_epoch).await
    }

    async fn planned_version(
        &self,
        secret: Arc<SecretRecord>,
        number: i64,
        cache_epoch: u64,
    ) -> Result<Planned> {
        let name = secret.name().version(number);
        let version = self
            .cached_version(&secret, number)
            .await?
            .ok_or_else(|| version_not_found(&name))?;
        ensure_enabled(&name, &version)?;
        Ok(Planned {
            secret,
            version,
            cache_epoch,
        })
    }

    /// Resolves planned items, grouping them per vault (one `resolve_many`
    /// call each: AWS batches them); failed plans keep their error. Results
    /// come back in input order. The value cache is consulted only once the
    /// vault's client is had (the vault is not disabled), and filled with
    /// what the provider returns.
    async fn resolve_planned(&self, plans: Vec<Result<Planned>>) -> Vec<Result<ResolvedValue>> {
        let mut results: Vec<Option<Result<ResolvedValue>>> = Vec::with_capacity(plans.len());
        let mut by_vault: BTreeMap<String, Vec<(usize, Planned)>> = BTreeMap::new();
        for (index, plan) in plans.into_iter().enumerate() {
            match plan {
                Ok(planned) => {
                    results.push(None);
                    by_vault
                        .entry(planned.version.vault.clone())
                        .or_default()
                        .push((index, planned));
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        for items in by_vault.into_values() {
            let Some((_, first)) = items.first() else {
                continue;
            };
            let provider = match self
                .cached_location_client(&first.secret.tenant, &first.version.vault)
                .await
            {
                Ok(provider) => provider,
                Err(err) => {
                    for (index, _) in &items {
                        results[*index] = Some(Err(err.clone()));
                    }
                    continue;
                }
            };
            let mut batch: Vec<(VersionContext, StoredVersion)> = Vec::with_capacity(items.len());
            let mut waiting = Vec::with_capacity(items.len());
            for (index, planned) in &items {
                let cached = cacheable(&planned.version)
                    .then(|| {
                        self.inner
                            .values
                            .get(&planned.secret.uid, planned.version.version)
                    })
                    .flatten();
                if let Some(value) = cached {
                    results[*index] = Some(Ok(resolved(planned, value)));
                    continue;
                }
                match planned_material(planned) {
                    Ok(stored) => {
                        batch.push((
                            version_context(&planned.secret, planned.version.version),
                            stored,
                        ));
                        waiting.push((*index, planned));
                    }
                    Err(err) => results[*index] = Some(Err(err)),
                }
            }
            if batch.is_empty() {
                continue;
            }
            let values = provider.resolve_many(&batch).await;
            for ((index, planned), value) in waiting.into_iter().zip(values) {
                if let Ok(value) = &value
                    && cacheable(&planned.version)
                {
                    self.inner.values.insert(
                        &planned.secret.uid,
                        planned.version.version,
                        value,
                        planned.cache_epoch,
                    );
                }
                results[index] = Some(
                    value
                        .map_err(Error::from)
                        .map(|value| resolved(planned, value)),
                );
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::internal("a resolve item was not resolved"))))
            .collect()
    }
}

fn resolved(planned: &Planned, value: SecretValue) -> ResolvedValue {
    ResolvedValue {
        name: planned.secret.name().version(planned.version.version),
        value,
        secret_uid: planned.secret.uid.clone(),
    }
}

fn pin_of(binding: &BindingRecord) -> Result<Option<i64>> {
    match parse_selector(&binding.version_selector, "version_selector")? {
        VersionSelector::Current => Ok(None),
        VersionSelector::Number(n) => Ok(Some(n)),
    }
}

fn not_bound(name: &SecretName, kind: &str, id: &str, config_path: &str) -> Error {
    Error::failed_precondition(
        Reason::NotBound,
        format!(
            "{name} is not bound to consumer {kind}/{id} at {config_path}; create a binding first"
        ),
    )
    .with_metadata("resource", name.to_string())
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

/// A consumer and its config path come together, both well formed (the
/// path as bindings store it), or neither is given. Checked before
/// anything is read or audited, so a malformed path never reaches the audit
/// trail.
fn validate_consumer_path(req: &ResolveRequest, field_prefix: &str) -> Result<()> {
    match &req.consumer {
        Some((kind, id)) => {
            validate_consumer(kind, id, &format!("{field_prefix}consumer"))?;
            if req.config_path.is_empty() {
                return Err(Error::invalid_field(
                    format!("{field_prefix}config_path"),
                    "config_path is required when a consumer is given",
                ));
            }
            validate_config_path(&req.config_path, &format!("{field_prefix}config_path"))
        }
        None if !req.config_path.is_empty() => Err(Error::invalid_field(
            format!("{field_prefix}consumer"),
            "a consumer is required when a config_path is given",
        )),
        None => Ok(()),
    }
}

/// The audit context of a resolve (run_id, issue_id, …): bounded so a caller
/// cannot bloat the audit trail.
pub(crate) fn validate_context(context: &BTreeMap<String, String>, field: &str) -> Result<()> {
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
