//! Plan capture: `auto_explain` in the store's sessions reports each plan as
//! a NOTICE, sqlx logs notices as `tracing` events, and the subscriber here
//! keeps them for [`plans_of`] to parse.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Mutex, Once};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

use super::BIG_TABLES;

/// Notices (auto_explain plans) received by any store connection.
static NOTICES: Mutex<Vec<String>> = Mutex::new(Vec::new());
const NOTICE_TARGET: &str = "sqlx::postgres::notice";

/// Collects sqlx's notice events and ignores everything else.
struct NoticeCollector;

struct MessageVisitor(Option<String>);

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && self.0.is_none() {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl Subscriber for NoticeCollector {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.target() == NOTICE_TARGET {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == NOTICE_TARGET
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        // Never called: no span is enabled.
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut visitor = MessageVisitor(None);
        event.record(&mut visitor);
        if let Some(message) = visitor.0 {
            NOTICES.lock().unwrap().push(message);
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

pub(crate) fn install_collector() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(NoticeCollector)
            .expect("install the notice collector");
    });
}

/// `url` with auto_explain loaded into every session, reporting every plan
/// as a NOTICE in JSON; `generic` forces generic plans for prepared statements.
pub(crate) fn explaining_url(url: &str, generic: bool) -> String {
    let mut options = vec![
        ("session_preload_libraries", "auto_explain"),
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_format", "json"),
        ("auto_explain.log_level", "notice"),
    ];
    if generic {
        options.push(("plan_cache_mode", "force_generic_plan"));
    }
    let mut out = url.to_owned();
    for (key, value) in options {
        let sep = if out.contains('?') { '&' } else { '?' };
        write!(out, "{sep}options[{key}]={value}").unwrap();
    }
    out
}

/// One statement's plan as auto_explain reported it.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) query: String,
    pub(crate) root: Value,
}

impl Plan {
    /// Every node, depth first.
    pub(crate) fn nodes(&self) -> Vec<&Value> {
        fn walk<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
            out.push(node);
            if let Some(children) = node.get("Plans").and_then(Value::as_array) {
                for child in children {
                    walk(child, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    pub(crate) fn touches(&self, table: &str) -> bool {
        self.nodes().iter().any(|n| relation(n) == Some(table))
    }

    /// `Limit -> Index Scan (tbl)` style, for messages.
    pub(crate) fn outline(&self) -> String {
        self.nodes()
            .iter()
            .map(|n| {
                let mut s = str_field(n, "Node Type").unwrap_or("?").to_owned();
                if let Some(rel) = relation(n) {
                    write!(s, " on {rel}").unwrap();
                }
                if let Some(index) = str_field(n, "Index Name") {
                    write!(s, " using {index}").unwrap();
                }
                s
            })
            .collect::<Vec<_>>()
            .join(" > ")
    }
}

pub(crate) fn str_field<'a>(node: &'a Value, field: &str) -> Option<&'a str> {
    node.get(field).and_then(Value::as_str)
}

pub(crate) fn relation(node: &Value) -> Option<&str> {
    str_field(node, "Relation Name")
}

/// Parses "duration: … ms  plan:\n{json}".
fn parse_notice(message: &str) -> Option<Plan> {
    let json: Value = serde_json::from_str(&message[message.find('{')?..]).ok()?;
    Some(Plan {
        query: json.get("Query Text")?.as_str()?.to_owned(),
        root: json.get("Plan")?.clone(),
    })
}

/// Runs one store call and returns the plans of the statements it ran on
/// the seeded tables (sqlx's own catalog lookups are left out).
pub(crate) async fn plans_of<T, F>(what: &str, call: F) -> Vec<Plan>
where
    F: Future<Output = coffer_core::Result<T>>,
{
    NOTICES.lock().unwrap().clear();
    if let Err(err) = call.await {
        panic!("{what}: store call failed: {err}");
    }
    let notices = std::mem::take(&mut *NOTICES.lock().unwrap());
    let plans: Vec<Plan> = notices
        .iter()
        .filter_map(|n| parse_notice(n))
        .filter(|p| BIG_TABLES.iter().any(|t| p.touches(t)))
        .collect();
    assert!(
        !plans.is_empty(),
        "{what}: no plan was reported ({} notices); is auto_explain installed?",
        notices.len()
    );
    plans
}
