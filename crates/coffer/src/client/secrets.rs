//! `coffer secrets create|link|get|list|update|delete|undelete|rotate|promote`:
//! their arguments, the requests they build, and the calls that send them.

use coffer_core::{SecretName, TenantId};
use coffer_proto::v1::{
    CreateSecretRequest, DeleteSecretRequest, ExternalRef, GetSecretRequest, ListSecretsRequest,
    PromoteSecretVersionRequest, RotateSecretRequest, Secret, UndeleteSecretRequest,
    UpdateSecretRequest, create_secret_request, rotate_secret_request, secret,
};

use super::request::{self, UpdateFields};
use super::{import_file, vaults};
use crate::input::{SecretValue, ValueSourceArgs};

/// `coffer secrets create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// The secret key (`[a-z0-9][a-z0-9_.-]{0,119}`), or a full name
    /// `tenants/{t}/secrets/{key}`. Omitted: derived from --display-name
    /// (lowercased, other characters runs become `-`).
    key: Option<String>,
    /// A human-readable name, unique in the tenant.
    #[arg(long, value_name = "NAME")]
    display_name: Option<String>,
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// A label as key=value; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = request::parse_label)]
    labels: Vec<(String, String)>,
    /// The vault to write the value into (id or full name) [default: the
    /// tenant's default vault for --provider, else the built-in store].
    #[arg(long, value_name = "ID")]
    vault: Option<String>,
    /// The provider, e.g. `aws_secrets_manager`; without --vault the
    /// tenant's default vault for it is used.
    #[arg(long, value_name = "PROVIDER")]
    provider: Option<String>,
    /// A UUID that makes the call idempotent: a replay returns the first result.
    #[arg(long, value_name = "UUID")]
    request_id: Option<uuid::Uuid>,
    #[command(flatten)]
    pub(crate) value: ValueSourceArgs,
}

impl CreateArgs {
    pub(crate) fn request(
        &self,
        tenant: &str,
        value: SecretValue,
    ) -> anyhow::Result<CreateSecretRequest> {
        let key = key_or_derived(self.key.as_deref(), self.display_name.as_deref())?;
        let (parent, secret_id) = request::parent_and_key(tenant, &key)?;
        Ok(CreateSecretRequest {
            secret: Some(Secret {
                display_name: self.display_name.clone().unwrap_or_default(),
                description: self.description.clone().unwrap_or_default(),
                labels: request::labels(&self.labels)?,
                vault: vault_under(&parent, self.vault.as_deref())?,
                provider: self.provider.clone().unwrap_or_default(),
                ..Secret::default()
            }),
            parent,
            secret_id,
            source: Some(create_secret_request::Source::Value(value.take())),
            request_id: uuid_string(self.request_id),
        })
    }
}

/// `coffer secrets link`: a secret whose value stays in a remote vault.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["vault", "provider"])))]
pub(crate) struct LinkArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`. Omitted:
    /// derived from --display-name.
    key: Option<String>,
    /// The vault that holds the remote secret (id or full name).
    #[arg(long, value_name = "ID")]
    vault: Option<String>,
    /// The provider, to use the tenant's default vault for it instead of --vault.
    #[arg(long, value_name = "PROVIDER")]
    provider: Option<String>,
    /// The remote secret, e.g. an AWS secret ARN or name.
    #[arg(long = "ref", value_name = "REF")]
    external_ref: String,
    /// Pin this remote version [default: follow the remote's current version].
    #[arg(long, value_name = "V")]
    version_ref: Option<String>,
    #[arg(long, value_name = "NAME")]
    display_name: Option<String>,
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// A label as key=value; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = request::parse_label)]
    labels: Vec<(String, String)>,
    /// A UUID that makes the call idempotent: a replay returns the first result.
    #[arg(long, value_name = "UUID")]
    request_id: Option<uuid::Uuid>,
}

impl LinkArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<CreateSecretRequest> {
        let version_ref = self.version_ref.clone().unwrap_or_default();
        import_file::check_ref(&self.external_ref, &version_ref)?;
        let key = key_or_derived(self.key.as_deref(), self.display_name.as_deref())?;
        let (parent, secret_id) = request::parent_and_key(tenant, &key)?;
        Ok(CreateSecretRequest {
            secret: Some(Secret {
                display_name: self.display_name.clone().unwrap_or_default(),
                description: self.description.clone().unwrap_or_default(),
                labels: request::labels(&self.labels)?,
                vault: vault_under(&parent, self.vault.as_deref())?,
                provider: self.provider.clone().unwrap_or_default(),
                ..Secret::default()
            }),
            parent,
            secret_id,
            source: Some(create_secret_request::Source::External(ExternalRef {
                r#ref: self.external_ref.clone(),
                version_ref,
            })),
            request_id: uuid_string(self.request_id),
        })
    }
}

/// The key given, or one derived from the display name.
fn key_or_derived(key: Option<&str>, display_name: Option<&str>) -> anyhow::Result<String> {
    match (key, display_name) {
        (Some(key), _) => Ok(key.to_owned()),
        (None, Some(display_name)) => Ok(coffer_core::SecretKey::normalize(
            display_name,
            "--display-name",
        )
        .map_err(|err| anyhow::anyhow!("{err}"))?
        .to_string()),
        (None, None) => anyhow::bail!("give a KEY, or a --display-name to derive the key from"),
    }
}

/// The vault name for `--vault` under the secret's tenant (`parent`), or
/// empty when no vault was given.
fn vault_under(parent: &str, vault: Option<&str>) -> anyhow::Result<String> {
    match vault {
        Some(id) => vaults::vault_name(TenantId::from_parent(parent, "KEY")?.as_str(), id),
        None => Ok(String::new()),
    }
}

/// `coffer secrets list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// e.g. `state = ACTIVE AND labels.env = "prod"`.
    #[arg(long)]
    filter: Option<String>,
    /// Include soft-deleted secrets.
    #[arg(long)]
    show_deleted: bool,
    /// Secrets per page (the server caps it at 1000).
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
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<ListSecretsRequest> {
        Ok(ListSecretsRequest {
            parent: request::parent(tenant)?,
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.clone().unwrap_or_default(),
            filter: self.filter.clone().unwrap_or_default(),
            show_deleted: self.show_deleted,
        })
    }

    pub(crate) fn all(&self) -> bool {
        self.all
    }
}

/// `--state` for `update`: the two states a caller may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SettableState {
    Active,
    Disabled,
}

/// `coffer secrets update`: each flag given is added to the update mask.
#[derive(Debug, clap::Args)]
pub(crate) struct UpdateArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`.
    key: String,
    #[arg(long, value_name = "NAME")]
    display_name: Option<String>,
    /// An empty string clears the description.
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Replaces the whole label set; repeat for more labels.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = request::parse_label)]
    labels: Vec<(String, String)>,
    /// Removes every label.
    #[arg(long, conflicts_with = "labels")]
    clear_labels: bool,
    #[arg(long, value_enum)]
    state: Option<SettableState>,
    /// Only update if the secret still has this etag.
    #[arg(long)]
    etag: Option<String>,
}

impl UpdateArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<UpdateSecretRequest> {
        let update_mask = request::update_mask(UpdateFields {
            display_name: self.display_name.is_some(),
            description: self.description.is_some(),
            labels: self.clear_labels || !self.labels.is_empty(),
            state: self.state.is_some(),
        })?;
        let state = match self.state {
            Some(SettableState::Active) => secret::State::Active,
            Some(SettableState::Disabled) => secret::State::Disabled,
            None => secret::State::Unspecified,
        };
        Ok(UpdateSecretRequest {
            secret: Some(Secret {
                name: request::secret_name(tenant, &self.key)?,
                display_name: self.display_name.clone().unwrap_or_default(),
                description: self.description.clone().unwrap_or_default(),
                labels: request::labels(&self.labels)?,
                state: state as i32,
                etag: self.etag.clone().unwrap_or_default(),
                ..Secret::default()
            }),
            update_mask: Some(update_mask),
        })
    }
}

/// `coffer secrets delete`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`.
    key: String,
    /// Purge at once instead of a soft delete (irreversible).
    #[arg(long)]
    force: bool,
    /// Days until a soft-deleted secret is purged: 7 to 30 (server default 30).
    #[arg(long, value_name = "N", conflicts_with = "force")]
    recovery_window_days: Option<i32>,
    #[arg(long)]
    etag: Option<String>,
}

impl DeleteArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<DeleteSecretRequest> {
        Ok(DeleteSecretRequest {
            name: request::secret_name(tenant, &self.key)?,
            etag: self.etag.clone().unwrap_or_default(),
            force: self.force,
            recovery_window_days: self.recovery_window_days.unwrap_or(0),
        })
    }
}

/// `coffer secrets rotate`.
#[derive(Debug, clap::Args)]
pub(crate) struct RotateArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`.
    key: String,
    /// Add the version without making it current (finish with `promote`).
    #[arg(long)]
    stage_only: bool,
    #[arg(long)]
    etag: Option<String>,
    #[arg(long, value_name = "UUID")]
    request_id: Option<uuid::Uuid>,
    /// Write the new version into this vault (id or full name); the secret
    /// moves there, and older versions still resolve from where they are.
    #[arg(long, value_name = "ID")]
    vault: Option<String>,
    #[command(flatten)]
    pub(crate) value: ValueSourceArgs,
}

impl RotateArgs {
    pub(crate) fn request(
        &self,
        tenant: &str,
        value: SecretValue,
    ) -> anyhow::Result<RotateSecretRequest> {
        let name = request::secret_name(tenant, &self.key)?;
        let parent = SecretName::parse(&name, "KEY")?.tenant.resource_name();
        Ok(RotateSecretRequest {
            vault: vault_under(&parent, self.vault.as_deref())?,
            name,
            source: Some(rotate_secret_request::Source::Value(value.take())),
            stage_only: self.stage_only,
            etag: self.etag.clone().unwrap_or_default(),
            request_id: uuid_string(self.request_id),
        })
    }
}

/// `coffer secrets promote`.
#[derive(Debug, clap::Args)]
pub(crate) struct PromoteArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`.
    key: String,
    /// The version to make current.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    version: i64,
    /// The secret's etag.
    #[arg(long)]
    etag: Option<String>,
}

impl PromoteArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<PromoteSecretVersionRequest> {
        Ok(PromoteSecretVersionRequest {
            name: request::version_name(tenant, &self.key, self.version)?,
            etag: self.etag.clone().unwrap_or_default(),
        })
    }
}

/// `coffer secrets get`.
#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`.
    key: String,
}

impl GetArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<GetSecretRequest> {
        Ok(GetSecretRequest {
            name: request::secret_name(tenant, &self.key)?,
        })
    }
}

/// `coffer secrets undelete`.
#[derive(Debug, clap::Args)]
pub(crate) struct UndeleteArgs {
    /// The secret key, or a full name `tenants/{t}/secrets/{key}`.
    key: String,
    #[arg(long)]
    etag: Option<String>,
}

impl UndeleteArgs {
    pub(crate) fn request(&self, tenant: &str) -> anyhow::Result<UndeleteSecretRequest> {
        Ok(UndeleteSecretRequest {
            name: request::secret_name(tenant, &self.key)?,
            etag: self.etag.clone().unwrap_or_default(),
        })
    }
}

fn uuid_string(id: Option<uuid::Uuid>) -> String {
    id.map(|id| id.hyphenated().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;
    use crate::client::{SecretsArgs, SecretsCommand};

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
    fn link_points_at_a_remote_secret_in_a_vault() {
        let args = parse(&[
            "--tenant",
            "acme",
            "link",
            "prod-db",
            "--vault",
            "aws-prod",
            "--ref",
            "arn:aws:secretsmanager:eu-west-1:1:secret:prod/db",
            "--version-ref",
            "v-7",
            "--label",
            "env=prod",
        ])
        .unwrap();
        let SecretsCommand::Link(link) = args.command else {
            panic!("parsed as another command");
        };
        let req = link.request(&args.opts.tenant).unwrap();
        assert_eq!(
            (req.parent.as_str(), req.secret_id.as_str()),
            ("tenants/acme", "prod-db")
        );
        assert_eq!(
            req.source,
            Some(create_secret_request::Source::External(
                coffer_proto::v1::ExternalRef {
                    r#ref: "arn:aws:secretsmanager:eu-west-1:1:secret:prod/db".into(),
                    version_ref: "v-7".into(),
                }
            ))
        );
        let secret = req.secret.unwrap();
        assert_eq!(secret.vault, "tenants/acme/vaults/aws-prod");
        assert_eq!(secret.labels["env"], "prod");

        // A full secret name puts a bare vault id under that secret's tenant.
        let link = |args: &[&str]| {
            let SecretsCommand::Link(link) = parse(args).unwrap().command else {
                panic!("parsed as another command");
            };
            link.request("default")
        };
        let req = link(&["link", "tenants/t2/secrets/k", "--vault", "v", "--ref", "r"]).unwrap();
        assert_eq!(req.secret.unwrap().vault, "tenants/t2/vaults/v");
        let req = link(&[
            "link",
            "k",
            "--provider",
            "aws_secrets_manager",
            "--ref",
            "r",
        ])
        .unwrap();
        let secret = req.secret.unwrap();
        assert_eq!(
            (secret.vault.as_str(), secret.provider.as_str()),
            ("", "aws_secrets_manager")
        );
        assert!(link(&["link", "k", "--vault", "v", "--ref", " "]).is_err());
        assert!(
            link(&["link", "--vault", "v", "--ref", "r"]).is_err(),
            "no key to derive"
        );
        assert!(
            parse(&["link", "k", "--ref", "r"]).is_err(),
            "needs --vault or --provider"
        );
        assert!(
            parse(&["link", "k", "--vault", "v"]).is_err(),
            "needs --ref"
        );
    }

    #[test]
    fn create_and_rotate_name_the_vault() {
        let args = parse(&[
            "--tenant",
            "acme",
            "create",
            "k",
            "--vault",
            "aws-prod",
            "--provider",
            "aws_secrets_manager",
            "--value-env",
            "V",
        ])
        .unwrap();
        let SecretsCommand::Create(create) = args.command else {
            panic!("parsed as another command");
        };
        let value = create
            .value
            .source()
            .unwrap()
            .read_with(std::io::empty(), |_| Some("v".into()))
            .unwrap();
        let secret = create.request("acme", value).unwrap().secret.unwrap();
        assert_eq!(secret.vault, "tenants/acme/vaults/aws-prod");
        assert_eq!(secret.provider, "aws_secrets_manager");

        let rotate = |args: &[&str]| {
            let SecretsCommand::Rotate(rotate) = parse(args).unwrap().command else {
                panic!("parsed as another command");
            };
            let value = rotate
                .value
                .source()
                .unwrap()
                .read_with(std::io::empty(), |_| Some("v".into()))
                .unwrap();
            rotate.request("acme", value)
        };
        let req = rotate(&[
            "rotate",
            "k",
            "--vault",
            "tenants/acme/vaults/b",
            "--value-env",
            "V",
        ])
        .unwrap();
        assert_eq!(req.vault, "tenants/acme/vaults/b");
        assert_eq!(req.name, "tenants/acme/secrets/k");
        let req = rotate(&["rotate", "k", "--value-env", "V"]).unwrap();
        assert_eq!(req.vault, "", "no --vault keeps the secret's vault");
        assert!(rotate(&["rotate", "k", "--vault", "a/b", "--value-env", "V"]).is_err());
    }
}
