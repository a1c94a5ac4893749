//! [`VaultConfig`]: the settings of one vault, per provider, and the one
//! parser every entry point uses (the CLI's `--set` pairs and files, the
//! JSON stored in the `vaults` table). Unknown keys and credential-like keys
//! are refused here: vault settings never carry credentials, because
//! providers authenticate with their platform's default chain.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::aws_secrets_manager;
use crate::local_encrypted;

/// The settings of one vault, by provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultConfig {
    /// The built-in encrypted store has no settings.
    LocalEncrypted,
    AwsSecretsManager(AwsSecretsManagerConfig),
}

/// Settings of an AWS Secrets Manager vault. Every field is optional;
/// [`crate::ProviderFactory::validate_config`] says which combinations work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsSecretsManagerConfig {
    /// e.g. `eu-west-1`; empty means the default chain's region.
    pub region: String,
    /// A custom endpoint (VPC endpoint, or moto in tests); empty means AWS's.
    pub endpoint_url: String,
    /// First segment of managed names (`{prefix}/{namespace}/{tenant}/{key}`).
    pub name_prefix: String,
    pub namespace: String,
    /// KMS key for managed secrets; empty means the account's default key.
    pub kms_key_id: String,
    /// Value of the `coffer:owner` tag on managed secrets.
    pub owner_tag: String,
    /// Value of the `coffer:environment` tag on managed secrets.
    pub environment_tag: String,
    /// Recovery window of deleted managed secrets (7–30 days); 0 means the
    /// DeleteSecret request's window.
    pub recovery_window_days: i32,
}

/// One refused setting: the key (as `config.{key}`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigViolation {
    pub field: String,
    pub description: String,
}

impl ConfigViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        ConfigViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl VaultConfig {
    /// The provider these settings are for.
    pub fn provider_id(&self) -> &'static str {
        match self {
            VaultConfig::LocalEncrypted => local_encrypted::PROVIDER_ID,
            VaultConfig::AwsSecretsManager(_) => aws_secrets_manager::PROVIDER_ID,
        }
    }

    /// The keys a provider's settings accept, for error messages and the CLI.
    pub fn known_keys(provider_id: &str) -> Option<&'static [&'static str]> {
        match provider_id {
            local_encrypted::PROVIDER_ID => Some(&[]),
            aws_secrets_manager::PROVIDER_ID => Some(&[
                "region",
                "endpoint_url",
                "name_prefix",
                "namespace",
                "kms_key_id",
                "owner_tag",
                "environment_tag",
                "recovery_window_days",
            ]),
            _ => None,
        }
    }

    /// The first setting that decides where a vault's existing secrets live
    /// and that differs between `self` (the current settings) and `new`:
    /// changing it would strand those secrets, so it needs a new vault.
    /// (AWS: region, name_prefix and namespace; an endpoint may change.)
    pub fn relocating_change(&self, new: &VaultConfig) -> Option<&'static str> {
        let (VaultConfig::AwsSecretsManager(old), VaultConfig::AwsSecretsManager(new)) =
            (self, new)
        else {
            return None;
        };
        let or = |value: &str, default: &'static str| -> String {
            if value.is_empty() {
                default.to_owned()
            } else {
                value.to_owned()
            }
        };
        if old.region != new.region {
            Some("region")
        } else if or(&old.name_prefix, aws_secrets_manager::DEFAULT_NAME_PREFIX)
            != or(&new.name_prefix, aws_secrets_manager::DEFAULT_NAME_PREFIX)
        {
            Some("name_prefix")
        } else if or(&old.namespace, aws_secrets_manager::DEFAULT_NAMESPACE)
            != or(&new.namespace, aws_secrets_manager::DEFAULT_NAMESPACE)
        {
            Some("namespace")
        } else {
            None
        }
    }

    /// The JSON object stored for these settings.
    pub fn to_json(&self) -> String {
        match self {
            VaultConfig::LocalEncrypted => "{}".to_owned(),
            // Serializing a struct of strings and an integer cannot fail.
            VaultConfig::AwsSecretsManager(aws) => {
                serde_json::to_string(aws).unwrap_or_else(|_| "{}".to_owned())
            }
        }
    }

    /// Parses a provider's settings from a JSON object, refusing unknown and
    /// credential-like keys (every violation is reported, not only the first).
    pub fn from_json(provider_id: &str, json: &str) -> Result<Self, Vec<ConfigViolation>> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            vec![ConfigViolation::new(
                "config",
                format!("settings must be a JSON object: {e}"),
            )]
        })?;
        let Value::Object(object) = value else {
            return Err(vec![ConfigViolation::new(
                "config",
                "settings must be a JSON object",
            )]);
        };
        Self::from_object(provider_id, object)
    }

    /// As [`VaultConfig::from_json`], from an already parsed object.
    pub fn from_object(
        provider_id: &str,
        object: Map<String, Value>,
    ) -> Result<Self, Vec<ConfigViolation>> {
        let Some(known) = Self::known_keys(provider_id) else {
            return Err(vec![ConfigViolation::new(
                "provider",
                format!(
                    "unknown provider {provider_id:?}; known: local_encrypted, aws_secrets_manager"
                ),
            )]);
        };
        let mut violations = Vec::new();
        for key in object.keys() {
            let field = format!("config.{}", printable(key));
            if coffer_core::validate::is_credential_like_key(key) {
                violations.push(ConfigViolation::new(
                    field,
                    "vault settings never hold credentials; the server authenticates with the provider's default credential chain (environment, profile or instance role)",
                ));
            } else if !known.contains(&key.as_str()) {
                violations.push(ConfigViolation::new(
                    field,
                    format!(
                        "unknown setting for {provider_id}; known settings: {}",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        match provider_id {
            aws_secrets_manager::PROVIDER_ID => serde_json::from_value(Value::Object(object))
                .map(VaultConfig::AwsSecretsManager)
                .map_err(|e| {
                    vec![ConfigViolation::new(
                        "config",
                        format!("invalid aws_secrets_manager settings: {e}"),
                    )]
                }),
            _ => Ok(VaultConfig::LocalEncrypted),
        }
    }
}

/// A key fit to appear in an error (bounded, no control characters).
fn printable(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let config = VaultConfig::AwsSecretsManager(AwsSecretsManagerConfig {
            region: "eu-west-1".into(),
            namespace: "prod".into(),
            recovery_window_days: 7,
            ..AwsSecretsManagerConfig::default()
        });
        let json = config.to_json();
        assert_eq!(
            VaultConfig::from_json("aws_secrets_manager", &json).unwrap(),
            config
        );
        assert_eq!(
            VaultConfig::from_json("local_encrypted", "{}").unwrap(),
            VaultConfig::LocalEncrypted
        );
    }

    #[test]
    fn refuses_unknown_and_credential_keys() {
        let err = VaultConfig::from_json(
            "aws_secrets_manager",
            r#"{"region":"us-east-1","aws_secret_access_key":"AKIAEXAMPLE","colour":"red"}"#,
        )
        .unwrap_err();
        assert_eq!(err.len(), 2);
        let shown = format!("{err:?}");
        assert!(shown.contains("config.aws_secret_access_key"), "{shown}");
        assert!(shown.contains("never hold credentials"), "{shown}");
        assert!(shown.contains("config.colour"), "{shown}");
        assert!(shown.contains("known settings: region"), "{shown}");
        assert!(!shown.contains("AKIAEXAMPLE"), "a value leaked: {shown}");
        let err = VaultConfig::from_json("local_encrypted", r#"{"region":"x"}"#).unwrap_err();
        assert!(err[0].description.contains("known settings: none"));
    }

    #[test]
    fn relocating_changes() {
        let aws = |region: &str, prefix: &str, namespace: &str, endpoint: &str| {
            VaultConfig::AwsSecretsManager(AwsSecretsManagerConfig {
                region: region.into(),
                name_prefix: prefix.into(),
                namespace: namespace.into(),
                endpoint_url: endpoint.into(),
                ..AwsSecretsManagerConfig::default()
            })
        };
        let base = aws("eu-west-1", "", "prod", "");
        assert_eq!(
            base.relocating_change(&aws("eu-west-1", "coffer", "prod", "https://vpce")),
            None
        );
        assert_eq!(
            base.relocating_change(&aws("us-east-1", "", "prod", "")),
            Some("region")
        );
        assert_eq!(
            base.relocating_change(&aws("eu-west-1", "other", "prod", "")),
            Some("name_prefix")
        );
        assert_eq!(
            base.relocating_change(&aws("eu-west-1", "", "", "")),
            Some("namespace")
        );
        assert_eq!(
            VaultConfig::LocalEncrypted.relocating_change(&VaultConfig::LocalEncrypted),
            None
        );
    }

    #[test]
    fn refuses_wrong_types_and_unknown_providers() {
        let err = VaultConfig::from_json("aws_secrets_manager", r#"{"recovery_window_days":"x"}"#)
            .unwrap_err();
        assert_eq!(err[0].field, "config");
        assert!(VaultConfig::from_json("aws_secrets_manager", "[1]").is_err());
        let err = VaultConfig::from_json("gcp_secret_manager", "{}").unwrap_err();
        assert_eq!(err[0].field, "provider");
    }
}
