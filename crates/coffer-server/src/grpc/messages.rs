//! Request messages into use-case inputs, and use-case results into response
//! messages, for the secret and version RPCs.

use std::collections::BTreeMap;

use coffer_core::record::SecretState;
use coffer_core::{Error, Result, SecretName};
use coffer_proto::v1;
use zeroize::Zeroizing;

use super::convert;
use crate::app::{ResolveRequest, ResolvedValue, SecretPatch, SecretSource, VersionView};

pub(super) fn version_message(view: VersionView) -> v1::SecretVersion {
    convert::version(&view.secret, view.current_version, &view.version)
}

/// The value or external reference of a create or rotate.
pub(super) fn source(
    value: Option<Vec<u8>>,
    external: Option<v1::ExternalRef>,
) -> Result<SecretSource> {
    match (value, external) {
        (Some(value), None) => Ok(SecretSource::Value(Zeroizing::new(value))),
        (None, Some(external)) => Ok(SecretSource::External {
            external_ref: external.r#ref,
            version_ref: external.version_ref,
        }),
        _ => Err(Error::invalid_field(
            "source",
            "give either value or external",
        )),
    }
}

pub(super) fn resolve_request(
    req: v1::ResolveSecretRequest,
    field: &str,
) -> Result<ResolveRequest> {
    // The config path is looked up as given; PostgreSQL refuses NUL in a
    // bound text parameter (an internal error), and no binding's path holds
    // a control character, so refuse one here as the caller's mistake.
    if req.config_path.chars().any(char::is_control) {
        let prefix = field.strip_suffix("name").unwrap_or_default();
        return Err(Error::invalid_field(
            format!("{prefix}config_path"),
            "config path must be dot-separated segments of [A-Za-z0-9_-], e.g. env.OPENAI_API_KEY",
        ));
    }
    Ok(ResolveRequest {
        name: SecretName::parse(&req.name, field)?,
        version: req.version,
        consumer: req.consumer.map(|c| (c.kind, c.id)),
        config_path: req.config_path,
        context: req.context.into_iter().collect(),
    })
}

pub(super) fn resolved_message(resolved: ResolvedValue) -> v1::ResolveSecretResponse {
    v1::ResolveSecretResponse {
        name: resolved.name.to_string(),
        version: resolved.name.version,
        value: resolved.value.expose().to_vec(),
    }
}

/// Turns an UpdateSecret request into a patch. An empty mask means "every
/// field that is set in the request"; `*` means all four updatable fields.
pub(super) fn secret_patch(
    secret: v1::Secret,
    mask: Option<prost_types::FieldMask>,
) -> Result<SecretPatch> {
    let mut paths: Vec<String> = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        if !secret.display_name.is_empty() {
            paths.push("display_name".into());
        }
        if !secret.description.is_empty() {
            paths.push("description".into());
        }
        if !secret.labels.is_empty() {
            paths.push("labels".into());
        }
        if secret.state != 0 {
            paths.push("state".into());
        }
        if paths.is_empty() {
            return Err(Error::invalid_field(
                "update_mask",
                "nothing to update; set update_mask",
            ));
        }
    }
    if paths.iter().any(|p| p == "*") {
        paths = ["display_name", "description", "labels", "state"]
            .map(String::from)
            .to_vec();
    }
    let mut patch = SecretPatch::default();
    for path in paths {
        match path.as_str() {
            "display_name" => patch.display_name = Some(secret.display_name.clone()),
            "description" => patch.description = Some(secret.description.clone()),
            "labels" => {
                patch.labels = Some(
                    secret
                        .labels
                        .clone()
                        .into_iter()
                        .collect::<BTreeMap<_, _>>(),
                )
            }
            "state" => {
                let state = convert::secret_state_from_api(secret.state, "secret.state")?;
                patch.state = Some(state);
            }
            other => {
                let shown: String = other.chars().take(64).filter(|c| !c.is_control()).collect();
                return Err(Error::invalid_field(
                    "update_mask",
                    format!(
                        "cannot update {shown:?}; updatable fields are display_name, description, labels, state"
                    ),
                ));
            }
        }
    }
    if patch.state == Some(SecretState::Deleted) {
        return Err(Error::invalid_field(
            "secret.state",
            "state can be STATE_ACTIVE or STATE_DISABLED; use DeleteSecret to delete",
        ));
    }
    Ok(patch)
}
