//! Coffer's server: the use cases ([`app`]), the gRPC edge ([`grpc`]), health
//! reporting and the serve loop. The binary (`coffer serve`) builds a
//! [`Coffer`] from a store, providers and a keyring, binds a listener and calls
//! [`serve`].

pub mod app;
pub mod grpc;
pub mod health;
mod serve;

pub use app::Coffer;
pub use serve::{ServeError, ServeOptions, serve};
