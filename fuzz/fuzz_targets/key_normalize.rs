//! Key normalization (`SecretKey::normalize`, display name -> key), fed
//! arbitrary text.
//!
//! Properties: the result is a valid key; normalizing is idempotent; a key
//! that is already normal maps to itself; the error happens exactly when the
//! lowercased input has no ASCII letter or digit.

#![no_main]

use coffer_core::SecretKey;
use coffer_core::name::KEY_MAX;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|seed: &str| {
    let usable = seed
        .chars()
        .flat_map(char::to_lowercase)
        .any(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    match SecretKey::normalize(seed, "display_name") {
        Ok(key) => {
            assert!(usable, "{seed:?} gave {key}");
            let text = key.as_str();
            assert!(!text.is_empty() && text.len() <= KEY_MAX);
            assert!(!text.ends_with('-'));
            assert_eq!(SecretKey::parse(text, "k").ok().as_ref(), Some(&key));
            let again = SecretKey::normalize(text, "display_name").expect("a key normalizes");
            assert_eq!(again, key, "normalize is not idempotent for {seed:?}");
            // Every character of the output is in the input (after
            // lowercasing) or is the dash that replaced a run.
            let lowered: String = seed.chars().flat_map(char::to_lowercase).collect();
            assert!(
                text.chars().all(|c| c == '-' || lowered.contains(c)),
                "{seed:?} -> {text:?}"
            );
        }
        Err(_) => assert!(!usable, "{seed:?} refused"),
    }
    // A valid key without a trailing dash is its own normal form.
    if let Ok(key) = SecretKey::parse(seed, "k")
        && !seed.ends_with('-')
        && !seed.starts_with(['_', '.'])
    {
        assert_eq!(
            SecretKey::normalize(seed, "display_name").ok().as_ref(),
            Some(&key)
        );
    }
});
