//! Resource names, keys and the small field parsers of `coffer_core::name`
//! and `coffer_core::validate`, fed arbitrary text.
//!
//! Properties: every parser accepts exactly its grammar (checked against an
//! independent description of it here), and every accepted name prints to a
//! string that parses back to the same name (`parse(display(x)) == x`).

#![no_main]

use coffer_core::name::{
    KEY_MAX, SecretKey, SecretName, TenantId, VAULT_ID_MAX, VaultName, VersionName,
    parse_version_number,
};
use coffer_core::validate::{self, VersionSelector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    tenant(raw);
    key(raw);
    secret_name(raw);
    version_name(raw);
    vault_name(raw);
    version_number(raw);
    fields(raw);
});

/// `[a-z0-9][a-z0-9._-]{0,max-1}`, written independently of the crate's own check.
fn is_slug(s: &str, max: usize) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    s.len() <= max
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

fn is_hyphenated_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

fn tenant(raw: &str) {
    match TenantId::parse(raw, "t") {
        Ok(t) => {
            // Stored form: a slug or a lowercase hyphenated UUID.
            assert!(is_slug(t.as_str(), 63) || is_hyphenated_uuid(t.as_str()));
            let again = TenantId::parse(t.as_str(), "t").expect("a parsed tenant reparses");
            assert_eq!(again, t);
            let from_parent =
                TenantId::from_parent(&t.resource_name(), "p").expect("its resource name parses");
            assert_eq!(from_parent, t);
        }
        Err(_) => assert!(!is_slug(raw, 63), "slug {raw:?} refused"),
    }
    if let Ok(t) = TenantId::from_parent(raw, "p") {
        assert_eq!(t.resource_name(), format!("tenants/{t}"));
        assert!(raw.starts_with("tenants/"));
    }
}

fn key(raw: &str) {
    let parsed = SecretKey::parse(raw, "k");
    assert_eq!(parsed.is_ok(), is_slug(raw, KEY_MAX), "{raw:?}");
    if let Ok(k) = parsed {
        assert_eq!(k.as_str(), raw);
        assert_eq!(k.to_string(), raw);
    }
}

fn secret_name(raw: &str) {
    if let Ok(name) = SecretName::parse(raw, "name") {
        let shown = name.to_string();
        assert_eq!(SecretName::parse(&shown, "name").expect("reparses"), name);
        // Only a UUID tenant is rewritten (to lowercase hyphenated form).
        if raw.split('/').nth(1) == Some(name.tenant.as_str()) {
            assert_eq!(shown, raw);
        }
        let version = name.version(1);
        assert_eq!(
            VersionName::parse(&version.to_string(), "name").expect("version name parses"),
            version
        );
    }
}

fn version_name(raw: &str) {
    if let Ok(name) = VersionName::parse(raw, "name") {
        assert!(name.version >= 1);
        let shown = name.to_string();
        assert_eq!(VersionName::parse(&shown, "name").expect("reparses"), name);
        assert!(shown.ends_with(&format!("/versions/{}", name.version)));
        // A version name is never also a secret name.
        assert!(SecretName::parse(raw, "name").is_err());
    }
}

fn vault_name(raw: &str) {
    if let Ok(name) = VaultName::parse(raw, "vault") {
        let id = name.vault_id.as_str();
        assert!(!id.is_empty() && id.len() <= VAULT_ID_MAX);
        assert!(id.starts_with(|c: char| c.is_ascii_lowercase()) && !id.ends_with('-'));
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(
            VaultName::parse(&name.to_string(), "vault").expect("reparses"),
            name
        );
    }
}

fn version_number(raw: &str) {
    match parse_version_number(raw) {
        Some(n) => {
            assert!(n >= 1);
            assert_eq!(n.to_string(), raw, "only canonical decimals are accepted");
        }
        None => {
            if let Ok(n) = raw.parse::<i64>() {
                let canonical = n >= 1 && n.to_string() == raw && raw.len() <= 18;
                assert!(!canonical, "{raw:?} refused");
            }
        }
    }
    match VersionSelector::parse(raw, "v") {
        Ok(VersionSelector::Current) => assert!(raw.is_empty() || raw == "latest"),
        Ok(VersionSelector::Number(n)) => assert_eq!(n.to_string(), raw),
        Err(_) => assert!(!raw.is_empty() && raw != "latest"),
    }
}

fn fields(raw: &str) {
    if validate::display_name(raw, "f").is_ok() {
        assert!(raw.chars().count() <= validate::MAX_DISPLAY_NAME_CHARS);
        assert!(!raw.chars().any(char::is_control));
        assert_eq!(raw.trim(), raw);
    }
    if validate::description(raw, "f").is_ok() {
        assert!(raw.chars().count() <= validate::MAX_DESCRIPTION_CHARS);
    }
    if validate::external_ref(raw, "f").is_ok() {
        assert!(!raw.is_empty() && !raw.chars().any(char::is_whitespace));
    }
    // request ids are normalized once: the normal form is a fixed point.
    if let Ok(Some(id)) = validate::request_id(raw, "f") {
        assert!(is_hyphenated_uuid(&id));
        assert_eq!(validate::request_id(&id, "f").ok(), Some(Some(id.clone())));
    }
    // Separators do not change whether a key names a credential.
    let credential = validate::is_credential_like_key(raw);
    for sep in ['-', '.', ' '] {
        assert_eq!(
            validate::is_credential_like_key(&raw.replace('_', &sep.to_string())),
            credential,
            "{raw:?} with {sep:?}"
        );
    }
}
