//! The rows of `coffer import commit`: the JSON a preview printed, read
//! back into `ImportRow`s (READY candidates only), the checks the server
//! will make on each row, and the batches the server accepts. Touches no
//! network, so it is unit-tested here.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use coffer_core::SecretKey;
use coffer_core::validate::{self, MAX_EXTERNAL_REF_CHARS};
use coffer_proto::v1::{
    CommitRemoteImportRequest, ImportCandidate, ImportRow, PreviewRemoteImportResponse,
    import_candidate,
};
use prost_reflect::{DescriptorPool, DynamicMessage};

/// The most rows one CommitRemoteImport call takes.
pub(crate) const MAX_ROWS_PER_COMMIT: usize = 100;
pub(crate) fn read_preview(path: &Path) -> anyhow::Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the preview from stdin")?;
        return Ok((text, "stdin".to_owned()));
    }
    let source = format!("preview file {}", path.display());
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {source}"))?;
    Ok((text, source))
}

/// The READY candidates of a JSON preview as import rows, and whether the
/// preview says more pages follow. Unknown fields are refused, so a file
/// that is not a preview is not mistaken for an empty one.
pub(crate) fn rows_from_preview(
    text: &str,
    source: &str,
) -> anyhow::Result<(Vec<ImportRow>, bool)> {
    let pool = DescriptorPool::decode(coffer_proto::FILE_DESCRIPTOR_SET)
        .context("cannot load the api descriptors")?;
    let desc = pool
        .get_message_by_name("coffer.v1.PreviewRemoteImportResponse")
        .context("no descriptor for coffer.v1.PreviewRemoteImportResponse")?;
    let mut de = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize(desc, &mut de)
        .and_then(|msg| de.end().map(|()| msg))
        .with_context(|| {
            format!("{source} is not the json output of `coffer import preview --output json`")
        })?;
    let preview: PreviewRemoteImportResponse = dynamic
        .transcode_to()
        .with_context(|| format!("cannot read {source}"))?;
    let rows = preview
        .candidates
        .into_iter()
        .filter(|c| c.status() == import_candidate::Status::Ready)
        .map(row_of)
        .collect();
    Ok((rows, !preview.next_page_token.is_empty()))
}

fn row_of(candidate: ImportCandidate) -> ImportRow {
    ImportRow {
        external_ref: candidate.external_ref,
        key: candidate.suggested_key,
        display_name: candidate.suggested_display_name,
        description: String::new(),
        version_ref: String::new(),
    }
}

/// The checks the server will make on a row, so a typo fails before any
/// batch is committed. An empty key or display name lets the server choose.
pub(crate) fn check_row(row: &ImportRow) -> anyhow::Result<()> {
    check_ref(&row.external_ref, &row.version_ref)?;
    if !row.key.is_empty() {
        SecretKey::parse(&row.key, "key")?;
    }
    validate::display_name(&row.display_name, "display_name")?;
    validate::description(&row.description, "description")?;
    Ok(())
}

/// A remote reference and its optional version, as the server will check
/// them (shared with `coffer secrets link`).
pub(crate) fn check_ref(external_ref: &str, version_ref: &str) -> anyhow::Result<()> {
    if external_ref.trim().is_empty() {
        bail!("the external reference must not be empty");
    }
    if external_ref.chars().count() > MAX_EXTERNAL_REF_CHARS
        || version_ref.chars().count() > MAX_EXTERNAL_REF_CHARS
    {
        bail!("references must be at most {MAX_EXTERNAL_REF_CHARS} characters");
    }
    if external_ref
        .chars()
        .chain(version_ref.chars())
        .any(char::is_control)
    {
        bail!("references must not contain control characters");
    }
    Ok(())
}

/// Splits `rows` into requests of at most [`MAX_ROWS_PER_COMMIT`] rows.
pub(crate) fn batches(vault: &str, rows: Vec<ImportRow>) -> Vec<CommitRemoteImportRequest> {
    let mut rows = rows.into_iter().peekable();
    let mut out = Vec::new();
    while rows.peek().is_some() {
        out.push(CommitRemoteImportRequest {
            vault: vault.to_owned(),
            rows: rows.by_ref().take(MAX_ROWS_PER_COMMIT).collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::output::json;

    fn candidate(n: usize, status: import_candidate::Status) -> ImportCandidate {
        ImportCandidate {
            external_ref: format!("arn:aws:secretsmanager:eu-west-1:1:secret:s{n}"),
            remote_name: format!("team/S{n}"),
            suggested_key: format!("team-s{n}"),
            suggested_display_name: format!("team/S{n}"),
            status: status as i32,
            ..ImportCandidate::default()
        }
    }

    #[test]
    fn preview_json_round_trips_into_ready_rows_only() {
        let preview = PreviewRemoteImportResponse {
            candidates: vec![
                candidate(1, import_candidate::Status::Ready),
                ImportCandidate {
                    conflicts: vec![import_candidate::Conflict::ExactReference as i32],
                    detail: "already imported as team-s2".into(),
                    ..candidate(2, import_candidate::Status::Duplicate)
                },
                candidate(3, import_candidate::Status::Conflict),
                ImportCandidate {
                    metadata: [("tag_count".to_owned(), "2".to_owned())].into(),
                    ..candidate(4, import_candidate::Status::Ready)
                },
            ],
            next_page_token: String::new(),
        };
        let text = json(&preview).unwrap();
        let (rows, more) = rows_from_preview(&text, "preview").unwrap();
        assert!(!more);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].external_ref, preview.candidates[0].external_ref);
        assert_eq!(rows[0].key, "team-s1");
        assert_eq!(rows[0].display_name, "team/S1");
        assert_eq!(rows[1].key, "team-s4");

        // Hand-edited files may use proto field names, and say more pages follow.
        let edited = r#"{"candidates": [{"external_ref": "r1", "suggested_key": "mine",
            "status": "STATUS_READY"}], "nextPageToken": "t2"}"#;
        let (rows, more) = rows_from_preview(edited, "preview").unwrap();
        assert!(more);
        assert_eq!(
            (rows[0].external_ref.as_str(), rows[0].key.as_str()),
            ("r1", "mine")
        );
    }

    #[test]
    fn files_that_are_not_previews_are_refused() {
        let err = rows_from_preview(r#"{"secrets": []}"#, "preview file p.json").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("preview file p.json is not the json output"),
            "{err}"
        );
        assert!(rows_from_preview("", "stdin").is_err());
        assert!(rows_from_preview(r#"{"candidates": []} trailing"#, "stdin").is_err());
        let (rows, _) = rows_from_preview("{}", "stdin").unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn rows_are_sent_in_batches_of_at_most_100() {
        let rows = |n: usize| {
            (0..n)
                .map(|i| row_of(candidate(i, import_candidate::Status::Ready)))
                .collect::<Vec<_>>()
        };
        let sizes = |n: usize| {
            batches("tenants/a/vaults/v", rows(n))
                .iter()
                .map(|b| b.rows.len())
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(100), [100]);
        assert_eq!(sizes(101), [100, 1]);
        assert_eq!(sizes(250), [100, 100, 50]);
        let all = batches("tenants/a/vaults/v", rows(150));
        assert!(all.iter().all(|b| b.vault == "tenants/a/vaults/v"));
        assert_eq!(all[1].rows[0].key, "team-s100", "order is kept");
    }
}
