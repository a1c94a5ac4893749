//! The checks on captured plans. A failed check is recorded, not raised, so
//! one run reports every query that lacks an index; the test fails at the end
//! if any did.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::BIG_TABLES;
use super::capture::{Plan, relation, str_field};

/// Every failed check, reported together at the end: one run shows every
/// query that lacks an index, not just the first.
pub(crate) static FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn fail(message: String) {
    eprintln!("FAILED {message}");
    FAILURES.lock().unwrap().push(message);
}

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            fail(format!($($msg)+));
        }
    };
}

/// No sequential scan of a seeded table in any plan, and the statement on
/// `table` reaches it through `index`.
pub(crate) fn assert_indexed(what: &str, plans: &[Plan], table: &str, index: &str) {
    assert_indexed_tolerating(what, plans, table, index, &[]);
}

/// [`assert_indexed`], where a sequential scan of a table in `tolerated` is
/// a known gap rather than a failure.
pub(crate) fn assert_indexed_tolerating(
    what: &str,
    plans: &[Plan],
    table: &str,
    index: &str,
    tolerated: &[&str],
) {
    for plan in plans {
        for node in plan.nodes() {
            if let Some(rel) = relation(node) {
                check!(
                    !(str_field(node, "Node Type") == Some("Seq Scan")
                        && BIG_TABLES.contains(&rel)
                        && !tolerated.contains(&rel)),
                    "{what}: sequential scan of {rel}\n  plan: {}\n  query: {}",
                    plan.outline(),
                    plan.query
                );
            }
        }
    }
    let uses = plans.iter().any(|p| {
        p.nodes()
            .iter()
            .any(|n| relation(n) == Some(table) && str_field(n, "Index Name") == Some(index))
            || p.nodes().iter().any(|n| {
                // A bitmap scan names the index on its child node.
                str_field(n, "Node Type") == Some("Bitmap Index Scan")
                    && str_field(n, "Index Name") == Some(index)
            })
    });
    check!(
        uses,
        "{what}: expected {table} to be read through {index}\n{}",
        describe(plans)
    );
    for plan in plans {
        eprintln!("  {what}: {}", plan.outline());
    }
}

/// The page query on `table` is a LIMIT over an ordered index range scan of
/// `index`: no Sort node, so its cost does not grow with the rows before the
/// token.
pub(crate) fn assert_keyset(what: &str, plans: &[Plan], table: &str, index: &str) {
    assert_indexed(what, plans, table, index);
    let Some(page) = plans
        .iter()
        .find(|p| p.touches(table) && str_field(&p.root, "Node Type") == Some("Limit"))
    else {
        return fail(format!(
            "{what}: no LIMIT plan on {table}\n{}",
            describe(plans)
        ));
    };
    let nodes = page.nodes();
    check!(
        !nodes
            .iter()
            .any(|n| matches!(str_field(n, "Node Type"), Some("Sort" | "Incremental Sort"))),
        "{what}: the page is sorted instead of read in index order\n  plan: {}",
        page.outline()
    );
    check!(
        nodes.iter().any(|n| {
            matches!(
                str_field(n, "Node Type"),
                Some("Index Scan" | "Index Only Scan")
            ) && relation(n) == Some(table)
                && str_field(n, "Index Name") == Some(index)
                && n.get("Index Cond").is_some()
        }),
        "{what}: expected an index range scan of {index}\n  plan: {}",
        page.outline()
    );
}

fn describe(plans: &[Plan]) -> String {
    plans
        .iter()
        .map(|p| format!("  plan: {}\n  query: {}", p.outline(), p.query))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Like [`assert_indexed`], with any of `indexes` accepted.
pub(crate) fn assert_indexed_any(what: &str, plans: &[Plan], table: &str, indexes: &[&str]) {
    assert_indexed_any_tolerating(what, plans, table, indexes, &[]);
}

pub(crate) fn assert_indexed_any_tolerating(
    what: &str,
    plans: &[Plan],
    table: &str,
    indexes: &[&str],
    tolerated: &[&str],
) {
    let used: BTreeSet<&str> = plans
        .iter()
        .flat_map(Plan::nodes)
        .filter(|n| {
            relation(n) == Some(table) || str_field(n, "Node Type") == Some("Bitmap Index Scan")
        })
        .filter_map(|n| str_field(n, "Index Name"))
        .collect();
    let Some(index) = indexes.iter().find(|i| used.contains(**i)) else {
        return fail(format!(
            "{what}: expected {table} through one of {indexes:?}\n{}",
            describe(plans)
        ));
    };
    assert_indexed_tolerating(what, plans, table, index, tolerated);
}
