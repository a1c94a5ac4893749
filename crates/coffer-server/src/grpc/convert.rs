//! Records to API messages and back. Pure functions; no I/O.

use coffer_core::record::{
    AuditEventRecord, AuditOutcome, BindingRecord, SecretMode, SecretRecord, SecretState,
    VersionRecord, VersionState,
};
use coffer_core::{Error, Result, SecretName};
use coffer_proto::v1;
use prost_types::Timestamp;

pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn opt_timestamp(micros: Option<i64>) -> Option<Timestamp> {
    micros.map(timestamp)
}

pub fn secret(record: &SecretRecord) -> v1::Secret {
    v1::Secret {
        name: record.name().to_string(),
        uid: record.uid.clone(),
        display_name: record.display_name.clone(),
        description: record.description.clone(),
        labels: record.labels.clone().into_iter().collect(),
        mode: match record.mode {
            SecretMode::Managed => v1::secret::Mode::Managed,
            SecretMode::ExternalReference => v1::secret::Mode::ExternalReference,
        } as i32,
        provider: record.provider.clone(),
        vault: record.vault.clone(),
        external_ref: record.external_ref.clone(),
        state: secret_state(record.state) as i32,
        current_version: record.current_version,
        latest_version: record.latest_version,
        create_time: Some(timestamp(record.create_time)),
        update_time: Some(timestamp(record.update_time)),
        rotate_time: opt_timestamp(record.rotate_time),
        last_resolve_time: opt_timestamp(record.last_resolve_time),
        delete_time: opt_timestamp(record.delete_time),
        purge_time: opt_timestamp(record.purge_time),
        etag: record.etag(),
    }
}

pub fn secret_state(state: SecretState) -> v1::secret::State {
    match state {
        SecretState::Active => v1::secret::State::Active,
        SecretState::Disabled => v1::secret::State::Disabled,
        SecretState::Deleted => v1::secret::State::Deleted,
    }
}

/// The API state a caller asked for, for UpdateSecret.
pub fn secret_state_from_api(raw: i32, field: &str) -> Result<SecretState> {
    match v1::secret::State::try_from(raw) {
        Ok(v1::secret::State::Active) => Ok(SecretState::Active),
        Ok(v1::secret::State::Disabled) => Ok(SecretState::Disabled),
        Ok(v1::secret::State::Deleted) => Ok(SecretState::Deleted),
        Ok(v1::secret::State::Unspecified) | Err(_) => Err(Error::invalid_field(
            field,
            "state must be STATE_ACTIVE or STATE_DISABLED",
        )),
    }
}

pub fn version(
    secret: &SecretName,
    current_version: i64,
    record: &VersionRecord,
) -> v1::SecretVersion {
    v1::SecretVersion {
        name: secret.version(record.version).to_string(),
        version: record.version,
        state: match record.state {
            VersionState::Enabled => v1::secret_version::State::Enabled,
            VersionState::Disabled => v1::secret_version::State::Disabled,
            VersionState::Destroyed => v1::secret_version::State::Destroyed,
        } as i32,
        is_current: record.version == current_version,
        provider_version_ref: record.provider_version_ref.clone(),
        fingerprint: record.fingerprint.clone(),
        create_time: Some(timestamp(record.create_time)),
        created_by: record.created_by.clone(),
        destroy_time: opt_timestamp(record.destroy_time),
        etag: record.etag(),
    }
}

pub fn binding(record: &BindingRecord) -> v1::Binding {
    v1::Binding {
        name: record.name(),
        secret: record.secret_name().to_string(),
        consumer: Some(v1::Consumer {
            kind: record.consumer_kind.clone(),
            id: record.consumer_id.clone(),
        }),
        config_path: record.config_path.clone(),
        version_selector: record.version_selector.clone(),
        required: Some(record.required),
        label: record.label.clone(),
        create_time: Some(timestamp(record.create_time)),
        update_time: Some(timestamp(record.update_time)),
        etag: record.etag(),
    }
}

pub fn audit_event(record: &AuditEventRecord) -> v1::AuditEvent {
    let event = &record.event;
    v1::AuditEvent {
        name: format!("tenants/{}/auditEvents/{}", event.tenant, record.seq),
        seq: record.seq,
        time: Some(timestamp(event.time)),
        principal: event.principal.clone(),
        action: event.action.clone(),
        resource: event.resource.clone(),
        version: event.version,
        consumer: (!event.consumer_kind.is_empty()).then(|| v1::Consumer {
            kind: event.consumer_kind.clone(),
            id: event.consumer_id.clone(),
        }),
        config_path: event.config_path.clone(),
        context: event.context.clone().into_iter().collect(),
        outcome: match event.outcome {
            AuditOutcome::Success => v1::audit_event::Outcome::Success,
            AuditOutcome::Denied => v1::audit_event::Outcome::Denied,
            AuditOutcome::Failure => v1::audit_event::Outcome::Failure,
        } as i32,
        reason: event.reason.clone(),
        request_id: event.request_id.clone(),
        prev_hash: record.prev_hash.clone(),
        hash: record.hash.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_microseconds_and_handle_pre_epoch() {
        let ts = timestamp(1_700_000_000_123_456);
        assert_eq!(ts.seconds, 1_700_000_000);
        assert_eq!(ts.nanos, 123_456_000);
        let before = timestamp(-1);
        assert_eq!(before.seconds, -1);
        assert_eq!(before.nanos, 999_999_000);
    }
}
