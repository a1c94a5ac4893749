//! Who is calling. Derived by the server from the client certificate (or the
//! implicit admin in dev mode); recorded as `created_by` and in audit events.

use std::fmt;

/// A verified caller identity (a SPIFFE id or a certificate CN).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(String);

impl Principal {
    pub fn new(id: impl Into<String>) -> Self {
        Principal(id.into())
    }

    /// The implicit principal of `coffer serve --dev`.
    pub fn dev_admin() -> Self {
        Principal("dev:admin".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
