//! Sealing, opening and re-wrapping values, and keyed fingerprints.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::keyring::{KEY_LEN, Keyring};
use crate::sealed::SealedValue;

const TAG_LEN: usize = 16;

impl Keyring {
    /// Seals `plaintext` under a fresh DEK bound to `aad` (callers pass
    /// `tenant/key/version`), and wraps the DEK with the active KEK.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<SealedValue, CryptoError> {
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        self.rng
            .fill(dek.as_mut_slice())
            .map_err(|_| CryptoError::Random)?;
        let nonce = self.random_nonce()?;
        // Sized for the tag so sealing never reallocates a buffer that briefly
        // held plaintext; zeroized if sealing fails half-way.
        let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        buf.extend_from_slice(plaintext);
        dek_key(&dek)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *buf,
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let ciphertext = std::mem::take(&mut *buf);
        let (kek_id, dek_nonce, wrapped_dek) = self.wrap_dek(&dek)?;
        Ok(SealedValue {
            kek_id,
            dek_nonce,
            wrapped_dek,
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a value sealed by [`Keyring::seal`] with the same `aad`. Any
    /// tampering, another `aad` or another keyring gives [`CryptoError::Decrypt`].
    pub fn open(
        &self,
        sealed: &SealedValue,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let dek = self.unwrap_dek(sealed)?;
        let nonce = nonce_from(&sealed.nonce)?;
        let mut buf = Zeroizing::new(sealed.ciphertext.clone());
        let len = dek_key(&dek)
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Re-wraps the DEK of `sealed` under the active KEK. `None` when it is
    /// already there; otherwise a copy whose value nonce and ciphertext are
    /// unchanged (the value itself is never decrypted).
    pub fn rewrap(&self, sealed: &SealedValue) -> Result<Option<SealedValue>, CryptoError> {
        if sealed.kek_id == self.active_kek_id() {
            return Ok(None);
        }
        let dek = self.unwrap_dek(sealed)?;
        let (kek_id, dek_nonce, wrapped_dek) = self.wrap_dek(&dek)?;
        Ok(Some(SealedValue {
            kek_id,
            dek_nonce,
            wrapped_dek,
            nonce: sealed.nonce.clone(),
            ciphertext: sealed.ciphertext.clone(),
        }))
    }

    /// Hex HMAC-SHA256 of `value` under the fingerprint key: equal values give
    /// equal fingerprints within one deployment, and a guess cannot be checked
    /// without the key (unlike a bare hash of a low-entropy value).
    pub fn fingerprint(&self, value: &[u8]) -> String {
        hex::encode(hmac::sign(&self.hmac_key, value).as_ref())
    }

    fn random_nonce(&self) -> Result<[u8; NONCE_LEN], CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        Ok(nonce)
    }

    /// Wraps a DEK under the active KEK, with the KEK id as associated data so
    /// a wrapped DEK cannot be passed off as wrapped by another KEK.
    fn wrap_dek(&self, dek: &[u8; KEY_LEN]) -> Result<(String, Vec<u8>, Vec<u8>), CryptoError> {
        let kek = self.active_kek();
        let nonce = self.random_nonce()?;
        let mut buf = Zeroizing::new(Vec::with_capacity(KEY_LEN + TAG_LEN));
        buf.extend_from_slice(dek);
        kek.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kek.id.as_bytes()),
                &mut *buf,
            )
            .map_err(|_| CryptoError::Encrypt)?;
        Ok((kek.id.clone(), nonce.to_vec(), std::mem::take(&mut *buf)))
    }

    fn unwrap_dek(&self, sealed: &SealedValue) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let kek = self
            .kek(&sealed.kek_id)
            .ok_or_else(|| CryptoError::UnknownKek(sealed.kek_id.clone()))?;
        let nonce = nonce_from(&sealed.dek_nonce)?;
        let mut buf = Zeroizing::new(sealed.wrapped_dek.clone());
        let opened = kek
            .aead
            .open_in_place(nonce, Aad::from(kek.id.as_bytes()), &mut buf)
            .map_err(|_| CryptoError::Decrypt)?;
        if opened.len() != KEY_LEN {
            return Err(CryptoError::Decrypt);
        }
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        dek.copy_from_slice(opened);
        Ok(dek)
    }
}

fn dek_key(dek: &[u8; KEY_LEN]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, dek)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM accepts every 32-byte key")),
    )
}

fn nonce_from(bytes: &[u8]) -> Result<Nonce, CryptoError> {
    Nonce::try_assume_unique_for_key(bytes).map_err(|_| CryptoError::Decrypt)
}
