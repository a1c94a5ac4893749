//! Tables of `PreviewRemoteImportResponse` and `CommitRemoteImportResponse`.
//! The JSON form of a preview is what `coffer import commit --from-preview`
//! reads back.

use coffer_proto::v1::{CommitRemoteImportResponse, PreviewRemoteImportResponse, import_candidate};

use super::{Render, columns, enum_word, push_next_page};

impl Render for PreviewRemoteImportResponse {
    const TYPE: &'static str = "coffer.v1.PreviewRemoteImportResponse";

    fn table(&self) -> String {
        let rows = self
            .candidates
            .iter()
            .map(|c| {
                let conflicts = c
                    .conflicts
                    .iter()
                    .map(|&code| {
                        import_candidate::Conflict::try_from(code)
                            .map(|c| enum_word(c.as_str_name()))
                            .unwrap_or_else(|_| code.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                vec![
                    c.external_ref.clone(),
                    c.remote_name.clone(),
                    c.suggested_key.clone(),
                    enum_word(c.status().as_str_name()),
                    conflicts,
                    c.detail.clone(),
                ]
            })
            .collect();
        let ready = self
            .candidates
            .iter()
            .filter(|c| c.status() == import_candidate::Status::Ready)
            .count();
        let mut out = columns(
            &[
                "EXTERNAL REF",
                "REMOTE NAME",
                "SUGGESTED KEY",
                "STATUS",
                "CONFLICTS",
                "DETAIL",
            ],
            rows,
        );
        out.push_str(&format!(
            "\n{ready} of {} ready to import\n",
            self.candidates.len()
        ));
        push_next_page(&mut out, &self.next_page_token);
        out
    }
}

impl Render for CommitRemoteImportResponse {
    const TYPE: &'static str = "coffer.v1.CommitRemoteImportResponse";

    fn table(&self) -> String {
        let rows = self
            .results
            .iter()
            .map(|r| {
                vec![
                    r.external_ref.clone(),
                    enum_word(r.status().as_str_name()),
                    r.secret.clone(),
                    r.reason.clone(),
                ]
            })
            .collect();
        format!(
            "{}\nimported {}, skipped {}, failed {}\n",
            columns(&["EXTERNAL REF", "STATUS", "SECRET", "REASON"], rows),
            self.imported,
            self.skipped,
            self.failed
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use coffer_proto::v1::{ImportCandidate, ImportResult, import_result};

    use super::*;

    #[test]
    fn preview_table_names_conflicts_and_counts_ready_rows() {
        let resp = PreviewRemoteImportResponse {
            candidates: vec![
                ImportCandidate {
                    external_ref: "prod/db".into(),
                    remote_name: "prod/db".into(),
                    suggested_key: "prod-db".into(),
                    status: import_candidate::Status::Ready as i32,
                    ..ImportCandidate::default()
                },
                ImportCandidate {
                    external_ref: "coffer/x".into(),
                    remote_name: "coffer/x".into(),
                    suggested_key: "coffer-x".into(),
                    status: import_candidate::Status::Conflict as i32,
                    conflicts: vec![
                        import_candidate::Conflict::ProviderGuardrail as i32,
                        import_candidate::Conflict::Key as i32,
                    ],
                    detail: "inside coffer's managed namespace".into(),
                    ..ImportCandidate::default()
                },
            ],
            next_page_token: "p2".into(),
        };
        let table = resp.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[2],
            "coffer/x      coffer/x     coffer-x       conflict  provider_guardrail,key  inside coffer's managed namespace"
        );
        assert!(table.contains("\n1 of 2 ready to import\n"), "{table}");
        assert!(table.contains("--page-token p2"), "{table}");
    }

    #[test]
    fn commit_table_lists_rows_then_totals() {
        let resp = CommitRemoteImportResponse {
            results: vec![ImportResult {
                external_ref: "prod/db".into(),
                status: import_result::Status::Imported as i32,
                secret: "tenants/acme/secrets/prod-db".into(),
                reason: String::new(),
            }],
            imported: 1,
            skipped: 0,
            failed: 0,
        };
        let table = resp.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1],
            "prod/db       imported  tenants/acme/secrets/prod-db"
        );
        assert_eq!(
            lines.last().copied(),
            Some("imported 1, skipped 0, failed 0")
        );
    }
}
