//! The client side of the binary: `coffer secrets …`, `coffer bindings …`,
//! `coffer resolve-bindings`, `coffer audit …`, `coffer vaults …`,
//! `coffer import …` and `coffer watch`. Owns the shared connection options,
//! the `secrets` subcommand tree and its dispatch; each concern (connection,
//! request building, versions, vaults, import, error reports) has its module.

pub(crate) mod audit;
pub(crate) mod bindings;
pub(crate) mod conn;
pub(crate) mod health;
pub(crate) mod import;
pub(crate) mod import_file;
pub(crate) mod paging;
pub(crate) mod request;
pub(crate) mod resolve_bindings;
pub(crate) mod secrets;
pub(crate) mod status;
pub(crate) mod sync_file;
pub(crate) mod vault_config;
pub(crate) mod vaults;
pub(crate) mod versions;
pub(crate) mod watch;

use coffer_proto::v1::secrets_service_client::SecretsServiceClient;

use self::conn::ClientOpts;
use self::secrets::{
    CreateArgs, DeleteArgs, GetArgs, LinkArgs, ListArgs, PromoteArgs, RotateArgs, UndeleteArgs,
    UpdateArgs,
};
use self::versions::{ResolveArgs, VersionsCommand};
use crate::output::{self, OutputFormat};

/// `coffer secrets`: connection options plus one subcommand.
#[derive(Debug, clap::Args)]
pub(crate) struct SecretsArgs {
    #[command(flatten)]
    pub(crate) opts: ClientOpts,
    #[command(subcommand)]
    pub(crate) command: SecretsCommand,
}

/// The secrets subcommands. Values are read only from --value-stdin,
/// --value-file or --value-env, never from an argument.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SecretsCommand {
    /// Create a secret with its first version.
    Create(CreateArgs),
    /// Create a secret that points at an existing remote secret (reads no value).
    Link(LinkArgs),
    /// Show a secret's metadata.
    Get(GetArgs),
    /// List the tenant's secrets.
    List(ListArgs),
    /// Change display name, description, labels or state.
    Update(UpdateArgs),
    /// Soft-delete a secret (or purge it at once with --force).
    Delete(DeleteArgs),
    /// Restore a soft-deleted secret.
    Undelete(UndeleteArgs),
    /// Add a new version; it becomes current unless --stage-only.
    Rotate(RotateArgs),
    /// Make an enabled version current (finish a staged rotation or roll back).
    Promote(PromoteArgs),
    /// List and manage a secret's versions.
    #[command(subcommand)]
    Versions(VersionsCommand),
    /// Print a secret's value (raw bytes, no newline; --output json for base64).
    Resolve(ResolveArgs),
}

/// Runs one `coffer secrets` subcommand. Local input (names, labels, the
/// value) is checked before connecting, so a bad call fails fast.
pub(crate) async fn run(args: SecretsArgs) -> anyhow::Result<()> {
    let SecretsArgs { opts, command } = args;
    let tenant = opts.tenant.as_str();
    // Checked before any call, so a create never succeeds only to fail printing.
    let format = match (&command, opts.output) {
        (SecretsCommand::Resolve(_), format) => format.unwrap_or(OutputFormat::Raw),
        (_, Some(OutputFormat::Raw)) => {
            anyhow::bail!("--output raw is only for `coffer secrets resolve`")
        }
        (_, format) => format.unwrap_or(OutputFormat::Table),
    };
    match command {
        SecretsCommand::Create(args) => {
            let value = args.value.source()?.read()?;
            let req = args.request(tenant, value)?;
            let mut client = client(&opts).await?;
            let secret = client.create_secret(req).await?.into_inner();
            output::emit(&secret, format)
        }
        SecretsCommand::Link(args) => {
            let req = args.request(tenant)?;
            let secret = client(&opts).await?.create_secret(req).await?.into_inner();
            output::emit(&secret, format)
        }
        SecretsCommand::Get(args) => {
            let req = args.request(tenant)?;
            let secret = client(&opts).await?.get_secret(req).await?.into_inner();
            output::emit(&secret, format)
        }
        SecretsCommand::List(args) => {
            let req = args.request(tenant)?;
            let mut client = client(&opts).await?;
            let resp = paging::collect(async |req| client.list_secrets(req).await, req, args.all())
                .await?;
            output::emit(&resp, format)
        }
        SecretsCommand::Update(args) => {
            let req = args.request(tenant)?;
            let secret = client(&opts).await?.update_secret(req).await?.into_inner();
            output::emit(&secret, format)
        }
        SecretsCommand::Delete(args) => {
            let req = args.request(tenant)?;
            let secret = client(&opts).await?.delete_secret(req).await?.into_inner();
            output::emit(&secret, format)
        }
        SecretsCommand::Undelete(args) => {
            let req = args.request(tenant)?;
            let secret = client(&opts)
                .await?
                .undelete_secret(req)
                .await?
                .into_inner();
            output::emit(&secret, format)
        }
        SecretsCommand::Rotate(args) => {
            let value = args.value.source()?.read()?;
            let req = args.request(tenant, value)?;
            let mut client = client(&opts).await?;
            let version = client.rotate_secret(req).await?.into_inner();
            output::emit(&version, format)
        }
        SecretsCommand::Promote(args) => {
            let req = args.request(tenant)?;
            let mut client = client(&opts).await?;
            let secret = client.promote_secret_version(req).await?.into_inner();
            output::emit(&secret, format)
        }
        SecretsCommand::Versions(cmd) => {
            versions::run(&mut client(&opts).await?, tenant, format, cmd).await
        }
        SecretsCommand::Resolve(args) => {
            let req = args.request(tenant)?;
            versions::resolve(&mut client(&opts).await?, req, format).await
        }
    }
}

async fn client(
    opts: &ClientOpts,
) -> anyhow::Result<SecretsServiceClient<tonic::transport::Channel>> {
    Ok(SecretsServiceClient::new(opts.connect().await?))
}

/// `--output` for commands that print metadata only: table (the default) or json.
fn plain_format(output: Option<OutputFormat>) -> anyhow::Result<OutputFormat> {
    match output {
        Some(OutputFormat::Raw) => {
            anyhow::bail!("--output raw is only for `coffer secrets resolve`")
        }
        format => Ok(format.unwrap_or(OutputFormat::Table)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;
    use coffer_proto::v1::{create_secret_request, secret};

    use super::*;
    use crate::input::ValueSource;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: SecretsArgs,
    }

    fn parse(args: &[&str]) -> Result<SecretsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("secrets").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    #[test]
    fn values_are_never_taken_from_arguments() {
        assert!(parse(&["create", "k", "--value", "s3cr3t"]).is_err());
        assert!(parse(&["create", "k", "s3cr3t", "--value-stdin"]).is_err());
        let missing = parse(&["create", "k"]).unwrap_err();
        assert_eq!(
            missing.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let two = parse(&["rotate", "k", "--value-stdin", "--value-env", "V"]).unwrap_err();
        assert_eq!(two.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn create_builds_the_request_under_the_tenant() {
        let args = parse(&[
            "create",
            "openai-key",
            "--tenant",
            "acme",
            "--display-name",
            "OpenAI",
            "--label",
            "env=prod",
            "--request-id",
            "6F9619FF-8B86-D011-B42D-00C04FC964FF",
            "--value-env",
            "TOKEN",
        ])
        .unwrap();
        let SecretsCommand::Create(create) = args.command else {
            panic!("parsed as another command");
        };
        let source = create.value.source().unwrap();
        assert_eq!(source, ValueSource::Env("TOKEN".into()));
        let value = source
            .read_with(std::io::empty(), |_| Some("v".into()))
            .unwrap();
        let req = create.request(&args.opts.tenant, value).unwrap();
        assert_eq!(req.parent, "tenants/acme");
        assert_eq!(req.secret_id, "openai-key");
        assert_eq!(req.request_id, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        let secret = req.secret.unwrap();
        assert_eq!(secret.display_name, "OpenAI");
        assert_eq!(secret.labels["env"], "prod");
        assert_eq!(
            req.source,
            Some(create_secret_request::Source::Value(b"v".to_vec()))
        );
    }

    #[test]
    fn create_derives_the_key_from_the_display_name() {
        let request = |args: &[&str]| {
            let args = parse(args).unwrap();
            let SecretsCommand::Create(create) = args.command else {
                panic!("parsed as another command");
            };
            let value = create
                .value
                .source()
                .unwrap()
                .read_with(std::io::empty(), |_| Some("v".into()))
                .unwrap();
            create.request(&args.opts.tenant, value)
        };
        let req = request(&[
            "create",
            "--display-name",
            "OpenAI API Key",
            "--value-env",
            "V",
        ])
        .unwrap();
        assert_eq!(req.secret_id, "openai-api-key");
        assert_eq!(req.secret.unwrap().display_name, "OpenAI API Key");
        assert!(request(&["create", "--display-name", "!!!", "--value-env", "V"]).is_err());
        assert!(request(&["create", "--value-env", "V"]).is_err());
    }

    #[test]
    fn update_masks_only_the_flags_given() {
        let args = parse(&[
            "--tenant",
            "acme",
            "update",
            "k",
            "--state",
            "disabled",
            "--clear-labels",
            "--etag",
            "e1",
        ])
        .unwrap();
        let SecretsCommand::Update(update) = args.command else {
            panic!("parsed as another command");
        };
        let req = update.request(&args.opts.tenant).unwrap();
        assert_eq!(req.update_mask.unwrap().paths, ["labels", "state"]);
        let secret = req.secret.unwrap();
        assert_eq!(secret.name, "tenants/acme/secrets/k");
        assert_eq!(secret.state(), secret::State::Disabled);
        assert_eq!(secret.etag, "e1");
        assert!(secret.labels.is_empty());

        let SecretsCommand::Update(nothing) = parse(&["update", "k"]).unwrap().command else {
            panic!("parsed as another command");
        };
        assert!(nothing.request("default").is_err());
        assert!(parse(&["update", "k", "--clear-labels", "--label", "a=b"]).is_err());
        assert!(parse(&["update", "k", "--state", "deleted"]).is_err());
    }

    #[test]
    fn global_options_have_defaults_and_go_anywhere() {
        let args = parse(&["get", "k"]).unwrap();
        // COFFER_* variables may be set around the test run; only check them when absent.
        if std::env::var_os("COFFER_SERVER").is_none() {
            assert_eq!(args.opts.server, "http://127.0.0.1:50051");
        }
        if std::env::var_os("COFFER_TENANT").is_none() {
            assert_eq!(args.opts.tenant, "default");
        }
        assert_eq!(args.opts.output, None);
        let args = parse(&[
            "versions",
            "list",
            "k",
            "--output",
            "json",
            "--timeout",
            "5",
        ])
        .unwrap();
        assert_eq!(args.opts.output, Some(OutputFormat::Json));
        assert_eq!(args.opts.timeout, 5);
        assert!(parse(&["get", "k", "--output", "yaml"]).is_err());
        let args = parse(&["get", "k", "--key", "client.key", "--cert", "c.pem"]).unwrap();
        assert_eq!(args.opts.key, Some("client.key".into()));
        let SecretsCommand::Get(get) = args.command else {
            panic!("parsed as another command");
        };
        assert_eq!(get.request("t").unwrap().name, "tenants/t/secrets/k");
    }

    #[test]
    fn version_numbers_and_delete_flags_are_checked() {
        assert!(parse(&["promote", "k", "0"]).is_err());
        assert!(parse(&["versions", "destroy", "k", "-1"]).is_err());
        assert!(parse(&["versions", "disable", "k", "2", "--etag", "e"]).is_ok());
        assert!(parse(&["delete", "k", "--force", "--recovery-window-days", "7"]).is_err());
        let args = parse(&["delete", "k", "--recovery-window-days", "7"]).unwrap();
        let SecretsCommand::Delete(delete) = args.command else {
            panic!("parsed as another command");
        };
        let req = delete.request("t1").unwrap();
        assert_eq!(req.name, "tenants/t1/secrets/k");
        assert_eq!(req.recovery_window_days, 7);
        assert!(!req.force);
    }

    #[test]
    fn resolve_takes_consumer_pairs_and_context() {
        assert!(parse(&["resolve", "k", "--consumer-kind", "agent"]).is_err());
        let args = parse(&[
            "resolve",
            "k",
            "--version",
            "2",
            "--consumer-kind",
            "agent",
            "--consumer-id",
            "a1",
            "--context",
            "run_id=r9",
        ])
        .unwrap();
        let SecretsCommand::Resolve(resolve) = args.command else {
            panic!("parsed as another command");
        };
        let req = resolve.request("default").unwrap();
        assert_eq!(req.version, "2");
        assert_eq!(req.consumer.unwrap().id, "a1");
        assert_eq!(req.context["run_id"], "r9");
    }
}
