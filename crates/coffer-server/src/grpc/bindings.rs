//! Binding RPCs of `coffer.v1.SecretsService` (CreateBinding, GetBinding,
//! ListBindings, DeleteBinding, SyncBindings) and ResolveBindings.

use coffer_core::Error;
use coffer_proto::v1;
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::app::Coffer;

fn not_yet<T>(what: &str) -> Result<Response<T>, Status> {
    Err(to_status(&Error::unimplemented(what)))
}

pub(crate) async fn resolve_bindings(
    _coffer: &Coffer,
    _request: Request<v1::ResolveBindingsRequest>,
) -> Result<Response<v1::ResolveBindingsResponse>, Status> {
    not_yet("ResolveBindings")
}

pub(crate) async fn create_binding(
    _coffer: &Coffer,
    _request: Request<v1::CreateBindingRequest>,
) -> Result<Response<v1::Binding>, Status> {
    not_yet("CreateBinding")
}

pub(crate) async fn get_binding(
    _coffer: &Coffer,
    _request: Request<v1::GetBindingRequest>,
) -> Result<Response<v1::Binding>, Status> {
    not_yet("GetBinding")
}

pub(crate) async fn list_bindings(
    _coffer: &Coffer,
    _request: Request<v1::ListBindingsRequest>,
) -> Result<Response<v1::ListBindingsResponse>, Status> {
    not_yet("ListBindings")
}

pub(crate) async fn delete_binding(
    _coffer: &Coffer,
    _request: Request<v1::DeleteBindingRequest>,
) -> Result<Response<v1::DeleteBindingResponse>, Status> {
    not_yet("DeleteBinding")
}

pub(crate) async fn sync_bindings(
    _coffer: &Coffer,
    _request: Request<v1::SyncBindingsRequest>,
) -> Result<Response<v1::SyncBindingsResponse>, Status> {
    not_yet("SyncBindings")
}
