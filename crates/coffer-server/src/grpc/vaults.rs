//! `coffer.v1.VaultService`. Vaults, the provider registry API and remote
//! import are built in a later stage (issue 5); until then every RPC answers
//! UNIMPLEMENTED with a message that says so, and nothing is faked.

use coffer_core::Error;
use coffer_proto::v1;
use coffer_proto::v1::vault_service_server::VaultService;
use tonic::{Request, Response, Status};

use super::status::to_status;

/// The VaultService implementation.
#[derive(Debug, Clone, Default)]
pub struct VaultsApi;

fn not_yet<T>(what: &str) -> Result<Response<T>, Status> {
    Err(to_status(&Error::unimplemented(what)))
}

#[tonic::async_trait]
impl VaultService for VaultsApi {
    async fn list_providers(
        &self,
        _: Request<v1::ListProvidersRequest>,
    ) -> Result<Response<v1::ListProvidersResponse>, Status> {
        not_yet("ListProviders")
    }
    async fn create_vault(
        &self,
        _: Request<v1::CreateVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        not_yet("CreateVault")
    }
    async fn get_vault(
        &self,
        _: Request<v1::GetVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        not_yet("GetVault")
    }
    async fn list_vaults(
        &self,
        _: Request<v1::ListVaultsRequest>,
    ) -> Result<Response<v1::ListVaultsResponse>, Status> {
        not_yet("ListVaults")
    }
    async fn update_vault(
        &self,
        _: Request<v1::UpdateVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        not_yet("UpdateVault")
    }
    async fn disable_vault(
        &self,
        _: Request<v1::DisableVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        not_yet("DisableVault")
    }
    async fn set_default_vault(
        &self,
        _: Request<v1::SetDefaultVaultRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        not_yet("SetDefaultVault")
    }
    async fn check_vault_health(
        &self,
        _: Request<v1::CheckVaultHealthRequest>,
    ) -> Result<Response<v1::Vault>, Status> {
        not_yet("CheckVaultHealth")
    }
    async fn preview_remote_import(
        &self,
        _: Request<v1::PreviewRemoteImportRequest>,
    ) -> Result<Response<v1::PreviewRemoteImportResponse>, Status> {
        not_yet("PreviewRemoteImport")
    }
    async fn commit_remote_import(
        &self,
        _: Request<v1::CommitRemoteImportRequest>,
    ) -> Result<Response<v1::CommitRemoteImportResponse>, Status> {
        not_yet("CommitRemoteImport")
    }
}
