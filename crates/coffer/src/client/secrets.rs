//! `coffer secrets create|get|list|update|delete|undelete|rotate|promote`:
//! their arguments, the requests they build, and the calls that send them.

use coffer_proto::v1::{
    CreateSecretRequest, DeleteSecretRequest, GetSecretRequest, ListSecretsRequest,
    PromoteSecretVersionRequest, RotateSecretRequest, Secret, UndeleteSecretRequest,
    UpdateSecretRequest, create_secret_request, rotate_secret_request, secret,
};

use super::request::{self, UpdateFields};
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
        let key = match (&self.key, &self.display_name) {
            (Some(key), _) => key.clone(),
            (None, Some(display_name)) => {
                coffer_core::SecretKey::normalize(display_name, "--display-name")
                    .map_err(|err| anyhow::anyhow!("{err}"))?
                    .to_string()
            }
            (None, None) => anyhow::bail!("give a KEY, or a --display-name to derive the key from"),
        };
        let (parent, secret_id) = request::parent_and_key(tenant, &key)?;
        Ok(CreateSecretRequest {
            parent,
            secret_id,
            secret: Some(Secret {
                display_name: self.display_name.clone().unwrap_or_default(),
                description: self.description.clone().unwrap_or_default(),
                labels: request::labels(&self.labels)?,
                ..Secret::default()
            }),
            source: Some(create_secret_request::Source::Value(value.take())),
            request_id: uuid_string(self.request_id),
        })
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
    #[command(flatten)]
    pub(crate) value: ValueSourceArgs,
}

impl RotateArgs {
    pub(crate) fn request(
        &self,
        tenant: &str,
        value: SecretValue,
    ) -> anyhow::Result<RotateSecretRequest> {
        Ok(RotateSecretRequest {
            name: request::secret_name(tenant, &self.key)?,
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
