//! List filters. The ListSecrets filter: a conjunction of `field = value` terms joined by
//! `AND` (a small subset of AIP-160). Fields: `state`, `mode`, `provider`,
//! `vault`, `labels.<key>`. Values are bare words or double-quoted strings.
//! The parse result is typed, so nothing from the filter text reaches SQL
//! except as a bound parameter.

use crate::error::{Error, Result};
use crate::record::{SecretMode, SecretState};

const MAX_FILTER_CHARS: usize = 1024;

/// A parsed ListSecrets filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretFilter {
    pub state: Option<SecretState>,
    pub mode: Option<SecretMode>,
    pub provider: Option<String>,
    pub vault: Option<String>,
    /// Every (key, value) pair must be present.
    pub labels: Vec<(String, String)>,
}

impl SecretFilter {
    pub fn parse(raw: &str, field: &str) -> Result<Self> {
        if raw.chars().count() > MAX_FILTER_CHARS {
            return Err(Error::invalid_field(
                field,
                format!("filter must be at most {MAX_FILTER_CHARS} characters"),
            ));
        }
        let mut filter = SecretFilter::default();
        let tokens = tokenize(raw, field)?;
        if tokens.is_empty() {
            return Ok(filter);
        }
        let mut chunks = tokens.split(|t| matches!(t, Token::And));
        for term in &mut chunks {
            match term {
                [Token::Word(name), Token::Eq, value] => {
                    let value = match value {
                        Token::Word(w) | Token::Quoted(w) => w.clone(),
                        _ => return Err(syntax(field)),
                    };
                    filter.apply(name, value, field)?;
                }
                _ => return Err(syntax(field)),
            }
        }
        Ok(filter)
    }

    fn apply(&mut self, name: &str, value: String, field: &str) -> Result<()> {
        match name {
            "state" => {
                let bare = value.trim_start_matches("STATE_").to_ascii_lowercase();
                self.state = Some(SecretState::parse(&bare).ok_or_else(|| {
                    Error::invalid_field(field, "state must be ACTIVE, DISABLED or DELETED")
                })?);
            }
            "mode" => {
                let bare = value.trim_start_matches("MODE_").to_ascii_lowercase();
                self.mode = Some(SecretMode::parse(&bare).ok_or_else(|| {
                    Error::invalid_field(field, "mode must be MANAGED or EXTERNAL_REFERENCE")
                })?);
            }
            "provider" => self.provider = Some(value),
            "vault" => self.vault = Some(value),
            other => match other.strip_prefix("labels.") {
                Some(key) if !key.is_empty() => self.labels.push((key.to_owned(), value)),
                _ => {
                    return Err(Error::invalid_field(
                        field,
                        "unknown filter field; use state, mode, provider, vault or labels.<key>",
                    ));
                }
            },
        }
        Ok(())
    }

    /// A stable text form, used to bind page tokens to their query.
    pub fn canonical(&self) -> String {
        format!(
            "state={:?};mode={:?};provider={:?};vault={:?};labels={:?}",
            self.state.map(SecretState::as_str),
            self.mode.map(SecretMode::as_str),
            self.provider,
            self.vault,
            self.labels
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Eq,
    /// `<`, `<=`, `>` or `>=`.
    Cmp(&'static str),
    And,
}

fn tokenize(raw: &str, field: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = raw.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '=' {
            chars.next();
            tokens.push(Token::Eq);
        } else if c == '<' || c == '>' {
            chars.next();
            let with_eq = chars.peek() == Some(&'=');
            if with_eq {
                chars.next();
            }
            tokens.push(Token::Cmp(match (c, with_eq) {
                ('<', false) => "<",
                ('<', true) => "<=",
                ('>', false) => ">",
                _ => ">=",
            }));
        } else if c == '"' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(escaped) => text.push(escaped),
                        None => return Err(syntax(field)),
                    },
                    Some(ch) => text.push(ch),
                    None => return Err(syntax(field)),
                }
            }
            // No stored name, label or reference holds a control character,
            // and PostgreSQL refuses NUL in text outright: a value with one
            // would match nothing on SQLite and fail as an internal error on
            // PostgreSQL. Refuse it as the caller's mistake instead.
            if text.chars().any(char::is_control) {
                return Err(Error::invalid_field(
                    field,
                    "filter values must not contain control characters",
                ));
            }
            tokens.push(Token::Quoted(text));
        } else if is_word_char(c) {
            let mut word = String::new();
            while let Some(&ch) = chars.peek() {
                if !is_word_char(ch) {
                    break;
                }
                word.push(ch);
                chars.next();
            }
            tokens.push(if word == "AND" {
                Token::And
            } else {
                Token::Word(word)
            });
        } else {
            return Err(syntax(field));
        }
    }
    Ok(tokens)
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':')
}

fn syntax(field: &str) -> Error {
    Error::invalid_field(
        field,
        "filter must be terms like `field = \"value\"` joined by AND, e.g. state = ACTIVE AND labels.env = \"prod\"",
    )
}

/// A parsed ListAuditEvents filter: `secret = "tenants/t/secrets/k"` (or
/// `resource = …`), `consumer = "kind/id"`, `action = secret.resolve`,
/// `outcome = DENIED`, and `time >= "2026-11-28T00:00:00Z"` / `time < …`,
/// joined by AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilterSpec {
    pub resource: Option<String>,
    pub consumer: Option<(String, String)>,
    pub action: Option<String>,
    pub outcome: Option<crate::record::AuditOutcome>,
    /// Inclusive lower bound, microseconds.
    pub start_time: Option<i64>,
    /// Exclusive upper bound, microseconds.
    pub end_time: Option<i64>,
}

impl AuditFilterSpec {
    pub fn parse(raw: &str, field: &str) -> Result<Self> {
        if raw.chars().count() > MAX_FILTER_CHARS {
            return Err(Error::invalid_field(
                field,
                format!("filter must be at most {MAX_FILTER_CHARS} characters"),
            ));
        }
        let mut spec = AuditFilterSpec::default();
        let tokens = tokenize(raw, field)?;
        if tokens.is_empty() {
            return Ok(spec);
        }
        for term in tokens.split(|t| matches!(t, Token::And)) {
            let (name, op, value) = match term {
                [
                    Token::Word(name),
                    Token::Eq,
                    Token::Word(v) | Token::Quoted(v),
                ] => (name.as_str(), "=", v.clone()),
                [
                    Token::Word(name),
                    Token::Cmp(op),
                    Token::Word(v) | Token::Quoted(v),
                ] => (name.as_str(), *op, v.clone()),
                _ => return Err(audit_syntax(field)),
            };
            match (name, op) {
                ("secret" | "resource", "=") => spec.resource = Some(value),
                ("action", "=") => spec.action = Some(value),
                ("outcome", "=") => {
                    let bare = value.trim_start_matches("OUTCOME_").to_ascii_lowercase();
                    spec.outcome =
                        Some(crate::record::AuditOutcome::parse(&bare).ok_or_else(|| {
                            Error::invalid_field(
                                field,
                                "outcome must be SUCCESS, DENIED or FAILURE",
                            )
                        })?);
                }
                ("consumer", "=") => {
                    let (kind, id) = value.split_once(['/', ':']).ok_or_else(|| {
                        Error::invalid_field(
                            field,
                            "consumer must be written kind/id, e.g. agent/a-1",
                        )
                    })?;
                    spec.consumer = Some((kind.to_owned(), id.to_owned()));
                }
                ("time", op) => {
                    let micros = parse_rfc3339_micros(&value).ok_or_else(|| {
                        Error::invalid_field(
                            field,
                            "time must be RFC 3339, e.g. 2026-11-28T12:00:00Z",
                        )
                    })?;
                    match op {
                        ">=" => spec.start_time = Some(micros),
                        ">" => spec.start_time = Some(micros.saturating_add(1)),
                        "<" => spec.end_time = Some(micros),
                        "<=" => spec.end_time = Some(micros.saturating_add(1)),
                        _ => return Err(audit_syntax(field)),
                    }
                }
                _ => return Err(audit_syntax(field)),
            }
        }
        Ok(spec)
    }

    /// A stable text form, used to bind page tokens to their query.
    pub fn canonical(&self) -> String {
        format!("{self:?}")
    }
}

fn audit_syntax(field: &str) -> Error {
    Error::invalid_field(
        field,
        "filter must be terms joined by AND: secret = \"…\", consumer = \"kind/id\", action = …, outcome = DENIED, time >= \"RFC 3339\", time < \"RFC 3339\"",
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into microseconds since
/// the epoch.
pub fn parse_rfc3339_micros(raw: &str) -> Option<i64> {
    let bytes = raw.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = raw.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &raw[19..];
    let mut micros = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded: String = fraction[..digits]
            .chars()
            .chain(std::iter::repeat('0'))
            .take(6)
            .collect();
        micros = padded.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && (tz.starts_with('+') || tz.starts_with('-'))
            && tz.as_bytes()[3] == b':' =>
        {
            // Byte-wise: slicing `tz` at a byte offset panics inside a
            // multi-byte character, and `parse` would also take a sign.
            let hours = two_digits(&tz.as_bytes()[1..3])?;
            let minutes = two_digits(&tz.as_bytes()[4..6])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(seconds * 1_000_000 + micros)
}

/// Two ASCII digits as a number.
fn two_digits(bytes: &[u8]) -> Option<i64> {
    match bytes {
        [tens @ b'0'..=b'9', ones @ b'0'..=b'9'] => {
            Some(i64::from(tens - b'0') * 10 + i64::from(ones - b'0'))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conjunctions() {
        let f = SecretFilter::parse(
            r#"state = ACTIVE AND labels.env = "prod" AND provider=local_encrypted"#,
            "filter",
        )
        .unwrap();
        assert_eq!(f.state, Some(SecretState::Active));
        assert_eq!(f.provider.as_deref(), Some("local_encrypted"));
        assert_eq!(f.labels, vec![("env".to_owned(), "prod".to_owned())]);
        assert_eq!(
            SecretFilter::parse("  ", "filter").unwrap(),
            SecretFilter::default()
        );
        assert_eq!(
            SecretFilter::parse("state = STATE_DISABLED", "filter")
                .unwrap()
                .state,
            Some(SecretState::Disabled)
        );
    }

    #[test]
    fn audit_filters() {
        let f = AuditFilterSpec::parse(
            r#"secret = "tenants/a/secrets/k" AND consumer = "agent/a-1" AND outcome = DENIED AND time >= "2026-11-28T00:00:00Z" AND time < "2026-11-29T00:00:00.5+01:00""#,
            "filter",
        )
        .unwrap();
        assert_eq!(f.resource.as_deref(), Some("tenants/a/secrets/k"));
        assert_eq!(f.consumer, Some(("agent".into(), "a-1".into())));
        assert_eq!(f.outcome, Some(crate::record::AuditOutcome::Denied));
        assert_eq!(f.start_time, Some(1_795_824_000_000_000));
        assert_eq!(
            f.end_time,
            Some(1_795_824_000_000_000 + 86_400_000_000 - 3_600_000_000 + 500_000)
        );
        for bad in [
            "time = x",
            "secret > \"x\"",
            "who = me",
            "consumer = agent",
            "time >= \"2026-13-01T00:00:00Z\"",
        ] {
            assert!(
                AuditFilterSpec::parse(bad, "filter").is_err(),
                "{bad:?} accepted"
            );
        }
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
    }

    #[test]
    fn malformed_utc_offsets_are_refused_without_panicking() {
        // Found by fuzz/fuzz_targets/filters.rs: a multi-byte character in
        // the offset made `&tz[3..4]` panic (a ListAuditEvents filter could
        // reach it); a signed or out-of-range offset was taken as a number.
        for bad in [
            "2026-11-29T00:00:00+0\u{e9}::",
            "2026-11-29T00:00:00+\u{e9}:00",
            "2026-11-29T00:00:00+-1:00",
            "2026-11-29T00:00:00++1:00",
            "2026-11-29T00:00:00+24:00",
            "2026-11-29T00:00:00+01:60",
        ] {
            assert_eq!(parse_rfc3339_micros(bad), None, "{bad:?} accepted");
        }
        assert!(
            AuditFilterSpec::parse("time >= \"2026-11-29T00:00:00+0\u{e9}::\"", "filter").is_err()
        );
        assert_eq!(parse_rfc3339_micros("1970-01-01T01:30:00+01:30"), Some(0));
        assert_eq!(
            parse_rfc3339_micros("1970-01-01T00:00:00-23:59"),
            Some((23 * 3600 + 59 * 60) * 1_000_000)
        );
    }

    #[test]
    fn rejects_bad_filters() {
        for bad in [
            "state",
            "state =",
            "state = BOGUS",
            "owner = x",
            "labels. = x",
            "state = ACTIVE OR state = DISABLED",
            "labels.env = \"unterminated",
            "labels.env = 'x'; DROP TABLE secrets",
            "labels.env = \"\u{0}\"",
            "provider = \"a\\\u{7}\"",
            "state = ACTIVE AND",
        ] {
            assert!(
                SecretFilter::parse(bad, "filter").is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
