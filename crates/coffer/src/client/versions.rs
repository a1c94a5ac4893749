//! `coffer secrets versions list|get|disable|enable|destroy` and
//! `coffer secrets resolve`: version-level calls and reading a value.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context;
use coffer_proto::v1::secrets_service_client::SecretsServiceClient;
use coffer_proto::v1::{
    Consumer, ListSecretVersionsRequest, ResolveSecretRequest, ResolveSecretResponse,
};
use tonic::transport::Channel;
use zeroize::{Zeroize, Zeroizing};

use super::paging;
use super::request;
use crate::output::{self, OutputFormat, Render};

/// The version subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum VersionsCommand {
    /// List a secret's versions (newest first as the server orders them).
    List(VersionsListArgs),
    /// Show one version's metadata (never its value).
    Get(VersionArgs),
    /// Make a version unresolvable; the current version cannot be disabled.
    Disable(VersionChangeArgs),
    /// Make a disabled version resolvable again.
    Enable(VersionChangeArgs),
    /// Destroy a version's material for good (irreversible).
    Destroy(VersionChangeArgs),
}

/// `versions list`.
#[derive(Debug, clap::Args)]
pub(crate) struct VersionsListArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`.
    key: String,
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    page_size: Option<i32>,
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
    /// Follow next_page_token until every page is read.
    #[arg(long)]
    all: bool,
}

impl VersionsListArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<ListSecretVersionsRequest> {
        Ok(ListSecretVersionsRequest {
            parent: request::secret_name(tenant, &self.key)?,
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.clone().unwrap_or_default(),
        })
    }
}

/// `versions get KEY VERSION`.
#[derive(Debug, clap::Args)]
pub(crate) struct VersionArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`.
    key: String,
    /// The version number (1, 2, ...).
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    version: i64,
}

impl VersionArgs {
    pub(crate) fn name(&self, tenant: &str) -> anyhow::Result<String> {
        request::version_name(tenant, &self.key, self.version)
    }
}

/// `versions disable|enable|destroy KEY VERSION [--etag]`.
#[derive(Debug, clap::Args)]
pub(crate) struct VersionChangeArgs {
    #[command(flatten)]
    target: VersionArgs,
    /// Only act if the version still has this etag.
    #[arg(long)]
    etag: Option<String>,
}

impl VersionChangeArgs {
    pub(crate) fn name(&self, tenant: &str) -> anyhow::Result<String> {
        self.target.name(tenant)
    }

    pub(crate) fn etag(&self) -> String {
        self.etag.clone().unwrap_or_default()
    }
}

/// Runs one version subcommand.
pub(crate) async fn run(
    client: &mut SecretsServiceClient<Channel>,
    tenant: &str,
    format: OutputFormat,
    cmd: VersionsCommand,
) -> anyhow::Result<()> {
    use coffer_proto::v1::{
        DestroySecretVersionRequest, DisableSecretVersionRequest, EnableSecretVersionRequest,
        GetSecretVersionRequest,
    };
    let version = match cmd {
        VersionsCommand::List(args) => {
            let resp = paging::collect(
                async |req| client.list_secret_versions(req).await,
                args.request(tenant)?,
                args.all,
            )
            .await?;
            return output::emit(&resp, format);
        }
        VersionsCommand::Get(args) => {
            let name = args.name(tenant)?;
            client
                .get_secret_version(GetSecretVersionRequest { name })
                .await?
        }
        VersionsCommand::Disable(args) => {
            let req = DisableSecretVersionRequest {
                name: args.name(tenant)?,
                etag: args.etag(),
            };
            client.disable_secret_version(req).await?
        }
        VersionsCommand::Enable(args) => {
            let req = EnableSecretVersionRequest {
                name: args.name(tenant)?,
                etag: args.etag(),
            };
            client.enable_secret_version(req).await?
        }
        VersionsCommand::Destroy(args) => {
            let req = DestroySecretVersionRequest {
                name: args.name(tenant)?,
                etag: args.etag(),
            };
            client.destroy_secret_version(req).await?
        }
    };
    output::emit(&version.into_inner(), format)
}

/// `coffer secrets resolve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ResolveArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`.
    key: String,
    /// `latest` or a version number (default: the current version).
    #[arg(long)]
    version: Option<String>,
    /// The consumer's kind (agent, project, run, ...), recorded in the audit trail.
    #[arg(long, value_name = "KIND", requires = "consumer_id")]
    consumer_kind: Option<String>,
    /// The consumer's id.
    #[arg(long, value_name = "ID", requires = "consumer_kind")]
    consumer_id: Option<String>,
    /// Where the consumer expects the value, e.g. `env.OPENAI_API_KEY`.
    #[arg(long, value_name = "PATH")]
    config_path: Option<String>,
    /// Audit context as key=value (run_id, issue_id, ...); repeat for more.
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = request::parse_label)]
    context: Vec<(String, String)>,
}

impl ResolveArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<ResolveSecretRequest> {
        let consumer = match (&self.consumer_kind, &self.consumer_id) {
            (Some(kind), Some(id)) => Some(Consumer {
                kind: kind.clone(),
                id: id.clone(),
            }),
            _ => None,
        };
        let mut context = HashMap::new();
        for (key, value) in &self.context {
            if context.insert(key.clone(), value.clone()).is_some() {
                anyhow::bail!("context key {key} is given more than once");
            }
        }
        Ok(ResolveSecretRequest {
            name: request::secret_name(tenant, &self.key)?,
            version: self.version.clone().unwrap_or_default(),
            consumer,
            config_path: self.config_path.clone().unwrap_or_default(),
            context,
        })
    }
}

/// Resolves and prints the value: raw bytes by default, base64 inside JSON
/// with `--output json`, metadata only with `--output table`. Every copy of
/// the value this process holds is wiped before returning.
pub(crate) async fn resolve(
    client: &mut SecretsServiceClient<Channel>,
    req: ResolveSecretRequest,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let mut resp = client.resolve_secret(req).await?.into_inner();
    let result = print_resolved(&resp, format);
    resp.value.zeroize();
    result
}

fn print_resolved(resp: &ResolveSecretResponse, format: OutputFormat) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Raw => out.write_all(&resp.value),
        OutputFormat::Json => {
            let text = Zeroizing::new(output::json(resp)?);
            out.write_all(text.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
        }
        OutputFormat::Table => writeln!(out, "{}", resp.table().trim_end()),
    }
    .and_then(|()| out.flush())
    .context("cannot write to stdout")
}
