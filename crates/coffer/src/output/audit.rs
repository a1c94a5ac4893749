//! Tables of `AuditEvent`, `ListAuditEventsResponse` and
//! `VerifyAuditChainResponse`.

use coffer_proto::v1::{AuditEvent, ListAuditEventsResponse, VerifyAuditChainResponse};

use super::bindings::consumer;
use super::{Render, columns, enum_word, fields, push_next_page, time};

impl Render for AuditEvent {
    const TYPE: &'static str = "coffer.v1.AuditEvent";

    fn table(&self) -> String {
        let mut context: Vec<_> = self.context.iter().collect();
        context.sort();
        let context = context
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        fields(&[
            ("name", self.name.clone()),
            ("seq", self.seq.to_string()),
            ("time", time(self.time.as_ref())),
            ("principal", self.principal.clone()),
            ("action", self.action.clone()),
            ("resource", self.resource.clone()),
            (
                "version",
                if self.version == 0 {
                    String::new()
                } else {
                    self.version.to_string()
                },
            ),
            ("consumer", consumer(self.consumer.as_ref())),
            ("config path", self.config_path.clone()),
            ("context", context),
            ("outcome", enum_word(self.outcome().as_str_name())),
            ("reason", self.reason.clone()),
            ("request id", self.request_id.clone()),
            ("prev hash", self.prev_hash.clone()),
            ("hash", self.hash.clone()),
        ])
    }
}

impl Render for ListAuditEventsResponse {
    const TYPE: &'static str = "coffer.v1.ListAuditEventsResponse";

    fn table(&self) -> String {
        let rows = self
            .audit_events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    time(e.time.as_ref()),
                    e.action.clone(),
                    enum_word(e.outcome().as_str_name()),
                    e.reason.clone(),
                    e.principal.clone(),
                    consumer(e.consumer.as_ref()),
                    e.resource.clone(),
                ]
            })
            .collect();
        let mut out = columns(
            &[
                "SEQ",
                "TIME",
                "ACTION",
                "OUTCOME",
                "REASON",
                "PRINCIPAL",
                "CONSUMER",
                "RESOURCE",
            ],
            rows,
        );
        push_next_page(&mut out, &self.next_page_token);
        out
    }
}

impl Render for VerifyAuditChainResponse {
    const TYPE: &'static str = "coffer.v1.VerifyAuditChainResponse";

    fn table(&self) -> String {
        let broken = if self.ok {
            String::new()
        } else {
            self.first_broken_seq.to_string()
        };
        fields(&[
            ("chain", if self.ok { "ok" } else { "broken" }.to_owned()),
            ("checked", self.checked.to_string()),
            ("first broken seq", broken),
            ("verified", time(self.verify_time.as_ref())),
        ])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use coffer_proto::v1::{Consumer, audit_event};

    use super::*;

    #[test]
    fn verify_table_says_ok_or_broken() {
        let ok = VerifyAuditChainResponse {
            ok: true,
            checked: 42,
            ..VerifyAuditChainResponse::default()
        };
        let table = ok.table();
        assert!(table.contains("chain             ok\n"), "{table}");
        assert!(table.contains("checked           42\n"), "{table}");
        assert!(!table.contains("first broken"), "{table}");
        let broken = VerifyAuditChainResponse {
            ok: false,
            checked: 7,
            first_broken_seq: 5,
            ..VerifyAuditChainResponse::default()
        };
        let table = broken.table();
        assert!(table.contains("chain             broken\n"), "{table}");
        assert!(table.contains("first broken seq  5\n"), "{table}");
    }

    #[test]
    fn event_rows_show_outcome_and_consumer() {
        let list = ListAuditEventsResponse {
            audit_events: vec![AuditEvent {
                seq: 9,
                action: "secret.resolve".into(),
                outcome: audit_event::Outcome::Denied as i32,
                reason: "NOT_BOUND".into(),
                principal: "spiffe://acme/orchestrator".into(),
                consumer: Some(Consumer {
                    kind: "agent".into(),
                    id: "a1".into(),
                }),
                resource: "tenants/acme/secrets/k".into(),
                ..AuditEvent::default()
            }],
            next_page_token: "n".into(),
        };
        let table = list.table();
        let row = table.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "9",
                "secret.resolve",
                "denied",
                "NOT_BOUND",
                "spiffe://acme/orchestrator",
                "agent:a1",
                "tenants/acme/secrets/k"
            ]
        );
        assert!(table.contains("--page-token n"));
    }
}
