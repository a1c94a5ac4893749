//! Resolved values as the SDK hands them out: the bytes are zeroized when the
//! last copy is dropped and `Debug` shows only the version and the length.

use std::fmt;

use zeroize::Zeroizing;

use coffer_proto::v1;

/// One resolved secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue {
    /// The resolved version's name (`tenants/{t}/secrets/{key}/versions/{n}`).
    name: String,
    version: i64,
    value: Zeroizing<Vec<u8>>,
}

impl SecretValue {
    pub(crate) fn from_response(mut response: v1::ResolveSecretResponse) -> Self {
        SecretValue {
            value: Zeroizing::new(std::mem::take(&mut response.value)),
            name: response.name,
            version: response.version,
        }
    }

    /// The resolved version's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    /// The value's bytes. Copying them out makes a copy this type cannot zeroize.
    pub fn expose(&self) -> &[u8] {
        &self.value
    }

    pub fn len(&self) -> usize {
        self.value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValue")
            .field("name", &self.name)
            .field("len", &self.value.len())
            .finish_non_exhaustive()
    }
}

/// Why an optional binding has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingError {
    pub code: tonic::Code,
    pub message: String,
}

/// One binding of a consumer, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBinding {
    pub config_path: String,
    /// The binding's name.
    pub binding: String,
    /// The secret's name.
    pub secret: String,
    /// The value, or why an optional binding has none.
    pub value: Result<SecretValue, BindingError>,
}

/// Every binding of one consumer under a config path prefix, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedBindings {
    pub entries: Vec<ResolvedBinding>,
}

impl ResolvedBindings {
    pub(crate) fn from_response(response: v1::ResolveBindingsResponse) -> Self {
        let entries = response
            .entries
            .into_iter()
            .map(|mut entry| {
                let value = match entry.error.take() {
                    Some(status) => Err(BindingError {
                        code: tonic::Code::from_i32(status.code),
                        message: status.message,
                    }),
                    None => Ok(SecretValue {
                        name: format!("{}/versions/{}", entry.secret, entry.version),
                        version: entry.version,
                        value: Zeroizing::new(std::mem::take(&mut entry.value)),
                    }),
                };
                ResolvedBinding {
                    config_path: entry.config_path,
                    binding: entry.binding,
                    secret: entry.secret,
                    value,
                }
            })
            .collect();
        ResolvedBindings { entries }
    }

    /// The value at `config_path`, if it resolved.
    pub fn get(&self, config_path: &str) -> Option<&SecretValue> {
        self.entries
            .iter()
            .find(|entry| entry.config_path == config_path)
            .and_then(|entry| entry.value.as_ref().ok())
    }

    /// Whether any entry comes from `secret` (a secret name).
    pub(crate) fn uses(&self, secret: &str) -> bool {
        self.entries.iter().any(|entry| entry.secret == secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let value = SecretValue::from_response(v1::ResolveSecretResponse {
            name: "tenants/acme/secrets/db/versions/2".into(),
            version: 2,
            value: b"hunter2-canary".to_vec(),
        });
        let bindings = ResolvedBindings::from_response(v1::ResolveBindingsResponse {
            entries: vec![v1::ResolvedBinding {
                config_path: "env.DB".into(),
                secret: "tenants/acme/secrets/db".into(),
                version: 2,
                value: b"hunter2-canary".to_vec(),
                ..Default::default()
            }],
        });
        for shown in [
            format!("{value:?}"),
            format!("{bindings:?}"),
            format!("{bindings:#?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("len: 14"), "{shown}");
        }
        assert_eq!(bindings.get("env.DB").unwrap().expose(), b"hunter2-canary");
        assert_eq!(bindings.get("env.DB").unwrap().version(), 2);
    }
}
