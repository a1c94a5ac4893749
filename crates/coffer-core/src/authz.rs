//! Who may do what, as pure data: the four roles of DESIGN §5, the
//! permission each RPC class needs, and the policy (grants of roles to a
//! principal on tenants) that decides. Parsing the policy file's text and
//! enforcing decisions happen in the server; this module only decides.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use crate::name::TenantId;
use crate::principal::Principal;

/// A role a principal holds on a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in the tenant, vaults, destroy/purge and direct resolve included.
    Admin,
    /// Secrets, versions and bindings; no vaults, no destroy/purge, no values.
    Editor,
    /// Metadata and audit only.
    Viewer,
    /// Resolution on behalf of a named consumer whose binding exists, and
    /// watching the changes of the secrets bound to a named consumer.
    Resolver,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Editor, Role::Viewer, Role::Resolver];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
            Role::Resolver => "resolver",
        }
    }

    /// Whether this role carries `permission`; the one place the role table lives.
    pub fn permits(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Editor => matches!(
                permission,
                ReadMetadata | WriteSecrets | ManageBindings | ReadAudit | ConsumerWatch
            ),
            Role::Viewer => matches!(permission, ReadMetadata | ReadAudit | ConsumerWatch),
            Role::Resolver => matches!(permission, ConsumerResolve | ConsumerWatch),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an RPC needs, by class of RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Get/List of secrets, versions, bindings, vaults and providers.
    ReadMetadata,
    /// Create, update, soft delete, undelete, rotate, promote, version disable/enable.
    WriteSecrets,
    /// DestroySecretVersion and DeleteSecret with `force` (purge).
    Destroy,
    /// CreateBinding, DeleteBinding, SyncBindings.
    ManageBindings,
    /// ResolveSecret/BatchResolveSecrets without a consumer.
    DirectResolve,
    /// ResolveSecret/BatchResolveSecrets with a consumer, and ResolveBindings.
    ConsumerResolve,
    /// WatchSecrets for one consumer: changes of the secrets bound to it and
    /// of its bindings. Every role has it, so a resolver can follow the
    /// secrets it resolves; watching without a consumer needs ReadMetadata.
    ConsumerWatch,
    /// ListAuditEvents, VerifyAuditChain.
    ReadAudit,
    /// Vault writes, health checks and remote import.
    ManageVaults,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::ReadMetadata,
        Permission::WriteSecrets,
        Permission::Destroy,
        Permission::ManageBindings,
        Permission::DirectResolve,
        Permission::ConsumerResolve,
        Permission::ConsumerWatch,
        Permission::ReadAudit,
        Permission::ManageVaults,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ReadMetadata => "read_metadata",
            Permission::WriteSecrets => "write_secrets",
            Permission::Destroy => "destroy",
            Permission::ManageBindings => "manage_bindings",
            Permission::DirectResolve => "direct_resolve",
            Permission::ConsumerResolve => "consumer_resolve",
            Permission::ConsumerWatch => "consumer_watch",
            Permission::ReadAudit => "read_audit",
            Permission::ManageVaults => "manage_vaults",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a policy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The principal has no grant on the tenant: answer as if nothing were there.
    NoTenantAccess,
    /// The principal holds roles on the tenant, none of which carries the permission.
    MissingPermission,
}

/// One `[[grant]]` table of a policy file, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    pub principal: String,
    pub tenants: Vec<String>,
    pub roles: Vec<Role>,
}

/// A policy file as written: `[[grant]]` tables and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default, rename = "grant")]
    pub grants: Vec<GrantSpec>,
}

/// Which tenants a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tenants {
    All,
    Some(BTreeSet<TenantId>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    principal: Principal,
    tenants: Tenants,
    roles: BTreeSet<Role>,
}

/// Why a policy was rejected; names the grant by its position (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("grant {grant}: {problem}")]
pub struct PolicyError {
    pub grant: usize,
    pub problem: String,
}

/// A validated policy: grants of roles to principals on tenants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    grants: Vec<Grant>,
}

/// The longest principal id accepted in a policy or from a certificate.
pub const PRINCIPAL_MAX: usize = 512;

/// Whether `id` is acceptable as a principal: non-empty, bounded, printable.
pub fn valid_principal_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= PRINCIPAL_MAX
        && !id.chars().any(|c| c.is_control())
        && id.trim() == id
}

impl Policy {
    /// Validates a policy as written: every grant names a principal, at least
    /// one tenant (`*` or a tenant id) and at least one role.
    pub fn from_spec(spec: PolicySpec) -> Result<Policy, PolicyError> {
        let mut grants = Vec::with_capacity(spec.grants.len());
        for (index, grant) in spec.grants.into_iter().enumerate() {
            let fail = |problem: String| PolicyError {
                grant: index + 1,
                problem,
            };
            if !valid_principal_id(&grant.principal) {
                return Err(fail(format!(
                    "principal must be 1 to {PRINCIPAL_MAX} printable characters without surrounding spaces"
                )));
            }
            if grant.tenants.is_empty() {
                return Err(fail(
                    "tenants must list at least one tenant or \"*\"".into(),
                ));
            }
            let tenants = if grant.tenants.iter().any(|t| t == "*") {
                if grant.tenants.len() > 1 {
                    return Err(fail("\"*\" must be the only entry of tenants".into()));
                }
                Tenants::All
            } else {
                let mut set = BTreeSet::new();
                for raw in &grant.tenants {
                    let tenant = TenantId::parse(raw, "tenants")
                        .map_err(|err| fail(format!("tenant {raw:?}: {}", err.message())))?;
                    set.insert(tenant);
                }
                Tenants::Some(set)
            };
            if grant.roles.is_empty() {
                return Err(fail("roles must list at least one role".into()));
            }
            grants.push(Grant {
                principal: Principal::new(grant.principal),
                tenants,
                roles: grant.roles.into_iter().collect(),
            });
        }
        Ok(Policy { grants })
    }

    /// The policy of `coffer serve --dev`: the implicit dev principal is admin
    /// of every tenant, and nobody else holds anything.
    pub fn dev() -> Policy {
        Policy {
            grants: vec![Grant {
                principal: Principal::dev_admin(),
                tenants: Tenants::All,
                roles: BTreeSet::from([Role::Admin]),
            }],
        }
    }

    /// Every role `principal` holds on `tenant`, across all grants.
    pub fn roles(&self, principal: &Principal, tenant: &TenantId) -> BTreeSet<Role> {
        self.grants
            .iter()
            .filter(|g| g.principal == *principal)
            .filter(|g| match &g.tenants {
                Tenants::All => true,
                Tenants::Some(set) => set.contains(tenant),
            })
            .flat_map(|g| g.roles.iter().copied())
            .collect()
    }

    /// Every role `principal` holds on any tenant (a `*` grant or a named
    /// one), across all grants. For decisions made before the tenant of a
    /// call is known, such as its request rate; never for access, which is
    /// always decided per tenant by [`Policy::decide`].
    pub fn roles_anywhere(&self, principal: &Principal) -> BTreeSet<Role> {
        self.grants
            .iter()
            .filter(|g| g.principal == *principal)
            .flat_map(|g| g.roles.iter().copied())
            .collect()
    }

    /// Every principal the policy names, each with [`Policy::roles_anywhere`]
    /// of it, computed in one pass over the grants.
    pub fn roles_by_principal(&self) -> BTreeMap<&str, BTreeSet<Role>> {
        let mut by_principal: BTreeMap<&str, BTreeSet<Role>> = BTreeMap::new();
        for grant in &self.grants {
            by_principal
                .entry(grant.principal.as_str())
                .or_default()
                .extend(grant.roles.iter().copied());
        }
        by_principal
    }

    /// Decides whether `principal` may use `permission` on `tenant`.
    pub fn decide(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        permission: Permission,
    ) -> Decision {
        let roles = self.roles(principal, tenant);
        if roles.is_empty() {
            Decision::NoTenantAccess
        } else if roles.iter().any(|r| r.permits(permission)) {
            Decision::Allow
        } else {
            Decision::MissingPermission
        }
    }

    /// How many grants the policy holds.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tenant(t: &str) -> TenantId {
        TenantId::parse(t, "t").unwrap()
    }

    fn policy(grants: &[(&str, &[&str], &[Role])]) -> Result<Policy, PolicyError> {
        Policy::from_spec(PolicySpec {
            grants: grants
                .iter()
                .map(|(p, t, r)| GrantSpec {
                    principal: (*p).to_owned(),
                    tenants: t.iter().map(|s| (*s).to_owned()).collect(),
                    roles: r.to_vec(),
                })
                .collect(),
        })
    }

    #[test]
    fn role_table_matches_design() {
        use Permission::*;
        let allowed = |role: Role| -> Vec<Permission> {
            Permission::ALL
                .into_iter()
                .filter(|p| role.permits(*p))
                .collect()
        };
        assert_eq!(allowed(Role::Admin), Permission::ALL.to_vec());
        assert_eq!(
            allowed(Role::Editor),
            vec![
                ReadMetadata,
                WriteSecrets,
                ManageBindings,
                ConsumerWatch,
                ReadAudit
            ]
        );
        assert_eq!(
            allowed(Role::Viewer),
            vec![ReadMetadata, ConsumerWatch, ReadAudit]
        );
        assert_eq!(
            allowed(Role::Resolver),
            vec![ConsumerResolve, ConsumerWatch]
        );
    }

    #[test]
    fn decisions_distinguish_no_access_from_missing_permission() {
        let p = policy(&[
            ("spiffe://corp/ci", &["acme"], &[Role::Viewer]),
            ("spiffe://corp/ci", &["globex"], &[Role::Editor]),
            ("ops", &["*"], &[Role::Admin]),
        ])
        .unwrap();
        let ci = Principal::new("spiffe://corp/ci");
        assert_eq!(
            p.decide(&ci, &tenant("acme"), Permission::ReadMetadata),
            Decision::Allow
        );
        assert_eq!(
            p.decide(&ci, &tenant("acme"), Permission::WriteSecrets),
            Decision::MissingPermission
        );
        assert_eq!(
            p.decide(&ci, &tenant("globex"), Permission::WriteSecrets),
            Decision::Allow
        );
        assert_eq!(
            p.decide(&ci, &tenant("initech"), Permission::ReadMetadata),
            Decision::NoTenantAccess
        );
        let ops = Principal::new("ops");
        assert_eq!(
            p.decide(&ops, &tenant("anything"), Permission::Destroy),
            Decision::Allow
        );
        // Principals match exactly, never by prefix or case.
        assert_eq!(
            p.decide(
                &Principal::new("OPS"),
                &tenant("acme"),
                Permission::ReadMetadata
            ),
            Decision::NoTenantAccess
        );
    }

    #[test]
    fn invalid_grants_are_rejected_with_their_position() {
        let err = policy(&[
            ("a", &["acme"], &[Role::Viewer]),
            ("", &["acme"], &[Role::Viewer]),
        ])
        .unwrap_err();
        assert_eq!(err.grant, 2);
        assert!(policy(&[("a", &[], &[Role::Viewer])]).is_err());
        assert!(policy(&[("a", &["acme"], &[])]).is_err());
        assert!(policy(&[("a", &["*", "acme"], &[Role::Viewer])]).is_err());
        let err = policy(&[("a", &["Not Valid"], &[Role::Viewer])]).unwrap_err();
        assert!(err.to_string().contains("tenant"), "{err}");
    }

    #[test]
    fn roles_anywhere_unites_every_tenant_and_grant() {
        let p = policy(&[
            ("spiffe://corp/ci", &["acme"], &[Role::Viewer]),
            (
                "spiffe://corp/ci",
                &["globex", "initech"],
                &[Role::Resolver],
            ),
            ("spiffe://corp/ci", &["acme"], &[Role::Viewer, Role::Editor]),
            ("ops", &["*"], &[Role::Admin]),
        ])
        .unwrap();
        let ci = Principal::new("spiffe://corp/ci");
        let expected = BTreeSet::from([Role::Editor, Role::Viewer, Role::Resolver]);
        assert_eq!(p.roles_anywhere(&ci), expected);
        // Per tenant, only that tenant's grants count.
        assert_eq!(
            p.roles(&ci, &tenant("globex")),
            BTreeSet::from([Role::Resolver])
        );
        assert_eq!(
            p.roles_anywhere(&Principal::new("ops")),
            BTreeSet::from([Role::Admin])
        );
        // Exact match only; an unknown principal holds nothing.
        assert!(p.roles_anywhere(&Principal::new("OPS")).is_empty());
        assert!(p.roles_anywhere(&Principal::new("nobody")).is_empty());
        // The one-pass map agrees with the per-principal answer.
        let all = p.roles_by_principal();
        assert_eq!(all.len(), 2);
        assert_eq!(all["spiffe://corp/ci"], expected);
        assert_eq!(all["ops"], BTreeSet::from([Role::Admin]));
        assert!(Policy::default().roles_by_principal().is_empty());
        assert_eq!(
            Policy::dev().roles_anywhere(&Principal::dev_admin()),
            BTreeSet::from([Role::Admin])
        );
    }

    #[test]
    fn dev_policy_makes_only_the_dev_principal_admin() {
        let p = Policy::dev();
        assert_eq!(
            p.decide(
                &Principal::dev_admin(),
                &tenant("x"),
                Permission::ManageVaults
            ),
            Decision::Allow
        );
        assert_eq!(
            p.decide(
                &Principal::new("someone"),
                &tenant("x"),
                Permission::ReadMetadata
            ),
            Decision::NoTenantAccess
        );
    }
}
