//! The change feed behind WatchSecrets: a tenant's successful mutation events
//! read back from the audit chain in seq order (docs/adr/0009). The chain's
//! seqs are gapless and each is committed before the next can be taken, so
//! "events after seq N" never skips one that commits later.

use coffer_core::record::{AuditEventRecord, AuditOutcome};
use coffer_core::{Result, TenantId};
use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};

use crate::audit::to_record;
use crate::conn::Store;
use crate::entity::audit_event;
use crate::error::db_err;
use crate::secrets::to_u64;

impl Store {
    /// Up to `limit` of the tenant's SUCCESS events whose action is one of
    /// `actions`, with seq greater than `after_seq`, oldest first.
    #[tracing::instrument(name = "db.change_events", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "change_events", otel.kind = "client"
    ))]
    pub async fn change_events(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        actions: &[&str],
        limit: usize,
    ) -> Result<Vec<AuditEventRecord>> {
        let rows = audit_event::Entity::find()
            .filter(audit_event::Column::Tenant.eq(tenant.as_str()))
            .filter(audit_event::Column::Seq.gt(after_seq))
            .filter(audit_event::Column::Outcome.eq(AuditOutcome::Success.as_str()))
            .filter(audit_event::Column::Action.is_in(actions.iter().copied()))
            .order_by(audit_event::Column::Seq, Order::Asc)
            .limit(to_u64(limit))
            .all(&self.read)
            .await
            .map_err(db_err)?;
        rows.into_iter().map(to_record).collect()
    }
}
