//! Opaque page tokens for keyset pagination. A token carries the last key of
//! the previous page and a fingerprint of the query it belongs to, so a token
//! replayed against another tenant, filter or collection is refused instead of
//! returning a confusing page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

#[derive(Serialize, Deserialize)]
struct Token {
    /// Query fingerprint.
    q: String,
    /// Cursor: the last item of the previous page.
    a: String,
}

/// Fingerprints the parts of a query that must stay the same across pages.
pub fn query_scope(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..12])
}

/// Encodes the cursor of the next page.
pub fn encode(scope: &str, cursor: &str) -> String {
    let token = Token {
        q: scope.to_owned(),
        a: cursor.to_owned(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Decodes a page token for this query; empty means the first page.
pub fn decode(raw: &str, scope: &str, field: &str) -> Result<Option<String>> {
    if raw.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::invalid_field(
            field,
            "page_token is not valid for this request; start again without a page_token",
        )
    };
    // Generous: import tokens wrap a provider's own (long) continuation token.
    if raw.len() > 4096 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    // The scheme is public, so a token can be forged for the caller's own
    // query; the cursor then reaches the database as a bound parameter. No
    // real cursor holds a control character, and PostgreSQL refuses NUL in
    // text (an internal error), so such a cursor is the caller's mistake.
    if token.q != scope || token.a.chars().any(char::is_control) {
        return Err(invalid());
    }
    Ok(Some(token.a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_one_query_only() {
        let scope = query_scope(&["secrets", "acme", ""]);
        let token = encode(&scope, "db-password");
        assert_eq!(
            decode(&token, &scope, "page_token").unwrap().as_deref(),
            Some("db-password")
        );
        let other = query_scope(&["secrets", "globex", ""]);
        assert!(decode(&token, &other, "page_token").is_err());
        assert!(decode("not-a-token", &scope, "page_token").is_err());
        assert_eq!(decode("", &scope, "page_token").unwrap(), None);
        assert!(decode(&encode(&scope, "db\u{0}"), &scope, "page_token").is_err());
    }
}
