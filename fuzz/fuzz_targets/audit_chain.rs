//! The audit chain's canonical encoding and verifier (`coffer_core::audit`).
//!
//! Properties: the canonical encoding is deterministic, is JSON whose fields
//! (in the fixed order) are exactly the event's, and is injective (two
//! events encode alike only when they are equal), so no edit can keep an
//! event's hash; a chain built by `ChainHead::append` verifies; editing,
//! deleting or swapping stored events is reported at the first affected seq.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use coffer_core::TenantId;
use coffer_core::audit::{ChainHead, ChainVerifier, GENESIS_HASH, canonical, event_hash};
use coffer_core::record::{AuditEventRecord, AuditOutcome, NewAuditEvent};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Clone, Arbitrary)]
struct Event {
    tenant: String,
    time: i64,
    principal: String,
    action: String,
    resource: String,
    version: i64,
    consumer_kind: String,
    consumer_id: String,
    config_path: String,
    context: BTreeMap<String, String>,
    outcome: u8,
    reason: String,
    request_id: String,
}

impl Event {
    fn into_event(self) -> NewAuditEvent {
        let outcomes = [
            AuditOutcome::Success,
            AuditOutcome::Denied,
            AuditOutcome::Failure,
        ];
        NewAuditEvent {
            tenant: TenantId::parse(&self.tenant, "t")
                .unwrap_or_else(|_| TenantId::parse("acme", "t").expect("valid")),
            time: self.time,
            principal: self.principal,
            action: self.action,
            resource: self.resource,
            version: self.version,
            consumer_kind: self.consumer_kind,
            consumer_id: self.consumer_id,
            config_path: self.config_path,
            context: self.context,
            outcome: outcomes[usize::from(self.outcome) % 3],
            reason: self.reason,
            request_id: self.request_id,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Tamper {
    Edit { at: u8, with: Box<Event> },
    Delete { at: u8 },
    Swap { a: u8, b: u8 },
    Rehash { at: u8 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    seq: i64,
    a: Event,
    b: Event,
    chain: Vec<Event>,
    tamper: Tamper,
}

fuzz_target!(|input: Input| {
    let a = input.a.into_event();
    let b = input.b.into_event();
    encoding(input.seq, &a);
    let (ca, cb) = (canonical(input.seq, &a), canonical(input.seq, &b));
    assert_eq!(ca == cb, a == b, "canonical encoding is not injective");
    assert_ne!(
        canonical(input.seq, &a),
        canonical(input.seq.wrapping_add(1), &a)
    );

    let events: Vec<NewAuditEvent> = input
        .chain
        .into_iter()
        .take(16)
        .map(Event::into_event)
        .collect();
    chain(events, input.tamper);
});

fn encoding(seq: i64, event: &NewAuditEvent) {
    let bytes = canonical(seq, event);
    assert_eq!(bytes, canonical(seq, event), "not deterministic");
    let value: serde_json::Value = serde_json::from_slice(&bytes).expect("canonical is JSON");
    let object = value.as_object().expect("an object");
    let expected = [
        "v",
        "tenant",
        "seq",
        "time",
        "principal",
        "action",
        "resource",
        "version",
        "consumer_kind",
        "consumer_id",
        "config_path",
        "context",
        "outcome",
        "reason",
        "request_id",
    ];
    let TopLevelKeys(keys) = serde_json::from_slice(&bytes).expect("an object");
    assert_eq!(keys, expected, "fields missing, repeated or out of order");
    let s = |k: &str| object[k].as_str().expect("string field").to_owned();
    assert_eq!(object["v"], 1);
    assert_eq!(object["seq"], seq);
    assert_eq!(object["time"], event.time);
    assert_eq!(object["version"], event.version);
    assert_eq!(s("tenant"), event.tenant.as_str());
    assert_eq!(s("principal"), event.principal);
    assert_eq!(s("action"), event.action);
    assert_eq!(s("resource"), event.resource);
    assert_eq!(s("consumer_kind"), event.consumer_kind);
    assert_eq!(s("consumer_id"), event.consumer_id);
    assert_eq!(s("config_path"), event.config_path);
    assert_eq!(s("outcome"), event.outcome.as_str());
    assert_eq!(s("reason"), event.reason);
    assert_eq!(s("request_id"), event.request_id);
    let context: BTreeMap<String, String> =
        serde_json::from_value(object["context"].clone()).expect("context is a string map");
    assert_eq!(context, event.context);
    let hash = event_hash(GENESIS_HASH, seq, event);
    assert_eq!(hash.len(), 64);
    assert_eq!(hash, event_hash(GENESIS_HASH, seq, event));
}

fn verify(records: &[AuditEventRecord]) -> (Option<i64>, i64) {
    let mut verifier = ChainVerifier::default();
    for record in records {
        verifier.feed(record);
    }
    (verifier.first_broken(), verifier.checked())
}

fn chain(events: Vec<NewAuditEvent>, tamper: Tamper) {
    let mut head = ChainHead::genesis();
    let records: Vec<AuditEventRecord> = events.into_iter().map(|e| head.append(e)).collect();
    assert_eq!(verify(&records), (None, records.len() as i64));
    if records.is_empty() {
        return;
    }
    assert_eq!(head.seq, records.len() as i64);
    let n = records.len();
    let mut tampered = records.clone();
    let expected = match tamper {
        Tamper::Edit { at, with } => {
            let at = usize::from(at) % n;
            let with = (*with).into_event();
            let changed = tampered[at].event != with;
            tampered[at].event = with;
            changed.then_some(at as i64 + 1)
        }
        Tamper::Delete { at } => {
            let at = usize::from(at) % n;
            tampered.remove(at);
            // Dropping the newest event leaves a shorter valid chain: only an
            // external record of the head can tell (DESIGN §6 keeps none).
            (at + 1 < n).then_some(at as i64 + 1)
        }
        Tamper::Swap { a, b } => {
            let (a, b) = (usize::from(a) % n, usize::from(b) % n);
            tampered.swap(a, b);
            (a != b).then_some(a.min(b) as i64 + 1)
        }
        Tamper::Rehash { at } => {
            // Recomputing an edited event's own hash still breaks the link
            // to its successor (or is the undetectable newest event).
            let at = usize::from(at) % n;
            let record = &mut tampered[at];
            record.event.principal.push('!');
            record.hash = event_hash(&record.prev_hash, record.seq, &record.event);
            (at + 1 < n).then_some(at as i64 + 2)
        }
    };
    assert_eq!(verify(&tampered).0, expected);
}

/// The top-level keys of a JSON object in the order written (serde_json's
/// `Value` sorts them).
struct TopLevelKeys(Vec<String>);

impl<'de> serde::Deserialize<'de> for TopLevelKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TopLevelKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TopLevelKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, serde::de::IgnoredAny)) =
                    map.next_entry::<String, serde::de::IgnoredAny>()?
                {
                    keys.push(key);
                }
                Ok(TopLevelKeys(keys))
            }
        }
        d.deserialize_map(Visitor)
    }
}
