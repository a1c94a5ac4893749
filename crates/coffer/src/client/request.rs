//! Pure helpers that turn command-line arguments into request fields:
//! resource names from a tenant and a key, `k=v` labels, and update masks.
//! They touch no network, so they are unit-tested here.

use std::collections::{BTreeMap, HashMap};

use anyhow::bail;
use coffer_core::{SecretKey, SecretName, TenantId};

/// `tenants/{tenant}`.
pub(crate) fn parent(tenant: &str) -> anyhow::Result<String> {
    Ok(TenantId::parse(tenant, "--tenant")?.resource_name())
}

/// The secret name for `key` under `tenant`. A full name
/// (`tenants/{t}/secrets/{key}`) is accepted as-is and wins over `--tenant`.
pub(crate) fn secret_name(tenant: &str, key: &str) -> anyhow::Result<String> {
    if key.starts_with("tenants/") {
        return Ok(SecretName::parse(key, "KEY")?.to_string());
    }
    let tenant = TenantId::parse(tenant, "--tenant")?;
    let key = SecretKey::parse(key, "KEY")?;
    Ok(SecretName::new(tenant, key).to_string())
}

/// The version name for version `version` of the secret `key`.
pub(crate) fn version_name(tenant: &str, key: &str, version: i64) -> anyhow::Result<String> {
    if version < 1 {
        bail!("version must be a number from 1");
    }
    Ok(format!("{}/versions/{version}", secret_name(tenant, key)?))
}

/// The parent and key for `create`: a plain key goes under `--tenant`; a
/// full secret name decides both.
pub(crate) fn parent_and_key(tenant: &str, key: &str) -> anyhow::Result<(String, String)> {
    if key.starts_with("tenants/") {
        let name = SecretName::parse(key, "KEY")?;
        return Ok((name.tenant.resource_name(), name.key.to_string()));
    }
    let key = SecretKey::parse(key, "KEY")?;
    Ok((parent(tenant)?, key.to_string()))
}

/// One `--label k=v` argument (clap value parser). The value may be empty;
/// the key may not, and the key's pattern is checked with the rest of the map.
pub(crate) fn parse_label(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        Some(_) => Err("label key must not be empty; use key=value".to_owned()),
        None => Err("label must be key=value".to_owned()),
    }
}

/// Collects `--label` pairs into the request map, refusing repeated keys and
/// anything the server would refuse.
pub(crate) fn labels(pairs: &[(String, String)]) -> anyhow::Result<HashMap<String, String>> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.insert(key.clone(), value.clone()).is_some() {
            bail!("label {key} is given more than once");
        }
    }
    coffer_core::validate::labels(&map, "--label")?;
    Ok(map.into_iter().collect())
}

/// Which fields an `update` changes; each flag given adds its path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpdateFields {
    pub(crate) display_name: bool,
    pub(crate) description: bool,
    pub(crate) labels: bool,
    pub(crate) state: bool,
}

/// The `update_mask` paths, in the order the API lists them. An empty mask is
/// an error: the caller asked for nothing.
pub(crate) fn update_mask(fields: UpdateFields) -> anyhow::Result<prost_types::FieldMask> {
    let paths: Vec<String> = [
        (fields.display_name, "display_name"),
        (fields.description, "description"),
        (fields.labels, "labels"),
        (fields.state, "state"),
    ]
    .into_iter()
    .filter(|(given, _)| *given)
    .map(|(_, path)| path.to_owned())
    .collect();
    if paths.is_empty() {
        bail!(
            "nothing to update; give --display-name, --description, --label, --clear-labels or --state"
        );
    }
    Ok(prost_types::FieldMask { paths })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_are_built_from_tenant_and_key() {
        assert_eq!(
            secret_name("acme", "openai.key").unwrap(),
            "tenants/acme/secrets/openai.key"
        );
        assert_eq!(
            version_name("acme", "k", 3).unwrap(),
            "tenants/acme/secrets/k/versions/3"
        );
        assert_eq!(parent("acme").unwrap(), "tenants/acme");
        assert_eq!(
            parent_and_key("acme", "db-pass").unwrap(),
            ("tenants/acme".to_owned(), "db-pass".to_owned())
        );
    }

    #[test]
    fn full_names_are_taken_as_given() {
        assert_eq!(
            secret_name("default", "tenants/acme/secrets/k").unwrap(),
            "tenants/acme/secrets/k"
        );
        assert_eq!(
            parent_and_key("default", "tenants/acme/secrets/k").unwrap(),
            ("tenants/acme".to_owned(), "k".to_owned())
        );
    }

    #[test]
    fn bad_keys_tenants_and_versions_are_rejected() {
        assert!(secret_name("acme", "Bad Key").is_err());
        assert!(secret_name("acme", "a/b").is_err());
        assert!(secret_name("Acme!", "k").is_err());
        assert!(secret_name("acme", "tenants/acme/secrets/").is_err());
        assert!(version_name("acme", "k", 0).is_err());
        assert!(parent("").is_err());
    }

    #[test]
    fn labels_parse_as_key_equals_value() {
        assert_eq!(
            parse_label("env=prod").unwrap(),
            ("env".to_owned(), "prod".to_owned())
        );
        assert_eq!(
            parse_label("note=a=b").unwrap(),
            ("note".to_owned(), "a=b".to_owned())
        );
        assert_eq!(
            parse_label("empty=").unwrap(),
            ("empty".to_owned(), String::new())
        );
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());
    }

    #[test]
    fn label_maps_reject_duplicates_and_bad_keys() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let map = labels(&[pair("env", "prod"), pair("team", "core")]).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map["env"], "prod");
        let err = labels(&[pair("env", "a"), pair("env", "b")]).unwrap_err();
        assert_eq!(err.to_string(), "label env is given more than once");
        assert!(labels(&[pair("Env", "x")]).is_err());
        assert!(labels(&[pair("9lives", "x")]).is_err());
    }

    #[test]
    fn update_mask_lists_only_the_given_fields() {
        let mask = update_mask(UpdateFields {
            description: true,
            state: true,
            ..UpdateFields::default()
        })
        .unwrap();
        assert_eq!(mask.paths, ["description", "state"]);
        let all = update_mask(UpdateFields {
            display_name: true,
            description: true,
            labels: true,
            state: true,
        })
        .unwrap();
        assert_eq!(
            all.paths,
            ["display_name", "description", "labels", "state"]
        );
        assert!(update_mask(UpdateFields::default()).is_err());
    }
}
