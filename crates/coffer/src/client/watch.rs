//! `coffer watch`: follows WatchSecrets and prints each change the moment it
//! arrives, one line per event: an aligned row for people (`--output table`,
//! the default) or one canonical proto3 JSON `SecretChangeEvent` a line
//! (`--output json`). Every line carries the event's resume token; when the
//! stream breaks, the last token is printed on stderr so that
//! `--resume-token` continues without losing or repeating a change.

use anyhow::bail;
use coffer_proto::v1::secret_change_event::Type;
use coffer_proto::v1::{Consumer, SecretChangeEvent, WatchSecretsRequest};

use super::bindings::parse_consumer;
use super::conn::ClientOpts;
use super::request;
use crate::output::{JsonLines, OutputFormat, Render, print_line};

/// `coffer watch`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints one line per change as it is committed: a table row, or with \
--output json one SecretChangeEvent as JSON per line (JSON Lines). Each line carries its \
resume token; if the stream breaks, the last one is printed on stderr."
)]
pub(crate) struct WatchArgs {
    /// Only this secret; repeat for more (at most 100). Default: every
    /// secret of the tenant, and binding changes.
    #[arg(long = "secret", value_name = "KEY")]
    secrets: Vec<String>,
    /// Only the secrets bound to this consumer, and its binding changes, as
    /// KIND:ID (required for identities with the resolver role).
    #[arg(long, value_name = "KIND:ID", value_parser = parse_consumer)]
    consumer: Option<Consumer>,
    /// Continue right after the event that printed this token (same
    /// --tenant, --secret and --consumer), instead of from now.
    #[arg(long, value_name = "TOKEN")]
    resume_token: Option<String>,
    #[command(flatten)]
    pub(crate) opts: ClientOpts,
}

impl WatchArgs {
    pub(crate) fn request(&self) -> anyhow::Result<WatchSecretsRequest> {
        let tenant = &self.opts.tenant;
        Ok(WatchSecretsRequest {
            parent: request::parent(tenant)?,
            secrets: self
                .secrets
                .iter()
                .map(|key| request::secret_name(tenant, key))
                .collect::<anyhow::Result<_>>()?,
            consumer: self.consumer.clone(),
            resume_token: self.resume_token.clone().unwrap_or_default(),
        })
    }
}

/// Runs `coffer watch` until the server ends the stream or the user stops it.
pub(crate) async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let format = match args.opts.output {
        None | Some(OutputFormat::Table) => OutputFormat::Table,
        Some(OutputFormat::Json) => OutputFormat::Json,
        Some(OutputFormat::Raw) => bail!("--output raw is only for `coffer secrets resolve`"),
    };
    let req = args.request()?;
    let json = JsonLines::<SecretChangeEvent>::new()?;
    let mut client = super::client(&args.opts).await?;
    let mut stream = client.watch_secrets(req).await?.into_inner();
    if format == OutputFormat::Table {
        print_line(&header())?;
    }
    let mut last_token = args.resume_token.clone().unwrap_or_default();
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => bail!("the server ended the stream{}", resume_hint(&last_token)),
            Err(status) => {
                if !last_token.is_empty() {
                    eprintln!("resume with: --resume-token {last_token}");
                }
                return Err(status.into());
            }
        };
        for event in &message.events {
            match format {
                OutputFormat::Json => print_line(&json.line(event)?)?,
                _ => print_line(&event.table())?,
            }
        }
        last_token = message.resume_token;
    }
}

fn resume_hint(token: &str) -> String {
    if token.is_empty() {
        String::new()
    } else {
        format!("; resume with --resume-token {token}")
    }
}

/// Column widths of the table: a stream cannot measure its rows first.
const TIME: usize = 20;
/// `version_destroyed`, the longest type.
const TYPE: usize = 17;
const SUBJECT: usize = 32;
const VERSION: usize = 7;
const BY: usize = 24;

fn header() -> String {
    format!(
        "{:<TIME$}  {:<TYPE$}  {:<SUBJECT$}  {:<VERSION$}  {:<BY$}  RESUME TOKEN",
        "TIME", "TYPE", "SECRET / BINDING", "VERSION", "BY"
    )
}

impl Render for SecretChangeEvent {
    const TYPE: &'static str = "coffer.v1.SecretChangeEvent";

    /// One row: time, type, the secret's key (or, for a binding change, the
    /// consumer and config path), version, principal and the resume token.
    fn table(&self) -> String {
        let time = self
            .time
            .map(|t| {
                prost_types::Timestamp {
                    seconds: t.seconds,
                    nanos: 0,
                }
                .to_string()
            })
            .unwrap_or_default();
        let subject = match (&self.consumer, self.secret.rsplit('/').next()) {
            (Some(c), _) if self.secret.is_empty() => {
                format!("{}:{} {}", c.kind, c.id, self.config_path)
            }
            (_, Some(key)) => key.to_owned(),
            (_, None) => String::new(),
        };
        let version = if self.version == 0 {
            String::new()
        } else {
            self.version.to_string()
        };
        format!(
            "{time:<TIME$}  {:<TYPE$}  {subject:<SUBJECT$}  {version:<VERSION$}  {:<BY$}  {}",
            type_word(self.r#type()),
            self.principal,
            self.resume_token
        )
    }
}

/// `TYPE_VERSION_STAGED` → `version_staged`.
fn type_word(kind: Type) -> String {
    kind.as_str_name()
        .strip_prefix("TYPE_")
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: WatchArgs,
    }

    fn parse(args: &[&str]) -> Result<WatchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("watch").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn flags_build_the_request() {
        let args = parse(&[
            "--tenant",
            "acme",
            "--secret",
            "db",
            "--secret",
            "tenants/acme/secrets/api",
            "--consumer",
            "agent:a1",
            "--resume-token",
            "tok",
        ])
        .unwrap();
        let req = args.request().unwrap();
        assert_eq!(req.parent, "tenants/acme");
        assert_eq!(
            req.secrets,
            ["tenants/acme/secrets/db", "tenants/acme/secrets/api"]
        );
        assert_eq!(req.consumer.unwrap().id, "a1");
        assert_eq!(req.resume_token, "tok");
        assert!(parse(&["--consumer", "agent"]).is_err());
        let bad = parse(&["--secret", "Bad Key"]).unwrap();
        assert!(bad.request().is_err());
    }

    #[test]
    fn rows_line_up_with_the_header() {
        let event = SecretChangeEvent {
            r#type: Type::VersionStaged as i32,
            secret: "tenants/acme/secrets/db".into(),
            version: 3,
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            principal: "dev:admin".into(),
            resume_token: "tok".into(),
            ..SecretChangeEvent::default()
        };
        let row = event.table();
        let header = header();
        assert!(
            row.starts_with("2023-11-14T22:13:20Z  version_staged     db "),
            "{row}"
        );
        assert_eq!(row.find("3 "), header.find("VERSION"));
        assert_eq!(row.find("dev:admin"), header.find("BY"));
        assert_eq!(row.find("tok"), header.find("RESUME TOKEN"));

        let binding = SecretChangeEvent {
            r#type: Type::BindingChanged as i32,
            consumer: Some(Consumer {
                kind: "agent".into(),
                id: "a1".into(),
            }),
            config_path: "env.DB".into(),
            ..SecretChangeEvent::default()
        };
        assert!(
            binding
                .table()
                .contains("binding_changed    agent:a1 env.DB")
        );
    }
}
