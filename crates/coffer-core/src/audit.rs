//! The audit hash chain. Each tenant's events form a chain: event `seq` (from
//! 1, gapless) stores the previous event's hash and its own hash =
//! SHA-256(prev_hash ‖ canonical encoding of the event, seq included).
//! Editing, deleting or reordering any stored event breaks the chain at the
//! first affected seq, which [`ChainVerifier`] reports.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::record::{AuditEventRecord, NewAuditEvent};

/// `prev_hash` of a tenant's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields that are hashed, in a fixed order (context sorted by key).
#[derive(Serialize)]
struct Canonical<'a> {
    v: u8,
    tenant: &'a str,
    seq: i64,
    time: i64,
    principal: &'a str,
    action: &'a str,
    resource: &'a str,
    version: i64,
    consumer_kind: &'a str,
    consumer_id: &'a str,
    config_path: &'a str,
    context: &'a std::collections::BTreeMap<String, String>,
    outcome: &'a str,
    reason: &'a str,
    request_id: &'a str,
}

/// The canonical bytes of an event at `seq`: compact JSON with a fixed field
/// order; stable across versions because the struct above is the format.
pub fn canonical(seq: i64, event: &NewAuditEvent) -> Vec<u8> {
    let canonical = Canonical {
        v: 1,
        tenant: event.tenant.as_str(),
        seq,
        time: event.time,
        principal: &event.principal,
        action: &event.action,
        resource: &event.resource,
        version: event.version,
        consumer_kind: &event.consumer_kind,
        consumer_id: &event.consumer_id,
        config_path: &event.config_path,
        context: &event.context,
        outcome: event.outcome.as_str(),
        reason: &event.reason,
        request_id: &event.request_id,
    };
    // Serializing plain strings, integers and a string map cannot fail.
    serde_json::to_vec(&canonical).unwrap_or_default()
}

/// hex(SHA-256(prev_hash ‖ canonical(seq, event))).
pub fn event_hash(prev_hash: &str, seq: i64, event: &NewAuditEvent) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical(seq, event));
    hex::encode(hasher.finalize())
}

/// The head of a tenant's chain: the last seq and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn genesis() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }

    /// Appends an event, advancing the head.
    pub fn append(&mut self, event: NewAuditEvent) -> AuditEventRecord {
        let seq = self.seq + 1;
        let hash = event_hash(&self.hash, seq, &event);
        let record = AuditEventRecord {
            seq,
            event,
            prev_hash: std::mem::replace(&mut self.hash, hash.clone()),
            hash,
        };
        self.seq = seq;
        record
    }
}

/// Checks a chain fed in seq order, one page at a time.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    head: ChainHead,
    checked: i64,
    first_broken: Option<i64>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            head: ChainHead::genesis(),
            checked: 0,
            first_broken: None,
        }
    }
}

impl ChainVerifier {
    /// Feeds the next stored event; stops judging after the first break.
    pub fn feed(&mut self, record: &AuditEventRecord) {
        if self.first_broken.is_some() {
            return;
        }
        self.checked += 1;
        let expected_seq = self.head.seq + 1;
        let intact = record.seq == expected_seq
            && record.prev_hash == self.head.hash
            && record.hash == event_hash(&record.prev_hash, record.seq, &record.event);
        if intact {
            self.head = ChainHead {
                seq: record.seq,
                hash: record.hash.clone(),
            };
        } else {
            // A missing or moved row shows as an unexpected seq: the break is
            // at the seq that should have come next.
            self.first_broken = Some(expected_seq.min(record.seq.max(1)));
        }
    }

    /// Events examined so far.
    pub fn checked(&self) -> i64 {
        self.checked
    }

    /// The first seq where the chain does not hold, if any.
    pub fn first_broken(&self) -> Option<i64> {
        self.first_broken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::TenantId;
    use crate::record::AuditOutcome;

    fn event(action: &str) -> NewAuditEvent {
        NewAuditEvent {
            tenant: TenantId::parse("acme", "t").unwrap(),
            time: 1,
            principal: "p".into(),
            action: action.into(),
            resource: "tenants/acme/secrets/k".into(),
            version: 1,
            consumer_kind: String::new(),
            consumer_id: String::new(),
            config_path: String::new(),
            context: [("run_id".to_owned(), "r1".to_owned())].into(),
            outcome: AuditOutcome::Success,
            reason: String::new(),
            request_id: String::new(),
        }
    }

    fn chain(n: usize) -> Vec<AuditEventRecord> {
        let mut head = ChainHead::genesis();
        (0..n)
            .map(|i| head.append(event(&format!("a{i}"))))
            .collect()
    }

    fn verify(records: &[AuditEventRecord]) -> Option<i64> {
        let mut verifier = ChainVerifier::default();
        records.iter().for_each(|r| verifier.feed(r));
        verifier.first_broken()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let records = chain(5);
        assert_eq!(records[0].prev_hash, GENESIS_HASH);
        assert_eq!(records[4].seq, 5);
        assert_eq!(verify(&records), None);
    }

    #[test]
    fn edits_deletions_and_reorders_are_found_at_their_seq() {
        let mut edited = chain(5);
        edited[2].event.principal = "mallory".into();
        assert_eq!(verify(&edited), Some(3));

        let mut deleted = chain(5);
        deleted.remove(3);
        assert_eq!(verify(&deleted), Some(4));

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert_eq!(verify(&reordered), Some(2));

        let mut context = chain(3);
        context[0].event.context.insert("extra".into(), "x".into());
        assert_eq!(verify(&context), Some(1));
    }
}
