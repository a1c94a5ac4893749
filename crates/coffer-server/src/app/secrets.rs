//! Secret lifecycle use cases: create, read, list, update, delete (soft or
//! forced purge) and undelete.

use std::collections::BTreeMap;

use coffer_core::filter::SecretFilter;
use coffer_core::record::{
    MICROS_PER_DAY, SecretMode, SecretRecord, SecretState, VersionRecord, VersionState,
    etag_matches, now_micros,
};
use coffer_core::{Error, Principal, Reason, Result, SecretName, TenantId, page, validate};
use coffer_providers::RemoveMode;
use coffer_store::WriteTx;
use zeroize::Zeroizing;

use super::audit::EventBuilder;
use super::idempotency::{IdempotencyKey, is_request_id_race};
use super::{Coffer, secret_not_found, version_context};

/// Where a new version's value comes from.
pub enum SecretSource {
    /// A value Coffer writes into the vault. Debug shows only the length.
    Value(Zeroizing<Vec<u8>>),
    /// An existing remote secret, linked by reference.
    External {
        external_ref: String,
        version_ref: String,
    },
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Value(value) => write!(f, "Value([redacted; {} bytes])", value.len()),
            SecretSource::External {
                external_ref,
                version_ref,
            } => f
                .debug_struct("External")
                .field("external_ref", external_ref)
                .field("version_ref", version_ref)
                .finish(),
        }
    }
}

/// A validated-on-use CreateSecret request.
#[derive(Debug)]
pub struct CreateSecret {
    pub name: SecretName,
    pub display_name: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub provider: String,
    pub vault: String,
    pub source: SecretSource,
    pub request_id: String,
}

/// The fields an UpdateSecret may change; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct SecretPatch {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub state: Option<SecretState>,
}

/// One page of secrets and the token of the next.
#[derive(Debug)]
pub struct SecretPage {
    pub secrets: Vec<SecretRecord>,
    pub next_page_token: String,
}

impl Coffer {
    pub async fn create_secret(
        &self,
        principal: &Principal,
        req: CreateSecret,
    ) -> Result<SecretRecord> {
        let display_name = if req.display_name.is_empty() {
            req.name.key.as_str().to_owned()
        } else {
            req.display_name
        };
        validate::display_name(&display_name, "secret.display_name")?;
        validate::description(&req.description, "secret.description")?;
        validate::labels(&req.labels, "secret.labels")?;
        let request_id = validate::request_id(&req.request_id, "request_id")?;
        let external = matches!(req.source, SecretSource::External { .. });
        let checked = self.check_source(req.source)?;
        let fingerprint = checked.fingerprint;

        let labels_text = format!("{:?}", req.labels);
        let idempotency = request_id.map(|id| {
            IdempotencyKey::new(
                &req.name.tenant,
                id,
                "secret.create",
                &[
                    req.name.key.as_str(),
                    &display_name,
                    &req.description,
                    &labels_text,
                    &req.vault,
                    &req.provider,
                    &checked.identity,
                ],
            )
        });
        if let Some(key) = &idempotency
            && let Some(first) = self.find_replay(key).await?
        {
            return self.secret_by_uid(&req.name, &first.secret_uid).await;
        }

        let placement = self
            .placement_for_create(&req.name.tenant, &req.vault, &req.provider, external)
            .await?;
        let now = now_micros();
        let mut secret = SecretRecord {
            uid: uuid::Uuid::now_v7().to_string(),
            tenant: req.name.tenant.clone(),
            key: req.name.key.clone(),
            display_name,
            description: req.description,
            labels: req.labels,
            mode: SecretMode::Managed,
            provider: placement.provider.clone(),
            vault: placement.vault.clone(),
            external_ref: String::new(),
            state: SecretState::Active,
            current_version: 1,
            latest_version: 1,
            create_time: now,
            update_time: now,
            rotate_time: Some(now),
            last_resolve_time: None,
            delete_time: None,
            purge_time: None,
            revision: 1,
        };
        let written = self
            .write_version(&placement, &version_context(&secret, 1), &checked.source)
            .await?;
        secret.mode = written.mode;
        secret.external_ref = written.external_ref;
        let version = VersionRecord {
            secret_uid: secret.uid.clone(),
            version: 1,
            state: VersionState::Enabled,
            provider: placement.provider,
            vault: placement.vault,
            provider_version_ref: written.stored.provider_version_ref,
            material: Some(written.stored.material),
            fingerprint,
            create_time: now,
            created_by: principal.as_str().to_owned(),
            destroy_time: None,
            revision: 1,
        };

        let result = async {
            let tx = self.store().begin().await?;
            ensure_name_free(&tx, &secret).await?;
            tx.insert_secret(&secret).await?;
            tx.insert_version(&version).await?;
            if let Some(key) = &idempotency {
                key.record(&tx, &secret.uid, 1).await?;
            }
            let action = if external {
                "secret.link"
            } else {
                "secret.create"
            };
            let event =
                EventBuilder::new(&secret.tenant, principal, action, secret.name().to_string())
                    .version(1)
                    .request_id(&req.request_id)
                    .success();
            tx.append_audit(vec![event]).await?;
            tx.commit().await
        }
        .await;
        match (result, &idempotency) {
            (Ok(()), _) => Ok(secret),
            (Err(err), Some(key)) if is_request_id_race(&err) => {
                let first = self.find_replay(key).await?.ok_or(err)?;
                self.secret_by_uid(&req.name, &first.secret_uid).await
            }
            (Err(err), _) => Err(err),
        }
    }

    pub async fn get_secret(&self, name: &SecretName) -> Result<SecretRecord> {
        self.load_secret(name).await
    }

    pub async fn list_secrets(
        &self,
        tenant: &TenantId,
        filter: &str,
        show_deleted: bool,
        page_size: i32,
        page_token: &str,
    ) -> Result<SecretPage> {
        let filter = SecretFilter::parse(filter, "filter")?;
        let limit = validate::page_size(page_size, "page_size")?;
        let scope = page::query_scope(&[
            "secrets",
            tenant.as_str(),
            &filter.canonical(),
            if show_deleted { "deleted" } else { "" },
        ]);
        let after = page::decode(page_token, &scope, "page_token")?;
        let mut secrets = self
            .store()
            .list_secrets(tenant, &filter, show_deleted, after.as_deref(), limit + 1)
            .await?;
        let next_page_token = if secrets.len() > limit {
            secrets.truncate(limit);
            secrets
                .last()
                .map(|last| page::encode(&scope, last.key.as_str()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(SecretPage {
            secrets,
            next_page_token,
        })
    }

    pub async fn update_secret(
        &self,
        principal: &Principal,
        name: &SecretName,
        etag: &str,
        patch: SecretPatch,
    ) -> Result<SecretRecord> {
        if let Some(display_name) = &patch.display_name {
            validate::display_name(display_name, "secret.display_name")?;
            if display_name.is_empty() {
                return Err(Error::invalid_field(
                    "secret.display_name",
                    "display name must not be empty",
                ));
            }
        }
        if let Some(description) = &patch.description {
            validate::description(description, "secret.description")?;
        }
        if let Some(labels) = &patch.labels {
            validate::labels(labels, "secret.labels")?;
        }
        if patch.state == Some(SecretState::Deleted) {
            return Err(Error::invalid_field(
                "secret.state",
                "state can be ACTIVE or DISABLED; use DeleteSecret to delete",
            ));
        }

        let tx = self.store().begin().await?;
        let mut secret = self.lock_secret(&tx, name).await?;
        check_etag(etag, &secret, name)?;
        if secret.state == SecretState::Deleted {
            return Err(not_active(name, secret.state, "undelete it first"));
        }
        let expected = secret.revision;
        if let Some(display_name) = patch.display_name {
            if display_name != secret.display_name
                && tx
                    .display_name_taken(&secret.tenant, &display_name, Some(&secret.uid))
                    .await?
            {
                return Err(display_name_taken());
            }
            secret.display_name = display_name;
        }
        if let Some(description) = patch.description {
            secret.description = description;
        }
        if let Some(labels) = patch.labels {
            secret.labels = labels;
        }
        if let Some(state) = patch.state {
            secret.state = state;
        }
        secret.update_time = now_micros();
        secret.revision += 1;
        tx.update_secret(&secret, expected).await?;
        audit_in(&tx, principal, "secret.update", &secret, 0).await?;
        tx.commit().await?;
        Ok(secret)
    }

    /// Soft-deletes (recoverable until purge_time) or, with `force`, purges now.
    pub async fn delete_secret(
        &self,
        principal: &Principal,
        name: &SecretName,
        etag: &str,
        force: bool,
        recovery_window_days: i32,
    ) -> Result<SecretRecord> {
        let window_days =
            validate::recovery_window_days(recovery_window_days, "recovery_window_days")?;
        let tx = self.store().begin().await?;
        let mut secret = self.lock_secret(&tx, name).await?;
        check_etag(etag, &secret, name)?;
        let now = now_micros();
        if force {
            self.purge_locked(&tx, &secret, now).await?;
            audit_in(&tx, principal, "secret.purge", &secret, 0).await?;
            tx.commit().await?;
            // Again after the commit: this secret may have been ACTIVE, so a
            // resolve may have read it before and be filling the cache now.
            self.inner.values.evict_secret(&secret.uid);
            secret.state = SecretState::Deleted;
            secret.delete_time = Some(secret.delete_time.unwrap_or(now));
            secret.purge_time = Some(now);
            secret.update_time = now;
            return Ok(secret);
        }
        if secret.state == SecretState::Deleted {
            return Err(Error::failed_precondition(
                Reason::SecretNotActive,
                format!("{name} is already deleted; undelete it, or purge it with force"),
            ));
        }
        let expected = secret.revision;
        secret.state = SecretState::Deleted;
        secret.delete_time = Some(now);
        secret.purge_time = Some(now + window_days * MICROS_PER_DAY);
        secret.update_time = now;
        secret.revision += 1;
        let versions = tx.list_all_versions(&secret.uid).await?;
        // Remote copies (managed AWS secrets) get the same recovery window;
        // undelete restores them, the reaper's purge removes them for good.
        self.remove_remote(
            &secret,
            &versions,
            RemoveMode::Archive {
                recovery_window_days: window_days,
            },
        )
        .await?;
        let committed = async {
            tx.update_secret(&secret, expected).await?;
            audit_in(&tx, principal, "secret.delete", &secret, 0).await?;
            tx.commit().await
        }
        .await;
        if let Err(err) = committed {
            // Coffer still says ACTIVE: put the remote copies back.
            if let Err(restore) = self.restore_remote(&secret, &versions).await {
                tracing::error!(secret = %name, error = ?restore, "could not restore remote copies after a failed delete");
            }
            return Err(err);
        }
        Ok(secret)
    }

    pub async fn undelete_secret(
        &self,
        principal: &Principal,
        name: &SecretName,
        etag: &str,
    ) -> Result<SecretRecord> {
        let tx = self.store().begin().await?;
        let mut secret = self.lock_secret(&tx, name).await?;
        check_etag(etag, &secret, name)?;
        if secret.state != SecretState::Deleted {
            return Err(Error::failed_precondition(
                Reason::SecretNotDeleted,
                format!("{name} is not deleted"),
            ));
        }
        let expected = secret.revision;
        secret.state = SecretState::Active;
        secret.delete_time = None;
        secret.purge_time = None;
        secret.update_time = now_micros();
        secret.revision += 1;
        let versions = tx.list_all_versions(&secret.uid).await?;
        self.restore_remote(&secret, &versions).await?;
        tx.update_secret(&secret, expected).await?;
        audit_in(&tx, principal, "secret.undelete", &secret, 0).await?;
        tx.commit().await?;
        Ok(secret)
    }

    /// Removes every version's material from its provider and tombstones the
    /// secret, inside the caller's transaction (which holds the row lock).
    pub(crate) async fn purge_locked(
        &self,
        tx: &WriteTx,
        secret: &SecretRecord,
        now: i64,
    ) -> Result<()> {
        let versions = tx.list_all_versions(&secret.uid).await?;
        self.remove_remote(secret, &versions, RemoveMode::Delete)
            .await?;
        tx.purge_secret(&secret.uid, now).await?;
        // Before the caller's commit: enough for the reaper, whose secrets
        // are DELETED and so never refilled; a forced delete evicts again
        // after its commit.
        self.inner.values.evict_secret(&secret.uid);
        Ok(())
    }

    /// Locks a visible secret for the rest of the transaction.
    pub(crate) async fn lock_secret(
        &self,
        tx: &WriteTx,
        name: &SecretName,
    ) -> Result<SecretRecord> {
        tx.get_secret_for_update(&name.tenant, &name.key)
            .await?
            .ok_or_else(|| secret_not_found(name))
    }

    /// The secret an idempotent replay refers to, as it is now.
    pub(crate) async fn secret_by_uid(&self, name: &SecretName, uid: &str) -> Result<SecretRecord> {
        self.store()
            .get_secret_by_uid(uid)
            .await?
            .ok_or_else(|| secret_not_found(name))
    }
}

/// Appends one successful mutation's event inside its transaction.
pub(crate) async fn audit_in(
    tx: &WriteTx,
    principal: &Principal,
    action: &str,
    secret: &SecretRecord,
    version: i64,
) -> Result<()> {
    let event = EventBuilder::new(&secret.tenant, principal, action, secret.name().to_string())
        .version(version)
        .success();
    tx.append_audit(vec![event]).await.map(|_| ())
}

pub(crate) async fn ensure_name_free(tx: &WriteTx, secret: &SecretRecord) -> Result<()> {
    if let Some(existing) = tx.secret_key_taken(&secret.tenant, &secret.key).await? {
        let name = existing.name();
        return Err(if existing.state == SecretState::Deleted {
            Error::new(
                coffer_core::ErrorCode::AlreadyExists,
                Reason::SecretPendingDeletion,
                format!(
                    "{name} is deleted but not yet purged; undelete it, or purge it with a forced delete"
                ),
            )
        } else {
            Error::new(
                coffer_core::ErrorCode::AlreadyExists,
                Reason::SecretAlreadyExists,
                format!("{name} already exists"),
            )
        }
        .with_metadata("resource", name.to_string()));
    }
    if tx
        .display_name_taken(&secret.tenant, &secret.display_name, None)
        .await?
    {
        return Err(display_name_taken());
    }
    Ok(())
}

fn display_name_taken() -> Error {
    Error::new(
        coffer_core::ErrorCode::AlreadyExists,
        Reason::DisplayNameTaken,
        "another secret in this tenant already has that display name; choose another",
    )
}

pub(crate) fn check_etag(etag: &str, secret: &SecretRecord, name: &SecretName) -> Result<()> {
    if etag_matches(etag, secret.revision) {
        Ok(())
    } else {
        Err(Error::etag_mismatch(&name.to_string()))
    }
}

pub(crate) fn not_active(name: &SecretName, state: SecretState, hint: &str) -> Error {
    Error::failed_precondition(
        Reason::SecretNotActive,
        format!("{name} is {}; {hint}", state.as_str()),
    )
    .with_metadata("resource", name.to_string())
    .with_metadata("state", state.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_value() {
        let source = SecretSource::Value(Zeroizing::new(b"canary-value-123".to_vec()));
        let create = CreateSecret {
            name: SecretName::parse("tenants/t/secrets/k", "name").unwrap(),
            display_name: String::new(),
            description: String::new(),
            labels: BTreeMap::new(),
            provider: String::new(),
            vault: String::new(),
            source,
            request_id: String::new(),
        };
        let shown = format!("{create:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("[redacted; 16 bytes]"), "{shown}");
    }
}
