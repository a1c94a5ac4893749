//! Writing managed versions: CreateSecret and PutSecretValue, always with
//! the version's ClientRequestToken, and adopting an existing secret at the
//! managed name only when it is Coffer's secret for the same key.

use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::types::Tag;

use super::client::{AwsSecretsManagerProvider, required};
use super::errors::{code_of, from_sdk};
use super::material::{Material, request_token};
use crate::error::{ProviderError, ProviderErrorKind};
use crate::types::{StoredVersion, VersionContext};

/// AWS's limit on a secret value (SecretString or SecretBinary).
const MAX_VALUE_BYTES: usize = 65_536;

const TAG_MANAGED: &str = "coffer:managed";
const TAG_TENANT: &str = "coffer:tenant";
const TAG_KEY: &str = "coffer:key";
const TAG_OWNER: &str = "coffer:owner";
const TAG_ENVIRONMENT: &str = "coffer:environment";

impl AwsSecretsManagerProvider {
    /// Writes a managed version: CreateSecret for version 1, PutSecretValue
    /// for later ones, both with the version's ClientRequestToken.
    pub(super) async fn write_managed(
        &self,
        ctx: &VersionContext,
        value: &[u8],
    ) -> Result<StoredVersion, ProviderError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(ProviderError::invalid_request(format!(
                "AWS Secrets Manager holds at most {MAX_VALUE_BYTES} bytes per value"
            )));
        }
        let name = self.names.name(&ctx.tenant, &ctx.key);
        let token = request_token(ctx);
        let (arn, version_id) = if ctx.version <= 1 {
            self.create(ctx, &name, &token, value).await?
        } else {
            match self.put_secret_value(&name, &token, value).await {
                // A secret moved into this vault by a rotation, or one whose
                // remote secret was removed: start it here.
                Err(err) if err.kind == ProviderErrorKind::NotFound => {
                    self.create(ctx, &name, &token, value).await?
                }
                other => other?,
            }
        };
        Material::new(arn, name, ctx, false).into_stored(version_id)
    }

    /// CreateSecret for a new managed secret; when its name is taken (an
    /// earlier attempt of this write, a purged and recreated key, or a
    /// leftover scheduled for deletion), adopts the existing secret if it
    /// is Coffer's secret for this key.
    async fn create(
        &self,
        ctx: &VersionContext,
        name: &str,
        token: &str,
        value: &[u8],
    ) -> Result<(String, String), ProviderError> {
        let (string, binary) = payload(value);
        let mut request = self
            .client
            .create_secret()
            .name(name)
            .client_request_token(token)
            .description("managed by coffer; change it through coffer")
            .set_secret_string(string)
            .set_secret_binary(binary)
            .tags(tag(TAG_MANAGED, "true"))
            .tags(tag(TAG_TENANT, &ctx.tenant))
            .tags(tag(TAG_KEY, &ctx.key));
        if !self.owner_tag.is_empty() {
            request = request.tags(tag(TAG_OWNER, &self.owner_tag));
        }
        if !self.environment_tag.is_empty() {
            request = request.tags(tag(TAG_ENVIRONMENT, &self.environment_tag));
        }
        if !self.kms_key_id.is_empty() {
            request = request.kms_key_id(&self.kms_key_id);
        }
        match request.send().await {
            Ok(out) => Ok((
                required(out.arn, "CreateSecret", "ARN")?,
                required(out.version_id, "CreateSecret", "VersionId")?,
            )),
            // AWS answers ResourceExists for a live secret of that name and
            // InvalidRequest for one scheduled for deletion.
            Err(err)
                if matches!(
                    code_of(&err),
                    Some("ResourceExistsException" | "InvalidRequestException")
                ) =>
            {
                let create_error = from_sdk("CreateSecret", &err);
                match self.describe(name).await {
                    Ok(existing) => self.adopt(ctx, name, existing, token, value).await,
                    Err(describe_error) if describe_error.kind == ProviderErrorKind::NotFound => {
                        Err(create_error)
                    }
                    Err(describe_error) => Err(describe_error),
                }
            }
            Err(err) => Err(from_sdk("CreateSecret", &err)),
        }
    }

    async fn adopt(
        &self,
        ctx: &VersionContext,
        name: &str,
        existing: DescribeSecretOutput,
        token: &str,
        value: &[u8],
    ) -> Result<(String, String), ProviderError> {
        let tag_value = |key: &str| {
            existing
                .tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(Tag::value)
        };
        let ours = tag_value(TAG_MANAGED) == Some("true")
            && tag_value(TAG_TENANT) == Some(ctx.tenant.as_str())
            && tag_value(TAG_KEY) == Some(ctx.key.as_str());
        if !ours {
            return Err(ProviderError::guardrail(format!(
                "a secret named {name} already exists in AWS Secrets Manager and is not coffer's secret for this key; remove or rename it there, or use a vault with another namespace"
            )));
        }
        let arn = required(existing.arn, "DescribeSecret", "ARN")?;
        if existing.deleted_date.is_some() {
            tracing::info!(
                name,
                "restoring a managed secret scheduled for deletion to write into it"
            );
            self.client
                .restore_secret()
                .secret_id(&arn)
                .send()
                .await
                .map_err(|e| from_sdk("RestoreSecret", &e))?;
        }
        self.put_secret_value(&arn, token, value).await
    }

    async fn put_secret_value(
        &self,
        secret_id: &str,
        token: &str,
        value: &[u8],
    ) -> Result<(String, String), ProviderError> {
        let (string, binary) = payload(value);
        let out = self
            .client
            .put_secret_value()
            .secret_id(secret_id)
            .client_request_token(token)
            .set_secret_string(string)
            .set_secret_binary(binary)
            .send()
            .await
            .map_err(|e| from_sdk("PutSecretValue", &e))?;
        Ok((
            required(out.arn, "PutSecretValue", "ARN")?,
            required(out.version_id, "PutSecretValue", "VersionId")?,
        ))
    }
}

/// UTF-8 values go as SecretString (what other AWS tools and the console
/// expect), anything else as SecretBinary. Reading takes either back as the
/// same bytes, so values round-trip exactly.
fn payload(value: &[u8]) -> (Option<String>, Option<Blob>) {
    match std::str::from_utf8(value) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(Blob::new(value))),
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::aws_secrets_manager::client::take_value;

    #[test]
    fn values_round_trip_through_either_payload() {
        for value in [b"text value".to_vec(), vec![0, 159, 146, 150, 255]] {
            let (string, binary) = payload(&value);
            assert_eq!(string.is_some(), std::str::from_utf8(&value).is_ok());
            assert_ne!(string.is_some(), binary.is_some());
            assert_eq!(
                take_value(string, binary).unwrap().expose(),
                value.as_slice()
            );
        }
        assert_eq!(
            take_value(None, None).unwrap_err().kind,
            ProviderErrorKind::InvalidRequest
        );
    }
}
