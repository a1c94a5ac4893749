//! `coffer audit list|verify|export`: reading the tenant's hash-chained
//! audit trail, checking it has not been edited, and exporting it as JSON Lines.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use coffer_core::validate::MAX_PAGE_SIZE;
use coffer_proto::v1::{
    AuditEvent, ListAuditEventsRequest, ListAuditEventsResponse, VerifyAuditChainRequest,
};

use super::conn::ClientOpts;
use super::paging;
use super::request;
use crate::output::{self, JsonLines};

/// `coffer audit`: connection options plus one subcommand.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    pub(crate) opts: ClientOpts,
    #[command(subcommand)]
    pub(crate) command: AuditCommand,
}

/// The audit subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// List audit events, oldest first.
    List(ListArgs),
    /// Recompute the tenant's hash chain; exit code 1 when it is broken.
    Verify,
    /// Write every matching event as JSON Lines (one canonical proto3 JSON event a line).
    Export(ExportArgs),
}

/// `coffer audit list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// e.g. `action = "secret.resolve" AND outcome = DENIED`.
    #[arg(long)]
    filter: Option<String>,
    /// Events per page (the server caps it at 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    page_size: Option<i32>,
    /// Continue from a previous page.
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
    /// Follow next_page_token until every page is read.
    #[arg(long)]
    all: bool,
}

impl ListArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<ListAuditEventsRequest> {
        Ok(ListAuditEventsRequest {
            parent: request::parent(tenant)?,
            filter: self.filter.clone().unwrap_or_default(),
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.clone().unwrap_or_default(),
        })
    }
}

/// `coffer audit export`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// Only events that match, as for `audit list`.
    #[arg(long)]
    filter: Option<String>,
    /// Write to this file (replaced only once the export is complete) instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

impl ExportArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<ListAuditEventsRequest> {
        Ok(ListAuditEventsRequest {
            parent: request::parent(tenant)?,
            filter: self.filter.clone().unwrap_or_default(),
            page_size: i32::try_from(MAX_PAGE_SIZE).unwrap_or(i32::MAX),
            page_token: String::new(),
        })
    }
}

/// Runs one `coffer audit` subcommand.
pub(crate) async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let AuditArgs { opts, command } = args;
    let tenant = opts.tenant.as_str();
    match command {
        AuditCommand::List(args) => {
            let format = super::plain_format(opts.output)?;
            let req = args.request(tenant)?;
            let mut client = super::client(&opts).await?;
            let resp = paging::collect(
                async |req| client.list_audit_events(req).await,
                req,
                args.all,
            )
            .await?;
            output::emit(&resp, format)
        }
        AuditCommand::Verify => {
            let format = super::plain_format(opts.output)?;
            let parent = request::parent(tenant)?;
            let resp = super::client(&opts)
                .await?
                .verify_audit_chain(VerifyAuditChainRequest { parent })
                .await?
                .into_inner();
            output::emit(&resp, format)?;
            if !resp.ok {
                bail!("the audit chain is broken at seq {}", resp.first_broken_seq);
            }
            Ok(())
        }
        AuditCommand::Export(args) => run_export(&opts, &args).await,
    }
}

async fn run_export(opts: &ClientOpts, args: &ExportArgs) -> anyhow::Result<()> {
    if opts.output.is_some() {
        bail!("`coffer audit export` always writes json lines; drop --output");
    }
    let req = args.request(&opts.tenant)?;
    let mut client = super::client(opts).await?;
    let fetch =
        async |req: ListAuditEventsRequest| Ok(client.list_audit_events(req).await?.into_inner());
    match &args.out {
        Some(path) => {
            let count = export_to_file(fetch, req, path).await?;
            eprintln!("exported {count} audit events to {}", path.display());
            Ok(())
        }
        None => {
            let mut out = BufWriter::new(std::io::stdout());
            export(fetch, req, &mut out).await?;
            out.flush().context("cannot write to stdout")
        }
    }
}

/// Exports into `{path}.partial`, then renames it over `path`, so a failed
/// export never leaves a truncated file where a complete one is expected.
async fn export_to_file(
    fetch: impl AsyncFnMut(ListAuditEventsRequest) -> anyhow::Result<ListAuditEventsResponse>,
    req: ListAuditEventsRequest,
    path: &Path,
) -> anyhow::Result<u64> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = BufWriter::new(file);
    let written = async {
        let count = export(fetch, req, &mut out).await?;
        out.flush()
            .and_then(|()| out.get_ref().sync_all())
            .with_context(|| format!("cannot write {}", partial.display()))?;
        Ok::<_, anyhow::Error>(count)
    }
    .await;
    match written {
        Ok(count) => {
            std::fs::rename(&partial, path)
                .with_context(|| format!("cannot move the export to {}", path.display()))?;
            Ok(count)
        }
        Err(err) => {
            drop(out);
            let _ = std::fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// Follows every page from `req`, writing one event per line as it arrives.
/// Returns the number of events written.
async fn export(
    mut fetch: impl AsyncFnMut(ListAuditEventsRequest) -> anyhow::Result<ListAuditEventsResponse>,
    mut req: ListAuditEventsRequest,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let lines = JsonLines::<AuditEvent>::new()?;
    let mut count = 0u64;
    loop {
        let page = fetch(req.clone()).await?;
        for event in &page.audit_events {
            let line = lines.line(event)?;
            out.write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .context("cannot write the export")?;
            count += 1;
        }
        if page.next_page_token.is_empty() {
            return Ok(count);
        }
        if page.next_page_token == req.page_token {
            bail!("the server returned the same page token twice");
        }
        req.page_token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;
    use coffer_proto::v1::{Consumer, audit_event};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: AuditArgs,
    }

    fn parse(args: &[&str]) -> Result<AuditArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("audit").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    fn event(seq: i64) -> AuditEvent {
        AuditEvent {
            name: format!("tenants/acme/auditEvents/{seq}"),
            seq,
            action: "secret.resolve".to_owned(),
            consumer: Some(Consumer {
                kind: "agent".to_owned(),
                id: "a1".to_owned(),
            }),
            outcome: audit_event::Outcome::Denied as i32,
            hash: format!("h{seq}"),
            ..AuditEvent::default()
        }
    }

    /// Serves `pages` in order, checking each request carries the previous token.
    fn pages(
        pages: Vec<Vec<i64>>,
    ) -> impl AsyncFnMut(ListAuditEventsRequest) -> anyhow::Result<ListAuditEventsResponse> {
        let total = pages.len();
        let mut pages = pages.into_iter().enumerate();
        async move |req: ListAuditEventsRequest| {
            let (i, seqs) = pages.next().expect("no more pages");
            let expected = if i == 0 {
                String::new()
            } else {
                format!("p{i}")
            };
            assert_eq!(req.page_token, expected);
            assert_eq!(req.filter, "outcome = DENIED");
            Ok(ListAuditEventsResponse {
                audit_events: seqs.into_iter().map(event).collect(),
                next_page_token: if i + 1 < total {
                    format!("p{}", i + 1)
                } else {
                    String::new()
                },
            })
        }
    }

    fn export_request() -> ListAuditEventsRequest {
        let args = parse(&["--tenant", "acme", "export", "--filter", "outcome = DENIED"]).unwrap();
        let AuditCommand::Export(export) = args.command else {
            panic!("parsed as another command");
        };
        export.request(&args.opts.tenant).unwrap()
    }

    #[tokio::test]
    async fn export_follows_every_page_one_event_a_line() {
        let req = export_request();
        assert_eq!(req.parent, "tenants/acme");
        assert_eq!(req.page_size, 1000);
        let mut out = Vec::new();
        let count = export(pages(vec![vec![1, 2], vec![], vec![3]]), req, &mut out)
            .await
            .unwrap();
        assert_eq!(count, 3);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(text.ends_with('\n'));
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["seq"], "1");
        assert_eq!(first["outcome"], "OUTCOME_DENIED");
        assert_eq!(first["consumer"]["kind"], "agent");
        assert_eq!(first["name"], "tenants/acme/auditEvents/1");
        let last: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last["seq"], "3");
    }

    #[tokio::test]
    async fn export_to_file_replaces_the_file_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let failing = async |_req: ListAuditEventsRequest| -> anyhow::Result<_> {
            Err(anyhow::anyhow!("connection lost"))
        };
        assert!(
            export_to_file(failing, export_request(), &path)
                .await
                .is_err()
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let count = export_to_file(pages(vec![vec![7]]), export_request(), &path)
            .await
            .unwrap();
        assert_eq!(count, 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains(r#""seq":"7""#), "{text}");
    }

    #[tokio::test]
    async fn a_repeated_page_token_stops_the_export() {
        let mut calls = 0;
        let stuck = async |req: ListAuditEventsRequest| {
            calls += 1;
            Ok(ListAuditEventsResponse {
                audit_events: vec![event(1)],
                next_page_token: if req.page_token.is_empty() {
                    "same".to_owned()
                } else {
                    req.page_token
                },
            })
        };
        let err = export(stuck, export_request(), &mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("same page token"), "{err}");
        assert_eq!(calls, 2);
    }

    #[test]
    fn list_and_verify_parse() {
        let args = parse(&["list", "--filter", "action = \"secret.create\"", "--all"]).unwrap();
        let AuditCommand::List(list) = args.command else {
            panic!("parsed as another command");
        };
        assert!(list.all);
        let req = list.request("acme").unwrap();
        assert_eq!(req.filter, "action = \"secret.create\"");
        assert_eq!(req.page_size, 0);
        assert!(matches!(
            parse(&["verify"]).unwrap().command,
            AuditCommand::Verify
        ));
        assert!(parse(&["verify", "extra"]).is_err());
        assert!(parse(&["list", "--page-size", "0"]).is_err());
    }
}
