//! `coffer.v1.VaultService`: vaults (configured provider instances), the
//! provider catalog, and remote import by reference. Each handler authorizes,
//! parses, calls the use case in [`crate::app`] and maps the result.

use coffer_core::authz::Permission;
use coffer_core::{TenantId, VaultName};
use coffer_proto::v1;
use coffer_proto::v1::vault_service_server::VaultService;
use tonic::{Request, Response, Status};

use super::authz::{Authorizer, Scope};
use super::status::respond;
use super::vault_messages::{
    candidate, import_results, import_row, provider, vault, vault_config, vault_patch,
};
use crate::app::{Coffer, CreateVault};

/// The VaultService implementation.
#[derive(Debug, Clone)]
pub struct VaultsApi {
    coffer: Coffer,
    authz: Authorizer,
}

impl VaultsApi {
    pub(crate) fn new(coffer: Coffer, authz: Authorizer) -> Self {
        VaultsApi { coffer, authz }
    }
}

#[tonic::async_trait]
impl VaultService for VaultsApi {
    async fn list_providers(
        &self,
        request: Request<v1::ListProvidersRequest>,
    ) -> Result<Response<v1::ListProvidersResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadMetadata,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        let providers = self
            .coffer
            .provider_catalog()
            .into_iter()
            .map(|(descriptor, configured)| provider(descriptor, configured))
            .collect();
        Ok(Response::new(v1::ListProvidersResponse { providers }))
    }

    async fn create_vault(
        &self,
        request: Request<v1::CreateVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let tenant = TenantId::from_parent(&req.parent, "parent")?;
            let name = VaultName::new(tenant, &req.vault_id, "vault_id")?;
            let body = req.vault.unwrap_or_default();
            let create = CreateVault {
                name,
                provider: body.provider,
                display_name: body.display_name,
                config: vault_config(body.config),
            };
            self.coffer
                .create_vault(&principal, create)
                .await
                .map(|v| vault(&v))
        }
        .await;
        respond(result)
    }

    async fn get_vault(
        &self,
        request: Request<v1::GetVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadMetadata,
            Scope::vault(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VaultName::parse(&req.name, "name")?;
            self.coffer.get_vault(&name).await.map(|v| vault(&v))
        }
        .await;
        respond(result)
    }

    async fn list_vaults(
        &self,
        request: Request<v1::ListVaultsRequest>,
    ) -> Result<Response<v1::ListVaultsResponse>, Status> {
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
                .list_vaults(&tenant, req.page_size, &req.page_token)
                .await?;
            Ok(v1::ListVaultsResponse {
                vaults: page.vaults.iter().map(vault).collect(),
                next_page_token: page.next_page_token,
            })
        }
        .await;
        respond(result)
    }

    async fn update_vault(
        &self,
        request: Request<v1::UpdateVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::vault(
                request
                    .get_ref()
                    .vault
                    .as_ref()
                    .map_or("", |v| v.name.as_str()),
                "vault.name",
            )?,
        )?;
        let req = request.into_inner();
        let result = async {
            let body = req.vault.unwrap_or_default();
            let name = VaultName::parse(&body.name, "vault.name")?;
            let etag = body.etag.clone();
            let patch = vault_patch(body, req.update_mask)?;
            self.coffer
                .update_vault(&principal, &name, &etag, patch)
                .await
                .map(|v| vault(&v))
        }
        .await;
        respond(result)
    }

    async fn disable_vault(
        &self,
        request: Request<v1::DisableVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::vault(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VaultName::parse(&req.name, "name")?;
            self.coffer
                .disable_vault(&principal, &name, &req.etag)
                .await
                .map(|v| vault(&v))
        }
        .await;
        respond(result)
    }

    async fn set_default_vault(
        &self,
        request: Request<v1::SetDefaultVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::vault(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VaultName::parse(&req.name, "name")?;
            self.coffer
                .set_default_vault(&principal, &name, &req.etag)
                .await
                .map(|v| vault(&v))
        }
        .await;
        respond(result)
    }

    async fn check_vault_health(
        &self,
        request: Request<v1::CheckVaultHealthRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::vault(&request.get_ref().name, "name")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VaultName::parse(&req.name, "name")?;
            self.coffer
                .check_vault_health(&principal, &name)
                .await
                .map(|v| vault(&v))
        }
        .await;
        respond(result)
    }

    async fn preview_remote_import(
        &self,
        request: Request<v1::PreviewRemoteImportRequest>,
    ) -> Result<Response<v1::PreviewRemoteImportResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::vault(&request.get_ref().vault, "vault")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VaultName::parse(&req.vault, "vault")?;
            let preview = self
                .coffer
                .preview_remote_import(&name, &req.query, req.page_size, &req.page_token)
                .await?;
            Ok(v1::PreviewRemoteImportResponse {
                candidates: preview.candidates.into_iter().map(candidate).collect(),
                next_page_token: preview.next_page_token,
            })
        }
        .await;
        respond(result)
    }

    async fn commit_remote_import(
        &self,
        request: Request<v1::CommitRemoteImportRequest>,
    ) -> Result<Response<v1::CommitRemoteImportResponse>, Status> {
        let principal = self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::vault(&request.get_ref().vault, "vault")?,
        )?;
        let req = request.into_inner();
        let result = async {
            let name = VaultName::parse(&req.vault, "vault")?;
            let rows = req.rows.into_iter().map(import_row).collect();
            self.coffer
                .commit_remote_import(&principal, &name, rows)
                .await
                .map(import_results)
        }
        .await;
        respond(result)
    }
}
