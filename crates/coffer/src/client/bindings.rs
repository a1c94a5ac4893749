//! `coffer bindings create|get|list|delete|sync`: which consumer may resolve
//! which secret at which config path. Owns the `KIND:ID` consumer syntax and
//! binding names, shared with `coffer resolve-bindings`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use coffer_core::validate::VersionSelector;
use coffer_core::{SecretName, TenantId};
use coffer_proto::v1::{
    Binding, Consumer, CreateBindingRequest, DeleteBindingRequest, GetBindingRequest,
    ListBindingsRequest, SyncBindingsRequest,
};

use super::conn::ClientOpts;
use super::paging;
use super::{request, sync_file};
use crate::output::{self, OutputFormat};

/// `coffer bindings`: connection options plus one subcommand.
#[derive(Debug, clap::Args)]
pub(crate) struct BindingsArgs {
    #[command(flatten)]
    pub(crate) opts: ClientOpts,
    #[command(subcommand)]
    pub(crate) command: BindingsCommand,
}

/// The binding subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BindingsCommand {
    /// Bind a secret to a consumer at a config path.
    Create(CreateArgs),
    /// Show one binding.
    Get(NameArgs),
    /// List bindings, optionally only one secret's or one consumer's.
    List(ListArgs),
    /// Remove a binding; the consumer can no longer resolve the secret there.
    Delete(DeleteArgs),
    /// Replace a consumer's bindings under a config-path prefix with the set in a file
    ///
    /// The file is JSON (`*.json`) or TOML (`*.toml`) with one key, `bindings`, a
    /// list of entries: `secret` (a key or a full secret name) and `config_path`
    /// are required; `version_selector` (`latest`, a number, or empty = latest),
    /// `required` (default true) and `label` are optional. Other keys are refused.
    /// An empty list (`"bindings": []`, or `bindings = []` in TOML) removes every
    /// binding under the prefix. The change is atomic on the server.
    #[command(verbatim_doc_comment)]
    Sync(SyncArgs),
}

/// A `--consumer KIND:ID` argument (clap value parser). The id is everything
/// after the first colon, so it may itself contain colons.
pub(crate) fn parse_consumer(raw: &str) -> Result<Consumer, String> {
    let Some((kind, id)) = raw.split_once(':') else {
        return Err("consumer must be KIND:ID, e.g. agent:a1".to_owned());
    };
    if kind.is_empty() || id.is_empty() {
        return Err("consumer must be KIND:ID with neither part empty".to_owned());
    }
    if raw.chars().any(char::is_control) {
        return Err("consumer must not contain control characters".to_owned());
    }
    Ok(Consumer {
        kind: kind.to_owned(),
        id: id.to_owned(),
    })
}

/// The binding name for `id` under `tenant`. A full name
/// (`tenants/{t}/bindings/{id}`) is accepted as-is and wins over `--tenant`.
pub(crate) fn binding_name(tenant: &str, id: &str) -> anyhow::Result<String> {
    let (tenant, id) = match id.strip_prefix("tenants/") {
        Some(rest) => match rest.split_once("/bindings/") {
            Some((tenant, id)) => (tenant, id),
            None => bail!("binding name must be tenants/{{tenant}}/bindings/{{id}}"),
        },
        None => (tenant, id),
    };
    let tenant = TenantId::parse(tenant, "--tenant")?;
    let Ok(id) = uuid::Uuid::try_parse(id) else {
        bail!("binding id must be a uuid, as `coffer bindings list` shows it");
    };
    Ok(format!(
        "{}/bindings/{}",
        tenant.resource_name(),
        id.hyphenated()
    ))
}

/// Checks a `--version-selector` / `version_selector` the way the server will.
pub(crate) fn version_selector(raw: &str, field: &str) -> anyhow::Result<String> {
    VersionSelector::parse(raw, field)?;
    Ok(raw.to_owned())
}

/// `coffer bindings create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`.
    #[arg(long, value_name = "KEY")]
    secret: String,
    /// Who consumes the value, as KIND:ID (e.g. agent:a1, project:p7).
    #[arg(long, value_name = "KIND:ID", value_parser = parse_consumer)]
    consumer: Consumer,
    /// Where the consumer expects the value, e.g. `env.OPENAI_API_KEY`.
    #[arg(long, value_name = "PATH")]
    config_path: String,
    /// `latest` or a version number to pin [default: latest].
    #[arg(long, value_name = "latest|N")]
    version_selector: Option<String>,
    /// A binding that may fail to resolve without failing `resolve-bindings`.
    #[arg(long)]
    optional: bool,
    /// A free-form label shown with the binding.
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,
    /// A UUID that makes the call idempotent: a replay returns the first result.
    #[arg(long, value_name = "UUID")]
    request_id: Option<uuid::Uuid>,
}

impl CreateArgs {
    /// A full secret name decides the tenant, as for `coffer secrets create`.
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<CreateBindingRequest> {
        let secret = request::secret_name(tenant, &self.secret)?;
        let parent = SecretName::parse(&secret, "--secret")?
            .tenant
            .resource_name();
        let version_selector = match &self.version_selector {
            Some(raw) => version_selector(raw, "--version-selector")?,
            None => String::new(),
        };
        Ok(CreateBindingRequest {
            parent,
            binding: Some(Binding {
                secret,
                consumer: Some(self.consumer.clone()),
                config_path: self.config_path.clone(),
                version_selector,
                required: Some(!self.optional),
                label: self.label.clone().unwrap_or_default(),
                ..Binding::default()
            }),
            request_id: self
                .request_id
                .map(|id| id.hyphenated().to_string())
                .unwrap_or_default(),
        })
    }
}

/// `coffer bindings get ID`.
#[derive(Debug, clap::Args)]
pub(crate) struct NameArgs {
    /// The binding id (a uuid), or a full name `tenants/{t}/bindings/{id}`.
    id: String,
}

/// `coffer bindings list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only the bindings of this secret (a key or a full secret name).
    #[arg(long, value_name = "KEY")]
    secret: Option<String>,
    /// Only the bindings of this consumer, as KIND:ID.
    #[arg(long, value_name = "KIND:ID", value_parser = parse_consumer)]
    consumer: Option<Consumer>,
    /// Bindings per page (the server caps it at 1000).
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
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<ListBindingsRequest> {
        let secret = match &self.secret {
            Some(key) => request::secret_name(tenant, key)?,
            None => String::new(),
        };
        Ok(ListBindingsRequest {
            parent: request::parent(tenant)?,
            secret,
            consumer: self.consumer.clone(),
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.clone().unwrap_or_default(),
        })
    }
}

/// `coffer bindings delete ID`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    target: NameArgs,
    /// Only delete if the binding still has this etag.
    #[arg(long)]
    etag: Option<String>,
}

impl DeleteArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<DeleteBindingRequest> {
        Ok(DeleteBindingRequest {
            name: binding_name(tenant, &self.target.id)?,
            etag: self.etag.clone().unwrap_or_default(),
        })
    }
}

/// `coffer bindings sync`.
#[derive(Debug, clap::Args)]
pub(crate) struct SyncArgs {
    /// The consumer whose bindings are replaced, as KIND:ID.
    #[arg(long, value_name = "KIND:ID", value_parser = parse_consumer)]
    consumer: Consumer,
    /// Only bindings whose config path starts with this are replaced (e.g. `env.`);
    /// an empty prefix replaces all of the consumer's bindings.
    #[arg(long, value_name = "PREFIX")]
    prefix: String,
    /// The desired set: a `*.json` or `*.toml` file.
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
}

impl SyncArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<SyncBindingsRequest> {
        let text = std::fs::read_to_string(&self.file)
            .with_context(|| format!("cannot read sync file {}", self.file.display()))?;
        let bindings = sync_file::parse(&self.file, &text, tenant, &self.prefix)?;
        Ok(SyncBindingsRequest {
            parent: request::parent(tenant)?,
            consumer: Some(self.consumer.clone()),
            config_path_prefix: self.prefix.clone(),
            bindings,
        })
    }
}

/// Runs one `coffer bindings` subcommand; local input is checked before connecting.
pub(crate) async fn run(args: BindingsArgs) -> anyhow::Result<()> {
    let BindingsArgs { opts, command } = args;
    let tenant = opts.tenant.as_str();
    let format = super::plain_format(opts.output)?;
    match command {
        BindingsCommand::Create(args) => {
            let req = args.request(tenant)?;
            let binding = super::client(&opts)
                .await?
                .create_binding(req)
                .await?
                .into_inner();
            output::emit(&binding, format)
        }
        BindingsCommand::Get(args) => {
            let name = binding_name(tenant, &args.id)?;
            let binding = super::client(&opts)
                .await?
                .get_binding(GetBindingRequest { name })
                .await?
                .into_inner();
            output::emit(&binding, format)
        }
        BindingsCommand::List(args) => {
            let req = args.request(tenant)?;
            let mut client = super::client(&opts).await?;
            let resp =
                paging::collect(async |req| client.list_bindings(req).await, req, args.all).await?;
            output::emit(&resp, format)
        }
        BindingsCommand::Delete(args) => {
            let req = args.request(tenant)?;
            let name = req.name.clone();
            let resp = super::client(&opts)
                .await?
                .delete_binding(req)
                .await?
                .into_inner();
            match format {
                OutputFormat::Table => output::print_line(&format!("deleted {name}")),
                _ => output::emit(&resp, format),
            }
        }
        BindingsCommand::Sync(args) => {
            let req = args.request(tenant)?;
            let resp = super::client(&opts)
                .await?
                .sync_bindings(req)
                .await?
                .into_inner();
            output::emit(&resp, format)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BindingsArgs,
    }

    fn parse(args: &[&str]) -> Result<BindingsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bindings").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    #[test]
    fn consumers_are_kind_colon_id() {
        let c = parse_consumer("agent:a1").unwrap();
        assert_eq!((c.kind.as_str(), c.id.as_str()), ("agent", "a1"));
        let c = parse_consumer("run:urn:x:9").unwrap();
        assert_eq!((c.kind.as_str(), c.id.as_str()), ("run", "urn:x:9"));
        assert!(parse_consumer("agent").is_err());
        assert!(parse_consumer(":a1").is_err());
        assert!(parse_consumer("agent:").is_err());
        assert!(parse_consumer("agent:a\n1").is_err());
    }

    #[test]
    fn binding_names_come_from_an_id_or_a_full_name() {
        const ID: &str = "01a22287-539d-7225-baf9-a200c833d866";
        assert_eq!(
            binding_name("acme", ID).unwrap(),
            format!("tenants/acme/bindings/{ID}")
        );
        assert_eq!(
            binding_name("default", &format!("tenants/acme/bindings/{ID}")).unwrap(),
            format!("tenants/acme/bindings/{ID}")
        );
        assert_eq!(
            binding_name("acme", &ID.to_uppercase()).unwrap(),
            format!("tenants/acme/bindings/{ID}")
        );
        assert!(binding_name("acme", "").is_err());
        assert!(binding_name("acme", "b1").is_err());
        assert!(binding_name("acme", &format!("{ID}/x")).is_err());
        assert!(binding_name("acme", "tenants/acme/secrets/k").is_err());
        assert!(binding_name("acme", "tenants/acme/bindings/").is_err());
        assert!(binding_name("Bad!", ID).is_err());
    }

    #[test]
    fn create_builds_a_required_binding_by_default() {
        let args = parse(&[
            "--tenant",
            "acme",
            "create",
            "--secret",
            "openai-key",
            "--consumer",
            "agent:a1",
            "--config-path",
            "env.OPENAI_API_KEY",
        ])
        .unwrap();
        let BindingsCommand::Create(create) = args.command else {
            panic!("parsed as another command");
        };
        let req = create.request(&args.opts.tenant).unwrap();
        assert_eq!(req.parent, "tenants/acme");
        assert!(req.request_id.is_empty());
        let binding = req.binding.unwrap();
        assert_eq!(binding.secret, "tenants/acme/secrets/openai-key");
        assert_eq!(binding.consumer.unwrap().kind, "agent");
        assert_eq!(binding.config_path, "env.OPENAI_API_KEY");
        assert_eq!(binding.required, Some(true));
        assert_eq!(binding.version_selector, "");
    }

    #[test]
    fn create_takes_pins_optional_and_full_secret_names() {
        let args = parse(&[
            "create",
            "--secret",
            "tenants/t2/secrets/db",
            "--consumer",
            "project:p7",
            "--config-path",
            "dbPassword",
            "--version-selector",
            "3",
            "--optional",
            "--label",
            "primary",
            "--request-id",
            "6F9619FF-8B86-D011-B42D-00C04FC964FF",
        ])
        .unwrap();
        let BindingsCommand::Create(create) = args.command else {
            panic!("parsed as another command");
        };
        let req = create.request("default").unwrap();
        assert_eq!(req.parent, "tenants/t2");
        assert_eq!(req.request_id, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        let binding = req.binding.unwrap();
        assert_eq!(binding.version_selector, "3");
        assert_eq!(binding.required, Some(false));
        assert_eq!(binding.label, "primary");

        let bad = parse(&[
            "create",
            "--secret",
            "k",
            "--consumer",
            "agent:a",
            "--config-path",
            "x",
            "--version-selector",
            "newest",
        ])
        .unwrap();
        let BindingsCommand::Create(create) = bad.command else {
            panic!("parsed as another command");
        };
        assert!(create.request("default").is_err());
        assert!(parse(&["create", "--secret", "k", "--consumer", "agent"]).is_err());
    }

    #[test]
    fn list_filters_and_delete_names() {
        let args = parse(&[
            "list",
            "--secret",
            "k",
            "--consumer",
            "agent:a1",
            "--page-size",
            "5",
        ])
        .unwrap();
        let BindingsCommand::List(list) = args.command else {
            panic!("parsed as another command");
        };
        let req = list.request("acme").unwrap();
        assert_eq!(req.parent, "tenants/acme");
        assert_eq!(req.secret, "tenants/acme/secrets/k");
        assert_eq!(req.consumer.unwrap().id, "a1");
        assert_eq!(req.page_size, 5);
        assert!(parse(&["list", "--page-size", "0"]).is_err());

        let id = "01a22287-539d-7225-baf9-a200c833d866";
        let args = parse(&["delete", id, "--etag", "e3"]).unwrap();
        let BindingsCommand::Delete(delete) = args.command else {
            panic!("parsed as another command");
        };
        let req = delete.request("acme").unwrap();
        assert_eq!(req.name, format!("tenants/acme/bindings/{id}"));
        assert_eq!(req.etag, "e3");
    }

    #[test]
    fn sync_reads_the_file_and_needs_consumer_and_prefix() {
        assert!(parse(&["sync", "--consumer", "agent:a1", "--file", "x.json"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desired.toml");
        std::fs::write(
            &path,
            "[[bindings]]\nsecret = \"openai-key\"\nconfig_path = \"env.OPENAI_API_KEY\"\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let args = parse(&[
            "sync",
            "--consumer",
            "agent:a1",
            "--prefix",
            "env.",
            "--file",
            file,
        ])
        .unwrap();
        let BindingsCommand::Sync(sync) = args.command else {
            panic!("parsed as another command");
        };
        let req = sync.request("acme").unwrap();
        assert_eq!(req.parent, "tenants/acme");
        assert_eq!(req.config_path_prefix, "env.");
        assert_eq!(req.consumer.unwrap().id, "a1");
        assert_eq!(req.bindings.len(), 1);
        assert_eq!(req.bindings[0].secret, "tenants/acme/secrets/openai-key");

        let missing = SyncArgs {
            file: dir.path().join("missing.json"),
            ..sync
        };
        let err = missing.request("acme").unwrap_err();
        assert!(format!("{err:#}").contains("missing.json"), "{err:#}");
    }
}
