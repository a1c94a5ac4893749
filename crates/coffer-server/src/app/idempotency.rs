//! `request_id` idempotency for creates and rotations: a replay of the same
//! request returns the first result and writes nothing; the same id with a
//! different request is refused. The record is written in the mutation's own
//! transaction, so a result and its record exist together or not at all.

use coffer_core::record::now_micros;
use coffer_core::{Error, ErrorCode, Reason, Result, TenantId};
use coffer_store::{IdempotencyRecord, WriteTx};
use sha2::{Digest, Sha256};

use super::Coffer;

/// How long a request id is remembered (the design promises at least 24 h);
/// the reaper forgets older ones.
pub(crate) const RETENTION_MICROS: i64 = 48 * 3600 * 1_000_000;

/// A request id together with a fingerprint of what was asked.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyKey {
    tenant: TenantId,
    request_id: String,
    operation: &'static str,
    request_hash: String,
}

impl IdempotencyKey {
    /// `parts` must identify the request completely; secret values enter only
    /// as their keyed fingerprint.
    pub(crate) fn new(
        tenant: &TenantId,
        request_id: String,
        operation: &'static str,
        parts: &[&str],
    ) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(operation.as_bytes());
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        IdempotencyKey {
            tenant: tenant.clone(),
            request_id,
            operation,
            request_hash: hex::encode(hasher.finalize()),
        }
    }

    /// Records the result inside the mutation's transaction.
    pub(crate) async fn record(&self, tx: &WriteTx, secret_uid: &str, version: i64) -> Result<()> {
        tx.insert_idempotency(&IdempotencyRecord {
            tenant: self.tenant.as_str().to_owned(),
            request_id: self.request_id.clone(),
            operation: self.operation.to_owned(),
            request_hash: self.request_hash.clone(),
            secret_uid: secret_uid.to_owned(),
            version,
            create_time: now_micros(),
        })
        .await
    }
}

impl Coffer {
    /// The first result of this request, if it already ran.
    pub(crate) async fn find_replay(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>> {
        let Some(found) = self
            .store()
            .find_idempotency(&key.tenant, &key.request_id)
            .await?
        else {
            return Ok(None);
        };
        if found.operation != key.operation || found.request_hash != key.request_hash {
            return Err(Error::new(
                ErrorCode::AlreadyExists,
                Reason::RequestIdReused,
                "request_id was already used for a different request; send a new request_id",
            ));
        }
        Ok(Some(found))
    }
}

/// True when a write lost a race with a concurrent request using the same id.
pub(crate) fn is_request_id_race(err: &Error) -> bool {
    err.reason() == Reason::RequestIdReused
}
