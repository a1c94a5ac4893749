//! `coffer import preview|commit`: importing secrets that already live in a
//! remote vault, by reference. Neither command reads a value. Owns the
//! preview → commit hand-off: `preview --output json` writes the canonical
//! JSON of a `PreviewRemoteImportResponse`, and `commit --from-preview`
//! takes its READY candidates (edited or not, see `import_file`) and sends
//! them in batches the server accepts.

use std::path::PathBuf;

use anyhow::{Context, bail};
use coffer_proto::v1::{
    CommitRemoteImportRequest, CommitRemoteImportResponse, ImportRow, PreviewRemoteImportRequest,
};

use super::conn::ClientOpts;
use super::import_file::{batches, check_row, read_preview, rows_from_preview};
use super::paging;
use super::vaults;
use crate::output;

/// The longest preview query the server takes.
const MAX_QUERY_CHARS: usize = 200;

/// `coffer import`: connection options plus one subcommand.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    pub(crate) opts: ClientOpts,
    #[command(subcommand)]
    pub(crate) command: ImportCommand,
}

/// The import subcommands. Import reads no value: a secret imported by
/// reference is resolved from the remote vault when a consumer asks for it.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ImportCommand {
    /// List a vault's remote secrets and whether each can be imported
    ///
    /// With --output json the output is the input of `coffer import commit
    /// --from-preview`; edit suggestedKey or suggestedDisplayName there to
    /// import under other names.
    #[command(verbatim_doc_comment)]
    Preview(PreviewArgs),
    /// Import remote secrets by reference: the READY rows of a preview, or one --ref
    ///
    /// Prints one result per row and the totals; exits with code 1 when any
    /// row failed. Rows are sent in batches of at most 100; a batch that the
    /// server refuses as a whole stops the import after the batches before it.
    #[command(verbatim_doc_comment)]
    Commit(CommitArgs),
}

/// `coffer import preview`.
#[derive(Debug, clap::Args)]
pub(crate) struct PreviewArgs {
    /// The vault id, or a full name `tenants/{t}/vaults/{id}`.
    #[arg(long, value_name = "ID")]
    vault: String,
    /// Only remote secrets whose name matches (at most 200 characters).
    #[arg(long, value_name = "Q")]
    query: Option<String>,
    /// Candidates per page: 1 to 100.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=100))]
    page_size: Option<i32>,
    /// Continue from a previous page.
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
    /// Follow next_page_token until every page is read.
    #[arg(long)]
    all: bool,
}

impl PreviewArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<PreviewRemoteImportRequest> {
        let query = self.query.clone().unwrap_or_default();
        if query.chars().count() > MAX_QUERY_CHARS {
            bail!("--query must be at most {MAX_QUERY_CHARS} characters");
        }
        if query.chars().any(char::is_control) {
            bail!("--query must not contain control characters");
        }
        Ok(PreviewRemoteImportRequest {
            vault: vaults::vault_name(tenant, &self.vault)?,
            query,
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.clone().unwrap_or_default(),
        })
    }
}

/// `coffer import commit`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("rows").required(true).args(["from_preview", "external_ref"])))]
pub(crate) struct CommitArgs {
    /// The vault id, or a full name `tenants/{t}/vaults/{id}`.
    #[arg(long, value_name = "ID")]
    vault: String,
    /// The JSON output of `coffer import preview --output json` (`-` for stdin);
    /// its READY candidates are imported.
    #[arg(long, value_name = "FILE")]
    from_preview: Option<PathBuf>,
    /// The remote secret to import (e.g. an AWS secret ARN or name).
    #[arg(long = "ref", value_name = "REF")]
    external_ref: Option<String>,
    /// The secret key [default: the server derives one from the remote name].
    /// (`--key` is the TLS client key, as on every client command.)
    #[arg(
        long = "secret-key",
        value_name = "KEY",
        conflicts_with = "from_preview"
    )]
    key: Option<String>,
    #[arg(long, value_name = "NAME", conflicts_with = "from_preview")]
    display_name: Option<String>,
    #[arg(long, value_name = "TEXT", conflicts_with = "from_preview")]
    description: Option<String>,
    /// Pin this remote version instead of following the remote's current one.
    #[arg(long, value_name = "V", conflicts_with = "from_preview")]
    version_ref: Option<String>,
}

impl CommitArgs {
    /// The requests to send, each with at most 100 rows; reads the preview
    /// file (or stdin) and checks every row first. No READY row, no request.
    pub(crate) fn requests(&self, tenant: &str) -> anyhow::Result<Vec<CommitRemoteImportRequest>> {
        let vault = vaults::vault_name(tenant, &self.vault)?;
        let rows = match (&self.from_preview, &self.external_ref) {
            (Some(path), _) => {
                let (text, source) = read_preview(path)?;
                let (rows, more) = rows_from_preview(&text, &source)?;
                if more {
                    eprintln!(
                        "note: {source} is one page of the preview; run `coffer import preview --all` to import every page"
                    );
                }
                rows
            }
            (None, Some(external_ref)) => vec![ImportRow {
                external_ref: external_ref.clone(),
                key: self.key.clone().unwrap_or_default(),
                display_name: self.display_name.clone().unwrap_or_default(),
                description: self.description.clone().unwrap_or_default(),
                version_ref: self.version_ref.clone().unwrap_or_default(),
            }],
            (None, None) => bail!("give --from-preview FILE or --ref REF"),
        };
        for (i, row) in rows.iter().enumerate() {
            check_row(row).with_context(|| format!("row {} ({})", i + 1, row.external_ref))?;
        }
        Ok(batches(&vault, rows))
    }
}

/// Adds one batch's results and counts to the running total.
fn merge(total: &mut CommitRemoteImportResponse, batch: CommitRemoteImportResponse) {
    total.results.extend(batch.results);
    total.imported += batch.imported;
    total.skipped += batch.skipped;
    total.failed += batch.failed;
}

/// Runs one `coffer import` subcommand; local input is checked before connecting.
pub(crate) async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let ImportArgs { opts, command } = args;
    let tenant = opts.tenant.as_str();
    let format = super::plain_format(opts.output)?;
    match command {
        ImportCommand::Preview(args) => {
            let req = args.request(tenant)?;
            let mut client = vaults::client(&opts).await?;
            let resp = paging::collect(
                async |req| client.preview_remote_import(req).await,
                req,
                args.all,
            )
            .await?;
            output::emit(&resp, format)
        }
        ImportCommand::Commit(args) => {
            let requests = args.requests(tenant)?;
            let mut total = CommitRemoteImportResponse::default();
            if !requests.is_empty() {
                let mut client = vaults::client(&opts).await?;
                for req in requests {
                    match client.commit_remote_import(req).await {
                        Ok(batch) => merge(&mut total, batch.into_inner()),
                        Err(status) => {
                            if !total.results.is_empty() {
                                output::emit(&total, format)?;
                                eprintln!(
                                    "note: the {} rows above were processed before a batch failed",
                                    total.results.len()
                                );
                            }
                            return Err(status.into());
                        }
                    }
                }
            }
            output::emit(&total, format)?;
            if total.failed > 0 {
                bail!(
                    "{} of {} rows failed to import",
                    total.failed,
                    total.results.len()
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;
    use coffer_proto::v1::{ImportCandidate, PreviewRemoteImportResponse, import_candidate};

    use super::*;
    use crate::output::json;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ImportArgs,
    }

    fn parse(args: &[&str]) -> Result<ImportArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("import").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

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
    fn commit_from_a_preview_file_checks_rows_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preview.json");
        let preview = PreviewRemoteImportResponse {
            candidates: (0..120)
                .map(|i| candidate(i, import_candidate::Status::Ready))
                .chain([candidate(999, import_candidate::Status::Conflict)])
                .collect(),
            next_page_token: String::new(),
        };
        std::fs::write(&path, json(&preview).unwrap()).unwrap();
        let file = path.to_str().unwrap();
        let args = parse(&[
            "--tenant",
            "acme",
            "commit",
            "--vault",
            "aws",
            "--from-preview",
            file,
        ])
        .unwrap();
        let ImportCommand::Commit(commit) = args.command else {
            panic!("parsed as another command");
        };
        let reqs = commit.requests(&args.opts.tenant).unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].vault, "tenants/acme/vaults/aws");
        assert_eq!(reqs[0].rows.len() + reqs[1].rows.len(), 120);

        std::fs::write(
            &path,
            r#"{"candidates": [{"externalRef": "r", "suggestedKey": "Bad Key", "status": "STATUS_READY"}]}"#,
        )
        .unwrap();
        let err = commit.requests("acme").unwrap_err();
        assert!(format!("{err:#}").starts_with("row 1 (r): "), "{err:#}");
    }

    #[test]
    fn commit_takes_one_ref_or_a_preview_never_both() {
        let args = parse(&[
            "commit",
            "--vault",
            "tenants/t2/vaults/aws",
            "--ref",
            "prod/db",
            "--secret-key",
            "db",
            "--version-ref",
            "v-1",
        ])
        .unwrap();
        let ImportCommand::Commit(commit) = args.command else {
            panic!("parsed as another command");
        };
        let reqs = commit.requests("default").unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].vault, "tenants/t2/vaults/aws");
        let row = &reqs[0].rows[0];
        assert_eq!(
            (
                row.external_ref.as_str(),
                row.key.as_str(),
                row.version_ref.as_str()
            ),
            ("prod/db", "db", "v-1")
        );
        assert!(parse(&["commit", "--vault", "v"]).is_err());
        assert!(
            parse(&[
                "commit",
                "--vault",
                "v",
                "--ref",
                "r",
                "--from-preview",
                "p"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "commit",
                "--vault",
                "v",
                "--from-preview",
                "p",
                "--secret-key",
                "k"
            ])
            .is_err()
        );
        let ImportCommand::Commit(bad) = parse(&[
            "commit",
            "--vault",
            "v",
            "--ref",
            "r",
            "--secret-key",
            "Bad Key",
        ])
        .unwrap()
        .command
        else {
            panic!("parsed as another command");
        };
        assert!(bad.requests("acme").is_err());
    }

    #[test]
    fn preview_checks_query_and_page_size() {
        let args = parse(&[
            "preview",
            "--vault",
            "aws",
            "--query",
            "prod/",
            "--page-size",
            "50",
        ])
        .unwrap();
        let ImportCommand::Preview(preview) = args.command else {
            panic!("parsed as another command");
        };
        let req = preview.request("acme").unwrap();
        assert_eq!(req.vault, "tenants/acme/vaults/aws");
        assert_eq!((req.query.as_str(), req.page_size), ("prod/", 50));
        assert!(parse(&["preview", "--vault", "v", "--page-size", "101"]).is_err());
        assert!(parse(&["preview", "--vault", "v", "--page-size", "0"]).is_err());
        let long = "q".repeat(201);
        let ImportCommand::Preview(preview) = parse(&["preview", "--vault", "v", "--query", &long])
            .unwrap()
            .command
        else {
            panic!("parsed as another command");
        };
        assert!(preview.request("acme").is_err());
    }

    #[test]
    fn batch_results_add_up() {
        let mut total = CommitRemoteImportResponse::default();
        for (imported, failed) in [(90, 10), (5, 0)] {
            merge(
                &mut total,
                CommitRemoteImportResponse {
                    results: vec![Default::default(); (imported + failed) as usize],
                    imported,
                    skipped: 0,
                    failed,
                },
            );
        }
        assert_eq!(
            (total.imported, total.failed, total.results.len()),
            (95, 10, 105)
        );
    }
}
