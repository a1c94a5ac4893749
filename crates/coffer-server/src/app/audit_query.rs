//! Reading the audit trail: ListAuditEvents (filtered, keyset-paged by seq)
//! and VerifyAuditChain (recomputes a tenant's whole chain page by page).

use coffer_core::audit::ChainVerifier;
use coffer_core::filter::AuditFilterSpec;
use coffer_core::record::AuditEventRecord;
use coffer_core::{Error, Result, TenantId, page, validate};
use coffer_store::AuditFilter;

use super::Coffer;

/// Events read per page while verifying.
const VERIFY_PAGE: usize = 1000;

/// One page of audit events, oldest first.
#[derive(Debug)]
pub struct AuditPage {
    pub events: Vec<AuditEventRecord>,
    pub next_page_token: String,
}

/// The result of VerifyAuditChain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainReport {
    pub checked: i64,
    /// The first seq where the chain does not hold.
    pub first_broken_seq: Option<i64>,
}

impl Coffer {
    pub async fn list_audit_events(
        &self,
        tenant: &TenantId,
        filter: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<AuditPage> {
        let spec = AuditFilterSpec::parse(filter, "filter")?;
        let limit = validate::page_size(page_size, "page_size")?;
        let scope = page::query_scope(&["audit", tenant.as_str(), &spec.canonical()]);
        let after = match page::decode(page_token, &scope, "page_token")? {
            None => None,
            Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
                Error::invalid_field("page_token", "page_token is not valid for this request")
            })?),
        };
        let filter = AuditFilter {
            resource: spec.resource,
            consumer: spec.consumer,
            action: spec.action,
            outcome: spec.outcome,
            start_time: spec.start_time,
            end_time: spec.end_time,
        };
        let mut events = self
            .store()
            .list_audit_events(tenant, &filter, after, limit + 1)
            .await?;
        let next_page_token = if events.len() > limit {
            events.truncate(limit);
            events
                .last()
                .map(|e| page::encode(&scope, &e.seq.to_string()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(AuditPage {
            events,
            next_page_token,
        })
    }

    pub async fn verify_audit_chain(&self, tenant: &TenantId) -> Result<ChainReport> {
        let mut verifier = ChainVerifier::default();
        let mut after = None;
        loop {
            let page = self
                .store()
                .list_audit_events(tenant, &AuditFilter::default(), after, VERIFY_PAGE)
                .await?;
            for event in &page {
                verifier.feed(event);
            }
            match page.last() {
                Some(last) if page.len() == VERIFY_PAGE && verifier.first_broken().is_none() => {
                    after = Some(last.seq);
                }
                _ => break,
            }
        }
        // Rows deleted from the end leave a shorter, still consistent chain;
        // the head row remembers how long it was.
        let mut first_broken_seq = verifier.first_broken();
        if first_broken_seq.is_none()
            && let Some(head) = self.store().audit_head(tenant).await?
            && head.seq != verifier.checked()
        {
            first_broken_seq = Some(verifier.checked() + 1);
        }
        Ok(ChainReport {
            checked: verifier.checked(),
            first_broken_seq,
        })
    }
}
