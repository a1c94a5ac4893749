//! `coffer.v1.SecretsService`: parse names and fields, call the use case, map
//! the result. Binding, audit and watch RPCs are implemented in
//! [`super::bindings`], [`super::audit`] and [`super::watch`]; the trait impl
//! here delegates to them.

use coffer_core::authz::Permission;
use coffer_core::{Error, Result, SecretName, TenantId, VersionName};
use coffer_proto::v1;
use coffer_proto::v1::secrets_service_server::SecretsService;
use tonic::{Request, Response, Status};

use super::authz::{Authorizer, Scope, resolve_permission};
use super::convert;
use super::messages::{resolve_request, resolved_message, secret_patch, source, version_message};
use super::status::{respond, to_rpc_status};
use super::{audit, bindings, watch};
use crate::app::{Coffer, CreateSecret, RotateSecret};

/// The SecretsService implementation.
#[derive(Debug, Clone)]
pub struct SecretsApi {
    coffer: Coffer,
    authz: Authorizer,
}

impl SecretsApi {
    pub(crate) fn new(coffer: Coffer, authz: Authorizer) -> Self {
        SecretsApi { coffer, authz }
    }
}

#[tonic::async_trait]
impl SecretsService for SecretsApi {
    type WatchSecretsStream = watch::WatchStream;

    async fn create_secret(
        &self,
        request: Request<v1::CreateSecretRequest>,
    ) -> Result<Response<v1::Secret>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::WriteSecrets,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let tenant = TenantId::from_parent(&req.parent, "parent")?;
            let key = coffer_core::SecretKey::parse(&req.secret_id, "secret_id")?;
            let secret = req.secret.unwrap_or_default();
            let (value, external) = match req.source {
                Some(v1::create_secret_request::Source::Value(v)) => (Some(v), None),
                Some(v1::create_secret_request::Source::External(e)) => (None, Some(e)),
                None => (None, None),
            };
            let create = CreateSecret {
                name: SecretName::new(tenant, key),
                display_name: secret.display_name,
                description: secret.description,
                labels: secret.labels.into_iter().collect(),
                provider: secret.provider,
                vault: secret.vault,
                source: source(value, external)?,
                request_id: req.request_id,
            };
            self.coffer
                .create_secret(&principal, create)
                .await
                .map(|s| convert::secret(&s))
        }
        .await;
        respond(result)
    }

    async fn get_secret(
        &self,
        request: Request<v1::GetSecretRequest>,
    ) -> Result<Response<v1::Secret>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadMetadata,
            Scope::secret(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = SecretName::parse(&req.name, "name")?;
            self.coffer
                .get_secret(&name)
                .await
                .map(|s| convert::secret(&s))
        }
        .await;
        respond(result)
    }

    async fn list_secrets(
        &self,
        request: Request<v1::ListSecretsRequest>,
    ) -> Result<Response<v1::ListSecretsResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadMetadata,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let tenant = TenantId::from_parent(&req.parent, "parent")?;
            let page = self
                .coffer
                .list_secrets(
                    &tenant,
                    &req.filter,
                    req.show_deleted,
                    req.page_size,
                    &req.page_token,
                )
                .await?;
            Ok(v1::ListSecretsResponse {
                secrets: page.secrets.iter().map(convert::secret).collect(),
                next_page_token: page.next_page_token,
            })
        }
        .await;
        respond(result)
    }

    async fn update_secret(
        &self,
        request: Request<v1::UpdateSecretRequest>,
    ) -> Result<Response<v1::Secret>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::WriteSecrets,
            Scope::secret(
                request
                    .get_ref()
                    .secret
                    .as_ref()
                    .map_or("", |s| s.name.as_str()),
                "secret.name",
            )?,
        )?;
        let req = request.into_inner();
        let result = async {
            let secret = req
                .secret
                .ok_or_else(|| Error::invalid_field("secret", "secret is required"))?;
            let name = SecretName::parse(&secret.name, "secret.name")?;
            let etag = secret.etag.clone();
            let patch = secret_patch(secret, req.update_mask)?;
            self.coffer
                .update_secret(&principal, &name, &etag, patch)
                .await
                .map(|s| convert::secret(&s))
        }
        .await;
        respond(result)
    }

    async fn delete_secret(
        &self,
        request: Request<v1::DeleteSecretRequest>,
    ) -> Result<Response<v1::Secret>, Status> {
        let permission = if request.get_ref().force {
            Permission::Destroy
        } else {
            Permission::WriteSecrets
        };
        let principal = self.authz.authorize(
            &request,
            permission,
            Scope::secret(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = SecretName::parse(&req.name, "name")?;
            self.coffer
                .delete_secret(
                    &principal,
                    &name,
                    &req.etag,
                    req.force,
                    req.recovery_window_days,
                )
                .await
                .map(|s| convert::secret(&s))
        }
        .await;
        respond(result)
    }

    async fn undelete_secret(
        &self,
        request: Request<v1::UndeleteSecretRequest>,
    ) -> Result<Response<v1::Secret>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::WriteSecrets,
            Scope::secret(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = SecretName::parse(&req.name, "name")?;
            self.coffer
                .undelete_secret(&principal, &name, &req.etag)
                .await
                .map(|s| convert::secret(&s))
        }
        .await;
        respond(result)
    }

    async fn rotate_secret(
        &self,
        request: Request<v1::RotateSecretRequest>,
    ) -> Result<Response<v1::SecretVersion>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::WriteSecrets,
            Scope::secret(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = SecretName::parse(&req.name, "name")?;
            let (value, external) = match req.source {
                Some(v1::rotate_secret_request::Source::Value(v)) => (Some(v), None),
                Some(v1::rotate_secret_request::Source::External(e)) => (None, Some(e)),
                None => (None, None),
            };
            let rotate = RotateSecret {
                name,
                source: source(value, external)?,
                stage_only: req.stage_only,
                etag: req.etag,
                request_id: req.request_id,
                vault: req.vault,
            };
            self.coffer
                .rotate_secret(&principal, rotate)
                .await
                .map(version_message)
        }
        .await;
        respond(result)
    }

    async fn promote_secret_version(
        &self,
        request: Request<v1::PromoteSecretVersionRequest>,
    ) -> Result<Response<v1::Secret>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::WriteSecrets,
            Scope::version(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VersionName::parse(&req.name, "name")?;
            self.coffer
                .promote_version(&principal, &name, &req.etag)
                .await
                .map(|s| convert::secret(&s))
        }
        .await;
        respond(result)
    }

    async fn list_secret_versions(
        &self,
        request: Request<v1::ListSecretVersionsRequest>,
    ) -> Result<Response<v1::ListSecretVersionsResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadMetadata,
            Scope::secret(&request.get_ref().parent, "parent")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = SecretName::parse(&req.parent, "parent")?;
            let page = self
                .coffer
                .list_versions(&name, req.page_size, &req.page_token)
                .await?;
            Ok(v1::ListSecretVersionsResponse {
                versions: page
                    .versions
                    .iter()
                    .map(|v| convert::version(&page.secret, page.current_version, v))
                    .collect(),
                next_page_token: page.next_page_token,
            })
        }
        .await;
        respond(result)
    }

    async fn get_secret_version(
        &self,
        request: Request<v1::GetSecretVersionRequest>,
    ) -> Result<Response<v1::SecretVersion>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadMetadata,
            Scope::version(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VersionName::parse(&req.name, "name")?;
            self.coffer.get_version(&name).await.map(version_message)
        }
        .await;
        respond(result)
    }

    async fn disable_secret_version(
        &self,
        request: Request<v1::DisableSecretVersionRequest>,
    ) -> Result<Response<v1::SecretVersion>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::WriteSecrets,
            Scope::version(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VersionName::parse(&req.name, "name")?;
            self.coffer
                .disable_version(&principal, &name, &req.etag)
                .await
                .map(version_message)
        }
        .await;
        respond(result)
    }

    async fn enable_secret_version(
        &self,
        request: Request<v1::EnableSecretVersionRequest>,
    ) -> Result<Response<v1::SecretVersion>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::WriteSecrets,
            Scope::version(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VersionName::parse(&req.name, "name")?;
            self.coffer
                .enable_version(&principal, &name, &req.etag)
                .await
                .map(version_message)
        }
        .await;
        respond(result)
    }

    async fn destroy_secret_version(
        &self,
        request: Request<v1::DestroySecretVersionRequest>,
    ) -> Result<Response<v1::SecretVersion>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::Destroy,
            Scope::version(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VersionName::parse(&req.name, "name")?;
            self.coffer
                .destroy_version(&principal, &name, &req.etag)
                .await
                .map(version_message)
        }
        .await;
        respond(result)
    }

    async fn resolve_secret(
        &self,
        request: Request<v1::ResolveSecretRequest>,
    ) -> Result<Response<v1::ResolveSecretResponse>, Status> {
        let permission = resolve_permission(request.get_ref().consumer.is_some());
        let principal = self.authz.authorize(
            &request,
            permission,
            Scope::secret(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let req = resolve_request(req, "name")?;
            self.coffer
                .resolve_secret(&principal, &req)
                .await
                .map(resolved_message)
        }
        .await;
        respond(result)
    }

    async fn batch_resolve_secrets(
        &self,
        request: Request<v1::BatchResolveSecretsRequest>,
    ) -> Result<Response<v1::BatchResolveSecretsResponse>, Status> {
        let permission = resolve_permission(
            !request.get_ref().requests.is_empty()
                && request
                    .get_ref()
                    .requests
                    .iter()
                    .all(|r| r.consumer.is_some()),
        );
        let principal = self.authz.authorize(
            &request,
            permission,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let tenant = TenantId::from_parent(&req.parent, "parent")?;
            let items = req
                .requests
                .into_iter()
                .enumerate()
                .map(|(i, item)| resolve_request(item, &format!("requests[{i}].name")))
                .collect();
            let results = self
                .coffer
                .batch_resolve(&principal, &tenant, items)
                .await?;
            Ok(v1::BatchResolveSecretsResponse {
                results: results
                    .into_iter()
                    .map(|item| v1::BatchResolveResult {
                        result: Some(match item {
                            Ok(resolved) => v1::batch_resolve_result::Result::Resolved(
                                resolved_message(resolved),
                            ),
                            Err(err) => {
                                v1::batch_resolve_result::Result::Error(to_rpc_status(&err))
                            }
                        }),
                    })
                    .collect(),
            })
        }
        .await;
        respond(result)
    }

    async fn resolve_bindings(
        &self,
        request: Request<v1::ResolveBindingsRequest>,
    ) -> Result<Response<v1::ResolveBindingsResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ConsumerResolve,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        bindings::resolve_bindings(&self.coffer, request).await
    }

    async fn create_binding(
        &self,
        request: Request<v1::CreateBindingRequest>,
    ) -> Result<Response<v1::Binding>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageBindings,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        bindings::create_binding(&self.coffer, request).await
    }

    async fn get_binding(
        &self,
        request: Request<v1::GetBindingRequest>,
    ) -> Result<Response<v1::Binding>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadMetadata,
            Scope::binding(&request.get_ref().name, "name")?,
        )?;
        bindings::get_binding(&self.coffer, request).await
    }

    async fn list_bindings(
        &self,
        request: Request<v1::ListBindingsRequest>,
    ) -> Result<Response<v1::ListBindingsResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadMetadata,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        bindings::list_bindings(&self.coffer, request).await
    }

    async fn delete_binding(
        &self,
        request: Request<v1::DeleteBindingRequest>,
    ) -> Result<Response<v1::DeleteBindingResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageBindings,
            Scope::binding(&request.get_ref().name, "name")?,
        )?;
        bindings::delete_binding(&self.coffer, request).await
    }

    async fn sync_bindings(
        &self,
        request: Request<v1::SyncBindingsRequest>,
    ) -> Result<Response<v1::SyncBindingsResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageBindings,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        bindings::sync_bindings(&self.coffer, request).await
    }

    async fn list_audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadAudit,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        audit::list_audit_events(&self.coffer, request).await
    }

    async fn verify_audit_chain(
        &self,
        request: Request<v1::VerifyAuditChainRequest>,
    ) -> Result<Response<v1::VerifyAuditChainResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadAudit,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        audit::verify_audit_chain(&self.coffer, request).await
    }

    async fn watch_secrets(
        &self,
        request: Request<v1::WatchSecretsRequest>,
    ) -> Result<Response<Self::WatchSecretsStream>, Status> {
        watch::watch_secrets(&self.coffer, &self.authz, request).await
    }
}
