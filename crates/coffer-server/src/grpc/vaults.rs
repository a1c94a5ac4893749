//! `coffer.v1.VaultService`. Vaults, the provider registry API and remote
//! import are built in a later stage (issue 5); until then every RPC answers
//! UNIMPLEMENTED with a message that says so, and nothing is faked.

use coffer_core::Error;
use coffer_core::authz::Permission;
use coffer_proto::v1;
use coffer_proto::v1::vault_service_server::VaultService;
use tonic::{Request, Response, Status};

use super::authz::{Authorizer, Scope};
use super::status::to_status;

/// The VaultService implementation.
#[derive(Debug, Clone)]
pub struct VaultsApi {
    authz: Authorizer,
}

impl VaultsApi {
    pub(crate) fn new(authz: Authorizer) -> Self {
        VaultsApi { authz }
    }
}

fn not_yet<T>(what: &str) -> Result<Response<T>, Status> {
    Err(to_status(&Error::unimplemented(what)))
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
        not_yet("ListProviders")
    }
    async fn create_vault(
        &self,
        request: Request<v1::CreateVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::parent(&request.get_ref().parent, "parent")?,
        )?;
        not_yet("CreateVault")
    }
    async fn get_vault(
        &self,
        request: Request<v1::GetVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        self.authz.authorize(
            &request,
            Permission::ReadMetadata,
            Scope::under_tenant(&request.get_ref().name, "name")?,
        )?;
        not_yet("GetVault")
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
        not_yet("ListVaults")
    }
    async fn update_vault(
        &self,
        request: Request<v1::UpdateVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::under_tenant(
                request
                    .get_ref()
                    .vault
                    .as_ref()
                    .map_or("", |v| v.name.as_str()),
                "vault.name",
            )?,
        )?;
        not_yet("UpdateVault")
    }
    async fn disable_vault(
        &self,
        request: Request<v1::DisableVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::under_tenant(&request.get_ref().name, "name")?,
        )?;
        not_yet("DisableVault")
    }
    async fn set_default_vault(
        &self,
        request: Request<v1::SetDefaultVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::under_tenant(&request.get_ref().name, "name")?,
        )?;
        not_yet("SetDefaultVault")
    }
    async fn check_vault_health(
        &self,
        request: Request<v1::CheckVaultHealthRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::under_tenant(&request.get_ref().name, "name")?,
        )?;
        not_yet("CheckVaultHealth")
    }
    async fn preview_remote_import(
        &self,
        request: Request<v1::PreviewRemoteImportRequest>,
    ) -> Result<Response<v1::PreviewRemoteImportResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::under_tenant(&request.get_ref().vault, "vault")?,
        )?;
        not_yet("PreviewRemoteImport")
    }
    async fn commit_remote_import(
        &self,
        request: Request<v1::CommitRemoteImportRequest>,
    ) -> Result<Response<v1::CommitRemoteImportResponse>, Status> {
        self.authz.authorize(
            &request,
            Permission::ManageVaults,
            Scope::under_tenant(&request.get_ref().vault, "vault")?,
        )?;
        not_yet("CommitRemoteImport")
    }
}
