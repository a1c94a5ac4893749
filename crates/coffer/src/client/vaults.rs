//! `coffer vaults providers|create|get|list|update|disable|set-default|health`:
//! the tenant's configured provider instances. Owns vault names (shared with
//! `coffer import` and `coffer secrets --vault`) and the VaultService client.

use anyhow::{Context, bail};
use coffer_core::TenantId;
use coffer_proto::v1::vault_service_client::VaultServiceClient;
use coffer_proto::v1::{
    CheckVaultHealthRequest, CreateVaultRequest, DisableVaultRequest, GetVaultRequest,
    ListProvidersRequest, ListVaultsRequest, SetDefaultVaultRequest, UpdateVaultRequest, Vault,
    vault,
};
use tonic::transport::Channel;

use super::conn::ClientOpts;
use super::paging;
use super::request;
use super::vault_config::{self, ConfigArgs, Settings};
use crate::output;

/// `coffer vaults`: connection options plus one subcommand.
#[derive(Debug, clap::Args)]
pub(crate) struct VaultsArgs {
    #[command(flatten)]
    pub(crate) opts: ClientOpts,
    #[command(subcommand)]
    pub(crate) command: VaultsCommand,
}

/// The vault subcommands. Settings never include credentials: the server
/// reaches each provider through its default credential chain.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum VaultsCommand {
    /// List the providers the server offers, their capabilities and whether they are configured.
    Providers,
    /// Create a vault: a configured instance of a provider.
    Create(CreateArgs),
    /// Show one vault, its settings and its last health check.
    Get(NameArgs),
    /// List the tenant's vaults, disabled ones included.
    List(ListArgs),
    /// Change a vault's display name, settings or state
    ///
    /// --set and --config-file replace the whole config: a setting not given
    /// is cleared. --state ready re-enables a disabled vault.
    #[command(verbatim_doc_comment)]
    Update(UpdateArgs),
    /// Disable a vault (soft: secrets that point at it stay, but do not resolve).
    Disable(EtagArgs),
    /// Make a vault the tenant's default for its provider.
    SetDefault(EtagArgs),
    /// Run the provider's health check now and print its result
    ///
    /// Exits with code 1 when the status is not `ok`, so scripts and probes
    /// can rely on the exit code alone.
    #[command(verbatim_doc_comment)]
    Health(NameArgs),
}

/// The parent and vault id for `id` under `tenant`. A full name
/// (`tenants/{t}/vaults/{id}`) is accepted as-is and wins over `--tenant`.
pub(crate) fn parent_and_id(tenant: &str, id: &str) -> anyhow::Result<(String, String)> {
    let (tenant, id) = match id.strip_prefix("tenants/") {
        Some(rest) => match rest.split_once("/vaults/") {
            Some(parts) => parts,
            None => bail!("vault name must be tenants/{{tenant}}/vaults/{{id}}"),
        },
        None => (tenant, id),
    };
    let tenant = TenantId::parse(tenant, "--tenant")?;
    // The server owns the id pattern; this only keeps the name well-formed.
    if id.is_empty() || id.contains('/') || id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("vault id must be one path segment without spaces, e.g. aws-prod");
    }
    Ok((tenant.resource_name(), id.to_owned()))
}

/// `tenants/{t}/vaults/{id}` for a bare id or a full name.
pub(crate) fn vault_name(tenant: &str, id: &str) -> anyhow::Result<String> {
    let (parent, id) = parent_and_id(tenant, id)?;
    Ok(format!("{parent}/vaults/{id}"))
}

/// `coffer vaults create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// The vault id (e.g. `aws-prod`), or a full name `tenants/{t}/vaults/{id}`.
    id: String,
    /// The provider: `aws_secrets_manager` or `local_encrypted` (see `coffer vaults providers`).
    #[arg(long, value_name = "PROVIDER")]
    provider: String,
    #[arg(long, value_name = "NAME")]
    display_name: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// Also make it the tenant's default vault for its provider.
    #[arg(long)]
    default: bool,
}

impl CreateArgs {
    /// Checks every setting against the provider before anything is sent.
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<CreateVaultRequest> {
        let (parent, vault_id) = parent_and_id(tenant, &self.id)?;
        let settings = self.config.settings()?.unwrap_or_default();
        let display_name = self.display_name.clone().unwrap_or_default();
        coffer_core::validate::display_name(&display_name, "--display-name")?;
        Ok(CreateVaultRequest {
            parent,
            vault_id,
            vault: Some(Vault {
                provider: self.provider.clone(),
                display_name,
                config: Some(vault_config::build(&self.provider, &settings)?),
                ..Vault::default()
            }),
        })
    }
}

/// `coffer vaults get|health ID`.
#[derive(Debug, clap::Args)]
pub(crate) struct NameArgs {
    /// The vault id, or a full name `tenants/{t}/vaults/{id}`.
    id: String,
}

/// `coffer vaults disable|set-default ID`.
#[derive(Debug, clap::Args)]
pub(crate) struct EtagArgs {
    /// The vault id, or a full name `tenants/{t}/vaults/{id}`.
    id: String,
    /// Only change the vault if it still has this etag.
    #[arg(long)]
    etag: Option<String>,
}

/// `coffer vaults list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Vaults per page (the server caps it).
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
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<ListVaultsRequest> {
        Ok(ListVaultsRequest {
            parent: request::parent(tenant)?,
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.clone().unwrap_or_default(),
        })
    }
}

/// `--state` for `update`: the states a caller may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SettableState {
    Ready,
    Disabled,
}

/// `coffer vaults update`: each flag given is added to the update mask.
#[derive(Debug, clap::Args)]
pub(crate) struct UpdateArgs {
    /// The vault id, or a full name `tenants/{t}/vaults/{id}`.
    id: String,
    #[arg(long, value_name = "NAME")]
    display_name: Option<String>,
    // Settings replace the whole config (the subcommand's help says so).
    #[command(flatten)]
    config: ConfigArgs,
    /// `ready` re-enables a disabled vault.
    #[arg(long, value_enum)]
    state: Option<SettableState>,
    /// Only update if the vault still has this etag.
    #[arg(long)]
    etag: Option<String>,
}

impl UpdateArgs {
    /// `config` is the provider's full config built from the settings, or
    /// `None` when no setting flag was given.
    pub(crate) fn request(
        &self,
        tenant: &str,
        config: Option<vault::Config>,
    ) -> anyhow::Result<UpdateVaultRequest> {
        let paths: Vec<String> = [
            (self.display_name.is_some(), "display_name"),
            (config.is_some(), "config"),
            (self.state.is_some(), "state"),
        ]
        .into_iter()
        .filter(|(given, _)| *given)
        .map(|(_, path)| path.to_owned())
        .collect();
        if paths.is_empty() {
            bail!("nothing to update; give --display-name, --set, --config-file or --state");
        }
        let display_name = self.display_name.clone().unwrap_or_default();
        coffer_core::validate::display_name(&display_name, "--display-name")?;
        let state = match self.state {
            Some(SettableState::Ready) => vault::State::Ready,
            Some(SettableState::Disabled) => vault::State::Disabled,
            None => vault::State::Unspecified,
        };
        Ok(UpdateVaultRequest {
            vault: Some(Vault {
                name: vault_name(tenant, &self.id)?,
                display_name,
                state: state as i32,
                config,
                etag: self.etag.clone().unwrap_or_default(),
                ..Vault::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        })
    }
}

/// Connects a VaultService client.
pub(crate) async fn client(opts: &ClientOpts) -> anyhow::Result<VaultServiceClient<Channel>> {
    Ok(VaultServiceClient::new(opts.connect().await?))
}

/// Runs one `coffer vaults` subcommand; local input is checked before connecting.
pub(crate) async fn run(args: VaultsArgs) -> anyhow::Result<()> {
    let VaultsArgs { opts, command } = args;
    let tenant = opts.tenant.as_str();
    let format = super::plain_format(opts.output)?;
    match command {
        VaultsCommand::Providers => {
            let parent = request::parent(tenant)?;
            let resp = client(&opts)
                .await?
                .list_providers(ListProvidersRequest { parent })
                .await?
                .into_inner();
            output::emit(&resp, format)
        }
        VaultsCommand::Create(args) => {
            let req = args.request(tenant)?;
            let mut client = client(&opts).await?;
            let created = client.create_vault(req).await?.into_inner();
            if !args.default {
                return output::emit(&created, format);
            }
            let req = SetDefaultVaultRequest {
                name: created.name.clone(),
                etag: created.etag.clone(),
            };
            match client.set_default_vault(req).await {
                Ok(resp) => output::emit(&resp.into_inner(), format),
                Err(status) => {
                    eprintln!(
                        "note: vault {} was created but is not the default",
                        created.name
                    );
                    Err(status.into())
                }
            }
        }
        VaultsCommand::Get(args) => {
            let name = vault_name(tenant, &args.id)?;
            let vault = client(&opts)
                .await?
                .get_vault(GetVaultRequest { name })
                .await?
                .into_inner();
            output::emit(&vault, format)
        }
        VaultsCommand::List(args) => {
            let req = args.request(tenant)?;
            let mut client = client(&opts).await?;
            let resp =
                paging::collect(async |req| client.list_vaults(req).await, req, args.all).await?;
            output::emit(&resp, format)
        }
        VaultsCommand::Update(args) => {
            let name = vault_name(tenant, &args.id)?;
            let settings = args.config.settings()?;
            let mut client = client(&opts).await?;
            let config = match settings {
                Some(settings) => Some(config_for(&mut client, &name, &settings).await?),
                None => None,
            };
            let req = args.request(tenant, config)?;
            let vault = client.update_vault(req).await?.into_inner();
            output::emit(&vault, format)
        }
        VaultsCommand::Disable(args) => {
            let req = DisableVaultRequest {
                name: vault_name(tenant, &args.id)?,
                etag: args.etag.unwrap_or_default(),
            };
            let vault = client(&opts).await?.disable_vault(req).await?.into_inner();
            output::emit(&vault, format)
        }
        VaultsCommand::SetDefault(args) => {
            let req = SetDefaultVaultRequest {
                name: vault_name(tenant, &args.id)?,
                etag: args.etag.unwrap_or_default(),
            };
            let vault = client(&opts)
                .await?
                .set_default_vault(req)
                .await?
                .into_inner();
            output::emit(&vault, format)
        }
        VaultsCommand::Health(args) => {
            let name = vault_name(tenant, &args.id)?;
            let vault = client(&opts)
                .await?
                .check_vault_health(CheckVaultHealthRequest { name: name.clone() })
                .await?
                .into_inner();
            let health = vault.health.unwrap_or_default();
            output::emit(&health, format)?;
            if !health.status.eq_ignore_ascii_case("ok") {
                bail!("vault {name} is not healthy (status {})", health.status);
            }
            Ok(())
        }
    }
}

/// The provider's config for an update: the vault's provider is read first,
/// because settings only have a meaning (and a type) for one provider.
async fn config_for(
    client: &mut VaultServiceClient<Channel>,
    name: &str,
    settings: &Settings,
) -> anyhow::Result<vault::Config> {
    let current = client
        .get_vault(GetVaultRequest {
            name: name.to_owned(),
        })
        .await?
        .into_inner();
    vault_config::build(&current.provider, settings)
        .with_context(|| format!("invalid settings for vault {name}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;
    use coffer_proto::v1::{AwsSecretsManagerConfig, LocalEncryptedConfig};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: VaultsArgs,
    }

    fn parse(args: &[&str]) -> Result<VaultsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("vaults").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    fn create(args: &[&str]) -> anyhow::Result<CreateVaultRequest> {
        let args = parse(args).unwrap();
        let VaultsCommand::Create(create) = args.command else {
            panic!("parsed as another command");
        };
        create.request(&args.opts.tenant)
    }

    #[test]
    fn vault_names_come_from_an_id_or_a_full_name() {
        assert_eq!(
            vault_name("acme", "aws-prod").unwrap(),
            "tenants/acme/vaults/aws-prod"
        );
        assert_eq!(
            vault_name("default", "tenants/acme/vaults/aws-prod").unwrap(),
            "tenants/acme/vaults/aws-prod"
        );
        assert_eq!(
            parent_and_id("default", "tenants/acme/vaults/v1").unwrap(),
            ("tenants/acme".to_owned(), "v1".to_owned())
        );
        assert!(vault_name("acme", "").is_err());
        assert!(vault_name("acme", "a/b").is_err());
        assert!(vault_name("acme", "a b").is_err());
        assert!(vault_name("acme", "tenants/acme/secrets/k").is_err());
        assert!(vault_name("acme", "tenants/acme/vaults/").is_err());
        assert!(vault_name("acme", "tenants/acme/vaults/v/x").is_err());
        assert!(vault_name("Bad!", "v").is_err());
    }

    #[test]
    fn create_maps_settings_onto_the_provider_config() {
        let req = create(&[
            "--tenant",
            "acme",
            "create",
            "aws-prod",
            "--provider",
            "aws_secrets_manager",
            "--display-name",
            "AWS prod",
            "--set",
            "region=eu-west-1",
            "--set",
            "recovery_window_days=7",
        ])
        .unwrap();
        assert_eq!(req.parent, "tenants/acme");
        assert_eq!(req.vault_id, "aws-prod");
        let vault = req.vault.unwrap();
        assert_eq!(vault.provider, "aws_secrets_manager");
        assert_eq!(vault.display_name, "AWS prod");
        assert_eq!(
            vault.config,
            Some(vault::Config::AwsSecretsManager(AwsSecretsManagerConfig {
                region: "eu-west-1".into(),
                recovery_window_days: 7,
                ..AwsSecretsManagerConfig::default()
            }))
        );

        let local = create(&["create", "local", "--provider", "local_encrypted"]).unwrap();
        assert_eq!(
            local.vault.unwrap().config,
            Some(vault::Config::LocalEncrypted(LocalEncryptedConfig {}))
        );
        assert!(parse(&["create", "v"]).is_err(), "--provider is required");
    }

    #[test]
    fn create_refuses_bad_settings_before_connecting() {
        let base = ["create", "v", "--provider", "aws_secrets_manager", "--set"];
        let err = create(&[&base[..], &["aws_secret_access_key=AKIA-canary"]].concat())
            .unwrap_err()
            .to_string();
        assert!(err.contains("never stores provider credentials"), "{err}");
        assert!(!err.contains("canary"), "{err}");
        let err = create(&[&base[..], &["bogus=1"]].concat())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown setting bogus"), "{err}");
        assert!(err.contains("known settings: region,"), "{err}");
        let err = create(&[&base[..], &["recovery_window_days=soon"]].concat())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "setting recovery_window_days must be a whole number");
        let err = create(&["create", "v", "--provider", "nope"])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("unknown provider nope"), "{err}");
    }

    #[test]
    fn update_masks_only_the_flags_given() {
        let args = parse(&[
            "update",
            "tenants/acme/vaults/aws-prod",
            "--state",
            "ready",
            "--etag",
            "e2",
        ])
        .unwrap();
        let VaultsCommand::Update(update) = args.command else {
            panic!("parsed as another command");
        };
        let req = update.request("default", None).unwrap();
        assert_eq!(req.update_mask.unwrap().paths, ["state"]);
        let vault = req.vault.unwrap();
        assert_eq!(vault.name, "tenants/acme/vaults/aws-prod");
        assert_eq!(vault.state(), vault::State::Ready);
        assert_eq!(vault.etag, "e2");
        assert_eq!(vault.config, None);

        let config = vault::Config::LocalEncrypted(LocalEncryptedConfig {});
        let args = parse(&["update", "v", "--display-name", "Local"]).unwrap();
        let VaultsCommand::Update(update) = args.command else {
            panic!("parsed as another command");
        };
        let req = update.request("acme", Some(config.clone())).unwrap();
        assert_eq!(req.update_mask.unwrap().paths, ["display_name", "config"]);
        assert_eq!(req.vault.unwrap().config, Some(config));

        let VaultsCommand::Update(nothing) = parse(&["update", "v"]).unwrap().command else {
            panic!("parsed as another command");
        };
        assert!(nothing.request("acme", None).is_err());
        assert!(parse(&["update", "v", "--state", "warning"]).is_err());
    }

    #[test]
    fn list_pages_and_other_commands_parse() {
        let args = parse(&["list", "--page-size", "5", "--all"]).unwrap();
        let VaultsCommand::List(list) = args.command else {
            panic!("parsed as another command");
        };
        assert!(list.all);
        let req = list.request("acme").unwrap();
        assert_eq!((req.parent.as_str(), req.page_size), ("tenants/acme", 5));
        assert!(parse(&["list", "--page-size", "0"]).is_err());
        assert!(parse(&["providers"]).is_ok());
        assert!(parse(&["set-default", "v", "--etag", "e"]).is_ok());
        assert!(parse(&["disable", "v"]).is_ok());
        assert!(parse(&["health"]).is_err());
    }
}
