//! Keyset pagination under churn, on SQLite and PostgreSQL: while one task
//! pages through ListSecrets, ListBindings or ListSecretVersions with small
//! pages, another keeps creating, updating, soft-deleting and purging rows,
//! and more rows change between every two pages. Whatever happens around it,
//! a row that existed for the whole listing is listed exactly once, rows come
//! in strictly monotonic cursor order (so none twice), a row deleted while its
//! position was still ahead of the cursor is not listed, and nothing unknown
//! is.
//!
//! Pages are fetched the way the use cases in `coffer-server` do: `limit + 1`
//! rows, the extra one only saying that another page follows, and the last
//! row of the page as the next cursor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bindings;
mod secrets;
mod support;
mod versions;
