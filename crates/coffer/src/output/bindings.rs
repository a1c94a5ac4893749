//! Tables of `Binding`, `ListBindingsResponse`, `SyncBindingsResponse`,
//! `DeleteBindingResponse` and `ResolveBindingsResponse`. The resolve table
//! shows value lengths, never values.

use coffer_proto::v1::{
    Binding, Consumer, DeleteBindingResponse, ListBindingsResponse, ResolveBindingsResponse,
    SyncBindingsResponse,
};

use super::{Render, columns, fields, push_next_page, time, yes_no};

impl Render for Binding {
    const TYPE: &'static str = "coffer.v1.Binding";

    fn table(&self) -> String {
        fields(&[
            ("name", self.name.clone()),
            ("secret", self.secret.clone()),
            ("consumer", consumer(self.consumer.as_ref())),
            ("config path", self.config_path.clone()),
            ("version", selector(&self.version_selector)),
            ("required", yes_no(self.required.unwrap_or(true)).to_owned()),
            ("label", self.label.clone()),
            ("created", time(self.create_time.as_ref())),
            ("updated", time(self.update_time.as_ref())),
            ("etag", self.etag.clone()),
        ])
    }
}

fn binding_rows(bindings: &[Binding]) -> String {
    let rows = bindings
        .iter()
        .map(|b| {
            vec![
                last_segment(&b.name),
                consumer(b.consumer.as_ref()),
                b.config_path.clone(),
                last_segment(&b.secret),
                selector(&b.version_selector),
                yes_no(b.required.unwrap_or(true)).to_owned(),
                b.label.clone(),
            ]
        })
        .collect();
    columns(
        &[
            "ID",
            "CONSUMER",
            "CONFIG PATH",
            "SECRET",
            "VERSION",
            "REQUIRED",
            "LABEL",
        ],
        rows,
    )
}

impl Render for ListBindingsResponse {
    const TYPE: &'static str = "coffer.v1.ListBindingsResponse";

    fn table(&self) -> String {
        let mut out = binding_rows(&self.bindings);
        push_next_page(&mut out, &self.next_page_token);
        out
    }
}

impl Render for SyncBindingsResponse {
    const TYPE: &'static str = "coffer.v1.SyncBindingsResponse";

    fn table(&self) -> String {
        format!(
            "created {}, deleted {}, unchanged {}\n\n{}",
            self.created,
            self.deleted,
            self.unchanged,
            binding_rows(&self.bindings)
        )
    }
}

/// Empty; `bindings delete` prints the deleted name itself in table form.
impl Render for DeleteBindingResponse {
    const TYPE: &'static str = "coffer.v1.DeleteBindingResponse";

    fn table(&self) -> String {
        String::new()
    }
}

/// Lengths only: a table is for looking, and values never go to a terminal by accident.
impl Render for ResolveBindingsResponse {
    const TYPE: &'static str = "coffer.v1.ResolveBindingsResponse";

    fn table(&self) -> String {
        let rows = self
            .entries
            .iter()
            .map(|e| {
                let (version, bytes, status) = match &e.error {
                    None => (
                        e.version.to_string(),
                        e.value.len().to_string(),
                        "ok".to_owned(),
                    ),
                    Some(error) => (
                        String::new(),
                        String::new(),
                        crate::client::status::code_name(tonic::Code::from_i32(error.code))
                            .to_owned(),
                    ),
                };
                vec![
                    e.config_path.clone(),
                    last_segment(&e.secret),
                    version,
                    bytes,
                    status,
                ]
            })
            .collect();
        columns(
            &["CONFIG PATH", "SECRET", "VERSION", "BYTES", "STATUS"],
            rows,
        )
    }
}

/// `agent:a1`, or empty when unset.
pub(super) fn consumer(c: Option<&Consumer>) -> String {
    c.map(|c| format!("{}:{}", c.kind, c.id))
        .unwrap_or_default()
}

/// A binding's version selector; empty means the latest version.
fn selector(raw: &str) -> String {
    if raw.is_empty() { "latest" } else { raw }.to_owned()
}

/// The id at the end of a resource name (`tenants/t/bindings/b1` → `b1`).
fn last_segment(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use coffer_proto::v1::ResolvedBinding;

    use super::*;
    use crate::output::json;

    fn binding(path: &str, required: Option<bool>) -> Binding {
        Binding {
            name: "tenants/acme/bindings/b1".into(),
            secret: "tenants/acme/secrets/openai-key".into(),
            consumer: Some(Consumer {
                kind: "agent".into(),
                id: "a1".into(),
            }),
            config_path: path.into(),
            required,
            ..Binding::default()
        }
    }

    #[test]
    fn unset_required_reads_as_required() {
        let table = binding("env.A", None).table();
        assert!(table.contains("required     yes\n"), "{table}");
        assert!(table.contains("consumer     agent:a1\n"), "{table}");
        assert!(table.contains("version      latest\n"), "{table}");
        let table = binding("env.A", Some(false)).table();
        assert!(table.contains("required     no\n"), "{table}");
    }

    #[test]
    fn sync_table_counts_then_lists() {
        let resp = SyncBindingsResponse {
            bindings: vec![binding("env.OPENAI_API_KEY", Some(true))],
            created: 1,
            deleted: 2,
            unchanged: 3,
        };
        let table = resp.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "created 1, deleted 2, unchanged 3");
        assert!(lines[2].starts_with("ID  "), "{table}");
        assert_eq!(
            lines[3],
            "b1  agent:a1  env.OPENAI_API_KEY  openai-key  latest   yes"
        );
    }

    #[test]
    fn resolve_table_shows_lengths_and_never_values() {
        let resp = ResolveBindingsResponse {
            entries: vec![
                ResolvedBinding {
                    config_path: "env.OPENAI_API_KEY".into(),
                    secret: "tenants/acme/secrets/openai-key".into(),
                    version: 4,
                    value: b"sk-canary-value".to_vec(),
                    ..ResolvedBinding::default()
                },
                ResolvedBinding {
                    config_path: "env.OPTIONAL".into(),
                    secret: "tenants/acme/secrets/gone".into(),
                    error: Some(coffer_proto::google::rpc::Status {
                        code: tonic::Code::NotFound as i32,
                        message: "secret not found".into(),
                        details: Vec::new(),
                    }),
                    ..ResolvedBinding::default()
                },
            ],
        };
        let table = resp.table();
        assert!(!table.contains("canary"), "{table}");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1],
            "env.OPENAI_API_KEY  openai-key  4        15     ok"
        );
        assert!(lines[2].ends_with("NOT_FOUND"), "{table}");
        let value: serde_json::Value = serde_json::from_str(&json(&resp).unwrap()).unwrap();
        assert_eq!(value["entries"][0]["value"], "c2stY2FuYXJ5LXZhbHVl");
        assert_eq!(value["entries"][1]["error"]["code"], 5);
    }
}
