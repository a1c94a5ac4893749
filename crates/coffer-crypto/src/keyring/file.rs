//! The keyring file: create it `0600` on first start, refuse it when group or
//! others may access it, and rotate it atomically.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use super::Keyring;
use crate::error::KeyringError;

const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

impl Keyring {
    /// Loads the keyring file, refusing it when group or others have any
    /// permission on it.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let file = File::open(path).map_err(|e| KeyringError::io(path, e))?;
        let text = read_checked(path, &file)?;
        Keyring::from_json(&text)
    }

    /// Loads the keyring file, or on first start creates it (mode `0600`,
    /// parent directories `0700`) with one fresh KEK.
    pub fn load_or_create(path: &Path) -> Result<Keyring, KeyringError> {
        match File::open(path) {
            Ok(file) => return Keyring::from_json(&read_checked(path, &file)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(KeyringError::io(path, e)),
        }
        let dir = parent_dir(path);
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|e| KeyringError::io(&dir, e))?;
        let keyring = Keyring::generate()?;
        match write_new(path, keyring.to_json().as_bytes()) {
            Ok(()) => {
                sync_dir(&dir)?;
                Ok(keyring)
            }
            // Another process created it between our open and create: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Keyring::load(path),
            Err(e) => Err(KeyringError::io(path, e)),
        }
    }

    /// Adds a KEK to the keyring file and makes it active; returns its id.
    ///
    /// The new file is written `0600` next to the old one, synced and renamed
    /// into place, so a crash leaves either the old or the new keyring. An
    /// exclusive lock on the current file serializes concurrent rotations.
    pub fn rotate_file(path: &Path) -> Result<String, KeyringError> {
        let (_lock, mut keyring) = load_locked(path)?;
        let id = keyring.rotate()?;
        write_atomic(path, keyring.to_json().as_bytes())?;
        Ok(id)
    }
}

/// Opens and exclusively locks the current keyring file. A rotation that ran
/// while we waited for the lock replaced the file, so the lock we got is on a
/// stale inode: reopen until the locked file is the one at `path`.
fn load_locked(path: &Path) -> Result<(File, Keyring), KeyringError> {
    loop {
        let file = File::open(path).map_err(|e| KeyringError::io(path, e))?;
        file.lock().map_err(|e| KeyringError::io(path, e))?;
        let locked = file.metadata().map_err(|e| KeyringError::io(path, e))?;
        let current = fs::metadata(path).map_err(|e| KeyringError::io(path, e))?;
        if locked.dev() == current.dev() && locked.ino() == current.ino() {
            let keyring = Keyring::from_json(&read_checked(path, &file)?)?;
            return Ok((file, keyring));
        }
    }
}

/// Reads an opened keyring file after checking, on the open descriptor (no
/// race with a chmod between check and read), that it is a private regular file.
fn read_checked(path: &Path, file: &File) -> Result<Zeroizing<String>, KeyringError> {
    let meta = file.metadata().map_err(|e| KeyringError::io(path, e))?;
    if !meta.is_file() {
        return Err(KeyringError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyringError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    // Sized up front so reading never reallocates and leaves key copies behind.
    let len = usize::try_from(meta.len()).unwrap_or(0);
    let mut text = Zeroizing::new(String::with_capacity(len.saturating_add(1)));
    let mut reader = file;
    reader
        .read_to_string(&mut text)
        .map_err(|e| KeyringError::io(path, e))?;
    Ok(text)
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if written.is_err() {
        // A half-written keyring would refuse every later start; remove it.
        let _ = fs::remove_file(path);
    }
    written
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeyringError> {
    let dir = parent_dir(path);
    let tmp = temp_path(path, &dir);
    write_new(&tmp, bytes).map_err(|e| KeyringError::io(&tmp, e))?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(KeyringError::io(path, e));
    }
    sync_dir(&dir)
}

fn temp_path(path: &Path, dir: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keyring".to_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a create or rename durable: the directory entry must reach disk too.
fn sync_dir(dir: &Path) -> Result<(), KeyringError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyringError::io(dir, e))
}
