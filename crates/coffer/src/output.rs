//! How client subcommands print responses: canonical proto3 JSON (through
//! prost-reflect and the API's descriptor set) or aligned, human-readable
//! tables. Values are printed only by `resolve`, which handles them itself.

use std::io::Write;
use std::marker::PhantomData;

use anyhow::{Context, bail};
use coffer_proto::v1::{
    ListSecretVersionsResponse, ListSecretsResponse, ResolveSecretResponse, Secret, SecretVersion,
};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde::Serialize;

// Tables of bindings, audit events, vaults and imports live in their own files.
mod audit;
mod bindings;
mod import;
mod vaults;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned, human-readable text.
    Table,
    /// The response as canonical proto3 JSON.
    Json,
    /// The value's bytes, unchanged and without a trailing newline (`resolve` only).
    Raw,
}

/// A response message that can be printed as JSON or as a table.
pub(crate) trait Render: prost::Message {
    /// Fully-qualified protobuf type name, to find its descriptor.
    const TYPE: &'static str;
    fn table(&self) -> String;
}

/// Prints `msg` to stdout in `format`.
pub(crate) fn emit<R: Render>(msg: &R, format: OutputFormat) -> anyhow::Result<()> {
    let text = match format {
        OutputFormat::Table => msg.table(),
        OutputFormat::Json => json(msg)?,
        OutputFormat::Raw => bail!("--output raw is only for `coffer secrets resolve`"),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end_matches('\n')).context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")
}

/// Renders `msg` as pretty-printed canonical proto3 JSON (lowerCamelCase
/// names, default fields left out, 64-bit integers as strings, RFC 3339 times).
pub(crate) fn json<R: Render>(msg: &R) -> anyhow::Result<String> {
    let pool = DescriptorPool::decode(coffer_proto::FILE_DESCRIPTOR_SET)
        .context("cannot load the api descriptors")?;
    let desc = pool
        .get_message_by_name(R::TYPE)
        .with_context(|| format!("no descriptor for {}", R::TYPE))?;
    let dynamic = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())
        .with_context(|| format!("cannot transcode {}", R::TYPE))?;
    let mut buf = Vec::new();
    dynamic
        .serialize(&mut serde_json::Serializer::pretty(&mut buf))
        .context("cannot render json")?;
    String::from_utf8(buf).context("cannot render json")
}

impl Render for Secret {
    const TYPE: &'static str = "coffer.v1.Secret";

    fn table(&self) -> String {
        let labels = sorted_labels(&self.labels);
        let vault = if self.vault.is_empty() {
            "(built-in)"
        } else {
            &self.vault
        };
        fields(&[
            ("name", self.name.clone()),
            ("display name", self.display_name.clone()),
            ("description", self.description.clone()),
            ("state", enum_word(self.state().as_str_name())),
            ("mode", enum_word(self.mode().as_str_name())),
            ("provider", self.provider.clone()),
            ("vault", vault.to_owned()),
            ("external ref", self.external_ref.clone()),
            ("current version", self.current_version.to_string()),
            ("latest version", self.latest_version.to_string()),
            ("labels", labels),
            ("created", time(self.create_time.as_ref())),
            ("updated", time(self.update_time.as_ref())),
            ("rotated", time(self.rotate_time.as_ref())),
            ("last resolved", time(self.last_resolve_time.as_ref())),
            ("deleted", time(self.delete_time.as_ref())),
            ("purge at", time(self.purge_time.as_ref())),
            ("uid", self.uid.clone()),
            ("etag", self.etag.clone()),
        ])
    }
}

impl Render for ListSecretsResponse {
    const TYPE: &'static str = "coffer.v1.ListSecretsResponse";

    fn table(&self) -> String {
        let rows = self
            .secrets
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    enum_word(s.state().as_str_name()),
                    s.current_version.to_string(),
                    time(s.update_time.as_ref()),
                    s.display_name.clone(),
                ]
            })
            .collect();
        let mut out = columns(
            &["NAME", "STATE", "CURRENT", "UPDATED", "DISPLAY NAME"],
            rows,
        );
        push_next_page(&mut out, &self.next_page_token);
        out
    }
}

impl Render for SecretVersion {
    const TYPE: &'static str = "coffer.v1.SecretVersion";

    fn table(&self) -> String {
        fields(&[
            ("name", self.name.clone()),
            ("version", self.version.to_string()),
            ("state", enum_word(self.state().as_str_name())),
            ("current", yes_no(self.is_current).to_owned()),
            ("fingerprint", self.fingerprint.clone()),
            ("provider version", self.provider_version_ref.clone()),
            ("created", time(self.create_time.as_ref())),
            ("created by", self.created_by.clone()),
            ("destroyed", time(self.destroy_time.as_ref())),
            ("etag", self.etag.clone()),
        ])
    }
}

impl Render for ListSecretVersionsResponse {
    const TYPE: &'static str = "coffer.v1.ListSecretVersionsResponse";

    fn table(&self) -> String {
        let rows = self
            .versions
            .iter()
            .map(|v| {
                vec![
                    v.version.to_string(),
                    enum_word(v.state().as_str_name()),
                    if v.is_current { "*" } else { "" }.to_owned(),
                    time(v.create_time.as_ref()),
                    v.fingerprint.chars().take(12).collect(),
                ]
            })
            .collect();
        let mut out = columns(
            &["VERSION", "STATE", "CURRENT", "CREATED", "FINGERPRINT"],
            rows,
        );
        push_next_page(&mut out, &self.next_page_token);
        out
    }
}

/// The table form names the resolved version only; the value needs `--output raw` or `json`.
impl Render for ResolveSecretResponse {
    const TYPE: &'static str = "coffer.v1.ResolveSecretResponse";

    fn table(&self) -> String {
        fields(&[
            ("name", self.name.clone()),
            ("version", self.version.to_string()),
            (
                "value",
                format!("<{} bytes; use --output raw>", self.value.len()),
            ),
        ])
    }
}

/// Prints one line of text to stdout.
pub(crate) fn print_line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Renders messages of type `R` as compact canonical proto3 JSON, one per
/// line; the descriptor is looked up once for the whole stream.
#[derive(Debug)]
pub(crate) struct JsonLines<R> {
    desc: MessageDescriptor,
    _type: PhantomData<fn(&R)>,
}

impl<R: Render> JsonLines<R> {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let pool = DescriptorPool::decode(coffer_proto::FILE_DESCRIPTOR_SET)
            .context("cannot load the api descriptors")?;
        let desc = pool
            .get_message_by_name(R::TYPE)
            .with_context(|| format!("no descriptor for {}", R::TYPE))?;
        Ok(JsonLines {
            desc,
            _type: PhantomData,
        })
    }

    /// `msg` as one line of JSON, without the newline.
    pub(crate) fn line(&self, msg: &R) -> anyhow::Result<String> {
        let dynamic = DynamicMessage::decode(self.desc.clone(), msg.encode_to_vec().as_slice())
            .with_context(|| format!("cannot transcode {}", R::TYPE))?;
        serde_json::to_string(&dynamic).context("cannot render json")
    }
}

/// `STATE_ACTIVE` → `active`, `MODE_EXTERNAL_REFERENCE` → `external_reference`.
fn enum_word(name: &str) -> String {
    match name.split_once('_') {
        Some((_, "UNSPECIFIED")) => String::new(),
        Some((_, rest)) => rest.to_ascii_lowercase(),
        None => name.to_ascii_lowercase(),
    }
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// RFC 3339 in UTC to the second, or empty when unset.
fn time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map(|t| {
        prost_types::Timestamp {
            seconds: t.seconds,
            nanos: 0,
        }
        .to_string()
    })
    .unwrap_or_default()
}

fn sorted_labels(labels: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = labels.iter().collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One `label  value` line per non-empty field, labels padded to one width.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// An aligned table; the last column is not padded.
fn columns(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = headers.iter().map(|h| (*h).to_owned()).collect();
    std::iter::once(header)
        .chain(rows)
        .map(|row: Vec<String>| {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i == last {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            format!("{}\n", line.trim_end())
        })
        .collect()
}

fn push_next_page(out: &mut String, token: &str) {
    if !token.is_empty() {
        out.push_str(&format!(
            "\nmore results: --page-token {token} (or --all)\n"
        ));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use coffer_proto::v1::secret;

    use super::*;

    fn secret() -> Secret {
        Secret {
            name: "tenants/acme/secrets/openai-key".into(),
            display_name: "OpenAI key".into(),
            labels: [("env".to_owned(), "prod".to_owned())].into(),
            state: secret::State::Active as i32,
            mode: secret::Mode::Managed as i32,
            current_version: 3,
            create_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 500,
            }),
            ..Secret::default()
        }
    }

    #[test]
    fn json_is_canonical_proto3() {
        let text = json(&secret()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["name"], "tenants/acme/secrets/openai-key");
        assert_eq!(value["displayName"], "OpenAI key");
        assert_eq!(value["state"], "STATE_ACTIVE");
        assert_eq!(value["currentVersion"], "3");
        assert_eq!(value["labels"]["env"], "prod");
        assert_eq!(value["createTime"], "2023-11-14T22:13:20.000000500Z");
        assert!(value.get("description").is_none(), "defaults are left out");
    }

    #[test]
    fn resolve_json_carries_the_value_in_base64() {
        let resp = ResolveSecretResponse {
            name: "tenants/a/secrets/k/versions/2".into(),
            version: 2,
            value: b"\x00hi".to_vec(),
        };
        let value: serde_json::Value = serde_json::from_str(&json(&resp).unwrap()).unwrap();
        assert_eq!(value["value"], "AGhp");
        assert_eq!(value["version"], "2");
        assert!(!resp.table().contains("hi"));
    }

    #[test]
    fn secret_table_lists_set_fields() {
        let table = secret().table();
        assert!(table.contains("state            active\n"), "{table}");
        assert!(table.contains("current version  3\n"));
        assert!(table.contains("labels           env=prod\n"));
        assert!(table.contains("created          2023-11-14T22:13:20Z\n"));
        assert!(!table.contains("description"), "empty fields are left out");
    }

    #[test]
    fn list_tables_are_aligned() {
        let mut other = secret();
        other.name = "tenants/acme/secrets/k".into();
        other.state = secret::State::Disabled as i32;
        other.display_name = String::new();
        let list = ListSecretsResponse {
            secrets: vec![secret(), other],
            next_page_token: "tok".into(),
        };
        let table = list.table();
        let lines: Vec<&str> = table.lines().collect();
        // The widest name (31 characters) plus two spaces.
        assert_eq!(lines[0].find("STATE"), Some(33));
        assert_eq!(lines[1].find("active"), lines[0].find("STATE"));
        assert_eq!(lines[2].find("disabled"), lines[0].find("STATE"));
        assert!(table.contains("--page-token tok"));
    }

    #[test]
    fn version_table_marks_the_current_one() {
        let list = ListSecretVersionsResponse {
            versions: vec![SecretVersion {
                version: 1,
                state: coffer_proto::v1::secret_version::State::Enabled as i32,
                is_current: true,
                fingerprint: "0123456789abcdef0123".into(),
                ..SecretVersion::default()
            }],
            next_page_token: String::new(),
        };
        let table = list.table();
        let row = table.lines().nth(1).unwrap();
        assert_eq!(row, "1        enabled  *                 0123456789ab");
    }

    #[test]
    fn enum_words_drop_the_prefix() {
        assert_eq!(enum_word("STATE_ACTIVE"), "active");
        assert_eq!(enum_word("MODE_EXTERNAL_REFERENCE"), "external_reference");
        assert_eq!(enum_word("STATE_UNSPECIFIED"), "");
    }
}
