//! Observations and configuration shared by the reaper's unit tests: a set
//! as the provisioner made it and the API server returns it. Tests only.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::diff::Drift;
use super::observation::{Observed, Pairs};
use super::plan::{Action, PlanConfig, SetPlan, plan_set};
use crate::rules::desired::{DesiredSet, NamespacedRole, SetConfig, desired_set};
use crate::rules::params::{Expiry, Selector, TenantName};

pub const NOW: i64 = 1_800_000_000;
pub const HOUR: i64 = 3600;

pub fn selector() -> Selector {
    "np-test/reaper=unit".parse().unwrap()
}

pub fn rules(verb: &str) -> Vec<PolicyRule> {
    vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".to_owned()]),
        verbs: vec![verb.to_owned()],
        ..PolicyRule::default()
    }]
}

pub fn config(role: bool) -> PlanConfig {
    PlanConfig {
        set: SetConfig {
            selector: selector(),
            cluster_role: "grant".to_owned(),
            role_rules: role.then(|| rules("get")),
        },
        max_ttl: Duration::from_secs(3 * HOUR as u64),
        max_deletions: None,
    }
}

pub fn tenant() -> TenantName {
    "ci".parse().unwrap()
}

/// The set as the provisioner made it, as the API server returns it.
pub fn observed(name: &str, expiry: i64, role: bool) -> Observed {
    let DesiredSet {
        mut namespace,
        mut service_account,
        mut role_binding,
        role: nsrole,
    } = desired_set(name, &tenant(), Expiry::from_unix(expiry), &config(role).set);
    namespace.metadata.uid = Some(format!("uid-{name}"));
    namespace.metadata.resource_version = Some("7".to_owned());
    namespace.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(NOW - HOUR).unwrap()));
    namespace
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("kubernetes.io/metadata.name".to_owned(), name.to_owned());
    service_account.metadata.uid = Some("uid-sa".to_owned());
    role_binding.metadata.uid = Some("uid-rb".to_owned());
    let (roles, mut bindings) = match nsrole {
        Some(NamespacedRole { role, binding }) => (vec![role.into()], vec![binding.into()]),
        None => (vec![], vec![]),
    };
    bindings.insert(0, role_binding.into());
    Observed {
        namespaces: vec![namespace.into()],
        service_accounts: vec![service_account.into()],
        roles,
        role_bindings: bindings,
    }
}

pub fn live() -> Observed {
    observed("np-live", NOW + HOUR, false)
}

pub fn ns_labels(set: &mut Observed) -> &mut Pairs {
    &mut set.namespaces[0].labels
}

/// The plan for the one set of `o`.
pub fn plan_one(o: &Observed, now: i64, config: &PlanConfig) -> SetPlan {
    let sets = o.sets();
    assert_eq!(sets.len(), 1, "{sets:?}");
    plan_set(&sets[0], now, config)
}

/// (kind, name, reasons, recreate) of each write, for compact expectations.
pub fn writes(action: &Action) -> Vec<(&'static str, String, Vec<Drift>, bool)> {
    action
        .writes()
        .iter()
        .map(|w| {
            (
                w.object.kind().as_str(),
                w.object.name(),
                w.reasons.clone(),
                w.recreate_uid.is_some(),
            )
        })
        .collect()
}
