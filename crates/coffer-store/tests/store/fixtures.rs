//! Records to store in tests.

use std::collections::BTreeMap;

use coffer_core::record::{
    AuditOutcome, BindingRecord, NewAuditEvent, SecretMode, SecretRecord, SecretState, VaultRecord,
    VaultState, VersionRecord, VersionState,
};
use coffer_core::{SecretKey, TenantId};

pub(crate) const T0: i64 = 1_764_000_000_000_000;

pub(crate) fn tenant(raw: &str) -> TenantId {
    TenantId::parse(raw, "tenant").unwrap()
}

pub(crate) fn key(raw: &str) -> SecretKey {
    SecretKey::parse(raw, "key").unwrap()
}

/// An active managed secret whose display name is derived from its key.
pub(crate) fn secret(tenant_id: &str, key_id: &str) -> SecretRecord {
    SecretRecord {
        uid: uuid::Uuid::new_v4().to_string(),
        tenant: tenant(tenant_id),
        key: key(key_id),
        display_name: format!("Display {key_id}"),
        description: format!("description of {key_id}"),
        labels: BTreeMap::new(),
        mode: SecretMode::Managed,
        provider: "local_encrypted".to_owned(),
        vault: String::new(),
        external_ref: String::new(),
        state: SecretState::Active,
        current_version: 0,
        latest_version: 0,
        create_time: T0,
        update_time: T0,
        rotate_time: None,
        last_resolve_time: None,
        delete_time: None,
        purge_time: None,
        revision: 1,
    }
}

pub(crate) fn labeled(mut rec: SecretRecord, labels: &[(&str, &str)]) -> SecretRecord {
    rec.labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    rec
}

pub(crate) fn version(secret_uid: &str, n: i64) -> VersionRecord {
    VersionRecord {
        secret_uid: secret_uid.to_owned(),
        version: n,
        state: VersionState::Enabled,
        provider: "local_encrypted".to_owned(),
        vault: String::new(),
        provider_version_ref: format!("ref-{n}"),
        material: Some(format!("{{\"scheme\":\"test\",\"n\":{n}}}")),
        fingerprint: format!("fp{n}"),
        create_time: T0 + n,
        created_by: "spiffe://test/admin".to_owned(),
        destroy_time: None,
        revision: 1,
    }
}

/// A ready, non-default vault of `provider` that has never been checked.
pub(crate) fn vault(tenant_id: &str, vault_id: &str, provider: &str) -> VaultRecord {
    VaultRecord {
        uid: uuid::Uuid::new_v4().to_string(),
        tenant: tenant(tenant_id),
        vault_id: vault_id.to_owned(),
        provider: provider.to_owned(),
        display_name: format!("Vault {vault_id}"),
        state: VaultState::Ready,
        is_default: false,
        config: format!("{{\"region\":\"eu-west-1\",\"namespace\":\"{vault_id}\"}}"),
        health_status: String::new(),
        health_message: String::new(),
        health_check_time: None,
        create_time: T0,
        update_time: T0,
        disable_time: None,
        revision: 1,
    }
}

/// A required, latest binding of `rec` for consumer `kind/id` at `path`.
pub(crate) fn binding(rec: &SecretRecord, kind: &str, id: &str, path: &str) -> BindingRecord {
    BindingRecord {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: rec.tenant.clone(),
        secret_uid: rec.uid.clone(),
        secret_key: rec.key.clone(),
        consumer_kind: kind.to_owned(),
        consumer_id: id.to_owned(),
        config_path: path.to_owned(),
        version_selector: String::new(),
        required: true,
        label: String::new(),
        create_time: T0,
        update_time: T0,
        revision: 1,
    }
}

/// A successful resolve event of `tenant_id`, told apart by `request_id`.
pub(crate) fn event(tenant_id: &str, request_id: &str) -> NewAuditEvent {
    NewAuditEvent {
        tenant: tenant(tenant_id),
        time: T0,
        principal: "spiffe://test/orchestrator".to_owned(),
        action: "secret.resolve".to_owned(),
        resource: format!("tenants/{tenant_id}/secrets/k"),
        version: 1,
        consumer_kind: "agent".to_owned(),
        consumer_id: "a1".to_owned(),
        config_path: "env.KEY".to_owned(),
        context: BTreeMap::new(),
        outcome: AuditOutcome::Success,
        reason: String::new(),
        request_id: request_id.to_owned(),
    }
}
