//! The KEK keyring: key-encryption keys by id, the active one, and the
//! fingerprint key; its JSON form; and (in `file`) the keyring file.
//!
//! # File format
//!
//! The keyring file (`master.key`) and the environment-variable form share one
//! JSON document:
//!
//! ```json
//! {
//!   "format": 1,
//!   "active": "kek-2",
//!   "keys": [
//!     { "id": "kek-1", "created_at": "1735689600", "key": "<base64 of 32 bytes>" },
//!     { "id": "kek-2", "created_at": "1767225600", "key": "<base64 of 32 bytes>" }
//!   ],
//!   "fingerprint_key": "<base64 of 32 bytes>"
//! }
//! ```
//!
//! - `format` is `1`; unknown fields are rejected.
//! - `keys` holds every KEK still in use; ids match `[A-Za-z0-9._-]{1,64}` and
//!   are unique. `created_at` is a decimal string of Unix seconds. New KEKs are
//!   named `kek-{n}` with `n` one above the highest such number.
//! - `active` names the KEK that wraps new DEKs. Older KEKs stay so that values
//!   they wrap remain readable until re-wrapped; a KEK may be removed only when
//!   nothing uses it any more.
//! - `fingerprint_key` keys [`Keyring::fingerprint`] and never rotates: a new
//!   one would change every stored fingerprint.
//! - Base64 is the standard alphabet with padding.
//!
//! # File permissions
//!
//! The file is created with mode `0600` (never wider, not even briefly) in a
//! directory created `0700`. Loading refuses a file with any group or other
//! permission bit (`mode & 0o077 != 0`). Rotation writes a new `0600` file next
//! to the old one, syncs it and renames it into place, holding an exclusive
//! lock on the old file so concurrent rotations do not lose a key.

mod file;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::KeyringError;

/// Length in bytes of every key in the keyring (256 bits).
pub const KEY_LEN: usize = 32;
const FORMAT: u32 = 1;
const KEK_ID_MAX: usize = 64;

/// One key-encryption key. `key` is zeroized on drop; `aead` is ring's
/// expanded key, which ring does not zeroize (kept once per KEK rather than
/// rebuilt, and so copied, on every call).
pub(crate) struct Kek {
    pub(crate) id: String,
    created_at: u64,
    key: Zeroizing<[u8; KEY_LEN]>,
    pub(crate) aead: LessSafeKey,
}

impl Kek {
    fn new(id: String, created_at: u64, key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key.as_slice())
                .unwrap_or_else(|_| unreachable!("AES-256-GCM accepts every 32-byte key")),
        );
        Kek {
            id,
            created_at,
            key,
            aead,
        }
    }
}

/// A set of KEKs with one active, plus the fingerprint key.
///
/// `Debug` prints the KEK ids only.
pub struct Keyring {
    keks: Vec<Kek>,
    active: usize,
    fingerprint_key: Zeroizing<[u8; KEY_LEN]>,
    pub(crate) hmac_key: hmac::Key,
    pub(crate) rng: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active_kek_id())
            .field("kek_ids", &self.kek_ids())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A new in-memory keyring with one KEK (`kek-1`) and a fresh fingerprint key.
    pub fn generate() -> Result<Keyring, KeyringError> {
        let rng = SystemRandom::new();
        let kek = Kek::new("kek-1".to_owned(), unix_now(), random_key(&rng)?);
        let fingerprint_key = random_key(&rng)?;
        Ok(Keyring::assemble(vec![kek], 0, fingerprint_key, rng))
    }

    fn assemble(
        keks: Vec<Kek>,
        active: usize,
        fingerprint_key: Zeroizing<[u8; KEY_LEN]>,
        rng: SystemRandom,
    ) -> Keyring {
        let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, fingerprint_key.as_slice());
        Keyring {
            keks,
            active,
            fingerprint_key,
            hmac_key,
            rng,
        }
    }

    /// Adds a new KEK and makes it active; returns its id. Existing KEKs stay.
    pub fn rotate(&mut self) -> Result<String, KeyringError> {
        let id = self.next_kek_id();
        let key = random_key(&self.rng)?;
        self.keks.push(Kek::new(id.clone(), unix_now(), key));
        self.active = self.keks.len() - 1;
        Ok(id)
    }

    fn next_kek_id(&self) -> String {
        let highest = self
            .keks
            .iter()
            .filter_map(|k| k.id.strip_prefix("kek-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let mut n = highest.saturating_add(1);
        loop {
            let id = format!("kek-{n}");
            if self.kek(&id).is_none() {
                return id;
            }
            n = n.wrapping_add(1);
        }
    }

    /// Id of the KEK that wraps new DEKs.
    pub fn active_kek_id(&self) -> &str {
        &self.active_kek().id
    }

    /// Ids of every KEK, oldest first.
    pub fn kek_ids(&self) -> Vec<&str> {
        self.keks.iter().map(|k| k.id.as_str()).collect()
    }

    pub(crate) fn active_kek(&self) -> &Kek {
        &self.keks[self.active]
    }

    pub(crate) fn kek(&self, id: &str) -> Option<&Kek> {
        self.keks.iter().find(|k| k.id == id)
    }

    /// Parses the JSON form (the environment-variable form, or a file's
    /// content). No permission check: the caller owns where the text came from.
    pub fn from_json(text: &str) -> Result<Keyring, KeyringError> {
        let doc: KeyringDoc = serde_json::from_str(text).map_err(|e| {
            // serde_json errors quote offending input only for a few token
            // kinds; keep position and category, never the text itself.
            KeyringError::Invalid(format!(
                "not a keyring document ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if doc.format != FORMAT {
            return Err(KeyringError::Invalid(format!(
                "unsupported format {} (this version reads format {FORMAT})",
                doc.format
            )));
        }
        if doc.keys.is_empty() {
            return Err(KeyringError::Invalid("keys is empty".to_owned()));
        }
        let mut keks: Vec<Kek> = Vec::with_capacity(doc.keys.len());
        for entry in &doc.keys {
            if !valid_kek_id(&entry.id) {
                return Err(KeyringError::Invalid(format!(
                    "key id {:?} must match [A-Za-z0-9._-]{{1,{KEK_ID_MAX}}}",
                    entry.id
                )));
            }
            if keks.iter().any(|k| k.id == entry.id) {
                return Err(KeyringError::Invalid(format!(
                    "key id {:?} appears twice",
                    entry.id
                )));
            }
            let created_at = entry.created_at.parse::<u64>().map_err(|_| {
                KeyringError::Invalid(format!(
                    "created_at of key {:?} must be a decimal string of unix seconds",
                    entry.id
                ))
            })?;
            let key = decode_key(&entry.key, &format!("key of {:?}", entry.id))?;
            keks.push(Kek::new(entry.id.clone(), created_at, key));
        }
        let active = keks
            .iter()
            .position(|k| k.id == doc.active)
            .ok_or_else(|| {
                KeyringError::Invalid(format!("active key {:?} is not in keys", doc.active))
            })?;
        let fingerprint_key = decode_key(&doc.fingerprint_key, "fingerprint_key")?;
        Ok(Keyring::assemble(
            keks,
            active,
            fingerprint_key,
            SystemRandom::new(),
        ))
    }

    /// The JSON form described in the [module docs](self). Contains every key:
    /// write it only to a `0600` file or a secret store.
    pub fn to_json(&self) -> Zeroizing<String> {
        let doc = KeyringDoc {
            format: FORMAT,
            active: self.active_kek_id().to_owned(),
            keys: self
                .keks
                .iter()
                .map(|k| KeyDoc {
                    id: k.id.clone(),
                    created_at: k.created_at.to_string(),
                    key: STANDARD.encode(k.key.as_slice()),
                })
                .collect(),
            fingerprint_key: STANDARD.encode(self.fingerprint_key.as_slice()),
        };
        // Pre-size the buffer so it never reallocates (which would leave
        // unzeroized copies of key material behind).
        let mut out = Zeroizing::new(Vec::with_capacity(256 + 160 * self.keks.len()));
        let written = serde_json::to_writer_pretty(&mut *out, &doc);
        debug_assert!(written.is_ok(), "serializing plain strings cannot fail");
        out.push(b'\n');
        let text = String::from_utf8(std::mem::take(&mut *out))
            .unwrap_or_else(|_| unreachable!("serde_json writes UTF-8"));
        Zeroizing::new(text)
    }
}

/// Serde form of the keyring; zeroized on drop because it holds base64 keys.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct KeyringDoc {
    format: u32,
    active: String,
    keys: Vec<KeyDoc>,
    fingerprint_key: String,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct KeyDoc {
    id: String,
    created_at: String,
    key: String,
}

fn valid_kek_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= KEK_ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn decode_key(text: &str, what: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyringError> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(text)
            .map_err(|_| KeyringError::Invalid(format!("{what} is not valid base64")))?,
    );
    if bytes.len() != KEY_LEN {
        return Err(KeyringError::Invalid(format!(
            "{what} must be {KEY_LEN} bytes, got {}",
            bytes.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn random_key(rng: &SystemRandom) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyringError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(key.as_mut_slice())
        .map_err(|_| KeyringError::Random)?;
    Ok(key)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_round_trip_keeps_keys_and_active() {
        let mut ring = Keyring::generate().unwrap();
        ring.rotate().unwrap();
        let copy = Keyring::from_json(&ring.to_json()).unwrap();
        assert_eq!(copy.active_kek_id(), "kek-2");
        assert_eq!(copy.kek_ids(), vec!["kek-1", "kek-2"]);
        assert_eq!(copy.fingerprint(b"x"), ring.fingerprint(b"x"));
        let sealed = ring.seal(b"t/k/1", b"value").unwrap();
        assert_eq!(copy.open(&sealed, b"t/k/1").unwrap().as_slice(), b"value");
    }

    #[test]
    fn debug_prints_ids_only() {
        let ring = Keyring::generate().unwrap();
        let json = ring.to_json();
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        let key_b64 = doc["keys"][0]["key"].as_str().unwrap().to_owned();
        let fp_b64 = doc["fingerprint_key"].as_str().unwrap().to_owned();
        let debug = format!("{ring:?}");
        assert!(debug.contains("kek-1"));
        assert!(!debug.contains(&key_b64));
        assert!(!debug.contains(&fp_b64));
    }

    #[test]
    fn next_id_follows_the_highest_number() {
        let text = Keyring::generate()
            .unwrap()
            .to_json()
            .replace("\"kek-1\"", "\"kek-7\"");
        let mut ring = Keyring::from_json(&text).unwrap();
        assert_eq!(ring.rotate().unwrap(), "kek-8");
        assert_eq!(ring.active_kek_id(), "kek-8");
    }

    #[test]
    fn invalid_documents_are_rejected_without_echoing_keys() {
        let good = Keyring::generate().unwrap().to_json();
        let doc: serde_json::Value = serde_json::from_str(&good).unwrap();
        let key_b64 = doc["keys"][0]["key"].as_str().unwrap().to_owned();

        let cases = [
            good.replace("\"format\": 1", "\"format\": 2"),
            good.replace("\"active\": \"kek-1\"", "\"active\": \"kek-9\""),
            good.replace(&key_b64, "c2hvcnQ="),
            good.replace(&key_b64, "not base64!"),
            good.replace("\"format\": 1", "\"format\": 1, \"extra\": true"),
            good.replace("\"id\": \"kek-1\"", "\"id\": \"kek 1\""),
            good.replacen('{', "{{", 1),
        ];
        for case in cases {
            let err = Keyring::from_json(&case).unwrap_err();
            assert!(matches!(err, KeyringError::Invalid(_)), "{err}");
            assert!(!err.to_string().contains(&key_b64));
        }
    }
}
