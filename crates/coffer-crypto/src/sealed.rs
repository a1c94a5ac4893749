//! [`SealedValue`]: what is stored for one encrypted value. It carries no
//! secret in the clear, but its `Debug` still prints lengths only so logs stay
//! small and free of ciphertext.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One value sealed by [`crate::Keyring::seal`]. Byte fields serialize as
/// standard base64 strings.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedValue {
    /// Id of the KEK that wraps the DEK.
    pub kek_id: String,
    /// 96-bit nonce used to wrap the DEK.
    #[serde(with = "b64")]
    pub dek_nonce: Vec<u8>,
    /// The DEK sealed under the KEK (32 bytes + 16-byte tag).
    #[serde(with = "b64")]
    pub wrapped_dek: Vec<u8>,
    /// 96-bit nonce used to seal the value.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// The value sealed under the DEK (plaintext length + 16-byte tag).
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedValue")
            .field("kek_id", &self.kek_id)
            .field("wrapped_dek_len", &self.wrapped_dek.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("invalid base64"))
    }
}
