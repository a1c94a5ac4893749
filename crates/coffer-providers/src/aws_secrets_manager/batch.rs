//! `resolve_many` for AWS: BatchGetSecretValue for many secrets at once.
//!
//! BatchGetSecretValue takes at most 20 secret ids per call and returns each
//! secret's AWSCURRENT version only (it has no VersionId parameter). So:
//! distinct secrets go in chunks of 20 (chunks run concurrently); an item
//! pinned to the version AWS returned as current is answered from the
//! batch; an item pinned to an older version falls back to one
//! GetSecretValue per distinct (secret, version). When the server's role
//! may not call BatchGetSecretValue at all, the chunk falls back the same
//! way, so a policy granting only GetSecretValue still works.

use std::collections::HashMap;

use futures::future::join_all;
use futures::stream::{self, StreamExt};

use super::client::{AwsSecretsManagerProvider, take_value};
use super::errors::{from_code, from_sdk};
use super::material::Material;
use crate::error::{ProviderError, ProviderErrorKind};
use crate::types::{SecretValue, StoredVersion, VersionContext};

/// AWS's limit on SecretIdList.
pub(super) const MAX_IDS_PER_CALL: usize = 20;
/// GetSecretValue fallbacks in flight at once.
const FALLBACK_CONCURRENCY: usize = 8;

/// What one secret's batch lookup gave.
enum Fetched {
    /// The current version: its VersionId and value.
    Current(String, SecretValue),
    Failed(ProviderError),
}

pub(super) async fn resolve_many(
    provider: &AwsSecretsManagerProvider,
    items: &[(VersionContext, StoredVersion)],
) -> Vec<Result<SecretValue, ProviderError>> {
    // Guardrails first: items that fail them are never fetched.
    let targets: Vec<Result<(String, &str), ProviderError>> = items
        .iter()
        .map(|(ctx, stored)| {
            Material::checked(stored, ctx, &provider.names, true)
                .map(|m| (m.arn, stored.provider_version_ref.as_str()))
        })
        .collect();

    let mut arns: Vec<&str> = Vec::new();
    for (arn, _) in targets.iter().flatten() {
        if !arns.contains(&arn.as_str()) {
            arns.push(arn);
        }
    }
    let chunks = join_all(
        arns.chunks(MAX_IDS_PER_CALL)
            .map(|chunk| batch_get(provider, chunk)),
    )
    .await;
    let fetched: HashMap<String, Fetched> = chunks.into_iter().flatten().collect();

    // Items the batch could not answer: pinned to a non-current version, or
    // absent from the answer. One GetSecretValue per distinct pair.
    let mut fallbacks: Vec<(String, String)> = Vec::new();
    for (arn, version_id) in targets.iter().flatten() {
        let answered = match fetched.get(arn) {
            Some(Fetched::Current(current, _)) => version_id.is_empty() || current == version_id,
            Some(Fetched::Failed(_)) => true,
            None => false,
        };
        let pair = (arn.clone(), (*version_id).to_owned());
        if !answered && !fallbacks.contains(&pair) {
            fallbacks.push(pair);
        }
    }
    let singles: HashMap<(String, String), Result<SecretValue, ProviderError>> =
        stream::iter(fallbacks)
            .map(|(arn, version_id)| async move {
                let result = provider.get_value(&arn, &version_id).await;
                ((arn, version_id), result)
            })
            .buffer_unordered(FALLBACK_CONCURRENCY)
            .collect()
            .await;

    targets
        .into_iter()
        .map(|target| {
            let (arn, version_id) = target?;
            if let Some(single) = singles.get(&(arn.clone(), version_id.to_owned())) {
                return single.clone();
            }
            match fetched.get(&arn) {
                Some(Fetched::Current(_, value)) => Ok(value.clone()),
                Some(Fetched::Failed(err)) => Err(err.clone()),
                None => Err(ProviderError::provider(
                    "AWS Secrets Manager did not answer for a secret of the batch",
                )),
            }
        })
        .collect()
}

/// One BatchGetSecretValue call (following NextToken) for up to 20 ARNs;
/// a result for every ARN it answered for, keyed by ARN.
async fn batch_get(provider: &AwsSecretsManagerProvider, arns: &[&str]) -> Vec<(String, Fetched)> {
    let mut results = Vec::with_capacity(arns.len());
    let mut next_token: Option<String> = None;
    loop {
        let sent = provider
            .client
            .batch_get_secret_value()
            .set_secret_id_list(Some(arns.iter().map(|a| (*a).to_owned()).collect()))
            .set_next_token(next_token.take())
            .send()
            .await;
        let mut out = match sent {
            Ok(out) => out,
            Err(err) => {
                let err = from_sdk("BatchGetSecretValue", &err);
                // Without BatchGetSecretValue permission, the caller falls
                // back to GetSecretValue (the ARNs stay unanswered).
                if err.kind == ProviderErrorKind::AccessDenied {
                    tracing::debug!(
                        cause = err.cause.as_deref().unwrap_or_default(),
                        "BatchGetSecretValue refused; falling back to GetSecretValue"
                    );
                    return Vec::new();
                }
                return arns
                    .iter()
                    .map(|arn| ((*arn).to_owned(), Fetched::Failed(err.clone())))
                    .collect();
            }
        };
        for mut entry in out.secret_values.take().unwrap_or_default() {
            let (Some(arn), Some(version_id)) = (entry.arn.take(), entry.version_id.take()) else {
                continue;
            };
            let fetched = match take_value(entry.secret_string.take(), entry.secret_binary.take()) {
                Ok(value) => Fetched::Current(version_id, value),
                Err(err) => Fetched::Failed(err),
            };
            results.push((arn, fetched));
        }
        for error in out.errors.take().unwrap_or_default() {
            if let Some(id) = error.secret_id {
                let err = from_code(
                    error.error_code.as_deref(),
                    error.message.as_deref().unwrap_or_default(),
                    "BatchGetSecretValue",
                );
                results.push((id, Fetched::Failed(err)));
            }
        }
        match out.next_token.take().filter(|t| !t.is_empty()) {
            Some(token) => next_token = Some(token),
            None => return results,
        }
    }
}
