//! Vault settings (`coffer_providers::VaultConfig::from_json`), as the CLI's
//! files and the `vaults` table hand them over.
//!
//! Properties: parsing never panics; accepted settings are for the provider
//! asked for, use known keys only, and round-trip through `to_json`; a
//! credential-like key is always refused, and no refusal repeats the value
//! of such a key; `relocating_change` of a config with itself is `None`.

#![no_main]

use arbitrary::Arbitrary;
use coffer_core::validate::is_credential_like_key;
use coffer_providers::VaultConfig;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    provider: u8,
    other_provider: &'a str,
    /// Last, so that a seed is two bytes and then plain JSON.
    json: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let provider = match input.provider % 3 {
        0 => "aws_secrets_manager",
        1 => "local_encrypted",
        _ => input.other_provider,
    };
    let object = serde_json::from_str::<serde_json::Value>(input.json)
        .ok()
        .and_then(|v| v.as_object().cloned());
    match VaultConfig::from_json(provider, input.json) {
        Ok(config) => {
            assert_eq!(config.provider_id(), provider);
            let known = VaultConfig::known_keys(provider).expect("a known provider");
            let object = object.expect("accepted settings are an object");
            assert!(object.keys().all(|k| known.contains(&k.as_str())));
            assert!(!object.keys().any(|k| is_credential_like_key(k)));
            let again = VaultConfig::from_json(provider, &config.to_json()).expect("round trip");
            assert_eq!(again, config);
            assert_eq!(config.relocating_change(&config), None);
        }
        Err(violations) => {
            assert!(!violations.is_empty());
            let Some(object) = object else {
                return;
            };
            if !object.keys().any(|k| is_credential_like_key(k)) {
                return;
            }
            assert!(
                VaultConfig::known_keys(provider).is_none()
                    || violations.iter().any(|v| v.field.starts_with("config.")),
                "a credential-like key was not reported"
            );
            // The refusal depends on the keys only: blanking every value
            // gives the same violations, so no value can be in them.
            let blanked: serde_json::Map<String, serde_json::Value> = object
                .keys()
                .map(|k| (k.clone(), serde_json::Value::Null))
                .collect();
            let again = VaultConfig::from_object(provider, blanked).expect_err("still refused");
            assert_eq!(again, violations, "a value changed the refusal");
        }
    }
});
