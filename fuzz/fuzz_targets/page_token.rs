//! Page tokens (`coffer_core::page`): decoding forged and tampered tokens.
//!
//! A token is base64url(JSON {q: query fingerprint, a: cursor}); it is bound
//! to its query, not authenticated (a caller may move its own cursor, which
//! only ever selects rows inside the query it already may run).
//!
//! Properties: decode never panics; encode/decode round-trip any scope and
//! any cursor without control characters (others are refused); a token is accepted only by the query it was made for; a tampered
//! genuine token is either refused or decodes, for this query, to a cursor
//! that its re-encoding carries again (nothing but the cursor can change).

#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_core::page::{decode, encode, query_scope};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// Parts of the query (tenant, collection, filter, ...).
    parts: Vec<&'a str>,
    other_parts: Vec<&'a str>,
    cursor: &'a str,
    /// A token as a client might send it.
    forged: &'a str,
    /// Byte edits applied to a genuine token: (position, new byte).
    edits: Vec<(u16, u8)>,
}

fuzz_target!(|input: Input<'_>| {
    let scope = query_scope(&input.parts);
    assert_eq!(scope.len(), 24, "12 bytes of SHA-256 in hex");
    let other = query_scope(&input.other_parts);
    assert_eq!(input.parts == input.other_parts, scope == other);

    // Forged text: only ever an error or a cursor for this very scope.
    check_accepted(input.forged, &scope);

    let token = encode(&scope, input.cursor);
    if token.len() <= 4096 {
        // No real cursor holds a control character (PostgreSQL refuses NUL
        // in text): such a cursor is refused, any other round-trips.
        let expected =
            (!input.cursor.chars().any(char::is_control)).then(|| input.cursor.to_owned());
        assert_eq!(
            decode(&token, &scope, "page_token").ok().flatten(),
            expected
        );
    }
    if scope != other {
        assert!(
            decode(&token, &other, "page_token").is_err(),
            "token crossed queries"
        );
    }

    // Tampering with a genuine token.
    let mut bytes = token.into_bytes();
    if bytes.is_empty() {
        return;
    }
    for (at, byte) in &input.edits {
        let at = usize::from(*at) % bytes.len();
        bytes[at] = *byte;
    }
    if let Ok(text) = std::str::from_utf8(&bytes) {
        check_accepted(text, &scope);
        if scope != other {
            // Whatever the edit, a token for `scope` decoding under `other`
            // would mean the edit forged the query fingerprint: possible only
            // by writing `other` itself into the token.
            if decode(text, &other, "page_token").is_ok() && !text.is_empty() {
                let json = URL_SAFE_NO_PAD
                    .decode(text)
                    .expect("accepted tokens are base64");
                assert_eq!(fields(&json).0.as_deref(), Some(other.as_str()));
            }
        }
    }
});

fn check_accepted(raw: &str, scope: &str) {
    match decode(raw, scope, "page_token") {
        Ok(None) => assert!(raw.is_empty()),
        Ok(Some(cursor)) => {
            assert!(raw.len() <= 4096);
            assert!(!cursor.chars().any(char::is_control));
            // An accepted token names this query, and its cursor survives a
            // fresh encoding unchanged.
            let json = URL_SAFE_NO_PAD
                .decode(raw)
                .expect("accepted tokens are base64");
            let (q, a) = fields(&json);
            assert_eq!(q.as_deref(), Some(scope));
            assert_eq!(a.as_deref(), Some(cursor.as_str()));
            assert_eq!(
                decode(&encode(scope, &cursor), scope, "page_token").ok(),
                Some(Some(cursor))
            );
        }
        Err(err) => {
            // Every refusal says the same: it never echoes the token.
            let fixed = decode("!", scope, "page_token").expect_err("not base64");
            assert_eq!(err.to_string(), fixed.to_string());
        }
    }
}

/// The scope and cursor of an accepted token's JSON, read independently of
/// the crate: an object `{"q", "a"}` or (as serde also reads structs) an
/// array `[q, a]`.
fn fields(json: &[u8]) -> (Option<String>, Option<String>) {
    let value: serde_json::Value = serde_json::from_slice(json).expect("accepted tokens are JSON");
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    match &value {
        serde_json::Value::Array(items) => {
            (items.first().and_then(text), items.get(1).and_then(text))
        }
        _ => (text(&value["q"]), text(&value["a"])),
    }
}
