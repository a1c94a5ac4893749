//! What the AWS provider stores per version ([`Material`]), the checks that
//! keep material to its place (the guardrails), and the idempotency token
//! of a write.

use ring::digest;
use serde::{Deserialize, Serialize};

use super::SCHEME;
use super::names::ManagedNames;
use crate::error::ProviderError;
use crate::types::{StoredVersion, VersionContext};

/// Longest secret name AWS accepts.
const MAX_NAME_CHARS: usize = 512;

/// The material JSON: where the version lives, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Material {
    pub(super) scheme: String,
    /// The secret's full ARN (with AWS's random suffix), so a purged and
    /// recreated secret of the same name is never read by mistake.
    pub(super) arn: String,
    pub(super) name: String,
    /// The Coffer version number this material belongs to.
    pub(super) version: i64,
    /// A reference to a secret Coffer does not manage.
    pub(super) external: bool,
}

impl Material {
    pub(super) fn new(arn: String, name: String, ctx: &VersionContext, external: bool) -> Self {
        Material {
            scheme: SCHEME.to_owned(),
            arn,
            name,
            version: ctx.version,
            external,
        }
    }

    pub(super) fn into_stored(self, version_id: String) -> Result<StoredVersion, ProviderError> {
        let material = serde_json::to_string(&self).map_err(|e| {
            ProviderError::provider("could not encode the AWS secret's material").with_cause(e)
        })?;
        Ok(StoredVersion {
            material,
            provider_version_ref: version_id,
        })
    }

    pub(super) fn parse(stored: &StoredVersion) -> Result<Self, ProviderError> {
        let material: Material = serde_json::from_str(&stored.material).map_err(|e| {
            ProviderError::provider(
                "the stored version is not aws_secrets_manager material; it cannot be read by this vault",
            )
            .with_cause(e)
        })?;
        if material.scheme != SCHEME {
            return Err(ProviderError::provider(
                "the stored version is not aws_secrets_manager material; it cannot be read by this vault",
            )
            .with_cause(format!("material scheme {:?}", material.scheme)));
        }
        Ok(material)
    }

    /// Parses material and checks it belongs to `ctx` in this vault: the
    /// guardrails. A managed secret must sit at the name derived from the
    /// context (and its ARN must name that secret); an external reference
    /// must lie outside the managed namespace. With `check_version`, the
    /// material must also be of `ctx.version`.
    pub(super) fn checked(
        stored: &StoredVersion,
        ctx: &VersionContext,
        names: &ManagedNames,
        check_version: bool,
    ) -> Result<Self, ProviderError> {
        let material = Self::parse(stored)?;
        if material.external {
            if names.is_guarded(&material.name) || names.is_guarded(reference_name(&material.arn)) {
                return Err(ProviderError::guardrail(format!(
                    "the external reference points inside coffer's managed namespace {}; coffer refuses to read it as an external secret",
                    names.root()
                ))
                .with_cause(format!("external material names {:?}", material.name)));
            }
        } else {
            let expected = names.name(&ctx.tenant, &ctx.key);
            if material.name != expected || arn_name(&material.arn) != Some(expected.as_str()) {
                return Err(ProviderError::guardrail(
                    "the managed secret's stored reference does not match the name derived from its tenant and key (it drifted, or the vault's name_prefix/namespace changed); coffer refuses to use it",
                )
                .with_cause(format!(
                    "material names {:?} (arn {:?}), expected {expected:?}",
                    material.name, material.arn
                )));
            }
            if stored.provider_version_ref.is_empty() {
                return Err(ProviderError::provider(
                    "the managed version has no AWS version id; it cannot be read",
                ));
            }
        }
        if check_version && material.version != ctx.version {
            return Err(ProviderError::guardrail(
                "the stored reference belongs to another version of the secret; coffer refuses to use it",
            )
            .with_cause(format!(
                "material of version {}, asked for version {}",
                material.version, ctx.version
            )));
        }
        Ok(material)
    }
}

/// What follows `:secret:` in a Secrets Manager ARN
/// (`arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX`): the
/// name with AWS's six-character suffix, or without it in a partial ARN.
pub(super) fn arn_resource(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let parts: Vec<&str> = rest.splitn(6, ':').collect();
    let [_partition, service, _region, _account, kind, resource] = parts.as_slice() else {
        return None;
    };
    (*service == "secretsmanager" && *kind == "secret" && !resource.is_empty()).then_some(resource)
}

/// The secret name inside a full Secrets Manager ARN, without AWS's
/// six-character suffix.
pub(super) fn arn_name(arn: &str) -> Option<&str> {
    let name_with_suffix = arn_resource(arn)?;
    let split = name_with_suffix.len().checked_sub(7)?;
    let (name, suffix) = name_with_suffix.split_at(split);
    (suffix.starts_with('-') && !name.is_empty()).then_some(name)
}

/// The name part of a reference given for linking: the reference itself,
/// or what an ARN (full or partial) names. Guardrails match it by prefix,
/// so AWS's suffix does not matter.
pub(super) fn reference_name(raw: &str) -> &str {
    arn_resource(raw).unwrap_or(raw)
}

/// Whether a reference given for linking is a plausible secret name or
/// Secrets Manager ARN, full or partial (checked before AWS sees it).
pub(super) fn is_plausible_reference(raw: &str) -> bool {
    if raw.starts_with("arn:") {
        return raw.len() <= 2048 && arn_resource(raw).is_some();
    }
    is_secret_name(raw)
}

/// `[A-Za-z0-9/_+=.@-]{1,512}`: what AWS accepts as a secret name.
pub(super) fn is_secret_name(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_NAME_CHARS
        && raw.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'+' | b'=' | b'.' | b'@' | b'-')
        })
}

/// The ClientRequestToken of a write, which AWS also uses as the version's
/// VersionId: a UUID-shaped digest of the secret's uid and the version (of
/// tenant and key when the caller has no uid). The same version always gets
/// the same token, so a retried write is idempotent; two secrets that reused
/// a key get different ones.
pub(super) fn request_token(ctx: &VersionContext) -> String {
    let input = if ctx.secret_uid.is_empty() {
        format!(
            "coffer/aws/v1\0key\0{}\0{}\0{}",
            ctx.tenant, ctx.key, ctx.version
        )
    } else {
        format!("coffer/aws/v1\0uid\0{}\0{}", ctx.secret_uid, ctx.version)
    };
    let digest = digest::digest(&digest::SHA256, input.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ProviderErrorKind;
    use crate::config::AwsSecretsManagerConfig;

    const ARN: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:coffer/default/acme/db-AbCdEf";

    fn names() -> ManagedNames {
        ManagedNames::new(&AwsSecretsManagerConfig::default())
    }

    fn stored(material: &Material, version_id: &str) -> StoredVersion {
        material.clone().into_stored(version_id.to_owned()).unwrap()
    }

    #[test]
    fn arn_names() {
        assert_eq!(arn_name(ARN), Some("coffer/default/acme/db"));
        assert_eq!(
            arn_name("arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:a:b-123456"),
            Some("a:b")
        );
        assert_eq!(
            arn_name("arn:aws:secretsmanager:us-east-1:1:secret:-123456"),
            None
        );
        assert_eq!(arn_name("arn:aws:kms:us-east-1:1:key/abc-123456"), None);
        assert_eq!(arn_name("coffer/default/acme/db"), None);
        assert!(is_plausible_reference("prod/db/password"));
        assert!(is_plausible_reference(ARN));
        let partial = "arn:aws:secretsmanager:us-east-1:123456789012:secret:coffer/default/acme/db";
        assert!(is_plausible_reference(partial));
        assert_eq!(reference_name(partial), "coffer/default/acme/db");
        assert_eq!(reference_name(ARN), "coffer/default/acme/db-AbCdEf");
        assert_eq!(reference_name("prod/db"), "prod/db");
        assert!(!is_plausible_reference(
            "arn:aws:secretsmanager:us-east-1:1:secret:"
        ));
        assert!(!is_plausible_reference("arn:aws:s3:::bucket"));
        assert!(!is_plausible_reference("prod db"));
        assert!(!is_plausible_reference(""));
        assert!(!is_plausible_reference(&"a".repeat(513)));
    }

    #[test]
    fn tokens_are_stable_uuid_shaped_and_distinct() {
        let ctx = VersionContext::new("acme", "db", 1).with_secret_uid("7d4c3b0e-uid");
        let token = request_token(&ctx);
        assert_eq!(token.len(), 36);
        assert!((32..=64).contains(&token.len()));
        assert_eq!(token, request_token(&ctx.clone()));
        let other_version = VersionContext {
            version: 2,
            ..ctx.clone()
        };
        let other_uid = ctx.clone().with_secret_uid("another-uid");
        let no_uid = VersionContext::new("acme", "db", 1);
        let tokens = [
            token,
            request_token(&other_version),
            request_token(&other_uid),
            request_token(&no_uid),
            request_token(&VersionContext::new("acme", "db2", 1)),
        ];
        for (i, a) in tokens.iter().enumerate() {
            for b in &tokens[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn material_round_trips_and_is_checked() {
        let ctx = VersionContext::new("acme", "db", 3);
        let m = Material::new(ARN.into(), "coffer/default/acme/db".into(), &ctx, false);
        let s = stored(&m, "v-3");
        let json: serde_json::Value = serde_json::from_str(&s.material).unwrap();
        assert_eq!(json["scheme"], "aws_secrets_manager/v1");
        assert_eq!(json["version"], 3);
        assert_eq!(json["external"], false);
        assert_eq!(Material::checked(&s, &ctx, &names(), true).unwrap(), m);

        let guard = |stored: &StoredVersion, ctx: &VersionContext| {
            Material::checked(stored, ctx, &names(), true)
                .unwrap_err()
                .kind
        };
        assert_eq!(
            guard(&s, &VersionContext::new("other", "db", 3)),
            ProviderErrorKind::Guardrail
        );
        assert_eq!(
            guard(&s, &VersionContext::new("acme", "db2", 3)),
            ProviderErrorKind::Guardrail
        );
        assert_eq!(
            guard(&s, &VersionContext::new("acme", "db", 2)),
            ProviderErrorKind::Guardrail
        );
        // Version is not checked for whole-secret operations.
        assert!(
            Material::checked(&s, &VersionContext::new("acme", "db", 2), &names(), false).is_ok()
        );

        let drifted = Material {
            arn: ARN.replace("acme/db", "acme/other"),
            ..m.clone()
        };
        assert_eq!(
            guard(&stored(&drifted, "v"), &ctx),
            ProviderErrorKind::Guardrail
        );
        let no_version_id = stored(&m, "");
        assert_eq!(guard(&no_version_id, &ctx), ProviderErrorKind::Provider);
    }

    #[test]
    fn external_material_must_stay_outside_the_namespace() {
        let ctx = VersionContext::new("acme", "db", 1);
        let outside = Material::new(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf".into(),
            "prod/db".into(),
            &ctx,
            true,
        );
        assert!(Material::checked(&stored(&outside, ""), &ctx, &names(), true).is_ok());
        let inside = Material::new(ARN.into(), "coffer/default/acme/db".into(), &ctx, true);
        let err = Material::checked(&stored(&inside, ""), &ctx, &names(), true).unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Guardrail);
        assert!(err.message.contains("coffer/default/"), "{}", err.message);
    }

    #[test]
    fn foreign_material_is_a_provider_error() {
        let ctx = VersionContext::new("acme", "db", 1);
        for material in [
            "not json",
            r#"{"scheme":"local_encrypted/v1","kek_id":"kek-1"}"#,
            r#"{"scheme":"other/v1","arn":"a","name":"n","version":1,"external":false}"#,
        ] {
            let s = StoredVersion {
                material: material.to_owned(),
                provider_version_ref: "v".into(),
            };
            let err = Material::checked(&s, &ctx, &names(), true).unwrap_err();
            assert_eq!(err.kind, ProviderErrorKind::Provider, "{material}");
            assert!(err.cause.is_some());
        }
    }
}
