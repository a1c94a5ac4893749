//! Audit RPCs of `coffer.v1.SecretsService`: ListAuditEvents and VerifyAuditChain.

use coffer_core::Error;
use coffer_proto::v1;
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::app::Coffer;

fn not_yet<T>(what: &str) -> Result<Response<T>, Status> {
    Err(to_status(&Error::unimplemented(what)))
}

pub(crate) async fn list_audit_events(
    _coffer: &Coffer,
    _request: Request<v1::ListAuditEventsRequest>,
) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
    not_yet("ListAuditEvents")
}

pub(crate) async fn verify_audit_chain(
    _coffer: &Coffer,
    _request: Request<v1::VerifyAuditChainRequest>,
) -> Result<Response<v1::VerifyAuditChainResponse>, Status> {
    not_yet("VerifyAuditChain")
}
