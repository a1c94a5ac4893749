//! `coffer resolve-bindings`: every binding of one consumer resolved in one
//! call, printed as a table (no values), the JSON response, or `KEY=value`
//! lines for the consumer's `env.` paths.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, bail};
use coffer_proto::v1::{
    Consumer, ResolveBindingsRequest, ResolveBindingsResponse, ResolvedBinding,
};
use zeroize::{Zeroize, Zeroizing};

use super::bindings::parse_consumer;
use super::conn::ClientOpts;
use super::{request, status};
use crate::output::{self, OutputFormat, Render};

/// The config-path prefix whose entries `--format env` prints.
const ENV_PREFIX: &str = "env.";

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ResolveFormat {
    /// Config path, secret, version and value length; never a value.
    Table,
    /// The response as canonical proto3 JSON (values in base64).
    Json,
    /// `KEY=value` lines for `env.KEY` paths, values as-is.
    Env,
}

/// `coffer resolve-bindings`. The connection options come last so that
/// their help heading does not swallow this command's own flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ResolveBindingsArgs {
    /// The consumer whose bindings are resolved, as KIND:ID.
    #[arg(long, value_name = "KIND:ID", value_parser = parse_consumer)]
    consumer: Consumer,
    /// Only bindings whose config path starts with this, e.g. `env.`.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// Audit context as key=value (run_id, issue_id, ...); repeat for more.
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = request::parse_label)]
    context: Vec<(String, String)>,
    /// How to print the entries [default: table, or --output].
    ///
    /// With `env`, each entry whose config path is `env.KEY` prints as one
    /// `KEY=value` line with the value's bytes as-is (no quoting, no escaping);
    /// entries at other paths are left out. A value containing a newline, a
    /// carriage return or a NUL byte cannot be one line: the command then prints
    /// nothing and fails, naming the config paths (never the values); use
    /// `--format json` for such values. KEY must match [A-Za-z_][A-Za-z0-9_]*.
    ///
    /// Optional bindings that could not be resolved are reported on stderr
    /// (config path and status) in every format; with `env` they also make the
    /// exit code 1, after the other lines are printed.
    #[arg(long, value_enum, verbatim_doc_comment)]
    format: Option<ResolveFormat>,
    #[command(flatten)]
    pub(crate) opts: ClientOpts,
}

impl ResolveBindingsArgs {
    pub(crate) fn request(&self) -> anyhow::Result<ResolveBindingsRequest> {
        let mut context = HashMap::new();
        for (key, value) in &self.context {
            if context.insert(key.clone(), value.clone()).is_some() {
                bail!("context key {key} is given more than once");
            }
        }
        Ok(ResolveBindingsRequest {
            parent: request::parent(&self.opts.tenant)?,
            consumer: Some(self.consumer.clone()),
            config_path_prefix: self.prefix.clone().unwrap_or_default(),
            context,
        })
    }

    /// `--format` wins; the global `--output table|json` is honored when it is absent.
    pub(crate) fn format(&self) -> anyhow::Result<ResolveFormat> {
        let from_output = match self.opts.output {
            None => None,
            Some(OutputFormat::Table) => Some(ResolveFormat::Table),
            Some(OutputFormat::Json) => Some(ResolveFormat::Json),
            Some(OutputFormat::Raw) => {
                bail!("--output raw is only for `coffer secrets resolve`; use --format env")
            }
        };
        match (self.format, from_output) {
            (Some(format), Some(output)) if format != output => {
                bail!("--format and --output disagree; give only --format")
            }
            (format, output) => Ok(format.or(output).unwrap_or(ResolveFormat::Table)),
        }
    }
}

/// Resolves and prints the consumer's bindings. Every copy of a value this
/// process holds is wiped before returning.
pub(crate) async fn run(args: ResolveBindingsArgs) -> anyhow::Result<()> {
    let format = args.format()?;
    let req = args.request()?;
    let mut client = super::client(&args.opts).await?;
    let mut resp = client.resolve_bindings(req).await?.into_inner();
    let result = print(&resp, format);
    for entry in &mut resp.entries {
        entry.value.zeroize();
    }
    result
}

fn print(resp: &ResolveBindingsResponse, format: ResolveFormat) -> anyhow::Result<()> {
    let text = match format {
        ResolveFormat::Table => Zeroizing::new(resp.table().into_bytes()),
        ResolveFormat::Json => Zeroizing::new(output::json(resp)?.into_bytes()),
        ResolveFormat::Env => env_lines(&resp.entries)?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&text)
        .and_then(|()| {
            if format == ResolveFormat::Json {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    let failed = failures(&resp.entries);
    for line in &failed {
        eprintln!("{line}");
    }
    if format == ResolveFormat::Env && !failed.is_empty() {
        bail!(
            "{} optional binding(s) could not be resolved; their variables are not set",
            failed.len()
        );
    }
    Ok(())
}

/// One stderr line per entry the server could not resolve: its config path
/// and the server's (value-free) status.
fn failures(entries: &[ResolvedBinding]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|entry| {
            let error = entry.error.as_ref()?;
            let code = status::code_name(tonic::Code::from_i32(error.code));
            Some(format!(
                "warning: {} not resolved: {} ({code})",
                entry.config_path, error.message
            ))
        })
        .collect()
}

/// `KEY=value\n` for each resolved `env.KEY` entry, in the server's order.
/// All entries are checked before anything is built, so a refusal prints nothing.
fn env_lines(entries: &[ResolvedBinding]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let env: Vec<(&str, &ResolvedBinding)> = entries
        .iter()
        .filter(|entry| entry.error.is_none())
        .filter_map(|entry| {
            let key = entry.config_path.strip_prefix(ENV_PREFIX)?;
            Some((key, entry))
        })
        .collect();
    let bad_keys: Vec<&str> = env
        .iter()
        .filter(|(key, _)| !is_env_key(key))
        .map(|(_, entry)| entry.config_path.as_str())
        .collect();
    if !bad_keys.is_empty() {
        bail!(
            "cannot print {} as KEY=value: the name after `env.` must match [A-Za-z_][A-Za-z0-9_]*",
            bad_keys.join(", ")
        );
    }
    let multi_line: Vec<&str> = env
        .iter()
        .filter(|(_, entry)| entry.value.iter().any(|b| matches!(b, b'\n' | b'\r' | 0)))
        .map(|(_, entry)| entry.config_path.as_str())
        .collect();
    if !multi_line.is_empty() {
        bail!(
            "cannot print {} as KEY=value lines: the value contains a newline, carriage return \
             or NUL byte; use --format json",
            multi_line.join(", ")
        );
    }
    let mut out = Zeroizing::new(Vec::new());
    for (key, entry) in env {
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(&entry.value);
        out.push(b'\n');
    }
    Ok(out)
}

fn is_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ResolveBindingsArgs,
    }

    fn parse(args: &[&str]) -> Result<ResolveBindingsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("resolve-bindings").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    fn entry(path: &str, value: &[u8]) -> ResolvedBinding {
        ResolvedBinding {
            config_path: path.to_owned(),
            binding: "tenants/acme/bindings/b1".to_owned(),
            secret: "tenants/acme/secrets/k".to_owned(),
            version: 1,
            value: value.to_vec(),
            error: None,
        }
    }

    fn failed(path: &str) -> ResolvedBinding {
        ResolvedBinding {
            error: Some(coffer_proto::google::rpc::Status {
                code: tonic::Code::FailedPrecondition as i32,
                message: "secret is disabled".to_owned(),
                details: Vec::new(),
            }),
            ..entry(path, b"")
        }
    }

    #[test]
    fn request_carries_consumer_prefix_and_context() {
        let args = parse(&[
            "--tenant",
            "acme",
            "--consumer",
            "agent:a1",
            "--prefix",
            "env.",
            "--context",
            "run_id=r9",
            "--context",
            "issue_id=3",
        ])
        .unwrap();
        let req = args.request().unwrap();
        assert_eq!(req.parent, "tenants/acme");
        assert_eq!(req.consumer.unwrap().kind, "agent");
        assert_eq!(req.config_path_prefix, "env.");
        assert_eq!(req.context["run_id"], "r9");
        assert_eq!(req.context.len(), 2);
        let dup = parse(&["--consumer", "a:b", "--context", "k=1", "--context", "k=2"]).unwrap();
        assert!(dup.request().is_err());
        assert!(
            parse(&["--prefix", "env."]).is_err(),
            "--consumer is required"
        );
    }

    #[test]
    fn format_comes_from_format_or_output() {
        let format = |args: &[&str]| parse(args).unwrap().format();
        assert_eq!(
            format(&["--consumer", "a:b"]).unwrap(),
            ResolveFormat::Table
        );
        let env = format(&["--consumer", "a:b", "--format", "env"]).unwrap();
        assert_eq!(env, ResolveFormat::Env);
        let json = format(&["--consumer", "a:b", "--output", "json"]).unwrap();
        assert_eq!(json, ResolveFormat::Json);
        assert!(format(&["--consumer", "a:b", "--output", "raw"]).is_err());
        assert!(format(&["--consumer", "a:b", "--output", "json", "--format", "env"]).is_err());
    }

    #[test]
    fn env_lines_print_env_paths_with_raw_values() {
        let entries = [
            entry("env.OPENAI_API_KEY", b"sk-1 2=3\"'"),
            entry("webhookSecret", b"not env"),
            entry("env._X9", b"\xff"),
            failed("env.MISSING"),
        ];
        let out = env_lines(&entries).unwrap();
        assert_eq!(&out[..], b"OPENAI_API_KEY=sk-1 2=3\"'\n_X9=\xff\n");
        assert!(env_lines(&[]).unwrap().is_empty());
    }

    #[test]
    fn env_lines_refuse_multi_line_values_naming_only_the_path() {
        for value in [&b"line1\nline2"[..], b"a\rb", b"a\0b"] {
            let entries = [entry("env.OK", b"fine"), entry("env.CERT", value)];
            let err = env_lines(&entries).unwrap_err().to_string();
            assert!(err.contains("env.CERT"), "{err}");
            assert!(!err.contains("env.OK"), "{err}");
            assert!(!err.contains("line1") && !err.contains("fine"), "{err}");
        }
        // A value of another path is never printed, so it cannot be refused either.
        assert!(env_lines(&[entry("certPem", b"a\nb")]).is_ok());
    }

    #[test]
    fn env_lines_refuse_keys_that_are_not_variable_names() {
        for path in ["env.", "env.1A", "env.A-B", "env.A=B", "env.A B"] {
            let err = env_lines(&[entry(path, b"v")]).unwrap_err().to_string();
            assert!(err.contains(path), "{err}");
        }
    }

    #[test]
    fn failures_name_the_path_and_status() {
        let lines = failures(&[entry("env.A", b"v"), failed("env.B")]);
        assert_eq!(
            lines,
            ["warning: env.B not resolved: secret is disabled (FAILED_PRECONDITION)"]
        );
    }
}
