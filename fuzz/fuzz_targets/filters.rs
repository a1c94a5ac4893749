//! The list filters of `coffer_core::filter` (ListSecrets and
//! ListAuditEvents) and the RFC 3339 parser behind `time >= "..."`.
//!
//! Properties: parsing never panics; a parsed ListSecrets filter printed back
//! as filter text parses to the same filter; `canonical` (which binds page
//! tokens to their query) is deterministic and tells different filters apart;
//! no accepted value holds a control character;
//! an accepted timestamp is a well-formed RFC 3339 date whose value does not
//! change when re-parsed with a `Z` offset at the same instant.

#![no_main]

use coffer_core::filter::{AuditFilterSpec, SecretFilter, parse_rfc3339_micros};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    secret_filter(raw);
    audit_filter(raw);
    timestamp(raw);
    // The input as the fraction and offset of a valid date and time, so the
    // fuzzer spends its time on the part after the seconds.
    timestamp(&format!("2026-11-29T00:00:00{raw}"));
});

fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Filter text for `filter`, written with the documented syntax only.
fn render(filter: &SecretFilter) -> String {
    let mut terms = Vec::new();
    if let Some(state) = filter.state {
        terms.push(format!(
            "state = STATE_{}",
            state.as_str().to_ascii_uppercase()
        ));
    }
    if let Some(mode) = filter.mode {
        terms.push(format!(
            "mode = {}",
            quote(&mode.as_str().to_ascii_uppercase())
        ));
    }
    if let Some(provider) = &filter.provider {
        terms.push(format!("provider = {}", quote(provider)));
    }
    if let Some(vault) = &filter.vault {
        terms.push(format!("vault = {}", quote(vault)));
    }
    for (key, value) in &filter.labels {
        terms.push(format!("labels.{key} = {}", quote(value)));
    }
    terms.join(" AND ")
}

fn secret_filter(raw: &str) {
    let Ok(filter) = SecretFilter::parse(raw, "filter") else {
        return;
    };
    // No value with a control character reaches the store (PostgreSQL
    // refuses NUL in text).
    let values = filter.provider.iter().chain(&filter.vault);
    for value in values.chain(filter.labels.iter().flat_map(|(k, v)| [k, v])) {
        assert!(!value.chars().any(char::is_control), "{value:?} accepted");
    }
    let text = render(&filter);
    // Rendering can only lengthen a filter past the limit through quoting.
    if text.chars().count() <= 1024 {
        let again = SecretFilter::parse(&text, "filter")
            .unwrap_or_else(|e| panic!("{text:?} (from {raw:?}) refused: {e}"));
        assert_eq!(again, filter, "{raw:?} -> {text:?}");
        assert_eq!(again.canonical(), filter.canonical());
    }
    // `canonical` separates filters: dropping one condition changes it.
    if !filter.labels.is_empty() {
        let mut fewer = filter.clone();
        fewer.labels.pop();
        assert_ne!(fewer.canonical(), filter.canonical());
    }
    if filter.provider.is_some() {
        let other = SecretFilter {
            provider: None,
            ..filter.clone()
        };
        assert_ne!(other.canonical(), filter.canonical());
    }
}

fn audit_filter(raw: &str) {
    let Ok(spec) = AuditFilterSpec::parse(raw, "filter") else {
        return;
    };
    assert_eq!(
        AuditFilterSpec::parse(raw, "filter")
            .ok()
            .map(|s| s.canonical()),
        Some(spec.canonical())
    );
    if let Some((kind, id)) = &spec.consumer {
        assert!(!kind.contains(['/', ':']));
        assert!(!kind.chars().chain(id.chars()).any(char::is_control));
    }
    for value in spec.resource.iter().chain(&spec.action) {
        assert!(!value.chars().any(char::is_control), "{value:?} accepted");
    }
}

fn timestamp(raw: &str) {
    let Some(micros) = parse_rfc3339_micros(raw) else {
        return;
    };
    let b = raw.as_bytes();
    assert!(b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[13] == b':' && b[16] == b':');
    assert!(raw.is_ascii(), "non-ASCII timestamp {raw:?} accepted");
    // The same instant written in UTC parses to the same value.
    let days = micros.div_euclid(86_400_000_000);
    let in_day = micros.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        let secs = in_day / 1_000_000;
        let utc = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            in_day % 1_000_000
        );
        assert_eq!(
            parse_rfc3339_micros(&utc),
            Some(micros),
            "{raw:?} vs {utc:?}"
        );
    }
}

/// Howard Hinnant's `civil_from_days`: the inverse of the parser's date math.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}
