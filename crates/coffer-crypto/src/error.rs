//! Errors of this crate: [`CryptoError`] for sealing and opening values,
//! [`KeyringError`] for loading, creating and rotating keyrings. Neither ever
//! carries key material or plaintext.

use std::io;
use std::path::PathBuf;

/// A failure to seal, open or re-wrap a value.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The value cannot be opened: tampered with, bound to another place, or
    /// sealed under another key. Deliberately says nothing more.
    #[error("decryption failed")]
    Decrypt,
    /// The value names a KEK this keyring does not hold (retired or another keyring).
    #[error("key-encryption key {0:?} is not in the keyring")]
    UnknownKek(String),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// AES-GCM refused to seal (only for inputs beyond its size limit).
    #[error("encryption failed")]
    Encrypt,
}

/// A failure to load, create, parse or rotate a keyring.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// Reading or writing the keyring file failed.
    #[error("keyring file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The keyring file can be read or written by group or others.
    #[error(
        "keyring file {path} is accessible by group or others (mode {mode:04o}); \
         run `chmod 600 {path}` and start again"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    /// The keyring path exists but is not a regular file.
    #[error("keyring path {path} is not a regular file")]
    NotAFile { path: PathBuf },
    /// The keyring content is not a valid keyring (never echoes key material).
    #[error("invalid keyring: {0}")]
    Invalid(String),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl KeyringError {
    pub(crate) fn io(path: &std::path::Path, source: io::Error) -> Self {
        KeyringError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
