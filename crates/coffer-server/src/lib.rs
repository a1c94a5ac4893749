//! Coffer's server: the use cases ([`app`]), the gRPC edge ([`grpc`]), health
//! reporting, what operators see of it ([`observe`]: per-RPC logs, request
//! ids, metrics) and the serve loop. The binary (`coffer serve`) builds a
//! [`Coffer`] from a store, providers and a keyring, binds a listener and calls
//! [`serve`].

pub mod app;
pub mod grpc;
pub mod health;
pub mod limits;
pub mod observe;
mod serve;
pub mod telemetry;
pub mod tls;

pub use app::Coffer;
pub use grpc::auth::Authenticator;
pub use grpc::authz::{SharedPolicy, load_policy_file, parse_policy};
pub use limits::{Rate, RateLimits};
pub use serve::{Mtls, MtlsError, MtlsFiles, ReloadSummary, ServeError, ServeOptions, serve};
pub use tls::{ReloadableTls, TlsError, TlsFiles};
