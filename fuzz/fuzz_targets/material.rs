//! The `local_encrypted` provider's material decoder: what Coffer's database
//! hands back to `SecretProvider::resolve`, `LocalEncryptedProvider::rewrap`
//! and `kek_id_of`, forged outright or made by tampering with genuine
//! material.
//!
//! Properties: nothing panics; forged material never resolves; tampered
//! material resolves only to the genuine value (AEAD integrity), and only for
//! the version it was sealed for; re-wrapping never changes what material
//! resolves to; `kek_id_of` names the KEK of any material that resolves.

#![no_main]

use std::sync::{Arc, LazyLock};

use arbitrary::Arbitrary;
use coffer_crypto::Keyring;
use coffer_providers::{LocalEncryptedProvider, SecretProvider, StoredVersion, VersionContext};
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;

const VALUE: &[u8] = b"fuzz-value-\x00\xff-bytes";

struct Fixture {
    /// Active KEK `kek-2`; `old` was sealed under `kek-1`.
    provider: LocalEncryptedProvider,
    ctx: VersionContext,
    current: String,
    old: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let mut keyring = Keyring::generate().expect("keyring");
    let ctx = VersionContext::new("acme", "db-password", 3);
    let old_provider = LocalEncryptedProvider::new(Arc::new(
        Keyring::from_json(&keyring.to_json()).expect("keyring json"),
    ));
    let old = block_on(old_provider.put_value(&ctx, VALUE))
        .expect("seal")
        .material;
    keyring.rotate().expect("rotate");
    let provider = LocalEncryptedProvider::new(Arc::new(keyring));
    let current = block_on(provider.put_value(&ctx, VALUE))
        .expect("seal")
        .material;
    Fixture {
        provider,
        ctx,
        current,
        old,
    }
});

#[derive(Debug, Arbitrary)]
enum Material<'a> {
    Forged(&'a str),
    /// Byte edits (position, byte) to genuine material.
    Edited {
        old: bool,
        edits: Vec<(u16, u8)>,
    },
    /// Genuine material with one JSON field replaced by fuzz text.
    Field {
        old: bool,
        field: u8,
        value: &'a str,
    },
}

fuzz_target!(|input: Material<'_>| {
    let f = &*FIXTURE;
    let material = match input {
        Material::Forged(text) => text.to_owned(),
        Material::Edited { old, edits } => {
            let mut bytes = if old {
                f.old.clone()
            } else {
                f.current.clone()
            }
            .into_bytes();
            for (at, byte) in edits {
                let at = usize::from(at) % bytes.len();
                bytes[at] = byte;
            }
            match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => return,
            }
        }
        Material::Field { old, field, value } => {
            let genuine = if old { &f.old } else { &f.current };
            let mut doc: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(genuine).expect("genuine material is a JSON object");
            let names = [
                "scheme",
                "kek_id",
                "dek_nonce",
                "wrapped_dek",
                "nonce",
                "ciphertext",
            ];
            let name = names[usize::from(field) % names.len()];
            doc.insert(name.to_owned(), serde_json::Value::String(value.to_owned()));
            serde_json::to_string(&doc).expect("serializes")
        }
    };
    check(f, &material);
});

fn resolve(f: &Fixture, ctx: &VersionContext, material: &str) -> Option<Vec<u8>> {
    let stored = StoredVersion {
        material: material.to_owned(),
        provider_version_ref: String::new(),
    };
    block_on(f.provider.resolve(ctx, &stored))
        .ok()
        .map(|v| v.expose().to_vec())
}

fn check(f: &Fixture, material: &str) {
    let resolved = resolve(f, &f.ctx, material);
    if let Some(value) = &resolved {
        assert_eq!(
            value.as_slice(),
            VALUE,
            "material resolved to another value"
        );
        let kek =
            LocalEncryptedProvider::kek_id_of(material).expect("resolvable material has a kek");
        assert!(kek == "kek-1" || kek == "kek-2", "{kek}");
    }
    // Bound to its place: never resolves for another version, key or tenant.
    for other in [
        VersionContext::new("acme", "db-password", 4),
        VersionContext::new("acme", "db-passwor", 3),
        VersionContext::new("acm", "db-password", 3),
    ] {
        assert!(
            resolve(f, &other, material).is_none(),
            "resolved for {other:?}"
        );
    }
    let stored = StoredVersion {
        material: material.to_owned(),
        provider_version_ref: "v".to_owned(),
    };
    match f.provider.rewrap(&stored) {
        Ok(Some(rewrapped)) => {
            assert_eq!(rewrapped.provider_version_ref, "v");
            assert_eq!(
                LocalEncryptedProvider::kek_id_of(&rewrapped.material).as_deref(),
                Some("kek-2")
            );
            // Re-wrapping moves the DEK, never the value: it resolves as the
            // input did (a tampered value stays unreadable).
            assert_eq!(resolve(f, &f.ctx, &rewrapped.material), resolved);
        }
        Ok(None) => {
            assert_eq!(
                LocalEncryptedProvider::kek_id_of(material).as_deref(),
                Some("kek-2")
            );
        }
        Err(_) => assert!(resolved.is_none(), "resolvable material failed to re-wrap"),
    }
}
