//! VaultService messages into use-case inputs and records into messages:
//! the vault resource, its provider-specific config oneof, update masks, and
//! the import candidates and results.

use coffer_core::record::{VaultRecord, VaultState};
use coffer_core::{Error, Result};
use coffer_proto::v1;
use coffer_providers::{AwsSecretsManagerConfig, ProviderDescriptor, VaultConfig};

use super::convert::timestamp;
use crate::app::{
    CandidateStatus, ImportCandidateView, ImportConflict, ImportOutcome, ImportRowResult,
    ImportRowSpec, VaultPatch,
};

pub(super) fn vault(record: &VaultRecord) -> v1::Vault {
    let config = match VaultConfig::from_json(&record.provider, &record.config) {
        Ok(VaultConfig::AwsSecretsManager(aws)) => {
            Some(v1::vault::Config::AwsSecretsManager(aws_message(aws)))
        }
        Ok(VaultConfig::LocalEncrypted) => Some(v1::vault::Config::LocalEncrypted(
            v1::LocalEncryptedConfig {},
        )),
        // Validated when written; a row that no longer parses shows no config
        // rather than failing every read of the vault.
        Err(_) => None,
    };
    v1::Vault {
        name: record.name(),
        provider: record.provider.clone(),
        display_name: record.display_name.clone(),
        state: vault_state(record.state) as i32,
        is_default: record.is_default,
        config,
        health: Some(v1::VaultHealth {
            status: record.health_status.clone(),
            message: record.health_message.clone(),
            check_time: record.health_check_time.map(timestamp),
        }),
        create_time: Some(timestamp(record.create_time)),
        update_time: Some(timestamp(record.update_time)),
        disable_time: record.disable_time.map(timestamp),
        etag: record.etag(),
    }
}

fn vault_state(state: VaultState) -> v1::vault::State {
    match state {
        VaultState::Ready => v1::vault::State::Ready,
        VaultState::Warning => v1::vault::State::Warning,
        VaultState::Disabled => v1::vault::State::Disabled,
    }
}

fn aws_message(aws: AwsSecretsManagerConfig) -> v1::AwsSecretsManagerConfig {
    v1::AwsSecretsManagerConfig {
        region: aws.region,
        endpoint_url: aws.endpoint_url,
        name_prefix: aws.name_prefix,
        namespace: aws.namespace,
        kms_key_id: aws.kms_key_id,
        owner_tag: aws.owner_tag,
        environment_tag: aws.environment_tag,
        recovery_window_days: aws.recovery_window_days,
    }
}

/// The config oneof as provider settings; `None` when the request has none.
pub(super) fn vault_config(config: Option<v1::vault::Config>) -> Option<VaultConfig> {
    config.map(|config| match config {
        v1::vault::Config::LocalEncrypted(_) => VaultConfig::LocalEncrypted,
        v1::vault::Config::AwsSecretsManager(aws) => {
            VaultConfig::AwsSecretsManager(AwsSecretsManagerConfig {
                region: aws.region,
                endpoint_url: aws.endpoint_url,
                name_prefix: aws.name_prefix,
                namespace: aws.namespace,
                kms_key_id: aws.kms_key_id,
                owner_tag: aws.owner_tag,
                environment_tag: aws.environment_tag,
                recovery_window_days: aws.recovery_window_days,
            })
        }
    })
}

const UPDATABLE: &str = "display_name, config, state";

/// Turns an UpdateVault request into a patch. An empty mask means "every
/// field that is set"; `*` means all of them. `config` replaces the whole
/// config (any of `config`, `aws_secrets_manager`, `local_encrypted` names it).
pub(super) fn vault_patch(
    vault: v1::Vault,
    mask: Option<prost_types::FieldMask>,
) -> Result<VaultPatch> {
    let mut paths: Vec<String> = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        if !vault.display_name.is_empty() {
            paths.push("display_name".into());
        }
        if vault.config.is_some() {
            paths.push("config".into());
        }
        if vault.state != 0 {
            paths.push("state".into());
        }
        if paths.is_empty() {
            return Err(Error::invalid_field(
                "update_mask",
                "nothing to update; set update_mask",
            ));
        }
    }
    if paths.iter().any(|p| p == "*") {
        paths = ["display_name", "config", "state"]
            .map(String::from)
            .to_vec();
    }
    let mut patch = VaultPatch::default();
    for path in paths {
        match path.as_str() {
            "display_name" => patch.display_name = Some(vault.display_name.clone()),
            "config" | "aws_secrets_manager" | "local_encrypted" => {
                patch.config = Some(vault_config(vault.config.clone()).ok_or_else(|| {
                    Error::invalid_field(
                        "vault.config",
                        "the mask names config but the vault carries none; send the whole new config",
                    )
                })?);
            }
            "state" => {
                patch.state = Some(match v1::vault::State::try_from(vault.state) {
                    Ok(v1::vault::State::Ready) => VaultState::Ready,
                    Ok(v1::vault::State::Disabled) => VaultState::Disabled,
                    _ => {
                        return Err(Error::invalid_field(
                            "vault.state",
                            "state can be set to STATE_READY (enable) or STATE_DISABLED",
                        ));
                    }
                });
            }
            other => {
                let shown: String = other.chars().take(64).filter(|c| !c.is_control()).collect();
                return Err(Error::invalid_field(
                    "update_mask",
                    format!("cannot update {shown:?}; updatable fields are {UPDATABLE}"),
                ));
            }
        }
    }
    Ok(patch)
}

pub(super) fn provider(descriptor: ProviderDescriptor, configured: bool) -> v1::ProviderDescriptor {
    v1::ProviderDescriptor {
        id: descriptor.id.to_owned(),
        label: descriptor.label.to_owned(),
        supports_managed_values: descriptor.supports_managed_values,
        supports_external_references: descriptor.supports_external_references,
        supports_remote_listing: descriptor.supports_remote_listing,
        supports_batch_resolve: descriptor.supports_batch_resolve,
        configured,
    }
}

pub(super) fn candidate(view: ImportCandidateView) -> v1::ImportCandidate {
    use v1::import_candidate::{Conflict, Status};
    v1::ImportCandidate {
        external_ref: view.external_ref,
        remote_name: view.remote_name,
        suggested_key: view.suggested_key,
        suggested_display_name: view.suggested_display_name,
        status: match view.status {
            CandidateStatus::Ready => Status::Ready,
            CandidateStatus::Duplicate => Status::Duplicate,
            CandidateStatus::Conflict => Status::Conflict,
        } as i32,
        conflicts: view
            .conflicts
            .into_iter()
            .map(|c| {
                let conflict = match c {
                    ImportConflict::ExactReference => Conflict::ExactReference,
                    ImportConflict::Name => Conflict::Name,
                    ImportConflict::Key => Conflict::Key,
                    ImportConflict::ProviderGuardrail => Conflict::ProviderGuardrail,
                };
                conflict as i32
            })
            .collect(),
        metadata: view.metadata.into_iter().collect(),
        detail: view.detail,
    }
}

pub(super) fn import_row(row: v1::ImportRow) -> ImportRowSpec {
    ImportRowSpec {
        external_ref: row.external_ref,
        key: row.key,
        display_name: row.display_name,
        description: row.description,
        version_ref: row.version_ref,
    }
}

pub(super) fn import_results(results: Vec<ImportRowResult>) -> v1::CommitRemoteImportResponse {
    use v1::import_result::Status;
    let count = |outcome| {
        let n = results.iter().filter(|r| r.outcome == outcome).count();
        i32::try_from(n).unwrap_or(i32::MAX)
    };
    let (imported, skipped, failed) = (
        count(ImportOutcome::Imported),
        count(ImportOutcome::Skipped),
        count(ImportOutcome::Error),
    );
    v1::CommitRemoteImportResponse {
        results: results
            .into_iter()
            .map(|r| v1::ImportResult {
                external_ref: r.external_ref,
                status: match r.outcome {
                    ImportOutcome::Imported => Status::Imported,
                    ImportOutcome::Skipped => Status::Skipped,
                    ImportOutcome::Error => Status::Error,
                } as i32,
                secret: r.secret,
                reason: r.reason,
            })
            .collect(),
        imported,
        skipped,
        failed,
    }
}
