//! Binding use cases: who may consume which secret at which config path.
//! Create, get, list, delete, the atomic SyncBindings (replace a consumer's
//! bindings under a prefix with a desired set), and ResolveBindings (every
//! binding of a consumer resolved in one call). Mutations write their audit
//! event in their own transaction.

use std::collections::{BTreeMap, BTreeSet};

use coffer_core::record::{BindingRecord, SecretState, VersionState, now_micros};
use coffer_core::validate::VersionSelector;
use coffer_core::{
    Error, FieldViolation, Principal, Reason, Result, SecretName, TenantId, page, validate,
};
use coffer_store::WriteTx;

use super::audit::EventBuilder;
use super::idempotency::{IdempotencyKey, is_request_id_race};
use super::resolve::{ResolvedValue, validate_context};
use super::{Coffer, secret_not_found};

const MAX_CONSUMER_ID_CHARS: usize = 256;
const MAX_CONFIG_PATH_CHARS: usize = 256;
const MAX_LABEL_CHARS: usize = 120;
/// Bindings in one SyncBindings request.
pub(crate) const MAX_SYNC_BINDINGS: usize = 1000;

/// What a caller asks a binding to be (create, or one entry of a sync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSpec {
    pub secret: SecretName,
    pub config_path: String,
    pub version_selector: String,
    pub required: bool,
    pub label: String,
}

/// One page of bindings.
#[derive(Debug)]
pub struct BindingPage {
    pub bindings: Vec<BindingRecord>,
    pub next_page_token: String,
}

/// The result of a SyncBindings.
#[derive(Debug)]
pub struct SyncOutcome {
    pub bindings: Vec<BindingRecord>,
    pub created: i32,
    pub deleted: i32,
    pub unchanged: i32,
}

/// One entry of ResolveBindings.
#[derive(Debug)]
pub struct ResolvedBindingEntry {
    pub binding: BindingRecord,
    pub result: Result<ResolvedValue>,
}

/// A consumer: (kind, id).
pub(crate) type Consumer = (String, String);

impl Coffer {
    pub async fn create_binding(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        consumer: &Consumer,
        spec: BindingSpec,
        request_id: &str,
    ) -> Result<BindingRecord> {
        validate_consumer(&consumer.0, &consumer.1, "binding.consumer")?;
        validate_spec(tenant, &spec, "binding")?;
        let request_id = validate::request_id(request_id, "request_id")?;
        let idempotency = request_id.map(|id| {
            IdempotencyKey::new(
                tenant,
                id,
                "binding.create",
                &[
                    &consumer.0,
                    &consumer.1,
                    &spec.secret.to_string(),
                    &spec.config_path,
                    &spec.version_selector,
                    if spec.required {
                        "required"
                    } else {
                        "optional"
                    },
                    &spec.label,
                ],
            )
        });
        if let Some(key) = &idempotency
            && let Some(first) = self.find_replay(key).await?
        {
            return self.get_binding(tenant, &first.secret_uid).await;
        }
        let result = async {
            let tx = self.store().begin().await?;
            let binding = new_binding(&tx, tenant, consumer, &spec, "binding").await?;
            tx.insert_binding(&binding).await?;
            if let Some(key) = &idempotency {
                key.record(&tx, &binding.id, 0).await?;
            }
            let event = EventBuilder::new(tenant, principal, "binding.create", binding.name())
                .consumer(Some(consumer), &binding.config_path)
                .success();
            tx.append_audit(vec![event]).await?;
            tx.commit().await?;
            Ok(binding)
        }
        .await;
        match (result, &idempotency) {
            (Err(err), Some(key)) if is_request_id_race(&err) => {
                let first = self.find_replay(key).await?.ok_or(err)?;
                self.get_binding(tenant, &first.secret_uid).await
            }
            (result, _) => result,
        }
    }

    pub async fn get_binding(&self, tenant: &TenantId, id: &str) -> Result<BindingRecord> {
        self.store()
            .get_binding(tenant, id)
            .await?
            .ok_or_else(|| binding_not_found(tenant, id))
    }

    pub async fn list_bindings(
        &self,
        tenant: &TenantId,
        secret: Option<&SecretName>,
        consumer: Option<&Consumer>,
        page_size: i32,
        page_token: &str,
    ) -> Result<BindingPage> {
        let limit = validate::page_size(page_size, "page_size")?;
        if let Some((kind, id)) = consumer {
            validate_consumer(kind, id, "consumer")?;
        }
        let secret_uid = match secret {
            Some(name) if name.tenant != *tenant => {
                return Err(Error::invalid_field(
                    "secret",
                    "the secret must be under the request's parent",
                ));
            }
            Some(name) => Some(self.load_secret(name).await?.uid),
            None => None,
        };
        let consumer_text = consumer
            .map(|(k, i)| format!("{k}\u{0}{i}"))
            .unwrap_or_default();
        let scope = page::query_scope(&[
            "bindings",
            tenant.as_str(),
            secret_uid.as_deref().unwrap_or(""),
            &consumer_text,
        ]);
        let after = page::decode(page_token, &scope, "page_token")?;
        let mut bindings = self
            .store()
            .list_bindings(
                tenant,
                secret_uid.as_deref(),
                consumer.map(|(k, i)| (k.as_str(), i.as_str())),
                after.as_deref(),
                limit + 1,
            )
            .await?;
        let next_page_token = if bindings.len() > limit {
            bindings.truncate(limit);
            bindings
                .last()
                .map(|b| page::encode(&scope, &b.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(BindingPage {
            bindings,
            next_page_token,
        })
    }

    pub async fn delete_binding(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        id: &str,
        etag: &str,
    ) -> Result<()> {
        let tx = self.store().begin().await?;
        let binding = tx
            .get_binding(tenant, id)
            .await?
            .ok_or_else(|| binding_not_found(tenant, id))?;
        if !coffer_core::record::etag_matches(etag, binding.revision) {
            return Err(Error::etag_mismatch(&binding.name()));
        }
        tx.delete_binding(tenant, id).await?;
        let consumer = (binding.consumer_kind.clone(), binding.consumer_id.clone());
        let event = EventBuilder::new(tenant, principal, "binding.delete", binding.name())
            .consumer(Some(&consumer), &binding.config_path)
            .success();
        tx.append_audit(vec![event]).await?;
        tx.commit().await
    }

    /// Makes the consumer's bindings under `prefix` exactly `desired`, in one
    /// transaction; any invalid entry changes nothing.
    pub async fn sync_bindings(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        consumer: &Consumer,
        prefix: &str,
        desired: Vec<BindingSpec>,
    ) -> Result<SyncOutcome> {
        validate_consumer(&consumer.0, &consumer.1, "consumer")?;
        if prefix.chars().count() > MAX_CONFIG_PATH_CHARS || prefix.chars().any(char::is_control) {
            return Err(Error::invalid_field(
                "config_path_prefix",
                format!(
                    "must be at most {MAX_CONFIG_PATH_CHARS} characters without control characters"
                ),
            ));
        }
        if desired.len() > MAX_SYNC_BINDINGS {
            return Err(Error::invalid_field(
                "bindings",
                format!("at most {MAX_SYNC_BINDINGS} bindings per sync"),
            ));
        }
        let mut violations = Vec::new();
        let mut seen = BTreeSet::new();
        for (index, spec) in desired.iter().enumerate() {
            let field = format!("bindings[{index}]");
            if let Err(err) = validate_spec(tenant, spec, &field) {
                violations.extend(err.violations().iter().cloned());
            } else if !spec.config_path.starts_with(prefix) {
                violations.push(FieldViolation {
                    field: format!("{field}.config_path"),
                    description: format!("must start with the prefix {prefix:?}"),
                });
            } else if !seen.insert(spec.config_path.clone()) {
                violations.push(FieldViolation {
                    field: format!("{field}.config_path"),
                    description: "each config path may appear once".into(),
                });
            }
        }
        if !violations.is_empty() {
            return Err(Error::invalid_fields(violations));
        }

        let tx = self.store().begin().await?;
        let existing: BTreeMap<String, BindingRecord> = tx
            .consumer_bindings(tenant, &consumer.0, &consumer.1, prefix)
            .await?
            .into_iter()
            .map(|b| (b.config_path.clone(), b))
            .collect();
        let (mut created, mut deleted, mut unchanged) = (0, 0, 0);
        let mut result = Vec::with_capacity(desired.len());
        for (index, spec) in desired.iter().enumerate() {
            let field = format!("bindings[{index}]");
            let wanted = new_binding(&tx, tenant, consumer, spec, &field).await?;
            match existing.get(&spec.config_path) {
                None => {
                    tx.insert_binding(&wanted).await?;
                    created += 1;
                    result.push(wanted);
                }
                Some(current) if same_target(current, &wanted) => {
                    unchanged += 1;
                    result.push(current.clone());
                }
                Some(current) => {
                    let mut updated = current.clone();
                    updated.secret_uid = wanted.secret_uid;
                    updated.secret_key = wanted.secret_key;
                    updated.version_selector = wanted.version_selector;
                    updated.required = wanted.required;
                    updated.label = wanted.label;
                    updated.update_time = now_micros();
                    updated.revision += 1;
                    tx.update_binding(&updated, current.revision).await?;
                    // A retargeted binding counts as one removed and one added.
                    created += 1;
                    deleted += 1;
                    result.push(updated);
                }
            }
        }
        for (path, binding) in &existing {
            if !seen.contains(path) {
                tx.delete_binding(tenant, &binding.id).await?;
                deleted += 1;
            }
        }
        let mut context = BTreeMap::new();
        context.insert("created".to_owned(), created.to_string());
        context.insert("deleted".to_owned(), deleted.to_string());
        context.insert("unchanged".to_owned(), unchanged.to_string());
        let event = EventBuilder::new(tenant, principal, "binding.sync", tenant.resource_name())
            .consumer(Some(consumer), prefix)
            .context(&context)
            .success();
        tx.append_audit(vec![event]).await?;
        tx.commit().await?;
        result.sort_by(|a, b| a.config_path.cmp(&b.config_path));
        Ok(SyncOutcome {
            bindings: result,
            created,
            deleted,
            unchanged,
        })
    }

    /// Resolves every binding of the consumer under `prefix`. A required
    /// binding that cannot be resolved fails the whole call, naming the
    /// failing config paths; an optional one reports its error in its entry.
    pub async fn resolve_bindings(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        consumer: &Consumer,
        prefix: &str,
        context: &BTreeMap<String, String>,
    ) -> Result<Vec<ResolvedBindingEntry>> {
        validate_consumer(&consumer.0, &consumer.1, "consumer")?;
        validate_context(context, "context")?;
        let bindings = self
            .cached_consumer_bindings(tenant, &consumer.0, &consumer.1, prefix)
            .await?;
        let results = self
            .resolve_binding_set(principal, &bindings, context)
            .await;
        let failed: Vec<&str> = bindings
            .iter()
            .zip(&results)
            .filter(|(binding, result)| binding.required && result.is_err())
            .map(|(binding, _)| binding.config_path.as_str())
            .collect();
        if !failed.is_empty() {
            let paths = failed.join(",");
            return Err(Error::failed_precondition(
                Reason::RequiredBindingsUnresolved,
                format!(
                    "required bindings could not be resolved: {}",
                    failed.join(", ")
                ),
            )
            .with_metadata("config_paths", paths));
        }
        Ok(bindings
            .iter()
            .zip(results)
            .map(|(binding, result)| ResolvedBindingEntry {
                binding: binding.clone(),
                result,
            })
            .collect())
    }
}

/// Builds the binding a spec asks for, checking its secret (and pinned
/// version) inside the transaction.
async fn new_binding(
    tx: &WriteTx,
    tenant: &TenantId,
    consumer: &Consumer,
    spec: &BindingSpec,
    field: &str,
) -> Result<BindingRecord> {
    let secret = tx
        .secret_key_taken(&spec.secret.tenant, &spec.secret.key)
        .await?
        .ok_or_else(|| secret_not_found(&spec.secret))?;
    if secret.state == SecretState::Deleted {
        return Err(Error::failed_precondition(
            Reason::SecretNotActive,
            format!("{} is deleted; undelete it before binding it", spec.secret),
        )
        .with_metadata("resource", spec.secret.to_string()));
    }
    if let VersionSelector::Number(pin) =
        parse_selector(&spec.version_selector, &format!("{field}.version_selector"))?
    {
        let usable = tx
            .get_version(&secret.uid, pin)
            .await?
            .is_some_and(|v| v.state != VersionState::Destroyed);
        if !usable {
            return Err(Error::invalid_field(
                format!("{field}.version_selector"),
                format!(
                    "version {pin} of {} does not exist or is destroyed",
                    spec.secret
                ),
            ));
        }
    }
    let now = now_micros();
    Ok(BindingRecord {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.clone(),
        secret_uid: secret.uid,
        secret_key: spec.secret.key.clone(),
        consumer_kind: consumer.0.clone(),
        consumer_id: consumer.1.clone(),
        config_path: spec.config_path.clone(),
        version_selector: spec.version_selector.clone(),
        required: spec.required,
        label: spec.label.clone(),
        create_time: now,
        update_time: now,
        revision: 1,
    })
}

fn same_target(current: &BindingRecord, wanted: &BindingRecord) -> bool {
    current.secret_uid == wanted.secret_uid
        && current.version_selector == wanted.version_selector
        && current.required == wanted.required
        && current.label == wanted.label
}

fn binding_not_found(tenant: &TenantId, id: &str) -> Error {
    Error::not_found(
        Reason::BindingNotFound,
        &format!("tenants/{tenant}/bindings/{id}"),
    )
}

/// Parses `tenants/{t}/bindings/{id}` (id is a UUID).
pub fn parse_binding_name(raw: &str, field: &str) -> Result<(TenantId, String)> {
    let parts: Vec<&str> = raw.split('/').collect();
    match parts.as_slice() {
        ["tenants", tenant, "bindings", id] => {
            let tenant = TenantId::parse(tenant, field)?;
            let id = uuid::Uuid::try_parse(id)
                .map_err(|_| Error::invalid_field(field, "binding id must be a uuid"))?;
            Ok((tenant, id.hyphenated().to_string()))
        }
        _ => Err(Error::invalid_field(
            field,
            "must be a resource name of the form tenants/{tenant}/bindings/{id}",
        )),
    }
}

/// A binding's version selector: empty or `latest` (current), or a number.
pub(crate) fn parse_selector(raw: &str, field: &str) -> Result<VersionSelector> {
    VersionSelector::parse(raw, field)
}

/// A consumer kind is a slug (`agent`, `project`, `run`, …); its id is any
/// short text without white space or control characters.
pub(crate) fn validate_consumer(kind: &str, id: &str, field: &str) -> Result<()> {
    let kind_ok = kind.len() <= 63
        && kind.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !kind_ok {
        return Err(Error::invalid_field(
            format!("{field}.kind"),
            "consumer kind must match [a-z][a-z0-9_-]{0,62}",
        ));
    }
    if id.is_empty()
        || id.chars().count() > MAX_CONSUMER_ID_CHARS
        || id.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Error::invalid_field(
            format!("{field}.id"),
            format!(
                "consumer id must be 1 to {MAX_CONSUMER_ID_CHARS} characters without white space"
            ),
        ));
    }
    Ok(())
}

/// Config paths are dot-separated segments of `[A-Za-z0-9_-]`; under `env.`
/// the rest must be a valid environment variable name.
pub(crate) fn validate_config_path(path: &str, field: &str) -> Result<()> {
    let segments_ok = !path.is_empty()
        && path.len() <= MAX_CONFIG_PATH_CHARS
        && path.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !segments_ok {
        return Err(Error::invalid_field(
            field,
            "config path must be dot-separated segments of [A-Za-z0-9_-], e.g. env.OPENAI_API_KEY",
        ));
    }
    if let Some(name) = path.strip_prefix("env.") {
        let env_ok = name
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !env_ok {
            return Err(Error::invalid_field(
                field,
                "env. paths must name an environment variable: ^[A-Za-z_][A-Za-z0-9_]*$",
            ));
        }
    }
    Ok(())
}

fn validate_spec(tenant: &TenantId, spec: &BindingSpec, field: &str) -> Result<()> {
    let mut violations = Vec::new();
    if spec.secret.tenant != *tenant {
        violations.push(FieldViolation {
            field: format!("{field}.secret"),
            description: "the secret must be under the request's parent".into(),
        });
    }
    for check in [
        validate_config_path(&spec.config_path, &format!("{field}.config_path")),
        parse_selector(&spec.version_selector, &format!("{field}.version_selector")).map(|_| ()),
    ] {
        if let Err(err) = check {
            violations.extend(err.violations().iter().cloned());
        }
    }
    if spec.label.chars().count() > MAX_LABEL_CHARS || spec.label.chars().any(char::is_control) {
        violations.push(FieldViolation {
            field: format!("{field}.label"),
            description: format!(
                "must be at most {MAX_LABEL_CHARS} characters without control characters"
            ),
        });
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid_fields(violations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths() {
        for ok in [
            "env.OPENAI_API_KEY",
            "env._X1",
            "webhookSecret",
            "a.b-c.d_e",
        ] {
            assert!(validate_config_path(ok, "p").is_ok(), "{ok}");
        }
        for bad in [
            "", "env.", "env.1X", "env.A-B", "a..b", ".a", "a b", "env.X.Y",
        ] {
            assert!(validate_config_path(bad, "p").is_err(), "{bad}");
        }
    }

    #[test]
    fn consumers() {
        assert!(validate_consumer("agent", "a-1", "c").is_ok());
        assert!(validate_consumer("Agent", "a", "c").is_err());
        assert!(validate_consumer("agent", "", "c").is_err());
        assert!(validate_consumer("agent", "a b", "c").is_err());
    }

    #[test]
    fn binding_names() {
        let (tenant, id) = parse_binding_name(
            "tenants/acme/bindings/0190c3f1-8b2a-7cde-9f00-1234567890ab",
            "name",
        )
        .unwrap();
        assert_eq!(tenant.as_str(), "acme");
        assert_eq!(id, "0190c3f1-8b2a-7cde-9f00-1234567890ab");
        assert!(parse_binding_name("tenants/acme/bindings/x", "name").is_err());
        assert!(parse_binding_name("tenants/acme/secrets/x", "name").is_err());
    }
}
