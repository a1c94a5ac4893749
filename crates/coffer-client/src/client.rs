//! The connected client: one channel, the generated service clients behind a
//! request-id interceptor, and the convenience reads with retries.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use coffer_proto::v1;
use coffer_proto::v1::secrets_service_client::SecretsServiceClient;
use coffer_proto::v1::vault_service_client::VaultServiceClient;

use crate::config::ClientConfig;
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::value::{ResolvedBindings, SecretValue};

/// The metadata key the server reads a request id from (and echoes back).
const REQUEST_ID: &str = "x-request-id";

/// The transport under the generated clients: the channel plus [`RequestIds`].
pub type GrpcService = InterceptedService<Channel, RequestIds>;

/// Adds an `x-request-id` (a fresh UUID) to every call that has none, so
/// each call can be found in the server's logs and audit trail.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIds;

impl Interceptor for RequestIds {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if !request.metadata().contains_key(REQUEST_ID) {
            request
                .metadata_mut()
                .insert(REQUEST_ID, fresh_request_id());
        }
        Ok(request)
    }
}

fn fresh_request_id() -> MetadataValue<tonic::metadata::Ascii> {
    // A hyphenated UUID is always valid ASCII metadata.
    MetadataValue::try_from(uuid::Uuid::new_v4().hyphenated().to_string())
        .unwrap_or_else(|_| MetadataValue::from_static("invalid-request-id"))
}

/// A request carrying `id` as its `x-request-id`: the convenience calls use
/// one id for every attempt of one logical call.
fn with_request_id<T>(message: T, id: &MetadataValue<tonic::metadata::Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(REQUEST_ID, id.clone());
    request
}

/// A connection to one Coffer server, as one tenant. Cheap to clone: clones
/// share the channel.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    tenant: String,
    retry: RetryPolicy,
}

impl Client {
    /// Checks `config` and connects. Later disconnects are repaired by the
    /// channel on the next call.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let endpoint = config.endpoint()?;
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            endpoint: config.endpoint.clone(),
            source,
        })?;
        Ok(Client {
            channel,
            tenant: config.tenant,
            retry: config.retry,
        })
    }

    /// Like [`Self::connect`] without connecting now: the first call does.
    /// For services that may start before Coffer is reachable.
    pub fn connect_lazy(config: ClientConfig) -> Result<Client, Error> {
        let channel = config.endpoint()?.connect_lazy();
        Ok(Client {
            channel,
            tenant: config.tenant,
            retry: config.retry,
        })
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// `tenants/{tenant}`.
    pub fn parent(&self) -> String {
        format!("tenants/{}", self.tenant)
    }

    /// The secret name of `key`; a full name (`tenants/…`) is kept as is.
    pub fn secret_name(&self, key: &str) -> String {
        if key.starts_with("tenants/") {
            key.to_owned()
        } else {
            format!("tenants/{}/secrets/{key}", self.tenant)
        }
    }

    /// SecretsService, every RPC, with request ids and no retries.
    pub fn secrets(&self) -> SecretsServiceClient<GrpcService> {
        SecretsServiceClient::with_interceptor(self.channel.clone(), RequestIds)
    }

    /// VaultService, every RPC, with request ids and no retries.
    pub fn vaults(&self) -> VaultServiceClient<GrpcService> {
        VaultServiceClient::with_interceptor(self.channel.clone(), RequestIds)
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Runs `op` under this client's retry policy (see [`RetryPolicy`]), e.g.
    /// `client.retry(|| async { client.secrets().get_secret(req.clone()).await }).await`.
    pub async fn retry<T, F, Fut>(&self, op: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.retry.run(op).await
    }

    /// The current value of `key` (a key of this tenant or a full secret
    /// name), resolved directly: needs a role that may resolve without a
    /// consumer. Retried on UNAVAILABLE.
    pub async fn resolve(&self, key: &str) -> Result<SecretValue, Error> {
        self.resolve_secret(v1::ResolveSecretRequest {
            name: self.secret_name(key),
            ..Default::default()
        })
        .await
    }

    /// Any ResolveSecret request (a version, a consumer and config path,
    /// context), retried on UNAVAILABLE.
    pub async fn resolve_secret(
        &self,
        request: v1::ResolveSecretRequest,
    ) -> Result<SecretValue, Error> {
        let id = fresh_request_id();
        let response = self
            .retry(|| {
                let mut secrets = self.secrets();
                let request = with_request_id(request.clone(), &id);
                async move { secrets.resolve_secret(request).await }
            })
            .await?;
        Ok(SecretValue::from_response(response.into_inner()))
    }

    /// Every binding of `consumer` under `config_path_prefix` (empty: all),
    /// resolved in one call. Retried on UNAVAILABLE.
    pub async fn resolve_bindings(
        &self,
        consumer: &v1::Consumer,
        config_path_prefix: &str,
    ) -> Result<ResolvedBindings, Error> {
        let request = v1::ResolveBindingsRequest {
            parent: self.parent(),
            consumer: Some(consumer.clone()),
            config_path_prefix: config_path_prefix.to_owned(),
            context: Default::default(),
        };
        let id = fresh_request_id();
        let response = self
            .retry(|| {
                let mut secrets = self.secrets();
                let request = with_request_id(request.clone(), &id);
                async move { secrets.resolve_bindings(request).await }
            })
            .await?;
        Ok(ResolvedBindings::from_response(response.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_gets_a_request_id_and_a_given_one_is_kept() {
        let fresh = RequestIds.call(Request::new(())).unwrap();
        let id = fresh.metadata().get(REQUEST_ID).unwrap().to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        let other = RequestIds.call(Request::new(())).unwrap();
        assert_ne!(
            other.metadata().get(REQUEST_ID).unwrap().to_str().unwrap(),
            id
        );

        let mut given = Request::new(());
        given
            .metadata_mut()
            .insert(REQUEST_ID, MetadataValue::from_static("run-42"));
        let kept = RequestIds.call(given).unwrap();
        assert_eq!(kept.metadata().get(REQUEST_ID).unwrap(), "run-42");
    }
}
