//! Request ids: every RPC carries one, taken from the caller's
//! `x-request-id` metadata when it is sane, else a fresh UUID, and echoed back
//! in the response headers so a caller can quote it to an operator.
//!
//! "Sane" is at most 128 characters of `[A-Za-z0-9._:-]`: enough for UUIDs,
//! ULIDs and W3C trace ids, and nothing that could forge a log line or carry
//! a value. Anything else is replaced, never logged.

use http::{HeaderMap, HeaderValue};

/// The metadata key a request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

const MAX_CHARS: usize = 128;

/// The id of one RPC.
#[derive(Debug, Clone)]
pub(crate) struct RequestId {
    header: HeaderValue,
}

impl RequestId {
    /// The caller's id when it is sane, else a fresh one.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(REQUEST_ID_HEADER)
            .filter(|value| is_sane(value.as_bytes()))
            .map(|header| RequestId {
                header: header.clone(),
            })
            .unwrap_or_else(Self::generate)
    }

    fn generate() -> Self {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        // A hyphenated UUID is always a valid header value; the fallback
        // only keeps this infallible without a panic path.
        let header = HeaderValue::try_from(id)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"));
        RequestId { header }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Sane ids and UUIDs are ASCII, so this never falls back.
        self.header.to_str().unwrap_or_default()
    }

    pub(crate) fn header(&self) -> HeaderValue {
        self.header.clone()
    }
}

fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CHARS
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id_for(sent: Option<&str>) -> String {
        let mut headers = HeaderMap::new();
        if let Some(sent) = sent {
            headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(sent).unwrap());
        }
        RequestId::from_headers(&headers).as_str().to_owned()
    }

    #[test]
    fn sane_ids_are_kept() {
        for id in [
            "req-42",
            "01J0Z8Q3.x_y:z",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            &"a".repeat(128),
        ] {
            assert_eq!(id_for(Some(id)), id);
        }
    }

    #[test]
    fn missing_or_insane_ids_are_replaced_by_a_uuid() {
        for sent in [
            None,
            Some(""),
            Some("has space"),
            Some("quote\"d"),
            Some("slash/ed"),
            Some("{\"json\":1}"),
            Some(&*"a".repeat(129)),
        ] {
            let id = id_for(sent);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{sent:?} became {id}");
            assert_ne!(Some(id.as_str()), sent);
        }
        assert_ne!(id_for(None), id_for(None), "every generated id is fresh");
    }
}
