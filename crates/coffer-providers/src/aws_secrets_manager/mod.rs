//! `aws_secrets_manager`: values kept in AWS Secrets Manager (DESIGN §4).
//!
//! The factory ([`AwsSecretsManagerFactory`]) validates a vault's settings
//! and builds one SDK client per vault; the client (private, handed out as
//! `Arc<dyn SecretProvider>`) does the work:
//!
//! - **Managed secrets** live at `{name_prefix}/{namespace}/{tenant}/{key}`
//!   (defaults `coffer` and `default`), tagged `coffer:managed=true`,
//!   `coffer:tenant`, `coffer:key` (and `coffer:owner`,
//!   `coffer:environment` when set). Version 1 is a CreateSecret, later
//!   versions PutSecretValue; both always send a ClientRequestToken derived
//!   from (secret uid, version), so a retried write is idempotent and the
//!   AWS VersionId of a Coffer version is stable.
//! - **External references** point at a secret that already exists; linking
//!   one calls DescribeSecret only, and Coffer never changes or deletes it.
//! - **Guardrails**: an external reference inside the vault's managed
//!   namespace is refused, and so is managed material whose name is not the
//!   one derived from its tenant and key (or whose version number is not the
//!   one asked for), so a version's material never resolves elsewhere.
//!
//! Material (never a value): `{"scheme":"aws_secrets_manager/v1","arn":…,
//! "name":…,"version":n,"external":bool}`; the AWS VersionId is the
//! `provider_version_ref` (empty for an external reference that follows
//! AWSCURRENT).
//!
//! Credentials always come from the SDK's default chain (environment,
//! shared profile, `credential_process`, web identity, ECS or EC2 instance
//! role); vault settings never carry them. SSO profiles are not compiled in
//! (the `sso` feature would add two more SDK crates); use
//! `credential_process` with `aws configure export-credentials` instead.
//!
//! TLS is rustls over ring, like the rest of Coffer: the SDK's default HTTPS
//! client would compile aws-lc.

mod batch;
mod client;
mod errors;
mod material;
mod names;
mod settings;
mod write;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::Credentials;
use aws_sdk_secretsmanager::config::SharedHttpClient;
use aws_smithy_http_client::tls;

use crate::config::{ConfigViolation, VaultConfig};
use crate::error::ProviderError;
use crate::provider::{ProviderFactory, SecretProvider};
use crate::types::ProviderDescriptor;

pub use settings::{DEFAULT_NAME_PREFIX, DEFAULT_NAMESPACE};

/// Provider id stored with every secret kept by this provider.
pub const PROVIDER_ID: &str = "aws_secrets_manager";
/// Scheme tag of the material this provider writes.
pub const SCHEME: &str = "aws_secrets_manager/v1";

/// What this provider is and can do.
pub const DESCRIPTOR: ProviderDescriptor = ProviderDescriptor {
    id: PROVIDER_ID,
    label: "AWS Secrets Manager",
    supports_managed_values: true,
    supports_external_references: true,
    supports_remote_listing: true,
    supports_batch_resolve: true,
};

/// How the server talks to AWS; the same for every AWS vault.
#[derive(Clone)]
pub struct AwsProviderOptions {
    /// Time to establish a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for a whole operation, retries included. Each attempt gets
    /// `operation_timeout / max_attempts` (at least one second), so a hung
    /// endpoint still leaves room for a retry.
    pub operation_timeout: Duration,
    /// Attempts per operation (1 = no retries), with the SDK's standard
    /// retry mode (exponential backoff with jitter on throttling, transient
    /// and connection errors).
    pub max_attempts: u32,
    /// For tests only: an access key id and secret key to use instead of the
    /// default credential chain, so in-process tests can talk to moto without
    /// touching the process environment (the workspace forbids `unsafe`,
    /// which `std::env::set_var` is in edition 2024). Production leaves it
    /// `None`: credentials then come from the default chain.
    pub static_credentials: Option<(String, String)>,
}

impl Default for AwsProviderOptions {
    fn default() -> Self {
        AwsProviderOptions {
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(10),
            max_attempts: 3,
            static_credentials: None,
        }
    }
}

impl fmt::Debug for AwsProviderOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsProviderOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_attempts", &self.max_attempts)
            .field(
                "static_credentials",
                &self.static_credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl AwsProviderOptions {
    /// The SDK's timeout settings for these options.
    fn timeout_config(&self) -> TimeoutConfig {
        let attempts = self.max_attempts.max(1);
        let attempt = (self.operation_timeout / attempts)
            .max(Duration::from_secs(1))
            .min(self.operation_timeout);
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_timeout(self.operation_timeout)
            .operation_attempt_timeout(attempt)
            .build()
    }
}

/// The `aws_secrets_manager` provider: registered once, it validates AWS
/// vault settings and builds a client per vault.
#[derive(Clone)]
pub struct AwsSecretsManagerFactory {
    options: AwsProviderOptions,
    /// One HTTPS connector (rustls over ring) shared by every vault's
    /// client, so vaults share a connection pool.
    http_client: SharedHttpClient,
}

impl AwsSecretsManagerFactory {
    pub fn new(options: AwsProviderOptions) -> Self {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        AwsSecretsManagerFactory {
            options,
            http_client,
        }
    }

    pub fn options(&self) -> &AwsProviderOptions {
        &self.options
    }
}

impl fmt::Debug for AwsSecretsManagerFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSecretsManagerFactory")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ProviderFactory for AwsSecretsManagerFactory {
    fn descriptor(&self) -> ProviderDescriptor {
        DESCRIPTOR
    }

    fn validate_config(&self, config: &VaultConfig) -> Result<Vec<String>, Vec<ConfigViolation>> {
        match config {
            VaultConfig::AwsSecretsManager(aws) => settings::validate(aws),
            other => Err(vec![ConfigViolation::new(
                "config",
                format!(
                    "an aws_secrets_manager vault takes aws_secrets_manager settings, not {}",
                    other.provider_id()
                ),
            )]),
        }
    }

    async fn connect(
        &self,
        config: &VaultConfig,
    ) -> Result<Arc<dyn SecretProvider>, ProviderError> {
        let VaultConfig::AwsSecretsManager(aws) = config else {
            return Err(ProviderError::invalid_request(format!(
                "an aws_secrets_manager vault cannot use {} settings",
                config.provider_id()
            )));
        };
        // The registry validates before connecting; checking again keeps a
        // client from ever running on settings that were stored unchecked.
        if let Err(violations) = settings::validate(aws) {
            let first = violations
                .first()
                .map(|v| format!("{}: {}", v.field, v.description))
                .unwrap_or_default();
            return Err(ProviderError::invalid_request(format!(
                "the vault's settings are invalid ({first}); update the vault"
            )));
        }

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(self.http_client.clone())
            .timeout_config(self.options.timeout_config())
            .retry_config(
                RetryConfig::standard().with_max_attempts(self.options.max_attempts.max(1)),
            );
        if !aws.region.is_empty() {
            loader = loader.region(aws_config::Region::new(aws.region.clone()));
        }
        if !aws.endpoint_url.is_empty() {
            loader = loader.endpoint_url(aws.endpoint_url.clone());
        }
        if let Some((access_key_id, secret_access_key)) = &self.options.static_credentials {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id.clone(),
                secret_access_key.clone(),
                None,
                None,
                "coffer-static-test-credentials",
            ));
        }
        let sdk_config = loader.load().await;
        let Some(region) = sdk_config.region() else {
            return Err(ProviderError::invalid_request(
                "no AWS region: set region in the vault settings, or AWS_REGION (or a profile region) on the server",
            ));
        };
        let region = region.to_string();
        let client = aws_sdk_secretsmanager::Client::new(&sdk_config);
        Ok(Arc::new(client::AwsSecretsManagerProvider::new(
            client, aws, region,
        )))
    }
}
