//! Audit RPCs of `coffer.v1.SecretsService`: ListAuditEvents and VerifyAuditChain.

use coffer_core::record::now_micros;
use coffer_core::{Result, TenantId};
use coffer_proto::v1;
use tonic::{Request, Response, Status};

use super::auth::principal;
use super::convert;
use super::status::respond;
use crate::app::Coffer;

pub(crate) async fn list_audit_events(
    coffer: &Coffer,
    request: Request<v1::ListAuditEventsRequest>,
) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
    principal(&request)?;
    let req = request.into_inner();
    let result = async {
        let tenant = TenantId::from_parent(&req.parent, "parent")?;
        let page = coffer
            .list_audit_events(&tenant, &req.filter, req.page_size, &req.page_token)
            .await?;
        Ok(v1::ListAuditEventsResponse {
            audit_events: page.events.iter().map(convert::audit_event).collect(),
            next_page_token: page.next_page_token,
        })
    }
    .await;
    respond(result)
}

pub(crate) async fn verify_audit_chain(
    coffer: &Coffer,
    request: Request<v1::VerifyAuditChainRequest>,
) -> Result<Response<v1::VerifyAuditChainResponse>, Status> {
    principal(&request)?;
    let req = request.into_inner();
    let result = async {
        let tenant = TenantId::from_parent(&req.parent, "parent")?;
        let report = coffer.verify_audit_chain(&tenant).await?;
        Ok(v1::VerifyAuditChainResponse {
            ok: report.first_broken_seq.is_none(),
            checked: report.checked,
            first_broken_seq: report.first_broken_seq.unwrap_or(0),
            verify_time: Some(convert::timestamp(now_micros())),
        })
    }
    .await;
    respond(result)
}
