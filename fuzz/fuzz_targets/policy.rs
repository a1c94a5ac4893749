//! Policy files (`coffer_core::authz`): TOML text parsed exactly as
//! `coffer_server::parse_policy` does (`toml::from_str::<PolicySpec>` then
//! `Policy::from_spec`; coffer-server itself is not linked, to keep the
//! fuzz build free of the server's database and gRPC stack).
//!
//! Properties: a policy is accepted exactly when every grant is valid (an
//! independent statement of the rules); an accepted policy grants each
//! principal on each listed tenant exactly the permissions of its roles,
//! grants nothing to a principal it does not name (not even one that differs
//! only in case or surrounding space), and `decide` agrees with `roles`.

#![no_main]

use std::collections::BTreeSet;

use coffer_core::authz::{
    Decision, GrantSpec, Permission, Policy, PolicySpec, Role, valid_principal_id,
};
use coffer_core::{Principal, TenantId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(spec) = toml::from_str::<PolicySpec>(text) else {
        return;
    };
    let expected_ok = spec.grants.iter().all(grant_is_valid);
    match Policy::from_spec(spec.clone()) {
        Ok(policy) => {
            assert!(expected_ok, "invalid policy accepted: {spec:?}");
            assert_eq!(policy.len(), spec.grants.len());
            check(&policy, &spec);
        }
        Err(err) => {
            assert!(!expected_ok, "valid policy refused: {err}");
            let first_bad = spec.grants.iter().position(|g| !grant_is_valid(g));
            assert_eq!(Some(err.grant), first_bad.map(|i| i + 1));
        }
    }
});

fn grant_is_valid(grant: &GrantSpec) -> bool {
    let principal_ok = !grant.principal.is_empty()
        && grant.principal.len() <= 512
        && grant.principal.trim() == grant.principal
        && !grant.principal.chars().any(char::is_control);
    assert_eq!(principal_ok, valid_principal_id(&grant.principal));
    let tenants_ok = match grant.tenants.as_slice() {
        [] => false,
        [only] if only == "*" => true,
        many => many
            .iter()
            .all(|t| t != "*" && TenantId::parse(t, "t").is_ok()),
    };
    principal_ok && tenants_ok && !grant.roles.is_empty()
}

fn check(policy: &Policy, spec: &PolicySpec) {
    let probe = TenantId::parse("fuzz-probe-tenant", "t").expect("valid tenant");
    for grant in &spec.grants {
        let principal = Principal::new(grant.principal.clone());
        let tenants: Vec<TenantId> = if grant.tenants == ["*"] {
            vec![probe.clone()]
        } else {
            grant
                .tenants
                .iter()
                .map(|t| TenantId::parse(t, "t").expect("validated"))
                .collect()
        };
        for tenant in &tenants {
            let roles = policy.roles(&principal, tenant);
            let own: BTreeSet<Role> = grant.roles.iter().copied().collect();
            assert!(roles.is_superset(&own));
            // Every role held comes from some grant of this principal that
            // covers this tenant.
            let granted: BTreeSet<Role> = spec
                .grants
                .iter()
                .filter(|g| g.principal == grant.principal && covers(g, tenant))
                .flat_map(|g| g.roles.iter().copied())
                .collect();
            assert_eq!(roles, granted);
            for permission in Permission::ALL {
                let decision = policy.decide(&principal, tenant, permission);
                let expected = if roles.iter().any(|r| r.permits(permission)) {
                    Decision::Allow
                } else {
                    Decision::MissingPermission
                };
                assert_eq!(decision, expected, "{principal} {tenant} {permission}");
            }
        }
        // Look-alike principals get nothing unless a grant names them exactly.
        for lookalike in [
            grant.principal.to_uppercase(),
            grant.principal.to_lowercase(),
            format!(" {}", grant.principal),
            format!("{}/", grant.principal),
        ] {
            if spec.grants.iter().any(|g| g.principal == lookalike) {
                continue;
            }
            for tenant in &tenants {
                assert_eq!(
                    policy.decide(
                        &Principal::new(lookalike.clone()),
                        tenant,
                        Permission::ReadMetadata
                    ),
                    Decision::NoTenantAccess
                );
            }
        }
    }
}

fn covers(grant: &GrantSpec, tenant: &TenantId) -> bool {
    grant.tenants == ["*"]
        || grant
            .tenants
            .iter()
            .any(|t| TenantId::parse(t, "t").is_ok_and(|parsed| &parsed == tenant))
}
