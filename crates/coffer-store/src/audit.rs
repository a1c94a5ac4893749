//! The audit trail: appending chained events inside a [`WriteTx`] and reading
//! them back (filtered pages, the chain head).
//!
//! Appending locks the tenant's row in `audit_heads` (on PostgreSQL with
//! `SELECT … FOR UPDATE`; SQLite's single writer serializes anyway), chains the
//! events onto it with [`ChainHead::append`] and moves the head, all in the
//! caller's transaction: seqs stay gapless per tenant under concurrent
//! appenders, and an event is durable exactly when its mutation is.

use std::collections::BTreeMap;

use coffer_core::audit::ChainHead;
use coffer_core::record::{AuditEventRecord, AuditOutcome, NewAuditEvent, UnixMicros};
use coffer_core::{Error, Result, TenantId};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};

use crate::conn::Store;
use crate::entity::{audit_event, audit_head};
use crate::error::{corrupt, db_err};
use crate::prefix::starts_with;
use crate::secrets::to_u64;
use crate::tx::WriteTx;

const TABLE: &str = "audit_events";

/// Rows per INSERT: 16 columns each stays far below the bound-parameter
/// limits of SQLite (32766) and PostgreSQL (65535).
const INSERT_CHUNK: usize = 500;

/// Which events [`Store::list_audit_events`] returns; `Default` is all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// A resource name exactly, or every resource under a prefix when it ends
    /// with `/*` (`tenants/acme/secrets/*`). Compared literally.
    pub resource: Option<String>,
    /// (kind, id).
    pub consumer: Option<(String, String)>,
    pub action: Option<String>,
    pub outcome: Option<AuditOutcome>,
    /// Inclusive.
    pub start_time: Option<UnixMicros>,
    /// Exclusive.
    pub end_time: Option<UnixMicros>,
}

impl Store {
    /// One page of a tenant's events in seq order, after `after_seq`.
    #[tracing::instrument(name = "db.list_audit_events", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "list_audit_events", otel.kind = "client"
    ))]
    pub async fn list_audit_events(
        &self,
        tenant: &TenantId,
        filter: &AuditFilter,
        after_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEventRecord>> {
        let mut query = audit_event::Entity::find()
            .filter(audit_event::Column::Tenant.eq(tenant.as_str()))
            .order_by(audit_event::Column::Seq, Order::Asc)
            .limit(to_u64(limit));
        if let Some(after) = after_seq {
            query = query.filter(audit_event::Column::Seq.gt(after));
        }
        if let Some(resource) = &filter.resource {
            query = match resource.strip_suffix('*').filter(|p| p.ends_with('/')) {
                Some(prefix) => query.filter(starts_with(
                    (audit_event::Entity, audit_event::Column::Resource),
                    prefix,
                )),
                None => query.filter(audit_event::Column::Resource.eq(resource.as_str())),
            };
        }
        if let Some((kind, id)) = &filter.consumer {
            query = query
                .filter(audit_event::Column::ConsumerKind.eq(kind.as_str()))
                .filter(audit_event::Column::ConsumerId.eq(id.as_str()));
        }
        if let Some(action) = &filter.action {
            query = query.filter(audit_event::Column::Action.eq(action.as_str()));
        }
        if let Some(outcome) = filter.outcome {
            query = query.filter(audit_event::Column::Outcome.eq(outcome.as_str()));
        }
        if let Some(start) = filter.start_time {
            query = query.filter(audit_event::Column::Time.gte(start));
        }
        if let Some(end) = filter.end_time {
            query = query.filter(audit_event::Column::Time.lt(end));
        }
        let rows = query.all(&self.read).await.map_err(db_err)?;
        rows.into_iter().map(to_record).collect()
    }

    /// The head of a tenant's chain; `None` before its first event.
    #[tracing::instrument(name = "db.audit_head", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "audit_head", otel.kind = "client"
    ))]
    pub async fn audit_head(&self, tenant: &TenantId) -> Result<Option<ChainHead>> {
        let row = audit_head::Entity::find_by_id(tenant.as_str().to_owned())
            .one(&self.read)
            .await
            .map_err(db_err)?;
        Ok(row.map(|row| ChainHead {
            seq: row.last_seq,
            hash: row.last_hash,
        }))
    }
}

/// The audit action of a resolve: a read, not a change.
const RESOLVE_ACTION: &str = "secret.resolve";

impl WriteTx {
    /// Chains and stores events, returning them in input order with their seq
    /// and hashes. Tenants' heads are locked in tenant order (not first-seen
    /// order), so two transactions appending for the same tenants cannot
    /// deadlock; each head stays locked until this transaction ends.
    #[tracing::instrument(name = "db.append_audit", level = "debug", skip_all, fields(
        db.system = self.db_system(), db.operation = "append_audit", otel.kind = "client"
    ))]
    pub async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<Vec<AuditEventRecord>> {
        let total = events.len();
        let mut by_tenant: BTreeMap<String, Vec<(usize, NewAuditEvent)>> = BTreeMap::new();
        for (index, event) in events.into_iter().enumerate() {
            // Resolves and refusals are audited too but change nothing:
            // only successful mutations wake change watchers.
            if event.outcome == AuditOutcome::Success && event.action != RESOLVE_ACTION {
                self.note_change(&event.tenant);
            }
            by_tenant
                .entry(event.tenant.as_str().to_owned())
                .or_default()
                .push((index, event));
        }
        let mut chained = Vec::with_capacity(total);
        for (tenant, events) in by_tenant {
            let mut head = self.lock_head(&tenant).await?;
            let records: Vec<(usize, AuditEventRecord)> = events
                .into_iter()
                .map(|(index, event)| (index, head.append(event)))
                .collect();
            for chunk in records.chunks(INSERT_CHUNK) {
                let rows = chunk
                    .iter()
                    .map(|(_, record)| to_row(record))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| self.failed(e))?;
                audit_event::Entity::insert_many(rows)
                    .exec_without_returning(&self.txn)
                    .await
                    .map_err(|e| self.failed(db_err(e)))?;
            }
            audit_head::Entity::update_many()
                .col_expr(audit_head::Column::LastSeq, Expr::val(head.seq))
                .col_expr(audit_head::Column::LastHash, Expr::val(head.hash.clone()))
                .filter(audit_head::Column::Tenant.eq(tenant.as_str()))
                .exec(&self.txn)
                .await
                .map_err(|e| self.failed(db_err(e)))?;
            chained.extend(records);
        }
        chained.sort_unstable_by_key(|(index, _)| *index);
        Ok(chained.into_iter().map(|(_, record)| record).collect())
    }

    /// The tenant's chain head, locked until this transaction ends; a new
    /// tenant gets a genesis head row first. Two first appenders race on the
    /// INSERT: the loser waits for the winner to commit, inserts nothing and
    /// then locks the winner's (committed) row.
    async fn lock_head(&self, tenant: &str) -> Result<ChainHead> {
        let genesis = ChainHead::genesis();
        audit_head::Entity::insert(audit_head::ActiveModel {
            tenant: Set(tenant.to_owned()),
            last_seq: Set(genesis.seq),
            last_hash: Set(genesis.hash),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&self.txn)
        .await
        .map_err(|e| self.failed(db_err(e)))?;
        let mut query = audit_head::Entity::find_by_id(tenant.to_owned());
        if crate::conn::is_postgres(&self.txn) {
            query = query.lock_exclusive();
        }
        let row = query
            .one(&self.txn)
            .await
            .map_err(|e| self.failed(db_err(e)))?
            .ok_or_else(|| self.failed(Error::internal("audit head row missing after insert")))?;
        Ok(ChainHead {
            seq: row.last_seq,
            hash: row.last_hash,
        })
    }
}

fn to_row(record: &AuditEventRecord) -> Result<audit_event::ActiveModel> {
    let event = &record.event;
    // A BTreeMap serializes with its keys sorted.
    let context = serde_json::to_string(&event.context).map_err(Error::internal)?;
    Ok(audit_event::ActiveModel {
        tenant: Set(event.tenant.as_str().to_owned()),
        seq: Set(record.seq),
        time: Set(event.time),
        principal: Set(event.principal.clone()),
        action: Set(event.action.clone()),
        resource: Set(event.resource.clone()),
        version: Set(event.version),
        consumer_kind: Set(event.consumer_kind.clone()),
        consumer_id: Set(event.consumer_id.clone()),
        config_path: Set(event.config_path.clone()),
        context: Set(context),
        outcome: Set(event.outcome.as_str().to_owned()),
        reason: Set(event.reason.clone()),
        request_id: Set(event.request_id.clone()),
        prev_hash: Set(record.prev_hash.clone()),
        hash: Set(record.hash.clone()),
    })
}

pub(crate) fn to_record(row: audit_event::Model) -> Result<AuditEventRecord> {
    Ok(AuditEventRecord {
        seq: row.seq,
        event: NewAuditEvent {
            tenant: TenantId::parse(&row.tenant, "tenant").map_err(|_| corrupt(TABLE, "tenant"))?,
            time: row.time,
            principal: row.principal,
            action: row.action,
            resource: row.resource,
            version: row.version,
            consumer_kind: row.consumer_kind,
            consumer_id: row.consumer_id,
            config_path: row.config_path,
            context: serde_json::from_str(&row.context).map_err(|_| corrupt(TABLE, "context"))?,
            outcome: AuditOutcome::parse(&row.outcome).ok_or_else(|| corrupt(TABLE, "outcome"))?,
            reason: row.reason,
            request_id: row.request_id,
        },
        prev_hash: row.prev_hash,
        hash: row.hash,
    })
}
