//! Tables of `Vault`, `ListVaultsResponse`, `ListProvidersResponse` and
//! `VaultHealth`. Vault settings are shown: they never hold credentials.

use coffer_proto::v1::{
    ListProvidersResponse, ListVaultsResponse, ProviderDescriptor, Vault, VaultHealth,
};

use super::{Render, columns, enum_word, fields, push_next_page, time, yes_no};
use crate::client::vault_config;

impl Render for Vault {
    const TYPE: &'static str = "coffer.v1.Vault";

    fn table(&self) -> String {
        let settings = vault_config::describe(self)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let health = self.health.clone().unwrap_or_default();
        fields(&[
            ("name", self.name.clone()),
            ("display name", self.display_name.clone()),
            ("provider", self.provider.clone()),
            ("state", enum_word(self.state().as_str_name())),
            ("default", yes_no(self.is_default).to_owned()),
            ("settings", settings),
            ("health", health.status),
            ("health message", health.message),
            ("health checked", time(health.check_time.as_ref())),
            ("created", time(self.create_time.as_ref())),
            ("updated", time(self.update_time.as_ref())),
            ("disabled", time(self.disable_time.as_ref())),
            ("etag", self.etag.clone()),
        ])
    }
}

impl Render for ListVaultsResponse {
    const TYPE: &'static str = "coffer.v1.ListVaultsResponse";

    fn table(&self) -> String {
        let rows = self
            .vaults
            .iter()
            .map(|v| {
                vec![
                    v.name.rsplit('/').next().unwrap_or(&v.name).to_owned(),
                    v.provider.clone(),
                    enum_word(v.state().as_str_name()),
                    if v.is_default { "*" } else { "" }.to_owned(),
                    v.health
                        .as_ref()
                        .map(|h| h.status.clone())
                        .unwrap_or_default(),
                    v.display_name.clone(),
                ]
            })
            .collect();
        let mut out = columns(
            &[
                "ID",
                "PROVIDER",
                "STATE",
                "DEFAULT",
                "HEALTH",
                "DISPLAY NAME",
            ],
            rows,
        );
        push_next_page(&mut out, &self.next_page_token);
        out
    }
}

/// What a provider can do, as short words: `managed-values, external-refs, …`.
fn capabilities(p: &ProviderDescriptor) -> String {
    [
        (p.supports_managed_values, "managed-values"),
        (p.supports_external_references, "external-refs"),
        (p.supports_remote_listing, "remote-listing"),
        (p.supports_batch_resolve, "batch-resolve"),
    ]
    .into_iter()
    .filter_map(|(has, word)| has.then_some(word))
    .collect::<Vec<_>>()
    .join(", ")
}

impl Render for ListProvidersResponse {
    const TYPE: &'static str = "coffer.v1.ListProvidersResponse";

    fn table(&self) -> String {
        let rows = self
            .providers
            .iter()
            .map(|p| {
                vec![
                    p.id.clone(),
                    p.label.clone(),
                    yes_no(p.configured).to_owned(),
                    capabilities(p),
                ]
            })
            .collect();
        columns(&["ID", "LABEL", "CONFIGURED", "CAPABILITIES"], rows)
    }
}

impl Render for VaultHealth {
    const TYPE: &'static str = "coffer.v1.VaultHealth";

    fn table(&self) -> String {
        fields(&[
            ("status", self.status.clone()),
            ("message", self.message.clone()),
            ("checked", time(self.check_time.as_ref())),
        ])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use coffer_proto::v1::{AwsSecretsManagerConfig, vault};

    use super::*;
    use crate::output::json;

    fn aws() -> Vault {
        Vault {
            name: "tenants/acme/vaults/aws-prod".into(),
            provider: "aws_secrets_manager".into(),
            display_name: "AWS prod".into(),
            state: vault::State::Ready as i32,
            is_default: true,
            config: Some(vault::Config::AwsSecretsManager(AwsSecretsManagerConfig {
                region: "eu-west-1".into(),
                recovery_window_days: 7,
                ..AwsSecretsManagerConfig::default()
            })),
            health: Some(VaultHealth {
                status: "ok".into(),
                message: "reachable".into(),
                check_time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
            }),
            etag: "3".into(),
            ..Vault::default()
        }
    }

    #[test]
    fn vault_table_shows_settings_and_health() {
        let table = aws().table();
        assert!(table.contains("state           ready\n"), "{table}");
        assert!(table.contains("default         yes\n"), "{table}");
        assert!(
            table.contains("settings        region=eu-west-1, recovery_window_days=7\n"),
            "{table}"
        );
        assert!(
            table.contains("health checked  2023-11-14T22:13:20Z\n"),
            "{table}"
        );
        let value: serde_json::Value = serde_json::from_str(&json(&aws()).unwrap()).unwrap();
        assert_eq!(value["awsSecretsManager"]["region"], "eu-west-1");
        assert_eq!(value["isDefault"], true);
    }

    #[test]
    fn list_marks_the_default_and_providers_list_capabilities() {
        let mut disabled = aws();
        disabled.name = "tenants/acme/vaults/old".into();
        disabled.is_default = false;
        disabled.state = vault::State::Disabled as i32;
        disabled.health = None;
        let table = ListVaultsResponse {
            vaults: vec![aws(), disabled],
            next_page_token: String::new(),
        }
        .table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1],
            "aws-prod  aws_secrets_manager  ready     *        ok      AWS prod"
        );
        assert!(
            lines[2].starts_with("old       aws_secrets_manager  disabled "),
            "{table}"
        );

        let providers = ListProvidersResponse {
            providers: vec![ProviderDescriptor {
                id: "local_encrypted".into(),
                label: "Built-in encrypted store".into(),
                supports_managed_values: true,
                supports_batch_resolve: true,
                configured: true,
                ..ProviderDescriptor::default()
            }],
        };
        let table = providers.table();
        assert_eq!(
            table.lines().nth(1).unwrap(),
            "local_encrypted  Built-in encrypted store  yes         managed-values, batch-resolve"
        );
    }
}
