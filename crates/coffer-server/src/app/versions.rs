//! Version use cases: rotate (optionally staged), promote, list/get, and the
//! enable/disable/destroy state machine. Every mutation locks the secret row,
//! so "the current version is never disabled or destroyed" holds under races
//! and concurrent rotations get consecutive version numbers. A rotation
//! writes to its provider before it takes the lock and commits only if the
//! secret is unchanged since it read it (else it starts over), so no
//! database lock or connection waits on a vault; rotations of one secret
//! in one process take turns on an in-process lock instead.

use coffer_core::record::{
    SecretRecord, SecretState, VersionRecord, VersionState, etag_matches, now_micros,
};
use coffer_core::{Error, Principal, Reason, Result, SecretName, VersionName, page, validate};

use super::audit::EventBuilder;
use super::idempotency::{IdempotencyKey, is_request_id_race};
use super::secrets::{SecretSource, audit_in, check_etag, not_active};
use super::{Coffer, stored_version, version_context};

/// How often a rotation starts over when the secret changed between its
/// read and its commit (another replica's rotation, any update) before it
/// answers ABORTED.
const ROTATE_ATTEMPTS: usize = 8;

/// A RotateSecret request.
#[derive(Debug)]
pub struct RotateSecret {
    pub name: SecretName,
    pub source: SecretSource,
    pub stage_only: bool,
    pub etag: String,
    pub request_id: String,
    /// Vault resource name to write into; empty keeps the secret's vault.
    pub vault: String,
}

/// A version together with the secret's current version number (for `is_current`).
#[derive(Debug, Clone)]
pub struct VersionView {
    pub secret: SecretName,
    pub current_version: i64,
    pub version: VersionRecord,
}

/// One page of versions, newest first.
#[derive(Debug)]
pub struct VersionPage {
    pub secret: SecretName,
    pub current_version: i64,
    pub versions: Vec<VersionRecord>,
    pub next_page_token: String,
}

/// What a version-state change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionChange {
    Disable,
    Enable,
    Destroy,
}

impl Coffer {
    /// Adds a version; it becomes current unless `stage_only`. The version
    /// is written into `vault` when one is named (moving the secret there),
    /// else where the secret's newest versions live. An external source
    /// retargets an external reference.
    pub async fn rotate_secret(
        &self,
        principal: &Principal,
        req: RotateSecret,
    ) -> Result<VersionView> {
        let RotateSecret {
            name,
            source,
            stage_only,
            etag,
            request_id: request_id_text,
            vault,
        } = req;
        let name = &name;
        let request_id = validate::request_id(&request_id_text, "request_id")?;
        let checked = self.check_source(source)?;
        let fingerprint = checked.fingerprint;
        let idempotency = request_id.map(|id| {
            IdempotencyKey::new(
                &name.tenant,
                id,
                "secret.rotate",
                &[
                    name.key.as_str(),
                    &checked.identity,
                    if stage_only { "staged" } else { "" },
                    &vault,
                ],
            )
        });
        if let Some(key) = &idempotency
            && let Some(first) = self.find_replay(key).await?
        {
            return self
                .version_view(name, &first.secret_uid, first.version)
                .await;
        }

        let result = async {
            // Rotations of this secret in this process queue here rather
            // than on the row lock; only other replicas' can race the
            // check below.
            let _turn = self.inner.rotations.lock(name.to_string()).await;
            for _ in 0..ROTATE_ATTEMPTS {
                // Read without a lock: which number and place this rotation
                // aims at. The provider write below holds no database
                // connection, so a slow or hanging vault cannot hold the
                // secret's row (on SQLite, the one write lock) or a pooled
                // connection for its whole timeout.
                let seen = self.load_secret(name).await?;
                check_rotatable(&etag, &seen, name)?;
                let number = seen.latest_version + 1;
                let placement = self.placement_for_rotate(&seen, &vault).await?;
                let written = match self
                    .write_version(&placement, &version_context(&seen, number), &checked.source)
                    .await
                {
                    Ok(written) => written,
                    Err(err) => {
                        // A concurrent rotation took this number first (a
                        // remote vault refuses a second write under its
                        // token): retry with the next number.
                        if self.load_secret(name).await?.revision != seen.revision {
                            continue;
                        }
                        return Err(err);
                    }
                };
                let tx = self.store().begin().await?;
                let mut secret = self.lock_secret(&tx, name).await?;
                if secret.uid != seen.uid || secret.revision != seen.revision {
                    // Changed since the read: the written version's number
                    // or place may be stale. An etag the caller sent now
                    // fails; otherwise start over. What the provider wrote
                    // stays unreferenced (the local store wrote nothing;
                    // a remote vault keeps an unlabelled version).
                    check_rotatable(&etag, &secret, name)?;
                    continue;
                }
                let now = now_micros();
                let version = VersionRecord {
                    secret_uid: secret.uid.clone(),
                    version: number,
                    state: VersionState::Enabled,
                    provider: placement.provider.clone(),
                    vault: placement.vault.clone(),
                    provider_version_ref: written.stored.provider_version_ref,
                    material: Some(written.stored.material),
                    fingerprint: fingerprint.clone(),
                    create_time: now,
                    created_by: principal.as_str().to_owned(),
                    destroy_time: None,
                    revision: 1,
                };
                tx.insert_version(&version).await?;
                let expected = secret.revision;
                secret.latest_version = number;
                // New versions go where this one went; the mode and reference
                // describe the newest version.
                secret.provider = placement.provider;
                secret.vault = placement.vault;
                secret.mode = written.mode;
                secret.external_ref = written.external_ref;
                if !stage_only {
                    secret.current_version = number;
                    secret.rotate_time = Some(now);
                }
                secret.update_time = now;
                secret.revision += 1;
                tx.update_secret(&secret, expected).await?;
                if let Some(key) = &idempotency {
                    key.record(&tx, &secret.uid, number).await?;
                }
                let event =
                    EventBuilder::new(&secret.tenant, principal, "secret.rotate", name.to_string())
                        .version(number)
                        .request_id(&request_id_text)
                        .success();
                tx.append_audit(vec![event]).await?;
                tx.commit().await?;
                return Ok(VersionView {
                    secret: name.clone(),
                    current_version: secret.current_version,
                    version,
                });
            }
            // Every attempt lost to a concurrent change of this secret.
            Err(Error::etag_mismatch(&name.to_string()))
        }
        .await;
        match (result, &idempotency) {
            (Err(err), Some(key)) if is_request_id_race(&err) => {
                let first = self.find_replay(key).await?.ok_or(err)?;
                self.version_view(name, &first.secret_uid, first.version)
                    .await
            }
            (result, _) => result,
        }
    }

    /// Makes an ENABLED version current (finish a staged rotation, or roll back).
    pub async fn promote_version(
        &self,
        principal: &Principal,
        name: &VersionName,
        etag: &str,
    ) -> Result<SecretRecord> {
        let tx = self.store().begin().await?;
        let mut secret = self.lock_secret(&tx, &name.secret).await?;
        check_etag(etag, &secret, &name.secret)?;
        if secret.state == SecretState::Deleted {
            return Err(not_active(&name.secret, secret.state, "undelete it first"));
        }
        let version = tx
            .get_version(&secret.uid, name.version)
            .await?
            .ok_or_else(|| version_not_found(name))?;
        ensure_enabled(name, &version)?;
        if secret.current_version == name.version {
            return Ok(secret);
        }
        let expected = secret.revision;
        let now = now_micros();
        secret.current_version = name.version;
        secret.rotate_time = Some(now);
        secret.update_time = now;
        secret.revision += 1;
        tx.update_secret(&secret, expected).await?;
        audit_in(&tx, principal, "secret.promote", &secret, name.version).await?;
        tx.commit().await?;
        Ok(secret)
    }

    pub async fn get_version(&self, name: &VersionName) -> Result<VersionView> {
        let secret = self.load_secret(&name.secret).await?;
        let version = self
            .store()
            .get_version(&secret.uid, name.version)
            .await?
            .ok_or_else(|| version_not_found(name))?;
        Ok(VersionView {
            secret: name.secret.clone(),
            current_version: secret.current_version,
            version,
        })
    }

    pub async fn list_versions(
        &self,
        name: &SecretName,
        page_size: i32,
        page_token: &str,
    ) -> Result<VersionPage> {
        let limit = validate::page_size(page_size, "page_size")?;
        let secret = self.load_secret(name).await?;
        let scope = page::query_scope(&["versions", &secret.uid]);
        let before = match page::decode(page_token, &scope, "page_token")? {
            None => None,
            Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
                Error::invalid_field("page_token", "page_token is not valid for this request")
            })?),
        };
        let mut versions = self
            .store()
            .list_versions(&secret.uid, before, limit + 1)
            .await?;
        let next_page_token = if versions.len() > limit {
            versions.truncate(limit);
            versions
                .last()
                .map(|last| page::encode(&scope, &last.version.to_string()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(VersionPage {
            secret: name.clone(),
            current_version: secret.current_version,
            versions,
            next_page_token,
        })
    }

    pub async fn disable_version(
        &self,
        principal: &Principal,
        name: &VersionName,
        etag: &str,
    ) -> Result<VersionView> {
        self.change_version(principal, name, etag, VersionChange::Disable)
            .await
    }

    pub async fn enable_version(
        &self,
        principal: &Principal,
        name: &VersionName,
        etag: &str,
    ) -> Result<VersionView> {
        self.change_version(principal, name, etag, VersionChange::Enable)
            .await
    }

    /// Irreversible: the provider removes the material and the row loses it.
    pub async fn destroy_version(
        &self,
        principal: &Principal,
        name: &VersionName,
        etag: &str,
    ) -> Result<VersionView> {
        self.change_version(principal, name, etag, VersionChange::Destroy)
            .await
    }

    async fn change_version(
        &self,
        principal: &Principal,
        name: &VersionName,
        etag: &str,
        change: VersionChange,
    ) -> Result<VersionView> {
        let tx = self.store().begin().await?;
        let secret = self.lock_secret(&tx, &name.secret).await?;
        let mut version = tx
            .get_version(&secret.uid, name.version)
            .await?
            .ok_or_else(|| version_not_found(name))?;
        if !etag_matches(etag, version.revision) {
            return Err(Error::etag_mismatch(&name.to_string()));
        }
        let view = |version: VersionRecord| VersionView {
            secret: name.secret.clone(),
            current_version: secret.current_version,
            version,
        };
        if change != VersionChange::Enable && secret.current_version == name.version {
            return Err(Error::failed_precondition(
                Reason::VersionIsCurrent,
                format!(
                    "{name} is the current version; promote another version before disabling or destroying it"
                ),
            ));
        }
        let target = match change {
            VersionChange::Disable => VersionState::Disabled,
            VersionChange::Enable => VersionState::Enabled,
            VersionChange::Destroy => VersionState::Destroyed,
        };
        if version.state == target {
            return Ok(view(version));
        }
        if version.state == VersionState::Destroyed {
            return Err(destroyed(name));
        }
        let expected = version.revision;
        if change == VersionChange::Destroy {
            self.remove_material(&secret, &version).await?;
            version.material = None;
            version.destroy_time = Some(now_micros());
        }
        version.state = target;
        version.revision += 1;
        tx.update_version(&version, expected).await?;
        let action = match change {
            VersionChange::Disable => "version.disable",
            VersionChange::Enable => "version.enable",
            VersionChange::Destroy => "version.destroy",
        };
        audit_in(&tx, principal, action, &secret, name.version).await?;
        tx.commit().await?;
        // After the commit, so no resolve can refill it from metadata read
        // before (see the value cache's epoch). A disabled version would
        // fail its check anyway; dropping it keeps a pulled value out of
        // memory.
        if change != VersionChange::Enable {
            self.inner.values.evict_version(&secret.uid, name.version);
        }
        Ok(view(version))
    }

    async fn remove_material(&self, secret: &SecretRecord, version: &VersionRecord) -> Result<()> {
        let Some(material) = &version.material else {
            return Ok(());
        };
        let _slot = self.provider_slot(std::slice::from_ref(version)).await?;
        self.remote_client(secret, version)
            .await?
            .destroy_version(
                &version_context(secret, version.version),
                &stored_version(material, &version.provider_version_ref),
            )
            .await?;
        Ok(())
    }

    async fn version_view(&self, name: &SecretName, uid: &str, number: i64) -> Result<VersionView> {
        let secret = self.secret_by_uid(name, uid).await?;
        let version = self
            .store()
            .get_version(uid, number)
            .await?
            .ok_or_else(|| version_not_found(&name.version(number)))?;
        Ok(VersionView {
            secret: name.clone(),
            current_version: secret.current_version,
            version,
        })
    }
}

pub(crate) fn version_not_found(name: &VersionName) -> Error {
    Error::not_found(Reason::VersionNotFound, &name.to_string())
}

fn destroyed(name: &VersionName) -> Error {
    Error::failed_precondition(
        Reason::VersionDestroyed,
        format!("{name} is destroyed; its value is gone for good"),
    )
    .with_metadata("resource", name.to_string())
}

/// A version that may be resolved or promoted.
pub(crate) fn ensure_enabled(name: &VersionName, version: &VersionRecord) -> Result<()> {
    match version.state {
        VersionState::Enabled => Ok(()),
        VersionState::Disabled => Err(Error::failed_precondition(
            Reason::VersionDisabled,
            format!("{name} is disabled; enable it or use another version"),
        )
        .with_metadata("resource", name.to_string())),
        VersionState::Destroyed => Err(destroyed(name)),
    }
}

/// Whether `secret` may take a new version under the caller's `etag`.
fn check_rotatable(etag: &str, secret: &SecretRecord, name: &SecretName) -> Result<()> {
    check_etag(etag, secret, name)?;
    if secret.state == SecretState::Deleted {
        return Err(not_active(
            name,
            secret.state,
            "undelete it before rotating",
        ));
    }
    Ok(())
}
