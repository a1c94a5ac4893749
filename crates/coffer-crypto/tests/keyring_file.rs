//! The keyring file: creation mode, refusal of shared files, rotation.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use coffer_crypto::{Keyring, KeyringError};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn load_or_create_creates_a_private_file_and_reloads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/nested/master.key");
    let created = Keyring::load_or_create(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(created.kek_ids(), vec!["kek-1"]);

    let sealed = created.seal(b"t/k/1", b"value").unwrap();
    let again = Keyring::load_or_create(&path).unwrap();
    assert_eq!(again.open(&sealed, b"t/k/1").unwrap().as_slice(), b"value");
    assert_eq!(again.fingerprint(b"v"), created.fingerprint(b"v"));
    let loaded = Keyring::load(&path).unwrap();
    assert_eq!(loaded.open(&sealed, b"t/k/1").unwrap().as_slice(), b"value");
}

#[test]
fn load_refuses_group_or_other_access() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    Keyring::load_or_create(&path).unwrap();
    for bad in [0o640, 0o604, 0o660, 0o644, 0o610, 0o601] {
        fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
        for result in [Keyring::load(&path), Keyring::load_or_create(&path)] {
            let err = result.unwrap_err();
            assert!(
                matches!(err, KeyringError::InsecurePermissions { mode, .. } if mode == bad),
                "{err:?}"
            );
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("chmod 600"), "{message}");
        }
        let err = Keyring::rotate_file(&path).unwrap_err();
        assert!(matches!(err, KeyringError::InsecurePermissions { .. }));
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    Keyring::load(&path).unwrap();
}

#[test]
fn load_of_a_missing_file_fails_without_creating_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let err = Keyring::load(&path).unwrap_err();
    assert!(matches!(err, KeyringError::Io { .. }), "{err:?}");
    assert!(!path.exists());
}

#[test]
fn load_refuses_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    let err = Keyring::load_or_create(&path).unwrap_err();
    assert!(matches!(err, KeyringError::NotAFile { .. }), "{err:?}");
}

#[test]
fn rotate_file_adds_an_active_kek_and_keeps_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let first = Keyring::load_or_create(&path).unwrap();
    let old = first.seal(b"t/k/1", b"old value").unwrap();

    assert_eq!(Keyring::rotate_file(&path).unwrap(), "kek-2");
    assert_eq!(Keyring::rotate_file(&path).unwrap(), "kek-3");
    assert_eq!(mode(&path), 0o600);
    // No temp files left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("master.key")]);

    let rotated = Keyring::load(&path).unwrap();
    assert_eq!(rotated.active_kek_id(), "kek-3");
    assert_eq!(rotated.kek_ids(), vec!["kek-1", "kek-2", "kek-3"]);
    assert_eq!(
        rotated.open(&old, b"t/k/1").unwrap().as_slice(),
        b"old value"
    );
    assert_eq!(rotated.seal(b"t/k/2", b"new").unwrap().kek_id, "kek-3");
    assert_eq!(rotated.fingerprint(b"v"), first.fingerprint(b"v"));
}

#[test]
fn concurrent_rotations_lose_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    Keyring::load_or_create(&path).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Keyring::rotate_file(&path).unwrap())
        })
        .collect();
    let mut ids: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec!["kek-2", "kek-3", "kek-4", "kek-5"]);
    assert_eq!(Keyring::load(&path).unwrap().kek_ids().len(), 5);
}
