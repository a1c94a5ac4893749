//! Envelope encryption for the built-in `local_encrypted` vault.
//!
//! Every value gets a fresh 256-bit data-encryption key (DEK); the value is
//! sealed with AES-256-GCM under the DEK with associated data naming its place
//! (`tenant/key/version`), and the DEK is wrapped by the active
//! key-encryption key (KEK) of a [`Keyring`], with the KEK id as associated
//! data. Rotating the keyring adds a KEK; [`Keyring::rewrap`] moves a stored
//! value to the active KEK without touching its ciphertext. The keyring also
//! holds a separate, never-rotated fingerprint key for keyed value
//! fingerprints ([`Keyring::fingerprint`]).
//!
//! The keyring file format and its permission rules are described in
//! [`keyring`].

mod envelope;
mod error;
pub mod keyring;
mod sealed;

pub use error::{CryptoError, KeyringError};
pub use keyring::Keyring;
pub use sealed::SealedValue;
pub use zeroize::Zeroizing;
