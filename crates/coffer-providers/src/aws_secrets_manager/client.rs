//! The client of one AWS vault: [`AwsSecretsManagerProvider`], the
//! [`SecretProvider`] implementation (writes are in `write`, batch
//! resolution in `batch`).

use std::fmt;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
use aws_sdk_secretsmanager::primitives::{Blob, DateTime};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::errors::from_sdk;
use super::material::{Material, is_plausible_reference, is_secret_name, reference_name};
use super::names::ManagedNames;
use super::{DESCRIPTOR, batch};
use crate::config::AwsSecretsManagerConfig;
use crate::error::{ProviderError, ProviderErrorKind};
use crate::provider::SecretProvider;
use crate::types::{
    LinkedExternal, ProviderDescriptor, ProviderHealth, RemotePage, RemoteSecret, RemoveMode,
    SecretValue, StoredVersion, VersionContext,
};

/// AWS's limit on ListSecrets' MaxResults.
const MAX_LIST_PAGE: u32 = 100;
const MIN_RECOVERY_WINDOW_DAYS: i64 = 7;
const MAX_RECOVERY_WINDOW_DAYS: i64 = 30;
const AWSCURRENT: &str = "AWSCURRENT";

/// A client of one AWS vault (one SDK client, built at connect).
pub(super) struct AwsSecretsManagerProvider {
    pub(super) client: Client,
    pub(super) names: ManagedNames,
    region: String,
    pub(super) kms_key_id: String,
    pub(super) owner_tag: String,
    pub(super) environment_tag: String,
    /// The vault's recovery window for soft deletes; 0 = the request's.
    recovery_window_days: i64,
}

impl AwsSecretsManagerProvider {
    pub(super) fn new(client: Client, config: &AwsSecretsManagerConfig, region: String) -> Self {
        AwsSecretsManagerProvider {
            client,
            names: ManagedNames::new(config),
            region,
            kms_key_id: config.kms_key_id.clone(),
            owner_tag: config.owner_tag.clone(),
            environment_tag: config.environment_tag.clone(),
            recovery_window_days: i64::from(config.recovery_window_days),
        }
    }

    pub(super) async fn describe(
        &self,
        secret_id: &str,
    ) -> Result<DescribeSecretOutput, ProviderError> {
        self.client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| from_sdk("DescribeSecret", &e))
    }

    /// GetSecretValue of one version (`version_id` empty = AWSCURRENT).
    pub(super) async fn get_value(
        &self,
        arn: &str,
        version_id: &str,
    ) -> Result<SecretValue, ProviderError> {
        let mut request = self.client.get_secret_value().secret_id(arn);
        if !version_id.is_empty() {
            request = request.version_id(version_id);
        }
        let mut out = request
            .send()
            .await
            .map_err(|e| from_sdk("GetSecretValue", &e))?;
        take_value(out.secret_string.take(), out.secret_binary.take())
    }

    async fn force_delete(&self, arn: &str) -> Result<(), ProviderError> {
        self.client
            .delete_secret()
            .secret_id(arn)
            .force_delete_without_recovery(true)
            .send()
            .await
            .map(drop)
            .map_err(|e| from_sdk("DeleteSecret", &e))
    }
}

#[async_trait]
impl SecretProvider for AwsSecretsManagerProvider {
    fn descriptor(&self) -> ProviderDescriptor {
        DESCRIPTOR
    }

    async fn put_value(
        &self,
        ctx: &VersionContext,
        value: &[u8],
    ) -> Result<StoredVersion, ProviderError> {
        self.write_managed(ctx, value).await
    }

    async fn link_external(
        &self,
        ctx: &VersionContext,
        external_ref: &str,
        version_ref: &str,
    ) -> Result<LinkedExternal, ProviderError> {
        if !is_plausible_reference(external_ref) {
            return Err(ProviderError::invalid_request(
                "an AWS external reference is a secret name ([A-Za-z0-9/_+=.@-], up to 512 characters) or a Secrets Manager secret ARN",
            ));
        }
        let guardrail = || {
            ProviderError::guardrail(format!(
                "the reference points inside coffer's managed namespace {}; link a secret outside it, or resolve the managed secret through coffer",
                self.names.root()
            ))
        };
        if self.names.is_guarded(reference_name(external_ref)) {
            return Err(guardrail());
        }
        let described = self.describe(external_ref).await?;
        let arn = required(described.arn, "DescribeSecret", "ARN")?;
        let name = required(described.name, "DescribeSecret", "Name")?;
        if self.names.is_guarded(&name) {
            return Err(guardrail());
        }
        if described.deleted_date.is_some() {
            return Err(ProviderError::invalid_request(
                "the remote secret is scheduled for deletion; restore it in AWS Secrets Manager before linking it",
            ));
        }
        if !version_ref.is_empty()
            && !described
                .version_ids_to_stages
                .as_ref()
                .is_some_and(|versions| versions.contains_key(version_ref))
        {
            return Err(ProviderError::not_found(
                "the remote secret has no version with that id (AWS keeps only versions that carry a staging label); give a current version id, or none to follow AWSCURRENT",
            ));
        }
        let stored =
            Material::new(arn.clone(), name, ctx, true).into_stored(version_ref.to_owned())?;
        Ok(LinkedExternal {
            stored,
            external_ref: arn,
        })
    }

    async fn resolve(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<SecretValue, ProviderError> {
        let material = Material::checked(stored, ctx, &self.names, true)?;
        self.get_value(&material.arn, &stored.provider_version_ref)
            .await
    }

    async fn resolve_many(
        &self,
        items: &[(VersionContext, StoredVersion)],
    ) -> Vec<Result<SecretValue, ProviderError>> {
        batch::resolve_many(self, items).await
    }

    /// ListSecrets. A non-empty `query` is a name prefix (AWS's `name`
    /// filter; case-sensitive): predictable for picking a subtree such as
    /// `prod/`, where the `all` filter would match words in descriptions
    /// and tags too. Secrets scheduled for deletion are not listed.
    async fn list_remote(
        &self,
        query: &str,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<RemotePage, ProviderError> {
        if !query.is_empty() && !is_secret_name(query) {
            return Err(ProviderError::invalid_request(
                "the query is a secret name prefix: letters, digits and / _ + = . @ - only",
            ));
        }
        let page_size = if page_size == 0 {
            MAX_LIST_PAGE
        } else {
            page_size.min(MAX_LIST_PAGE)
        };
        let mut request = self
            .client
            .list_secrets()
            .max_results(i32::try_from(page_size).unwrap_or(100));
        if !query.is_empty() {
            request = request.filters(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(query)
                    .build(),
            );
        }
        if let Some(token) = page_token.filter(|t| !t.is_empty()) {
            request = request.next_token(token);
        }
        let out = request
            .send()
            .await
            .map_err(|e| from_sdk("ListSecrets", &e))?;
        let secrets = out
            .secret_list
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| {
                let (Some(arn), Some(name)) = (entry.arn, entry.name) else {
                    return None;
                };
                Some(RemoteSecret {
                    guarded: self.names.is_guarded(&name),
                    external_ref: arn,
                    name,
                    create_time: entry.created_date.as_ref().and_then(micros),
                    last_changed_time: entry.last_changed_date.as_ref().and_then(micros),
                    last_accessed_time: entry.last_accessed_date.as_ref().and_then(micros),
                    tag_count: entry.tags.map_or(0, |tags| tags.len()),
                })
            })
            .collect();
        Ok(RemotePage {
            secrets,
            next_page_token: out.next_token.filter(|t| !t.is_empty()),
        })
    }

    /// AWS cannot delete one version of a secret; this drops the version's
    /// staging labels (except AWSCURRENT, which AWS requires on some
    /// version) so it becomes deprecated, and AWS removes deprecated
    /// versions in time.
    async fn destroy_version(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<(), ProviderError> {
        let material = Material::checked(stored, ctx, &self.names, true)?;
        if material.external {
            return Ok(());
        }
        let version_id = &stored.provider_version_ref;
        let described = match self.describe(&material.arn).await {
            Err(err) if err.kind == ProviderErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        let stages = described
            .version_ids_to_stages
            .and_then(|mut versions| versions.remove(version_id))
            .unwrap_or_default();
        for stage in stages.iter().filter(|s| *s != AWSCURRENT) {
            let removed = self
                .client
                .update_secret_version_stage()
                .secret_id(&material.arn)
                .version_stage(stage)
                .remove_from_version_id(version_id)
                .send()
                .await;
            match removed {
                Ok(_) => {}
                Err(err) => {
                    let err = from_sdk("UpdateSecretVersionStage", &err);
                    if err.kind != ProviderErrorKind::NotFound {
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }

    async fn remove_secret(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
        mode: RemoveMode,
    ) -> Result<(), ProviderError> {
        // Never a remote call for an external reference: Coffer does not own it.
        if Material::parse(stored)?.external {
            return Ok(());
        }
        let material = Material::checked(stored, ctx, &self.names, false)?;
        let arn = material.arn.as_str();
        let result = match mode {
            RemoveMode::Archive {
                recovery_window_days,
            } => {
                let days = if self.recovery_window_days != 0 {
                    self.recovery_window_days
                } else {
                    recovery_window_days
                }
                .clamp(MIN_RECOVERY_WINDOW_DAYS, MAX_RECOVERY_WINDOW_DAYS);
                let deleted = self
                    .client
                    .delete_secret()
                    .secret_id(arn)
                    .recovery_window_in_days(days)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| from_sdk("DeleteSecret", &e));
                match deleted {
                    // Already scheduled for deletion: nothing to do.
                    Err(err) if err.kind == ProviderErrorKind::InvalidRequest => {
                        match self.describe(arn).await {
                            Ok(d) if d.deleted_date.is_some() => Ok(()),
                            _ => Err(err),
                        }
                    }
                    other => other,
                }
            }
            RemoveMode::Delete => match self.force_delete(arn).await {
                // Where AWS refuses to purge a secret scheduled for
                // deletion, restore it and purge.
                Err(err) if err.kind == ProviderErrorKind::InvalidRequest => {
                    self.restore_secret(ctx, stored).await?;
                    self.force_delete(arn).await
                }
                other => other,
            },
        };
        match result {
            Err(err) if err.kind == ProviderErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn restore_secret(
        &self,
        ctx: &VersionContext,
        stored: &StoredVersion,
    ) -> Result<(), ProviderError> {
        if Material::parse(stored)?.external {
            return Ok(());
        }
        let material = Material::checked(stored, ctx, &self.names, false)?;
        match self
            .client
            .restore_secret()
            .secret_id(&material.arn)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                let err = from_sdk("RestoreSecret", &err);
                if err.kind == ProviderErrorKind::NotFound {
                    Err(ProviderError::not_found(
                        "the remote secret no longer exists (its recovery window ended or it was purged); it cannot be restored",
                    )
                    .with_cause(err.cause.unwrap_or_default()))
                } else {
                    Err(err)
                }
            }
        }
    }

    /// ListSecrets of one item: proves the endpoint answers and accepts the
    /// server's credentials.
    async fn health_check(&self) -> ProviderHealth {
        match self.client.list_secrets().max_results(1).send().await {
            Ok(_) => ProviderHealth::ok(format!(
                "AWS Secrets Manager in {} answered; credentials accepted",
                self.region
            )),
            Err(err) => {
                let err = from_sdk("ListSecrets", &err);
                tracing::warn!(
                    kind = err.kind.as_str(),
                    cause = err.cause.as_deref().unwrap_or_default(),
                    "aws secrets manager health check failed"
                );
                ProviderHealth::failing(err.message)
            }
        }
    }
}

impl fmt::Debug for AwsSecretsManagerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSecretsManagerProvider")
            .field("region", &self.region)
            .field("managed_root", &self.names.root())
            .finish_non_exhaustive()
    }
}

/// The bytes of a fetched version, moved (not copied) into a [`SecretValue`].
pub(super) fn take_value(
    string: Option<String>,
    binary: Option<Blob>,
) -> Result<SecretValue, ProviderError> {
    match (binary, string) {
        (Some(binary), _) => Ok(SecretValue::new(binary.into_inner())),
        (None, Some(string)) => Ok(SecretValue::new(string.into_bytes())),
        (None, None) => Err(ProviderError::invalid_request(
            "the remote secret version has no value",
        )),
    }
}

pub(super) fn required<T>(
    field: Option<T>,
    operation: &str,
    name: &str,
) -> Result<T, ProviderError> {
    field.ok_or_else(|| {
        ProviderError::provider(format!(
            "AWS Secrets Manager answered {operation} without a {name}"
        ))
    })
}

/// Microseconds since the epoch.
fn micros(time: &DateTime) -> Option<i64> {
    time.secs()
        .checked_mul(1_000_000)?
        .checked_add(i64::from(time.subsec_nanos() / 1_000))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn missing_values_are_refused() {
        assert_eq!(
            take_value(None, None).unwrap_err().kind,
            ProviderErrorKind::InvalidRequest
        );
    }

    #[test]
    fn dates_are_micros() {
        assert_eq!(
            micros(&DateTime::from_secs_and_nanos(2, 5_000)),
            Some(2_000_005)
        );
        assert_eq!(micros(&DateTime::from_secs(i64::MAX)), None);
    }
}
