//! The Rust client SDK for Coffer.
//!
//! - [`ClientConfig`] and [`Client::connect`]: one channel to a server, mutual
//!   TLS from files or PEM strings (plaintext only to a loopback dev server),
//!   connect and call timeouts.
//! - [`Client::secrets`] and [`Client::vaults`]: the generated clients for
//!   every RPC, with an `x-request-id` on every call; [`Client::resolve`] and
//!   [`Client::resolve_bindings`] for the common reads. Calls made through
//!   [`Client::retry`] (the convenience methods are) are retried with
//!   exponential backoff and jitter on UNAVAILABLE, and after the server's
//!   `RetryInfo` delay on RESOURCE_EXHAUSTED (rate limits, a busy vault).
//! - [`CachedResolver`]: resolved values kept in memory and invalidated by a
//!   background WatchSecrets stream, with a TTL while the stream is down and
//!   a [`CacheEvent`] feed so a service can reload its configuration.
//!
//! Values are [`SecretValue`]s: zeroized on drop and never printed by `Debug`.
//!
//! ```no_run
//! use std::path::Path;
//! use coffer_client::{CacheOptions, CachedResolver, Client, ClientConfig, proto};
//!
//! # async fn run() -> Result<(), coffer_client::Error> {
//! let config = ClientConfig::from_files(
//!     "https://coffer.internal:50051",
//!     "acme",
//!     Path::new("ca.pem"),
//!     Path::new("billing.pem"),
//!     Path::new("billing.key"),
//! )?;
//! let client = Client::connect(config).await?;
//! let me = proto::Consumer { kind: "service".into(), id: "billing".into() };
//! let cache = CachedResolver::start(
//!     client,
//!     CacheOptions { consumer: Some(me.clone()), ..Default::default() },
//! )
//! .await?;
//! let mut changes = cache.subscribe();
//! let config = cache.resolve_bindings(&me, "env.").await?;
//! let _db_password = config.get("env.DB_PASSWORD");
//! while changes.recv().await.is_ok() {
//!     let _reloaded = cache.resolve_bindings(&me, "env.").await?;
//! }
//! # Ok(())
//! # }
//! ```

mod cache;
mod client;
mod config;
mod error;
mod retry;
mod value;

pub use cache::{CacheEvent, CacheOptions, CachedResolver};
pub use client::{Client, GrpcService, RequestIds};
pub use config::{ClientConfig, TlsConfig};
pub use error::Error;
pub use retry::RetryPolicy;
pub use value::{BindingError, ResolvedBinding, ResolvedBindings, SecretValue};

/// The generated messages and clients (`coffer.v1`), re-exported so callers
/// need no direct dependency on `coffer-proto`.
pub use coffer_proto::v1 as proto;
