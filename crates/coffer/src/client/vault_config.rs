//! Vault settings on the command line: `--set KEY=VALUE` pairs and a flat
//! TOML or JSON `--config-file`, turned into the provider's config message.
//! The providers a vault can be created for, their setting names and types
//! all come from the API's descriptor set (the `config` oneof of
//! `coffer.v1.Vault`), so a setting added to the proto is known here without
//! a code change. Credential-like names are refused: Coffer never stores
//! provider credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use coffer_core::validate::is_credential_like_key;
use coffer_proto::v1::{Vault, vault};
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    OneofDescriptor, Value,
};

/// Setting name → raw text, as given; typed by [`build`] once the provider is known.
pub(crate) type Settings = BTreeMap<String, String>;

/// The settings flags shared by `vaults create` and `vaults update`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ConfigArgs {
    /// A provider setting, e.g. `region=eu-west-1`; repeat for more. Overrides
    /// the same setting from --config-file.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub(crate) set: Vec<(String, String)>,
    /// A flat table of settings: `*.toml` or `*.json`.
    #[arg(long, value_name = "FILE")]
    pub(crate) config_file: Option<PathBuf>,
}

impl ConfigArgs {
    /// The settings given, or `None` when neither flag was used. Reads the
    /// file and refuses credential-like names; the provider's own names and
    /// types are checked by [`build`].
    pub(crate) fn settings(&self) -> anyhow::Result<Option<Settings>> {
        if self.set.is_empty() && self.config_file.is_none() {
            return Ok(None);
        }
        let mut settings = match &self.config_file {
            Some(path) => read_file(path)?,
            None => Settings::new(),
        };
        let mut from_flags = Settings::new();
        for (key, value) in &self.set {
            if from_flags.insert(key.clone(), value.clone()).is_some() {
                bail!("setting {key} is given more than once with --set");
            }
        }
        settings.extend(from_flags);
        for key in settings.keys() {
            refuse_credentials(key)?;
        }
        Ok(Some(settings))
    }
}

/// One `--set KEY=VALUE` (clap value parser). The value may be empty.
pub(crate) fn parse_setting(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        Some(_) => Err("setting name must not be empty; use key=value".to_owned()),
        None => Err("setting must be key=value".to_owned()),
    }
}

fn refuse_credentials(key: &str) -> anyhow::Result<()> {
    if is_credential_like_key(key) {
        bail!(
            "setting {key} looks like a credential; Coffer never stores provider credentials: \
             the server uses the provider's default credential chain (for AWS: environment \
             variables, shared config files or the instance/task role)"
        );
    }
    Ok(())
}

/// Reads a `--config-file`: a flat table of names to strings, numbers or booleans.
pub(crate) fn read_file(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_file(path, &text)
}

fn parse_file(path: &Path, text: &str) -> anyhow::Result<Settings> {
    let file = path.display();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let entries: Vec<(String, Option<String>)> = if ext.eq_ignore_ascii_case("json") {
        let value: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("invalid config file {file}"))?;
        let serde_json::Value::Object(map) = value else {
            bail!("config file {file} must hold one object of settings");
        };
        map.into_iter()
            .map(|(key, value)| {
                let text = match value {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    serde_json::Value::Bool(b) => Some(b.to_string()),
                    serde_json::Value::Null
                    | serde_json::Value::Array(_)
                    | serde_json::Value::Object(_) => None,
                };
                (key, text)
            })
            .collect()
    } else if ext.eq_ignore_ascii_case("toml") {
        let table: toml::Table =
            toml::from_str(text).with_context(|| format!("invalid config file {file}"))?;
        table
            .into_iter()
            .map(|(key, value)| {
                let text = match value {
                    toml::Value::String(s) => Some(s),
                    toml::Value::Integer(i) => Some(i.to_string()),
                    toml::Value::Float(f) => Some(f.to_string()),
                    toml::Value::Boolean(b) => Some(b.to_string()),
                    toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => {
                        None
                    }
                };
                (key, text)
            })
            .collect()
    } else {
        bail!("cannot tell the format of config file {file}; name it *.toml or *.json");
    };
    entries
        .into_iter()
        .map(|(key, value)| match value {
            Some(value) => Ok((key, value)),
            None => bail!("config file {file}: {key} must be a string, a number or a boolean"),
        })
        .collect()
}

/// The `config` oneof of `coffer.v1.Vault`: one message field per provider id.
fn config_oneof() -> anyhow::Result<(MessageDescriptor, OneofDescriptor)> {
    let pool = DescriptorPool::decode(coffer_proto::FILE_DESCRIPTOR_SET)
        .context("cannot load the api descriptors")?;
    let vault = pool
        .get_message_by_name("coffer.v1.Vault")
        .context("no descriptor for coffer.v1.Vault")?;
    let oneof = vault
        .oneofs()
        .find(|o| o.name() == "config")
        .context("coffer.v1.Vault has no config oneof")?;
    Ok((vault, oneof))
}

/// Builds `provider`'s config message from `settings`. Refuses an unknown
/// provider, an unknown or credential-like setting, and a value that does
/// not parse as its field's type. Values never appear in an error.
pub(crate) fn build(provider: &str, settings: &Settings) -> anyhow::Result<vault::Config> {
    let (vault_desc, oneof) = config_oneof()?;
    let Some(provider_field) = oneof.fields().find(|f| f.name() == provider) else {
        let known: Vec<String> = oneof.fields().map(|f| f.name().to_owned()).collect();
        bail!(
            "unknown provider {provider}; vaults can be created for: {}",
            known.join(", ")
        );
    };
    let Kind::Message(config_desc) = provider_field.kind() else {
        bail!("the api describes provider {provider} without a config message");
    };
    let mut config = DynamicMessage::new(config_desc.clone());
    for (key, raw) in settings {
        refuse_credentials(key)?;
        let Some(field) = config_desc.get_field_by_name(key) else {
            let known: Vec<String> = config_desc.fields().map(|f| f.name().to_owned()).collect();
            if known.is_empty() {
                bail!("unknown setting {key}: provider {provider} takes no settings");
            }
            bail!(
                "unknown setting {key} for provider {provider}; known settings: {}",
                known.join(", ")
            );
        };
        let value = typed_value(&field, raw)?;
        config
            .try_set_field(&field, value)
            .map_err(|_| anyhow::anyhow!("setting {key} cannot be set from the command line"))?;
    }
    let mut dynamic = DynamicMessage::new(vault_desc);
    dynamic
        .try_set_field(&provider_field, Value::Message(config))
        .map_err(|_| anyhow::anyhow!("cannot set the config of provider {provider}"))?;
    let vault: Vault = dynamic
        .transcode_to()
        .context("cannot build the vault config")?;
    vault
        .config
        .with_context(|| format!("the client has no config type for provider {provider}"))
}

/// Parses `raw` as `field`'s scalar type. The error names the setting and the
/// expected type, never the value.
fn typed_value(field: &FieldDescriptor, raw: &str) -> anyhow::Result<Value> {
    let name = field.name();
    if field.cardinality() == Cardinality::Repeated {
        bail!("setting {name} is a list and cannot be set from the command line");
    }
    let bad = |what: &str| anyhow::anyhow!("setting {name} must be {what}");
    let trimmed = raw.trim();
    Ok(match field.kind() {
        Kind::String => Value::String(raw.to_owned()),
        Kind::Bool => Value::Bool(trimmed.parse().map_err(|_| bad("true or false"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(trimmed.parse().map_err(|_| bad("a whole number"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(trimmed.parse().map_err(|_| bad("a whole number"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(trimmed.parse().map_err(|_| bad("a whole number from 0"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(trimmed.parse().map_err(|_| bad("a whole number from 0"))?)
        }
        Kind::Float | Kind::Double | Kind::Bytes | Kind::Message(_) | Kind::Enum(_) => {
            bail!("setting {name} cannot be set from the command line")
        }
    })
}

/// The settings of a vault's config as `key=value` pairs, in field order;
/// only the fields that are set.
pub(crate) fn describe(vault: &Vault) -> Vec<(String, String)> {
    let Ok((vault_desc, _)) = config_oneof() else {
        return Vec::new();
    };
    let encoded = prost::Message::encode_to_vec(vault);
    let Ok(dynamic) = DynamicMessage::decode(vault_desc, encoded.as_slice()) else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    for (field, value) in dynamic.fields() {
        let in_config = field
            .containing_oneof()
            .is_some_and(|o| o.name() == "config");
        if let (true, Value::Message(config)) = (in_config, value) {
            for (setting, value) in config.fields() {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                pairs.push((setting.name().to_owned(), text));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use coffer_proto::v1::{AwsSecretsManagerConfig, LocalEncryptedConfig};

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn aws_settings_map_onto_the_config_message() {
        let config = build(
            "aws_secrets_manager",
            &settings(&[
                ("region", "eu-west-1"),
                ("endpoint_url", "http://127.0.0.1:5000"),
                ("recovery_window_days", " 7 "),
            ]),
        )
        .unwrap();
        assert_eq!(
            config,
            vault::Config::AwsSecretsManager(AwsSecretsManagerConfig {
                region: "eu-west-1".into(),
                endpoint_url: "http://127.0.0.1:5000".into(),
                recovery_window_days: 7,
                ..AwsSecretsManagerConfig::default()
            })
        );
    }

    #[test]
    fn local_encrypted_takes_an_empty_config_and_no_settings() {
        let config = build("local_encrypted", &Settings::new()).unwrap();
        assert_eq!(
            config,
            vault::Config::LocalEncrypted(LocalEncryptedConfig {})
        );
        let err = build("local_encrypted", &settings(&[("region", "x")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown setting region: provider local_encrypted takes no settings"
        );
    }

    #[test]
    fn unknown_settings_list_the_known_ones() {
        let err = build("aws_secrets_manager", &settings(&[("regoin", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("unknown setting regoin for provider aws_secrets_manager; known settings: region, endpoint_url, name_prefix, namespace, kms_key_id, owner_tag, environment_tag, recovery_window_days"), "{err}");
        let err = build("hashicorp", &Settings::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "unknown provider hashicorp; vaults can be created for: aws_secrets_manager, local_encrypted"
        );
    }

    #[test]
    fn credential_like_settings_are_refused_before_anything_else() {
        let args = ConfigArgs {
            set: vec![(
                "aws_secret_access_key".to_owned(),
                "wJalrXUtnFEMI-canary".to_owned(),
            )],
            config_file: None,
        };
        let err = args.settings().unwrap_err().to_string();
        assert!(err.contains("aws_secret_access_key"), "{err}");
        assert!(err.contains("never stores provider credentials"), "{err}");
        assert!(err.contains("default credential chain"), "{err}");
        assert!(!err.contains("canary"), "the value leaked: {err}");
        let err = build("aws_secrets_manager", &settings(&[("sessionToken", "x")])).unwrap_err();
        assert!(err.to_string().contains("never stores"), "{err}");
    }

    #[test]
    fn values_must_parse_as_the_field_type_and_are_never_echoed() {
        let err = build(
            "aws_secrets_manager",
            &settings(&[("recovery_window_days", "seven-days-canary")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "setting recovery_window_days must be a whole number");
        assert!(
            build(
                "aws_secrets_manager",
                &settings(&[("recovery_window_days", "99999999999")]),
            )
            .is_err()
        );
    }

    #[test]
    fn set_pairs_parse_and_override_the_file() {
        assert_eq!(
            parse_setting("region=eu-west-1").unwrap(),
            ("region".to_owned(), "eu-west-1".to_owned())
        );
        assert_eq!(
            parse_setting("name_prefix=").unwrap(),
            ("name_prefix".to_owned(), String::new())
        );
        assert!(parse_setting("region").is_err());
        assert!(parse_setting("=x").is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aws.toml");
        std::fs::write(&path, "region = \"us-east-1\"\nrecovery_window_days = 7\n").unwrap();
        let args = ConfigArgs {
            set: vec![("region".to_owned(), "eu-west-1".to_owned())],
            config_file: Some(path),
        };
        let got = args.settings().unwrap().unwrap();
        assert_eq!(
            got,
            settings(&[("region", "eu-west-1"), ("recovery_window_days", "7")])
        );
        assert_eq!(ConfigArgs::default().settings().unwrap(), None);
        let twice = ConfigArgs {
            set: vec![
                ("region".to_owned(), "a".to_owned()),
                ("region".to_owned(), "b".to_owned()),
            ],
            config_file: None,
        };
        assert!(twice.settings().is_err());
    }

    #[test]
    fn config_files_are_flat_tables_of_scalars() {
        let json = parse_file(
            Path::new("c.json"),
            r#"{"region": "eu-west-1", "recovery_window_days": 10}"#,
        )
        .unwrap();
        assert_eq!(
            json,
            settings(&[("region", "eu-west-1"), ("recovery_window_days", "10")])
        );
        assert!(parse_file(Path::new("c.json"), r#"["region"]"#).is_err());
        let nested = parse_file(Path::new("c.toml"), "[aws]\nregion = \"x\"\n").unwrap_err();
        assert_eq!(
            nested.to_string(),
            "config file c.toml: aws must be a string, a number or a boolean"
        );
        assert!(parse_file(Path::new("c.yaml"), "region: x").is_err());
        let err = read_file(Path::new("/nonexistent/c.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.toml"), "{err}");
    }

    #[test]
    fn describe_lists_the_set_settings() {
        let vault = Vault {
            config: Some(vault::Config::AwsSecretsManager(AwsSecretsManagerConfig {
                region: "eu-west-1".into(),
                recovery_window_days: 7,
                ..AwsSecretsManagerConfig::default()
            })),
            ..Vault::default()
        };
        assert_eq!(
            describe(&vault),
            [
                ("region".to_owned(), "eu-west-1".to_owned()),
                ("recovery_window_days".to_owned(), "7".to_owned())
            ]
        );
        assert!(describe(&Vault::default()).is_empty());
    }
}
