//! Enforcing the role policy at the gRPC edge. Every handler names what its
//! request touches (a [`Scope`]: the tenant, and the NOT_FOUND it would answer
//! if that resource were missing) and the [`Permission`] its RPC class needs,
//! then calls [`Authorizer::authorize`] before doing anything else.
//!
//! A principal without any grant on the tenant gets exactly the scope's
//! NOT_FOUND, so a foreign tenant is indistinguishable from a missing
//! resource. A principal with a grant but without the permission gets
//! PERMISSION_DENIED naming the permission. The policy sits behind an
//! [`ArcSwap`], so a reload (SIGHUP) replaces it for every later call while
//! in-flight calls finish on the policy they started with.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use coffer_core::authz::{Decision, Permission, Policy, PolicySpec};
use coffer_core::record::{AuditOutcome, NewAuditEvent, now_micros};
use coffer_core::{Error, ErrorCode, Reason, SecretName, TenantId, VaultName, VersionName};
use tonic::{Request, Status};

use super::auth::principal;
use super::status::to_status;
use crate::app::AuditWriter;
use crate::observe::RpcContext;

/// The policy in force, shared by every handler and replaced atomically on reload.
#[derive(Debug, Clone)]
pub struct SharedPolicy(Arc<ArcSwap<Policy>>);

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

impl SharedPolicy {
    pub fn new(policy: Policy) -> Self {
        SharedPolicy(Arc::new(ArcSwap::from_pointee(policy)))
    }

    /// The policy of `coffer serve --dev`.
    pub fn dev() -> Self {
        Self::new(Policy::dev())
    }

    /// The policy now in force.
    pub fn current(&self) -> Arc<Policy> {
        self.0.load_full()
    }

    /// Puts `policy` in force for every call that starts from now on.
    pub fn replace(&self, policy: Policy) {
        self.0.store(Arc::new(policy));
    }
}

/// Reads and validates a TOML policy file (`[[grant]]` tables only).
pub fn load_policy_file(path: &Path) -> Result<Policy, PolicyFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PolicyFileError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_policy(&text).map_err(|message| PolicyFileError::Invalid {
        path: shown,
        message,
    })
}

/// Parses policy text; the error says what is wrong and where.
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let spec: PolicySpec = toml::from_str(text).map_err(|err| err.to_string())?;
    Policy::from_spec(spec).map_err(|err| err.to_string())
}

/// What a request touches: its tenant and the error it answers when the
/// named resource does not exist.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    tenant: TenantId,
    not_found: Error,
    /// The resource the request names, recorded when the call is denied.
    resource: String,
}

impl Scope {
    /// A scope with an explicit not-found error (e.g. a binding's).
    pub(crate) fn new(tenant: TenantId, not_found: Error) -> Self {
        let resource = not_found
            .metadata()
            .get("resource")
            .cloned()
            .unwrap_or_else(|| tenant.resource_name());
        Scope {
            tenant,
            not_found,
            resource,
        }
    }

    /// A request under `tenants/{t}` (create, list, batch, audit): the tenant
    /// itself is the resource that is "missing".
    pub(crate) fn parent(parent: &str, field: &str) -> Result<Self, Status> {
        let tenant = TenantId::from_parent(parent, field).map_err(|e| to_status(&e))?;
        let not_found = tenant_not_found(&tenant);
        Ok(Scope::new(tenant, not_found))
    }

    /// A request naming a secret: answers like a missing secret.
    pub(crate) fn secret(name: &str, field: &str) -> Result<Self, Status> {
        let name = SecretName::parse(name, field).map_err(|e| to_status(&e))?;
        Ok(Self::of_secret(&name))
    }

    /// A request naming a version: answers like a missing secret, which is
    /// what the use cases answer for a version of a secret that is not there.
    pub(crate) fn version(name: &str, field: &str) -> Result<Self, Status> {
        let name = VersionName::parse(name, field).map_err(|e| to_status(&e))?;
        Ok(Self::of_secret(&name.secret))
    }

    /// A vault name; a foreign tenant answers exactly like a missing vault.
    pub(crate) fn vault(name: &str, field: &str) -> Result<Self, Status> {
        let name = VaultName::parse(name, field).map_err(|e| to_status(&e))?;
        let not_found = crate::app::vault_not_found(&name);
        Ok(Scope::new(name.tenant, not_found))
    }

    /// A binding name; a foreign tenant answers exactly like a missing binding.
    pub(crate) fn binding(name: &str, field: &str) -> Result<Self, Status> {
        let (tenant, id) =
            crate::app::parse_binding_name(name, field).map_err(|e| to_status(&e))?;
        let not_found = Error::not_found(
            Reason::BindingNotFound,
            &format!("tenants/{tenant}/bindings/{id}"),
        );
        Ok(Scope::new(tenant, not_found))
    }

    fn of_secret(name: &SecretName) -> Self {
        Scope::new(
            name.tenant.clone(),
            Error::not_found(Reason::SecretNotFound, &name.to_string()),
        )
    }
}

fn tenant_not_found(tenant: &TenantId) -> Error {
    Error::not_found(Reason::TenantNotFound, &tenant.resource_name())
}

/// Checks each call against the policy in force.
#[derive(Debug, Clone)]
pub(crate) struct Authorizer {
    policy: SharedPolicy,
    /// Where denials are recorded; none in unit tests.
    audit: Option<AuditWriter>,
}

impl Authorizer {
    pub(crate) fn new(policy: SharedPolicy) -> Self {
        Authorizer {
            policy,
            audit: None,
        }
    }

    /// Records every denial in the audit trail of the tenant it targeted.
    pub(crate) fn with_audit(mut self, audit: AuditWriter) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Queues a DENIED event (`authz.deny`) naming the resource and the
    /// permission the call needed. The call is refused either way, so the event is queued
    /// rather than awaited; the writer commits it within milliseconds.
    fn audit_denial(
        &self,
        principal: &coffer_core::Principal,
        scope: &Scope,
        permission: Permission,
        reason: &str,
    ) {
        let Some(audit) = &self.audit else { return };
        let context = [("permission".to_owned(), permission.as_str().to_owned())]
            .into_iter()
            .collect();
        audit.enqueue(NewAuditEvent {
            tenant: scope.tenant.clone(),
            time: now_micros(),
            principal: principal.as_str().to_owned(),
            action: "authz.deny".to_owned(),
            resource: scope.resource.clone(),
            version: 0,
            consumer_kind: String::new(),
            consumer_id: String::new(),
            config_path: String::new(),
            context,
            outcome: AuditOutcome::Denied,
            reason: reason.to_owned(),
            request_id: String::new(),
        });
    }

    /// The caller's principal when it may use `permission` in `scope`; else
    /// UNAUTHENTICATED (no principal), the scope's NOT_FOUND (no grant on the
    /// tenant) or PERMISSION_DENIED (a grant without the permission). Names
    /// the principal and tenant on the call's `rpc` span and log line either way.
    pub(crate) fn authorize<T>(
        &self,
        request: &Request<T>,
        permission: Permission,
        scope: Scope,
    ) -> Result<coffer_core::Principal, Status> {
        let principal = principal(request)?;
        if let Some(rpc) = request.extensions().get::<RpcContext>() {
            rpc.record_caller(principal.as_str(), scope.tenant.as_str());
        }
        let decision = self
            .policy
            .current()
            .decide(&principal, &scope.tenant, permission);
        match decision {
            Decision::Allow => Ok(principal),
            Decision::NoTenantAccess => {
                tracing::info!(
                    principal = %principal,
                    tenant = %scope.tenant,
                    permission = permission.as_str(),
                    decision = "no_tenant_access",
                    "call denied"
                );
                self.audit_denial(&principal, &scope, permission, "NO_TENANT_ACCESS");
                Err(to_status(&scope.not_found))
            }
            Decision::MissingPermission => {
                tracing::info!(
                    principal = %principal,
                    tenant = %scope.tenant,
                    permission = permission.as_str(),
                    decision = "missing_permission",
                    "call denied"
                );
                self.audit_denial(
                    &principal,
                    &scope,
                    permission,
                    Reason::PermissionDenied.as_str(),
                );
                Err(to_status(&permission_denied(permission)))
            }
        }
    }
}

/// PERMISSION_DENIED naming the missing permission.
fn permission_denied(permission: Permission) -> Error {
    Error::new(
        ErrorCode::PermissionDenied,
        Reason::PermissionDenied,
        format!(
            "your roles on this tenant do not include the {} permission",
            permission.as_str()
        ),
    )
    .with_metadata("permission", permission.as_str())
}

/// The permission a resolve needs: resolving for a named consumer is the
/// resolver's job; resolving without one is direct (admin only).
pub(crate) fn resolve_permission(has_consumer: bool) -> Permission {
    if has_consumer {
        Permission::ConsumerResolve
    } else {
        Permission::DirectResolve
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use coffer_core::Principal;
    use tonic::Code;

    fn request(principal: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(p) = principal {
            request.extensions_mut().insert(Principal::new(p));
        }
        request
    }

    fn authorizer(policy: &str) -> Authorizer {
        Authorizer::new(SharedPolicy::new(parse_policy(policy).unwrap()))
    }

    const POLICY: &str = r#"
        [[grant]]
        principal = "spiffe://corp/viewer"
        tenants = ["acme"]
        roles = ["viewer"]
    "#;

    #[test]
    fn foreign_tenant_answers_the_scopes_not_found() {
        let authz = authorizer(POLICY);
        let scope = Scope::secret("tenants/globex/secrets/db", "name").unwrap();
        let status = authz
            .authorize(
                &request(Some("spiffe://corp/viewer")),
                Permission::ReadMetadata,
                scope,
            )
            .unwrap_err();
        let missing = to_status(&Error::not_found(
            Reason::SecretNotFound,
            "tenants/globex/secrets/db",
        ));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), missing.message());
        assert_eq!(status.details(), missing.details());
    }

    #[test]
    fn missing_permission_and_missing_principal() {
        let authz = authorizer(POLICY);
        let scope = || Scope::parent("tenants/acme", "parent").unwrap();
        let status = authz
            .authorize(
                &request(Some("spiffe://corp/viewer")),
                Permission::WriteSecrets,
                scope(),
            )
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(status.message().contains("write_secrets"), "{status:?}");
        let status = authz
            .authorize(&request(None), Permission::ReadMetadata, scope())
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let ok = authz.authorize(
            &request(Some("spiffe://corp/viewer")),
            Permission::ReadMetadata,
            scope(),
        );
        assert_eq!(ok.unwrap().as_str(), "spiffe://corp/viewer");
    }

    #[test]
    fn policy_files_reject_unknown_keys_and_roles() {
        assert!(parse_policy("[[grant]]\nprincipal='a'\ntenants=['*']\nroles=['root']").is_err());
        assert!(
            parse_policy("[[grant]]\nprincipal='a'\ntenants=['*']\nroles=['admin']\nextra=1")
                .is_err()
        );
        assert!(parse_policy("[[grants]]\nprincipal='a'").is_err());
        assert_eq!(parse_policy("").unwrap().len(), 0);
    }

    #[test]
    fn reload_replaces_the_policy_for_later_calls() {
        let shared = SharedPolicy::new(Policy::default());
        let authz = Authorizer::new(shared.clone());
        let scope = || Scope::parent("tenants/acme", "parent").unwrap();
        let req = request(Some("spiffe://corp/viewer"));
        assert!(
            authz
                .authorize(&req, Permission::ReadMetadata, scope())
                .is_err()
        );
        shared.replace(parse_policy(POLICY).unwrap());
        assert!(
            authz
                .authorize(&req, Permission::ReadMetadata, scope())
                .is_ok()
        );
    }
}
