//! The desired-set file of `coffer bindings sync`: JSON or TOML, chosen by
//! the file's extension, with unknown keys refused. Turns it into the
//! `Binding` messages of a `SyncBindingsRequest`.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail};
use coffer_proto::v1::Binding;
use serde::Deserialize;

use super::{bindings, request};

/// The whole file. `bindings` must be present, so an empty or mistyped file
/// never silently deletes every binding under the prefix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DesiredSet {
    bindings: Vec<DesiredBinding>,
}

/// One entry; the consumer comes from `--consumer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DesiredBinding {
    /// A key under `--tenant`, or a full secret name.
    secret: String,
    config_path: String,
    #[serde(default)]
    version_selector: String,
    #[serde(default = "required_by_default")]
    required: bool,
    #[serde(default)]
    label: String,
}

fn required_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Toml,
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("json") => Ok(Format::Json),
        Some(ext) if ext.eq_ignore_ascii_case("toml") => Ok(Format::Toml),
        _ => bail!(
            "cannot tell the format of sync file {}; name it *.json or *.toml",
            path.display()
        ),
    }
}

/// Parses `text`, read from `path`, into the desired bindings. Every error
/// names the file, and the entry when one is at fault. Entries must lie under
/// `prefix` and have distinct config paths.
pub(crate) fn parse(
    path: &Path,
    text: &str,
    tenant: &str,
    prefix: &str,
) -> anyhow::Result<Vec<Binding>> {
    let file = path.display();
    let set: DesiredSet = match format_of(path)? {
        Format::Json => {
            serde_json::from_str(text).with_context(|| format!("invalid sync file {file}"))?
        }
        Format::Toml => {
            toml::from_str(text).with_context(|| format!("invalid sync file {file}"))?
        }
    };
    let mut seen = HashSet::new();
    set.bindings
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("sync file {file}: bindings[{i}]");
            if entry.config_path.is_empty() {
                bail!("{at}: config_path must not be empty");
            }
            if !entry.config_path.starts_with(prefix) {
                bail!(
                    "{at}: config_path {} is not under the prefix {prefix}",
                    entry.config_path
                );
            }
            if !seen.insert(entry.config_path.clone()) {
                bail!(
                    "{at}: config_path {} appears more than once",
                    entry.config_path
                );
            }
            let secret = request::secret_name(tenant, &entry.secret)
                .with_context(|| format!("{at}: invalid secret"))?;
            let version_selector =
                bindings::version_selector(&entry.version_selector, "version_selector")
                    .with_context(|| format!("{at}: invalid version_selector"))?;
            Ok(Binding {
                secret,
                config_path: entry.config_path,
                version_selector,
                required: Some(entry.required),
                label: entry.label,
                ..Binding::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse_as(name: &str, text: &str) -> anyhow::Result<Vec<Binding>> {
        parse(Path::new(name), text, "acme", "env.")
    }

    #[test]
    fn json_entries_become_bindings() {
        let text = r#"{"bindings":[
            {"secret":"openai-key","config_path":"env.OPENAI_API_KEY","version_selector":"","required":true,"label":""},
            {"secret":"tenants/acme/secrets/db","config_path":"env.DB","version_selector":"2","required":false,"label":"pinned"}
        ]}"#;
        let bindings = parse_as("desired.json", text).unwrap();
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings[0].secret, "tenants/acme/secrets/openai-key");
        assert_eq!(bindings[0].config_path, "env.OPENAI_API_KEY");
        assert_eq!(bindings[0].required, Some(true));
        assert_eq!(bindings[1].secret, "tenants/acme/secrets/db");
        assert_eq!(bindings[1].version_selector, "2");
        assert_eq!(bindings[1].required, Some(false));
        assert_eq!(bindings[1].label, "pinned");
        assert!(bindings[1].consumer.is_none());
    }

    #[test]
    fn toml_entries_default_to_required_latest() {
        let text = r#"
            [[bindings]]
            secret = "openai-key"
            config_path = "env.OPENAI_API_KEY"

            [[bindings]]
            secret = "db"
            config_path = "env.DB"
            version_selector = "latest"
            required = false
        "#;
        let bindings = parse_as("desired.TOML", text).unwrap();
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings[0].required, Some(true));
        assert_eq!(bindings[0].version_selector, "");
        assert_eq!(bindings[1].version_selector, "latest");
        assert_eq!(bindings[1].required, Some(false));
    }

    #[test]
    fn an_explicit_empty_set_is_allowed_but_a_missing_one_is_not() {
        assert!(parse_as("d.json", r#"{"bindings":[]}"#).unwrap().is_empty());
        assert!(parse_as("d.toml", "bindings = []").unwrap().is_empty());
        let err = parse_as("d.json", "{}").unwrap_err();
        assert!(
            format!("{err:#}").contains("missing field `bindings`"),
            "{err:#}"
        );
        assert!(parse_as("d.toml", "").is_err());
    }

    #[test]
    fn unknown_fields_are_refused_naming_the_file() {
        let err = parse_as(
            "desired.json",
            r#"{"bindings":[{"secret":"k","config_path":"env.A","consumer":"agent:a"}]}"#,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("invalid sync file desired.json"), "{msg}");
        assert!(msg.contains("unknown field `consumer`"), "{msg}");

        let err = parse_as("desired.toml", "prefix = \"env.\"\nbindings = []").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("invalid sync file desired.toml"), "{msg}");
        assert!(msg.contains("prefix"), "{msg}");
    }

    #[test]
    fn bad_entries_name_the_file_and_entry() {
        let one = |entry: &str| {
            let err = parse_as("s.json", &format!(r#"{{"bindings":[{entry}]}}"#)).unwrap_err();
            format!("{err:#}")
        };
        let msg = one(r#"{"secret":"Bad Key","config_path":"env.A"}"#);
        assert!(
            msg.starts_with("sync file s.json: bindings[0]: invalid secret"),
            "{msg}"
        );
        let msg = one(r#"{"secret":"k","config_path":"other.A"}"#);
        assert!(msg.contains("not under the prefix env."), "{msg}");
        let msg = one(r#"{"secret":"k","config_path":"env.A","version_selector":"0"}"#);
        assert!(msg.contains("invalid version_selector"), "{msg}");
        let msg = one(r#"{"secret":"k","config_path":""}"#);
        assert!(msg.contains("must not be empty"), "{msg}");
        let msg = one(r#"{"config_path":"env.A"}"#);
        assert!(msg.contains("missing field `secret`"), "{msg}");

        let err = parse_as(
            "s.json",
            r#"{"bindings":[{"secret":"a","config_path":"env.A"},{"secret":"b","config_path":"env.A"}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("bindings[1]"), "{err}");
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn the_extension_decides_the_format() {
        let err = parse_as("desired.yaml", "bindings: []").unwrap_err();
        assert!(err.to_string().contains("*.json or *.toml"), "{err}");
        assert!(parse_as("desired", "{}").is_err());
    }
}
