//! Storage tests. Every `store_test!` runs on SQLite and on PostgreSQL, each
//! on a fresh database built by the real migrations.
#![allow(clippy::unwrap_used)]

mod audit;
mod bindings;
mod concurrency;
mod fixtures;
mod idempotency;
mod lookups;
mod migrations;
mod notify;
mod secrets;
mod vaults;
mod versions;
