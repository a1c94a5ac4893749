//! Remote import by reference: preview a vault's remote secrets as import
//! candidates, then commit chosen rows as external-reference secrets. Neither
//! step reads a value: previews list metadata, commits link references.
//!
//! Preview is advisory; commit re-checks every row inside its own
//! transaction (a row is imported whole or not at all), so a commit that
//! stops half-way can simply be run again: imported rows come back SKIPPED.

use std::collections::{BTreeMap, HashMap, HashSet};

use coffer_core::record::{
    SecretMode, SecretRecord, SecretState, VaultRecord, VaultState, VersionRecord, VersionState,
    now_micros,
};
use coffer_core::validate::{MAX_DISPLAY_NAME_CHARS, MAX_EXTERNAL_REF_CHARS};
use coffer_core::{Error, Principal, Result, SecretKey, SecretName, VaultName, page, validate};
use coffer_providers::RemoteSecret;

use super::audit::EventBuilder;
use super::placement::Placement;
use super::secrets::SecretSource;
use super::vaults::vault_disabled;
use super::{Coffer, version_context};

/// The longest preview query.
const MAX_IMPORT_QUERY_CHARS: usize = 200;
/// The largest preview page and commit.
const MAX_IMPORT_ROWS: usize = 100;
const DEFAULT_PREVIEW_PAGE: usize = 50;

/// Whether a candidate can be imported as suggested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateStatus {
    Ready,
    /// Already imported (the same remote secret).
    Duplicate,
    Conflict,
}

/// Why a candidate cannot be imported as suggested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportConflict {
    ExactReference,
    Name,
    Key,
    ProviderGuardrail,
}

/// One remote secret as an import candidate.
#[derive(Debug, Clone)]
pub struct ImportCandidateView {
    pub external_ref: String,
    pub remote_name: String,
    /// Empty when no key can be derived from the remote name.
    pub suggested_key: String,
    pub suggested_display_name: String,
    pub status: CandidateStatus,
    pub conflicts: Vec<ImportConflict>,
    /// Dates (RFC 3339) and the tag count; never values or tag contents.
    pub metadata: BTreeMap<String, String>,
    /// Why it is not READY and what to do; empty when READY.
    pub detail: String,
}

/// One page of a preview.
#[derive(Debug)]
pub struct ImportPreview {
    pub candidates: Vec<ImportCandidateView>,
    pub next_page_token: String,
}

/// One row of a commit.
#[derive(Debug, Clone, Default)]
pub struct ImportRowSpec {
    pub external_ref: String,
    /// Empty: derived from the reference's remote name.
    pub key: String,
    /// Empty: the key.
    pub display_name: String,
    pub description: String,
    pub version_ref: String,
}

/// What happened to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    Imported,
    Skipped,
    Error,
}

#[derive(Debug, Clone)]
pub struct ImportRowResult {
    pub external_ref: String,
    pub outcome: ImportOutcome,
    /// The secret's name when imported (or, when skipped, the secret that
    /// already holds the reference).
    pub secret: String,
    /// Why it was skipped or failed (safe to show; no raw provider text).
    pub reason: String,
}

impl Coffer {
    /// One page of the vault's remote secrets as import candidates.
    pub async fn preview_remote_import(
        &self,
        vault: &VaultName,
        query: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<ImportPreview> {
        if query.chars().count() > MAX_IMPORT_QUERY_CHARS || query.chars().any(char::is_control) {
            return Err(Error::invalid_field(
                "query",
                format!(
                    "query must be at most {MAX_IMPORT_QUERY_CHARS} characters without control characters"
                ),
            ));
        }
        let page_size = match page_size {
            0 => DEFAULT_PREVIEW_PAGE,
            n if (1..=MAX_IMPORT_ROWS as i32).contains(&n) => n as usize,
            _ => {
                return Err(Error::invalid_field(
                    "page_size",
                    format!("page_size must be 1 to {MAX_IMPORT_ROWS}"),
                ));
            }
        };
        let scope = page::query_scope(&["import", &vault.to_string(), query]);
        let remote_token = page::decode(page_token, &scope, "page_token")?;
        let record = self.import_vault(vault).await?;
        let client = self.client_of(&record).await?;
        let remote = client
            .list_remote(query, page_size as u32, remote_token.as_deref())
            .await?;
        let candidates = self.candidates(&record, remote.secrets).await?;
        Ok(ImportPreview {
            candidates,
            next_page_token: remote
                .next_page_token
                .map(|token| page::encode(&scope, &token))
                .unwrap_or_default(),
        })
    }

    /// Imports rows by reference, each in its own transaction.
    pub async fn commit_remote_import(
        &self,
        principal: &Principal,
        vault: &VaultName,
        rows: Vec<ImportRowSpec>,
    ) -> Result<Vec<ImportRowResult>> {
        if rows.is_empty() || rows.len() > MAX_IMPORT_ROWS {
            return Err(Error::invalid_field(
                "rows",
                format!("give 1 to {MAX_IMPORT_ROWS} rows"),
            ));
        }
        for (i, row) in rows.iter().enumerate() {
            validate::external_ref(&row.external_ref, &format!("rows[{i}].external_ref"))?;
            validate::version_ref(&row.version_ref, &format!("rows[{i}].version_ref"))?;
            if !row.key.is_empty() {
                SecretKey::parse(&row.key, &format!("rows[{i}].key"))?;
            }
            validate::display_name(&row.display_name, &format!("rows[{i}].display_name"))?;
            validate::description(&row.description, &format!("rows[{i}].description"))?;
        }
        let record = self.import_vault(vault).await?;
        let placement = Placement {
            provider: record.provider.clone(),
            vault: record.name(),
            client: self.client_of(&record).await?,
        };
        let mut results = Vec::with_capacity(rows.len());
        for row in rows {
            let external_ref = row.external_ref.clone();
            let result = match self.import_row(principal, &placement, &record, row).await {
                Ok(result) => result,
                Err(err) => {
                    if err.internal_cause().is_some() {
                        tracing::warn!(
                            vault = %vault,
                            error = ?err,
                            "an import row failed"
                        );
                    }
                    ImportRowResult {
                        external_ref: external_ref.clone(),
                        outcome: ImportOutcome::Error,
                        secret: String::new(),
                        reason: err.message().to_owned(),
                    }
                }
            };
            results.push(result);
        }
        Ok(results)
    }

    /// An enabled vault whose provider can list remote secrets.
    async fn import_vault(&self, name: &VaultName) -> Result<VaultRecord> {
        let record = self.get_vault(name).await?;
        if record.state == VaultState::Disabled {
            return Err(vault_disabled(
                &record.name(),
                "enable it before importing from it",
            ));
        }
        Ok(record)
    }

    async fn candidates(
        &self,
        vault: &VaultRecord,
        remote: Vec<RemoteSecret>,
    ) -> Result<Vec<ImportCandidateView>> {
        let tenant = &vault.tenant;
        let refs: Vec<String> = remote.iter().map(|r| r.external_ref.clone()).collect();
        let keys: Vec<Option<SecretKey>> = remote
            .iter()
            .map(|r| SecretKey::normalize(&r.name, "name").ok())
            .collect();
        let names: Vec<String> = remote
            .iter()
            .map(|r| suggested_display_name(&r.name))
            .collect();
        let by_ref: HashMap<String, SecretRecord> = self
            .store()
            .secrets_by_external_refs(tenant, &refs)
            .await?
            .into_iter()
            .map(|s| (s.external_ref.clone(), s))
            .collect();
        let wanted_keys: Vec<SecretKey> = keys.iter().flatten().cloned().collect();
        let by_key: HashMap<String, SecretRecord> = self
            .store()
            .secrets_by_keys(tenant, &wanted_keys)
            .await?
            .into_iter()
            .map(|s| (s.key.as_str().to_owned(), s))
            .collect();
        let taken_names: HashSet<String> = self
            .store()
            .secrets_by_display_names(tenant, &names)
            .await?
            .into_iter()
            .map(|s| s.display_name)
            .collect();

        let mut keys_on_page = HashSet::new();
        let mut names_on_page = HashSet::new();
        let mut candidates = Vec::with_capacity(remote.len());
        for ((secret, key), display_name) in remote.into_iter().zip(keys).zip(names) {
            let mut conflicts = Vec::new();
            let mut details = Vec::new();
            let mut status = CandidateStatus::Ready;
            if let Some(existing) = by_ref.get(&secret.external_ref) {
                status = CandidateStatus::Duplicate;
                conflicts.push(ImportConflict::ExactReference);
                details.push(format!("already imported as {}", existing.name()));
            } else {
                if secret.guarded {
                    conflicts.push(ImportConflict::ProviderGuardrail);
                    details.push(
                        "the secret is inside Coffer's own managed namespace; it cannot be imported as an external reference"
                            .to_owned(),
                    );
                }
                match &key {
                    None => {
                        conflicts.push(ImportConflict::Key);
                        details.push(
                            "no key can be derived from the remote name; give a key".to_owned(),
                        );
                    }
                    Some(key) => {
                        if let Some(holder) = by_key.get(key.as_str()) {
                            conflicts.push(ImportConflict::Key);
                            details.push(if holder.state == SecretState::Deleted {
                                format!("key {key} is held by a deleted secret; undelete it, or purge it with a forced delete, or give another key")
                            } else {
                                format!("key {key} is taken by {}; give another key", holder.name())
                            });
                        } else if !keys_on_page.insert(key.as_str().to_owned()) {
                            conflicts.push(ImportConflict::Key);
                            details.push(format!(
                                "another candidate on this page suggests key {key}; give one of them another key"
                            ));
                        }
                    }
                }
                if taken_names.contains(&display_name) {
                    conflicts.push(ImportConflict::Name);
                    details.push(
                        "another secret already has this display name; give another display name"
                            .to_owned(),
                    );
                } else if !names_on_page.insert(display_name.clone()) {
                    conflicts.push(ImportConflict::Name);
                    details.push(
                        "another candidate on this page suggests the same display name".to_owned(),
                    );
                }
                if !conflicts.is_empty() {
                    status = CandidateStatus::Conflict;
                }
            }
            candidates.push(ImportCandidateView {
                metadata: safe_metadata(&secret),
                external_ref: secret.external_ref,
                remote_name: secret.name,
                suggested_key: key.map(|k| k.as_str().to_owned()).unwrap_or_default(),
                suggested_display_name: display_name,
                status,
                conflicts,
                detail: details.join("; "),
            });
        }
        Ok(candidates)
    }

    async fn import_row(
        &self,
        principal: &Principal,
        placement: &Placement,
        vault: &VaultRecord,
        row: ImportRowSpec,
    ) -> Result<ImportRowResult> {
        let tenant = vault.tenant.clone();
        let key = if row.key.is_empty() {
            SecretKey::normalize(remote_name_of(&row.external_ref), "key")?
        } else {
            SecretKey::parse(&row.key, "key")?
        };
        let display_name = if row.display_name.is_empty() {
            key.as_str().to_owned()
        } else {
            row.display_name
        };
        let now = now_micros();
        let mut secret = SecretRecord {
            uid: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.clone(),
            key,
            display_name,
            description: row.description,
            labels: BTreeMap::new(),
            mode: SecretMode::ExternalReference,
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
        // Links (a metadata read, never the value) before the transaction,
        // which then re-checks every conflict against the canonical reference.
        let source = SecretSource::External {
            external_ref: row.external_ref.clone(),
            version_ref: row.version_ref,
        };
        let written = self
            .write_version(placement, &version_context(&secret, 1), &source)
            .await?;
        secret.external_ref = written.external_ref;
        let name = SecretName::new(tenant.clone(), secret.key.clone());

        let tx = self.store().begin().await?;
        let holders = tx_secrets_by_ref(self, &secret).await?;
        if let Some(existing) = holders.first() {
            return Ok(ImportRowResult {
                external_ref: row.external_ref,
                outcome: ImportOutcome::Skipped,
                secret: existing.name().to_string(),
                reason: format!("already imported as {}", existing.name()),
            });
        }
        super::secrets::ensure_name_free(&tx, &secret).await?;
        tx.insert_secret(&secret).await?;
        tx.insert_version(&VersionRecord {
            secret_uid: secret.uid.clone(),
            version: 1,
            state: VersionState::Enabled,
            provider: placement.provider.clone(),
            vault: placement.vault.clone(),
            provider_version_ref: written.stored.provider_version_ref,
            material: Some(written.stored.material),
            fingerprint: String::new(),
            create_time: now,
            created_by: principal.as_str().to_owned(),
            destroy_time: None,
            revision: 1,
        })
        .await?;
        let event = EventBuilder::new(&tenant, principal, "secret.import", name.to_string())
            .version(1)
            .success();
        tx.append_audit(vec![event]).await?;
        tx.commit().await?;
        Ok(ImportRowResult {
            external_ref: row.external_ref,
            outcome: ImportOutcome::Imported,
            secret: name.to_string(),
            reason: String::new(),
        })
    }
}

/// Live secrets of the tenant that already hold this secret's reference.
/// Read after the transaction began: on SQLite the single writer makes the
/// check and the insert atomic; on PostgreSQL two racing commits of the same
/// reference can both pass, which leaves two secrets pointing at one remote
/// secret (harmless: neither owns it) rather than losing an import.
async fn tx_secrets_by_ref(coffer: &Coffer, secret: &SecretRecord) -> Result<Vec<SecretRecord>> {
    coffer
        .store()
        .secrets_by_external_refs(&secret.tenant, std::slice::from_ref(&secret.external_ref))
        .await
}

/// A display name from a remote name: bounded, without control characters.
fn suggested_display_name(remote_name: &str) -> String {
    remote_name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DISPLAY_NAME_CHARS)
        .collect()
}

/// The remote name inside a reference: an AWS ARN's last segment without
/// the six-character suffix AWS appends (`…:secret:prod/db-AbCdEf`), or the
/// reference itself.
fn remote_name_of(external_ref: &str) -> &str {
    let bounded = if external_ref.len() > MAX_EXTERNAL_REF_CHARS {
        ""
    } else {
        external_ref
    };
    match bounded.split_once(":secret:") {
        Some((_, name)) => match name.rsplit_once('-') {
            Some((base, suffix))
                if suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                base
            }
            _ => name,
        },
        None => bounded,
    }
}

fn safe_metadata(secret: &RemoteSecret) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    for (key, time) in [
        ("create_time", secret.create_time),
        ("last_changed_time", secret.last_changed_time),
        ("last_accessed_time", secret.last_accessed_time),
    ] {
        if let Some(micros) = time {
            metadata.insert(
                key.to_owned(),
                crate::grpc::convert::timestamp(micros).to_string(),
            );
        }
    }
    metadata.insert("tag_count".to_owned(), secret.tag_count.to_string());
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_names_from_references() {
        assert_eq!(
            remote_name_of("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"),
            "prod/db"
        );
        assert_eq!(
            remote_name_of("arn:aws:secretsmanager:us-east-1:123456789012:secret:plain"),
            "plain"
        );
        assert_eq!(remote_name_of("prod/api-key"), "prod/api-key");
    }

    #[test]
    fn display_names_are_bounded() {
        let long = "x".repeat(300);
        assert_eq!(
            suggested_display_name(&long).chars().count(),
            MAX_DISPLAY_NAME_CHARS
        );
        assert_eq!(suggested_display_name("a\u{7}b"), "ab");
    }
}
