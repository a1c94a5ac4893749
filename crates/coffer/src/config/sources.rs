//! Merging the sources of a configuration: the file's table, then the
//! `COFFER_<SECTION>__<KEY>` env vars on top, each value checked against its
//! key's [`Kind`] and remembered with its [`Origin`] so that every later
//! message can say where a bad value came from. Nothing here repeats a
//! [`Kind::Secret`] value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use toml::{Table, Value};

use super::keys::{self, Key, Kind, Shown};

/// Where a key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// The config file (its path, for messages).
    File(String),
    /// An overlay env var (its name).
    Env(String),
}

impl Origin {
    pub(super) fn label(&self) -> &str {
        match self {
            Origin::File(path) | Origin::Env(path) => path,
        }
    }
}

/// The merged sources: a TOML table the serde structs deserialize from,
/// the origin of every key set, and what was wrong along the way.
#[derive(Debug, Default)]
pub(super) struct Merged {
    pub(super) table: Table,
    /// Dotted key path (`server.listen`) → where its value came from.
    pub(super) origins: BTreeMap<String, Origin>,
    pub(super) problems: Vec<String>,
}

impl Merged {
    /// Adds the file's keys. A syntax error stops here (its message carries
    /// the position, never the line's text, which may hold a secret); unknown
    /// or mistyped keys are collected.
    pub(super) fn add_file(&mut self, text: &str, path: &Path) -> Result<(), String> {
        let shown = path.display().to_string();
        let table: Table = text.parse().map_err(|err: toml::de::Error| {
            let at = err
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
                    format!(" at line {line}, column {column}")
                })
                .unwrap_or_default();
            format!("{shown}: not valid TOML{at}: {}", err.message().trim_end())
        })?;
        let origin = Origin::File(shown);
        self.add_file_table(&table, "", &origin);
        Ok(())
    }

    fn add_file_table(&mut self, table: &Table, prefix: &str, origin: &Origin) {
        for (name, value) in table {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let file = origin.label();
            if let Some(key) = keys::key(prefix, name) {
                match coerce(key, value.clone(), false) {
                    Ok(value) => self.set(key, value, origin.clone()),
                    Err(message) => self.problems.push(format!("{file}: {message}")),
                }
            } else if is_section_or_parent(&path) {
                match value {
                    Value::Table(inner) => {
                        if keys::section(&path).is_some() {
                            // An empty table still makes an optional section present.
                            section_table(&mut self.table, &path);
                        }
                        self.add_file_table(inner, &path, origin);
                    }
                    _ => self
                        .problems
                        .push(format!("{file}: `{path}` must be a section ([{path}])")),
                }
            } else if keys::section(prefix).is_some() {
                let known: Vec<&str> = keys::keys_of(prefix).map(|k| k.name).collect();
                self.problems.push(format!(
                    "{file}: unknown key `{path}`; [{prefix}] has {}",
                    known.join(", ")
                ));
            } else {
                let known: Vec<&str> = keys::SECTIONS.iter().map(|s| s.name).collect();
                let what = if value.is_table() {
                    format!("unknown section [{path}]")
                } else {
                    format!("`{path}` is outside any section")
                };
                self.problems
                    .push(format!("{file}: {what}; sections are {}", known.join(", ")));
            }
        }
    }

    /// Lays the overlay env vars over the file. Vars that are not overlay
    /// vars (no `COFFER_` prefix, or no `__`) are ignored; one that is but
    /// names no key is an error, so a typo never goes unnoticed.
    pub(super) fn add_env(&mut self, env: &[(String, String)]) {
        let mut vars: Vec<&(String, String)> = env
            .iter()
            .filter(|(name, _)| keys::is_overlay_var(name))
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let Some(key) = keys::key_for_env(name) else {
                self.problems.push(format!(
                    "env var {name} names no config key; overlay vars are COFFER_<SECTION>__<KEY>, e.g. COFFER_DATABASE__URL (`coffer config example` lists every key)"
                ));
                continue;
            };
            match coerce(key, Value::String(raw.clone()), true) {
                Ok(value) => self.set(key, value, Origin::Env(name.clone())),
                Err(message) => self.problems.push(format!("{name}: {message}")),
            }
        }
    }

    /// Every present section has its required keys.
    pub(super) fn check_required(&mut self) {
        for section in keys::SECTIONS {
            if get_table(&self.table, section.name).is_none() {
                continue;
            }
            for key in keys::keys_of(section.name) {
                if !matches!(key.shown, Shown::Required(_))
                    || self.origins.contains_key(&key.path())
                {
                    continue;
                }
                let origin = self
                    .origins
                    .iter()
                    .find(|(path, _)| path.starts_with(&format!("{}.", section.name)))
                    .map_or("config", |(_, origin)| origin.label());
                self.problems.push(format!(
                    "{origin}: [{}] needs {} (or {})",
                    section.name,
                    key.name,
                    key.env_var()
                ));
            }
        }
    }

    fn set(&mut self, key: &Key, value: Value, origin: Origin) {
        section_table(&mut self.table, key.section).insert(key.name.to_owned(), value);
        self.origins.insert(key.path(), origin);
    }
}

/// Whether a dotted path is a section or a table holding sections
/// (`providers`).
fn is_section_or_parent(path: &str) -> bool {
    keys::SECTIONS
        .iter()
        .any(|s| s.name == path || s.name.starts_with(&format!("{path}.")))
}

fn get_table<'t>(table: &'t Table, dotted: &str) -> Option<&'t Table> {
    dotted
        .split('.')
        .try_fold(table, |table, part| table.get(part)?.as_table())
}

/// The table of a section, created (with its parents) if missing. Callers
/// have checked that every existing part is a table.
fn section_table<'t>(table: &'t mut Table, dotted: &str) -> &'t mut Table {
    dotted.split('.').fold(table, |table, part| {
        let entry = table
            .entry(part.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        match entry {
            Value::Table(inner) => inner,
            _ => unreachable!("replaced by a table just above"),
        }
    })
}

/// Checks a value against its key's kind; env values arrive as text and are
/// parsed to the kind. The error names the key and, unless it is a secret,
/// the rejected value.
fn coerce(key: &Key, value: Value, from_env: bool) -> Result<Value, String> {
    let path = key.path();
    let shown = |v: &Value| match (key.kind, v) {
        (Kind::Secret, _) => String::new(),
        (_, Value::String(s)) => format!(", not {s:?}"),
        (_, other) => format!(", not {other}"),
    };
    let text = match (&value, from_env) {
        (Value::String(s), true) => {
            if s.is_empty() {
                return Err(format!("{path} is empty; unset the variable instead"));
            }
            Some(s.as_str())
        }
        _ => None,
    };
    match key.kind {
        Kind::Bool => match (&value, text) {
            (Value::Boolean(_), _) => Ok(value),
            (_, Some(t)) if t.eq_ignore_ascii_case("true") => Ok(Value::Boolean(true)),
            (_, Some(t)) if t.eq_ignore_ascii_case("false") => Ok(Value::Boolean(false)),
            _ => Err(format!("{path} must be true or false{}", shown(&value))),
        },
        Kind::Int { max } => {
            let number = match (&value, text) {
                (Value::Integer(i), _) => u64::try_from(*i).ok(),
                (_, Some(t)) => t.parse::<u64>().ok(),
                _ => None,
            };
            match number {
                // `max` is at most i64::MAX, so the cast is exact.
                Some(n) if n <= max => Ok(Value::Integer(n as i64)),
                _ => Err(format!(
                    "{path} must be a whole number from 0 to {max}{}",
                    shown(&value)
                )),
            }
        }
        Kind::Float => {
            let number = match (&value, text) {
                (Value::Float(f), _) => Some(*f),
                (Value::Integer(i), _) => Some(*i as f64),
                (_, Some(t)) => t.parse::<f64>().ok(),
                _ => None,
            };
            match number {
                Some(f) if f.is_finite() => Ok(Value::Float(f)),
                _ => Err(format!("{path} must be a number{}", shown(&value))),
            }
        }
        Kind::Str | Kind::Secret | Kind::Path => match &value {
            Value::String(s) if s.is_empty() => Err(format!("{path} must not be empty")),
            Value::String(_) => Ok(value),
            _ => Err(format!("{path} must be a string{}", shown(&value))),
        },
        Kind::SocketAddr => match &value {
            Value::String(s) if s.parse::<SocketAddr>().is_ok() => Ok(value),
            _ => Err(format!(
                "{path} must be an IP address and port such as \"0.0.0.0:50051\" or \"[::]:50051\"{}",
                shown(&value)
            )),
        },
        Kind::Choice(choices) => match &value {
            Value::String(s) if choices.contains(&s.as_str()) => Ok(value),
            _ => Err(format!(
                "{path} must be one of {}{}",
                choices.join(", "),
                shown(&value)
            )),
        },
    }
}
