//! Where a vault's managed secrets live ([`ManagedNames`]) and the
//! namespace the guardrails protect.

use super::settings::{DEFAULT_NAME_PREFIX, DEFAULT_NAMESPACE};
use crate::config::AwsSecretsManagerConfig;

/// Where a vault's managed secrets live: `{prefix}/{namespace}/{tenant}/{key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ManagedNames {
    /// `{prefix}/{namespace}/`, the namespace guardrails protect.
    root: String,
}

impl ManagedNames {
    pub(super) fn new(config: &AwsSecretsManagerConfig) -> Self {
        let prefix = or_default(&config.name_prefix, DEFAULT_NAME_PREFIX);
        let namespace = or_default(&config.namespace, DEFAULT_NAMESPACE);
        ManagedNames {
            root: format!("{prefix}/{namespace}/"),
        }
    }

    /// The managed name of a tenant's key.
    pub(super) fn name(&self, tenant: &str, key: &str) -> String {
        format!("{}{tenant}/{key}", self.root)
    }

    /// Whether a remote name lies inside the managed namespace. Compared
    /// without case, so `Coffer/Default/…` cannot slip past the guardrail.
    pub(super) fn is_guarded(&self, name: &str) -> bool {
        name.len() >= self.root.len()
            && name.as_bytes()[..self.root.len()].eq_ignore_ascii_case(self.root.as_bytes())
    }

    pub(super) fn root(&self) -> &str {
        &self.root
    }
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_names_and_the_guarded_namespace() {
        let names = ManagedNames::new(&AwsSecretsManagerConfig::default());
        assert_eq!(
            names.name("acme", "db.password"),
            "coffer/default/acme/db.password"
        );
        assert_eq!(names.root(), "coffer/default/");
        assert!(names.is_guarded("coffer/default/acme/x"));
        assert!(names.is_guarded("COFFER/Default/acme/x"));
        assert!(!names.is_guarded("coffer/defaults/acme/x"));
        assert!(!names.is_guarded("coffer/default"));
        assert!(!names.is_guarded("prod/db"));
        let custom = ManagedNames::new(&AwsSecretsManagerConfig {
            name_prefix: "vault".into(),
            namespace: "prod".into(),
            ..AwsSecretsManagerConfig::default()
        });
        assert_eq!(custom.name("t", "k"), "vault/prod/t/k");
        assert!(!custom.is_guarded("coffer/default/t/k"));
    }
}
