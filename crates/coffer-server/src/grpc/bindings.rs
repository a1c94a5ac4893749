//! Binding RPCs of `coffer.v1.SecretsService` (CreateBinding, GetBinding,
//! ListBindings, DeleteBinding, SyncBindings) and ResolveBindings.

use coffer_core::{Error, Result, SecretName, TenantId};
use coffer_proto::v1;
use tonic::{Request, Response, Status};

use super::auth::principal;
use super::convert;
use super::status::{respond, to_rpc_status};
use crate::app::{BindingSpec, Coffer, parse_binding_name};

fn consumer(raw: Option<v1::Consumer>, field: &str) -> Result<(String, String)> {
    raw.map(|c| (c.kind, c.id))
        .ok_or_else(|| Error::invalid_field(field, "a consumer (kind and id) is required"))
}

/// A binding message as a spec; `required` defaults to true when unset.
fn spec(binding: v1::Binding, field: &str) -> Result<BindingSpec> {
    Ok(BindingSpec {
        secret: SecretName::parse(&binding.secret, &format!("{field}.secret"))?,
        config_path: binding.config_path,
        version_selector: binding.version_selector,
        required: binding.required.unwrap_or(true),
        label: binding.label,
    })
}

pub(crate) async fn create_binding(
    coffer: &Coffer,
    request: Request<v1::CreateBindingRequest>,
) -> Result<Response<v1::Binding>, Status> {
    let principal = principal(&request)?;
    let req = request.into_inner();
    let result = async {
        let tenant = TenantId::from_parent(&req.parent, "parent")?;
        let binding = req
            .binding
            .ok_or_else(|| Error::invalid_field("binding", "binding is required"))?;
        let consumer = consumer(binding.consumer.clone(), "binding.consumer")?;
        let spec = spec(binding, "binding")?;
        coffer
            .create_binding(&principal, &tenant, &consumer, spec, &req.request_id)
            .await
            .map(|b| convert::binding(&b))
    }
    .await;
    respond(result)
}

pub(crate) async fn get_binding(
    coffer: &Coffer,
    request: Request<v1::GetBindingRequest>,
) -> Result<Response<v1::Binding>, Status> {
    principal(&request)?;
    let req = request.into_inner();
    let result = async {
        let (tenant, id) = parse_binding_name(&req.name, "name")?;
        coffer
            .get_binding(&tenant, &id)
            .await
            .map(|b| convert::binding(&b))
    }
    .await;
    respond(result)
}

pub(crate) async fn list_bindings(
    coffer: &Coffer,
    request: Request<v1::ListBindingsRequest>,
) -> Result<Response<v1::ListBindingsResponse>, Status> {
    principal(&request)?;
    let req = request.into_inner();
    let result = async {
        let tenant = TenantId::from_parent(&req.parent, "parent")?;
        let secret = if req.secret.is_empty() {
            None
        } else {
            Some(SecretName::parse(&req.secret, "secret")?)
        };
        let consumer = req.consumer.map(|c| (c.kind, c.id));
        let page = coffer
            .list_bindings(
                &tenant,
                secret.as_ref(),
                consumer.as_ref(),
                req.page_size,
                &req.page_token,
            )
            .await?;
        Ok(v1::ListBindingsResponse {
            bindings: page.bindings.iter().map(convert::binding).collect(),
            next_page_token: page.next_page_token,
        })
    }
    .await;
    respond(result)
}

pub(crate) async fn delete_binding(
    coffer: &Coffer,
    request: Request<v1::DeleteBindingRequest>,
) -> Result<Response<v1::DeleteBindingResponse>, Status> {
    let principal = principal(&request)?;
    let req = request.into_inner();
    let result = async {
        let (tenant, id) = parse_binding_name(&req.name, "name")?;
        coffer
            .delete_binding(&principal, &tenant, &id, &req.etag)
            .await?;
        Ok(v1::DeleteBindingResponse {})
    }
    .await;
    respond(result)
}

pub(crate) async fn sync_bindings(
    coffer: &Coffer,
    request: Request<v1::SyncBindingsRequest>,
) -> Result<Response<v1::SyncBindingsResponse>, Status> {
    let principal = principal(&request)?;
    let req = request.into_inner();
    let result = async {
        let tenant = TenantId::from_parent(&req.parent, "parent")?;
        let consumer = consumer(req.consumer, "consumer")?;
        let mut specs = Vec::with_capacity(req.bindings.len());
        let mut violations = Vec::new();
        for (index, binding) in req.bindings.into_iter().enumerate() {
            match spec(binding, &format!("bindings[{index}]")) {
                Ok(spec) => specs.push(spec),
                Err(err) => violations.extend(err.violations().iter().cloned()),
            }
        }
        if !violations.is_empty() {
            return Err(Error::invalid_fields(violations));
        }
        let outcome = coffer
            .sync_bindings(
                &principal,
                &tenant,
                &consumer,
                &req.config_path_prefix,
                specs,
            )
            .await?;
        Ok(v1::SyncBindingsResponse {
            bindings: outcome.bindings.iter().map(convert::binding).collect(),
            created: outcome.created,
            deleted: outcome.deleted,
            unchanged: outcome.unchanged,
        })
    }
    .await;
    respond(result)
}

pub(crate) async fn resolve_bindings(
    coffer: &Coffer,
    request: Request<v1::ResolveBindingsRequest>,
) -> Result<Response<v1::ResolveBindingsResponse>, Status> {
    let principal = principal(&request)?;
    let req = request.into_inner();
    let result = async {
        let tenant = TenantId::from_parent(&req.parent, "parent")?;
        let consumer = consumer(req.consumer, "consumer")?;
        let context = req.context.into_iter().collect();
        let entries = coffer
            .resolve_bindings(
                &principal,
                &tenant,
                &consumer,
                &req.config_path_prefix,
                &context,
            )
            .await?;
        Ok(v1::ResolveBindingsResponse {
            entries: entries
                .into_iter()
                .map(|entry| {
                    let (version, value, error) = match entry.result {
                        Ok(resolved) => (
                            resolved.name.version,
                            resolved.value.expose().to_vec(),
                            None,
                        ),
                        Err(err) => (0, Vec::new(), Some(to_rpc_status(&err))),
                    };
                    v1::ResolvedBinding {
                        config_path: entry.binding.config_path.clone(),
                        binding: entry.binding.name(),
                        secret: entry.binding.secret_name().to_string(),
                        version,
                        value,
                        error,
                    }
                })
                .collect(),
        })
    }
    .await;
    respond(result)
}
