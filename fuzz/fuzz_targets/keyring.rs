//! The keyring document (`coffer_crypto::Keyring::from_json`: the
//! `master.key` file and the `COFFER_KEYRING` env form), fed arbitrary text
//! and edits of a genuine document.
//!
//! Properties: parsing never panics; an accepted keyring round-trips through
//! `to_json` (same KEK ids, active KEK and fingerprint key) and seals and
//! opens; a refusal never repeats key material from the document.

#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_crypto::Keyring;
use libfuzzer_sys::fuzz_target;

/// A genuine document with fixed (test-only) keys, so edits stay near valid.
const GENUINE: &str = r#"{
  "format": 1,
  "active": "kek-2",
  "keys": [
    { "id": "kek-1", "created_at": "1735689600", "key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" },
    { "id": "kek-2", "created_at": "1767225600", "key": "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=" }
  ],
  "fingerprint_key": "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8="
}"#;

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    Text(&'a str),
    Edited(Vec<(u16, u8)>),
}

fuzz_target!(|input: Input<'_>| {
    let text = match input {
        Input::Text(text) => text.to_owned(),
        Input::Edited(edits) => {
            let mut bytes = GENUINE.as_bytes().to_vec();
            for (at, byte) in edits {
                let at = usize::from(at) % bytes.len();
                bytes[at] = byte;
            }
            match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => return,
            }
        }
    };
    match Keyring::from_json(&text) {
        Ok(ring) => {
            let copy = Keyring::from_json(&ring.to_json()).expect("to_json output parses");
            assert_eq!(copy.kek_ids(), ring.kek_ids());
            assert_eq!(copy.active_kek_id(), ring.active_kek_id());
            assert!(ring.kek_ids().contains(&ring.active_kek_id()));
            assert_eq!(copy.fingerprint(b"v"), ring.fingerprint(b"v"));
            let sealed = ring.seal(b"t/k/1", b"value").expect("seal");
            assert_eq!(sealed.kek_id, ring.active_kek_id());
            assert_eq!(
                copy.open(&sealed, b"t/k/1").expect("open").as_slice(),
                b"value"
            );
            assert!(copy.open(&sealed, b"t/k/2").is_err());
            // Debug shows ids only.
            let debug = format!("{ring:?}");
            for key in key_texts(&text) {
                assert!(!debug.contains(&key));
            }
        }
        Err(err) => {
            let shown = format!("{err} {err:?}");
            for key in key_texts(&text) {
                assert!(!shown.contains(&key), "error repeats key material: {shown}");
            }
        }
    }
});

/// The key fields' texts, where they are long enough to be key material
/// (a short string could appear in an error by coincidence, e.g. `"1"`).
fn key_texts(text: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |v: &serde_json::Value| {
        if let Some(s) = v.as_str()
            && s.len() >= 16
            && STANDARD.decode(s).is_ok_and(|b| b.len() >= 12)
        {
            out.push(s.to_owned());
        }
    };
    push(&value["fingerprint_key"]);
    if let Some(keys) = value["keys"].as_array() {
        for key in keys {
            push(&key["key"]);
        }
    }
    out
}
