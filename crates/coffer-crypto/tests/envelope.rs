//! Sealing, opening, tampering, rotation with re-wrap, and fingerprints.
#![allow(clippy::unwrap_used)]

use coffer_crypto::{CryptoError, Keyring, SealedValue};
use ring::digest;

const AAD: &[u8] = b"acme/openai-api-key/1";

fn flip(bytes: &mut [u8], index: usize) {
    bytes[index] ^= 0x01;
}

fn assert_decrypt_error(result: Result<impl std::fmt::Debug, CryptoError>) {
    match result {
        Err(CryptoError::Decrypt) => {}
        other => panic!("expected CryptoError::Decrypt, got {other:?}"),
    }
}

#[test]
fn round_trips_values_of_every_size() {
    let ring = Keyring::generate().unwrap();
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let values: [&[u8]; 5] = [b"", b"\x00", b"x", b"\x00\xff\x00binary\x00", &big];
    for value in values {
        let sealed = ring.seal(AAD, value).unwrap();
        assert_eq!(sealed.kek_id, "kek-1");
        assert_eq!(sealed.ciphertext.len(), value.len() + 16);
        assert_eq!(ring.open(&sealed, AAD).unwrap().as_slice(), value);
    }
}

#[test]
fn each_seal_uses_a_fresh_dek_and_nonce() {
    let ring = Keyring::generate().unwrap();
    let a = ring.seal(AAD, b"same").unwrap();
    let b = ring.seal(AAD, b"same").unwrap();
    assert_ne!(a.wrapped_dek, b.wrapped_dek);
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[test]
fn flipped_bit_in_ciphertext_fails() {
    let ring = Keyring::generate().unwrap();
    let sealed = ring.seal(AAD, b"hunter2").unwrap();
    for index in [0, sealed.ciphertext.len() - 1] {
        let mut bad = sealed.clone();
        flip(&mut bad.ciphertext, index);
        assert_decrypt_error(ring.open(&bad, AAD));
    }
    let mut bad = sealed.clone();
    flip(&mut bad.nonce, 0);
    assert_decrypt_error(ring.open(&bad, AAD));
}

#[test]
fn flipped_bit_in_wrapped_dek_fails() {
    let ring = Keyring::generate().unwrap();
    let sealed = ring.seal(AAD, b"hunter2").unwrap();
    for index in [0, 31, sealed.wrapped_dek.len() - 1] {
        let mut bad = sealed.clone();
        flip(&mut bad.wrapped_dek, index);
        assert_decrypt_error(ring.open(&bad, AAD));
    }
    let mut bad = sealed.clone();
    flip(&mut bad.dek_nonce, 11);
    assert_decrypt_error(ring.open(&bad, AAD));
    let mut bad = sealed;
    bad.wrapped_dek.truncate(10);
    assert_decrypt_error(ring.open(&bad, AAD));
}

#[test]
fn another_place_fails() {
    let ring = Keyring::generate().unwrap();
    let sealed = ring.seal(AAD, b"hunter2").unwrap();
    for other in [
        &b"globex/openai-api-key/1"[..],
        b"acme/anthropic-api-key/1",
        b"acme/openai-api-key/2",
        b"",
    ] {
        assert_decrypt_error(ring.open(&sealed, other));
    }
}

#[test]
fn another_keyring_fails() {
    let ring = Keyring::generate().unwrap();
    let other = Keyring::generate().unwrap();
    // Same KEK id ("kek-1") on both sides: only the key differs.
    assert_eq!(ring.active_kek_id(), other.active_kek_id());
    let sealed = ring.seal(AAD, b"hunter2").unwrap();
    assert_decrypt_error(other.open(&sealed, AAD));
}

#[test]
fn dek_wrapped_by_one_kek_cannot_claim_another() {
    let mut ring = Keyring::generate().unwrap();
    let sealed = ring.seal(AAD, b"hunter2").unwrap();
    ring.rotate().unwrap();
    let mut relabeled = sealed.clone();
    relabeled.kek_id = "kek-2".to_owned();
    assert_decrypt_error(ring.open(&relabeled, AAD));
}

#[test]
fn unknown_kek_is_reported() {
    let ring = Keyring::generate().unwrap();
    let mut sealed = ring.seal(AAD, b"hunter2").unwrap();
    sealed.kek_id = "kek-9".to_owned();
    match ring.open(&sealed, AAD) {
        Err(CryptoError::UnknownKek(id)) => assert_eq!(id, "kek-9"),
        other => panic!("expected UnknownKek, got {other:?}"),
    }
}

#[test]
fn rotation_then_rewrap_keeps_every_value_readable() {
    let mut ring = Keyring::generate().unwrap();
    let values: Vec<(Vec<u8>, Vec<u8>)> = (1..=5)
        .map(|v| {
            (
                format!("acme/db/{v}").into_bytes(),
                format!("pw-{v}").into_bytes(),
            )
        })
        .collect();
    let mut sealed: Vec<SealedValue> = values
        .iter()
        .map(|(aad, value)| ring.seal(aad, value).unwrap())
        .collect();

    assert_eq!(ring.rotate().unwrap(), "kek-2");
    assert_eq!(ring.active_kek_id(), "kek-2");
    assert_eq!(ring.kek_ids(), vec!["kek-1", "kek-2"]);
    // Old values stay readable before any rewrap.
    for ((aad, value), s) in values.iter().zip(&sealed) {
        assert_eq!(s.kek_id, "kek-1");
        assert_eq!(ring.open(s, aad).unwrap().as_slice(), value.as_slice());
    }
    let fresh = ring.seal(b"acme/db/6", b"pw-6").unwrap();
    assert_eq!(fresh.kek_id, "kek-2");

    for s in &mut sealed {
        let moved = ring
            .rewrap(s)
            .unwrap()
            .expect("value under kek-1 must move");
        assert_eq!(moved.kek_id, "kek-2");
        assert_eq!(moved.nonce, s.nonce);
        assert_eq!(moved.ciphertext, s.ciphertext);
        assert_ne!(moved.wrapped_dek, s.wrapped_dek);
        *s = moved;
    }
    for ((aad, value), s) in values.iter().zip(&sealed) {
        assert_eq!(ring.open(s, aad).unwrap().as_slice(), value.as_slice());
        assert!(ring.rewrap(s).unwrap().is_none());
    }
    assert!(ring.rewrap(&fresh).unwrap().is_none());

    // After the rewrap nothing needs kek-1: a keyring without it still reads all.
    let json = ring.to_json();
    let mut doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    doc["keys"].as_array_mut().unwrap().remove(0);
    let retired = Keyring::from_json(&doc.to_string()).unwrap();
    for ((aad, value), s) in values.iter().zip(&sealed) {
        assert_eq!(retired.open(s, aad).unwrap().as_slice(), value.as_slice());
    }
}

#[test]
fn sealed_value_serializes_as_base64_and_debug_hides_bytes() {
    let ring = Keyring::generate().unwrap();
    let sealed = ring.seal(AAD, b"hunter2").unwrap();
    let json = serde_json::to_value(&sealed).unwrap();
    for field in ["dek_nonce", "wrapped_dek", "nonce", "ciphertext"] {
        assert!(json[field].is_string(), "{field} is not a string");
    }
    let back: SealedValue = serde_json::from_value(json).unwrap();
    assert_eq!(back, sealed);
    assert_eq!(ring.open(&back, AAD).unwrap().as_slice(), b"hunter2");

    let debug = format!("{sealed:?}");
    assert!(debug.contains("kek-1"));
    assert!(debug.contains("ciphertext_len: 23"));
    assert!(!debug.contains(&format!("{:?}", sealed.ciphertext)));
}

#[test]
fn fingerprint_is_keyed() {
    let a = Keyring::generate().unwrap();
    let b = Keyring::generate().unwrap();
    let value = b"password123";
    assert_eq!(a.fingerprint(value), a.fingerprint(value));
    assert_eq!(a.fingerprint(value).len(), 64);
    assert_ne!(a.fingerprint(value), a.fingerprint(b"password124"));
    assert_ne!(a.fingerprint(value), b.fingerprint(value));
    let bare = hex::encode(digest::digest(&digest::SHA256, value));
    assert_ne!(a.fingerprint(value), bare);
}

#[test]
fn fingerprint_survives_rotation() {
    let mut ring = Keyring::generate().unwrap();
    let before = ring.fingerprint(b"v");
    ring.rotate().unwrap();
    assert_eq!(ring.fingerprint(b"v"), before);
}
