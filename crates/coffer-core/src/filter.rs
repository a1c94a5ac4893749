//! The ListSecrets filter: a conjunction of `field = value` terms joined by
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
            "state = ACTIVE AND",
        ] {
            assert!(
                SecretFilter::parse(bad, "filter").is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
