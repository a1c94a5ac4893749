//! WatchSecrets of `coffer.v1.SecretsService`: authorizes the caller, opens a
//! [`ChangeStream`] and turns it into the server stream of
//! `WatchSecretsResponse` messages. The stream ends when the client goes
//! away (tonic drops it), on an error, or with UNAVAILABLE at shutdown.

use std::pin::Pin;

use coffer_core::authz::Permission;
use coffer_core::{Result, TenantId};
use coffer_proto::v1;
use coffer_proto::v1::secret_change_event::Type;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::authz::{Authorizer, Scope};
use super::convert::timestamp;
use super::status::to_status;
use crate::app::{ChangeBatch, ChangeEvent, ChangeKind, ChangeStream, Coffer, WatchRequest};

/// The response stream of WatchSecrets.
pub(crate) type WatchStream =
    Pin<Box<dyn Stream<Item = Result<v1::WatchSecretsResponse, Status>> + Send>>;

/// Watching one consumer's secrets is open to every role (a resolver follows
/// what it resolves); watching without a consumer needs metadata access.
pub(crate) async fn watch_secrets(
    coffer: &Coffer,
    authz: &Authorizer,
    request: Request<v1::WatchSecretsRequest>,
) -> Result<Response<WatchStream>, Status> {
    let permission = if request.get_ref().consumer.is_some() {
        Permission::ConsumerWatch
    } else {
        Permission::ReadMetadata
    };
    authz.authorize(
        &request,
        permission,
        Scope::parent(&request.get_ref().parent, "parent")?,
    )?;
    let req = request.into_inner();
    let opened = async {
        let tenant = TenantId::from_parent(&req.parent, "parent")?;
        let changes = coffer
            .watch(WatchRequest {
                tenant: tenant.clone(),
                secrets: req.secrets,
                consumer: req.consumer.map(|c| (c.kind, c.id)),
                resume_token: req.resume_token,
            })
            .await?;
        Ok((tenant, changes))
    }
    .await;
    let (tenant, changes) = opened.map_err(|err| to_status(&err))?;
    Ok(Response::new(Box::pin(stream(tenant, changes))))
}

/// Messages until the change stream fails; its error is the last item.
fn stream(
    tenant: TenantId,
    changes: ChangeStream,
) -> impl Stream<Item = Result<v1::WatchSecretsResponse, Status>> + Send {
    futures::stream::unfold(Some(changes), move |state| {
        let tenant = tenant.clone();
        async move {
            let mut changes = state?;
            match changes.next().await {
                Ok(batch) => Some((Ok(response(&tenant, batch)), Some(changes))),
                Err(err) => Some((Err(to_status(&err)), None)),
            }
        }
    })
}

fn response(tenant: &TenantId, batch: ChangeBatch) -> v1::WatchSecretsResponse {
    v1::WatchSecretsResponse {
        events: batch.events.into_iter().map(|e| event(tenant, e)).collect(),
        resume_token: batch.resume_token,
    }
}

fn event(tenant: &TenantId, event: ChangeEvent) -> v1::SecretChangeEvent {
    v1::SecretChangeEvent {
        r#type: kind(event.kind) as i32,
        secret: event
            .secret
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        version: event.version,
        binding: event.binding,
        consumer: event.consumer.map(|(kind, id)| v1::Consumer { kind, id }),
        config_path: event.config_path,
        time: Some(timestamp(event.time)),
        principal: event.principal,
        audit_event: format!("tenants/{tenant}/auditEvents/{}", event.seq),
        resume_token: event.resume_token,
    }
}

fn kind(kind: ChangeKind) -> Type {
    match kind {
        ChangeKind::Created => Type::Created,
        ChangeKind::Rotated => Type::Rotated,
        ChangeKind::VersionStaged => Type::VersionStaged,
        ChangeKind::VersionDisabled => Type::VersionDisabled,
        ChangeKind::VersionEnabled => Type::VersionEnabled,
        ChangeKind::VersionDestroyed => Type::VersionDestroyed,
        ChangeKind::SecretUpdated => Type::SecretUpdated,
        ChangeKind::SecretDisabled => Type::SecretDisabled,
        ChangeKind::SecretEnabled => Type::SecretEnabled,
        ChangeKind::SecretDeleted => Type::SecretDeleted,
        ChangeKind::SecretUndeleted => Type::SecretUndeleted,
        ChangeKind::SecretPurged => Type::SecretPurged,
        ChangeKind::BindingChanged => Type::BindingChanged,
    }
}
