//! Desired against observed: which objects of a set are missing or drifted
//! (labels, annotations, subjects, roleRef, rules), the writes that repair
//! them, and the objects the desired set does not name. Pure.
//!
//! What a complete set is comes from [`crate::rules::desired`] only; this
//! module compares against it and never restates its rules.

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;
use kube::api::ObjectMeta;

use super::observation::{ObjectId, ObservedMeta, ObservedNamespace, ObservedRoleBinding, ObservedSet};
use crate::rules::desired::{DesiredSet, NamespacedRole};
use crate::rules::kinds::{Kind, Object};

/// Why an object is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drift {
    /// Not found (or found without the selector label).
    Missing,
    /// A desired label is absent or has another value.
    Labels,
    /// A desired annotation is absent or has another value.
    Annotations,
    /// RoleBinding subjects differ.
    Subjects,
    /// RoleBinding roleRef differs (immutable: the binding is recreated).
    RoleRef,
    /// Role rules differ.
    Rules,
}

impl Drift {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Labels => "labels",
            Self::Annotations => "annotations",
            Self::Subjects => "subjects",
            Self::RoleRef => "roleRef",
            Self::Rules => "rules",
        }
    }
}

/// One write of a repair: an object as the desired set has it, to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub object: Object,
    pub reasons: Vec<Drift>,
    /// Delete the existing object with this uid first (a RoleBinding whose
    /// immutable roleRef drifted), then apply.
    pub recreate_uid: Option<String>,
}

/// Observed objects the desired set does not name.
pub fn strays(desired: &DesiredSet, observed: &ObservedSet<'_>) -> Vec<ObjectId> {
    let DesiredSet {
        namespace: _,
        service_account,
        role_binding,
        role,
    } = desired;
    let sa_names = [service_account.name_any()];
    let mut rb_names = vec![role_binding.name_any()];
    let mut role_names = Vec::new();
    if let Some(NamespacedRole { role, binding }) = role {
        rb_names.push(binding.name_any());
        role_names.push(role.name_any());
    }
    let mut ids: Vec<ObjectId> = observed
        .service_accounts
        .iter()
        .filter(|o| !sa_names.contains(&o.meta.name))
        .map(|o| ObjectId::of(Kind::ServiceAccount, &o.meta))
        .chain(
            observed
                .roles
                .iter()
                .filter(|o| !role_names.contains(&o.meta.name))
                .map(|o| ObjectId::of(Kind::Role, &o.meta)),
        )
        .chain(
            observed
                .role_bindings
                .iter()
                .filter(|o| !rb_names.contains(&o.meta.name))
                .map(|o| ObjectId::of(Kind::RoleBinding, &o.meta)),
        )
        .collect();
    ids.sort();
    ids
}

/// The writes that bring `observed` to `desired`, Namespace first. The
/// desired set is destructured without `..` so a new part cannot be missed.
pub fn diff(desired: &DesiredSet, ns: &ObservedNamespace, observed: &ObservedSet<'_>) -> Vec<Write> {
    let DesiredSet {
        namespace,
        service_account,
        role_binding,
        role,
    } = desired;
    let mut writes = Vec::new();
    let reasons = meta_drift(&namespace.metadata, ns);
    if !reasons.is_empty() {
        writes.push(Write {
            object: Object::Namespace(Box::new(namespace.clone())),
            reasons,
            recreate_uid: None,
        });
    }
    let found = observed
        .service_accounts
        .iter()
        .find(|o| o.meta.name == service_account.name_any());
    let reasons = match found {
        None => vec![Drift::Missing],
        Some(sa) => meta_drift(&service_account.metadata, &sa.meta),
    };
    if !reasons.is_empty() {
        writes.push(Write {
            object: Object::ServiceAccount(Box::new(service_account.clone())),
            reasons,
            recreate_uid: None,
        });
    }
    writes.extend(binding_write(role_binding, observed.role_bindings));
    if let Some(NamespacedRole { role, binding }) = role {
        let reasons = match observed.roles.iter().find(|o| o.meta.name == role.name_any()) {
            None => vec![Drift::Missing],
            Some(found) => {
                let mut reasons = meta_drift(&role.metadata, &found.meta);
                if !same_rules(role.rules.as_deref(), found.rules.as_deref()) {
                    reasons.push(Drift::Rules);
                }
                reasons
            }
        };
        if !reasons.is_empty() {
            writes.push(Write {
                object: Object::Role(Box::new(role.clone())),
                reasons,
                recreate_uid: None,
            });
        }
        writes.extend(binding_write(binding, observed.role_bindings));
    }
    writes
}

fn binding_write(desired: &RoleBinding, observed: &[ObservedRoleBinding]) -> Option<Write> {
    let found = observed.iter().find(|o| o.meta.name == desired.name_any());
    let (reasons, recreate_uid) = match found {
        None => (vec![Drift::Missing], None),
        Some(found) => {
            let mut reasons = meta_drift(&desired.metadata, &found.meta);
            if !same_subjects(desired.subjects.as_deref(), found.subjects.as_deref()) {
                reasons.push(Drift::Subjects);
            }
            if same_role_ref(&desired.role_ref, &found.role_ref) {
                (reasons, None)
            } else {
                reasons.push(Drift::RoleRef);
                (reasons, Some(found.meta.uid.clone().unwrap_or_default()))
            }
        }
    };
    (!reasons.is_empty()).then(|| Write {
        object: Object::RoleBinding(Box::new(desired.clone())),
        reasons,
        recreate_uid,
    })
}

/// Desired labels and annotations must be present with their values; others
/// (added by people or Kubernetes) are fine.
fn meta_drift(desired: &ObjectMeta, observed: &ObservedMeta) -> Vec<Drift> {
    let mut reasons = Vec::new();
    if !observed.labels.contains_all(desired.labels.as_ref()) {
        reasons.push(Drift::Labels);
    }
    if !observed.annotations.contains_all(desired.annotations.as_ref()) {
        reasons.push(Drift::Annotations);
    }
    reasons
}

fn same_role_ref(a: &RoleRef, b: &RoleRef) -> bool {
    a.api_group == b.api_group && a.kind == b.kind && a.name == b.name
}

/// Subjects compared the way the API server stores them (absent and empty
/// strings are the same; the order of the atomic list matters).
fn same_subjects(a: Option<&[Subject]>, b: Option<&[Subject]>) -> bool {
    let norm = |s: Option<&[Subject]>| -> Vec<(String, String, String, String)> {
        s.unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s.kind.clone(),
                    s.name.clone(),
                    s.namespace.clone().unwrap_or_default(),
                    s.api_group.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    norm(a) == norm(b)
}

/// Rules compared with absent and empty lists the same (the server drops empty ones).
fn same_rules(a: Option<&[PolicyRule]>, b: Option<&[PolicyRule]>) -> bool {
    type Norm = [Vec<String>; 5];
    let norm = |rules: Option<&[PolicyRule]>| -> Vec<Norm> {
        rules
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
                [
                    list(&r.api_groups),
                    list(&r.resources),
                    list(&r.resource_names),
                    list(&r.non_resource_urls),
                    r.verbs.clone(),
                ]
            })
            .collect()
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::fixtures::*;
    use crate::reaper::observation::{ObservedMeta, ObservedServiceAccount};
    use crate::reaper::plan::Action;
    use crate::rules::desired::desired_set;
    use crate::rules::params::Expiry;

    #[test]
    fn repairs_apply_exactly_the_desired_objects() {
        let mut s = live();
        s.role_bindings[0].role_ref.name = "cluster-admin".to_owned();
        s.service_accounts.clear();
        let got = plan_one(&s, NOW, &config(false));
        let desired = desired_set(
            "np-live",
            &tenant(),
            Expiry::from_unix(NOW + HOUR),
            &config(false).set,
        );
        let Action::Repair { writes, .. } = got.action else {
            panic!("{got:?}")
        };
        assert_eq!(
            writes[0].object,
            Object::ServiceAccount(Box::new(desired.service_account))
        );
        assert_eq!(
            writes[1].object,
            Object::RoleBinding(Box::new(desired.role_binding))
        );
        assert_eq!(writes[1].recreate_uid.as_deref(), Some("uid-rb"));
    }

    #[test]
    fn strays_are_reported_beside_the_action() {
        // A Role left over from an earlier --role-rules-file.
        let mut s = observed("np-r", NOW + HOUR, true);
        let got = plan_one(&s, NOW, &config(false));
        assert_eq!(got.action.name(), "inSync");
        assert_eq!(
            got.strays
                .iter()
                .map(|o| (o.kind, o.name.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("Role", "namespace-provisioner"),
                ("RoleBinding", "namespace-provisioner-role")
            ]
        );
        s.service_accounts.push(ObservedServiceAccount {
            meta: ObservedMeta {
                name: "other".to_owned(),
                namespace: Some("np-r".to_owned()),
                ..ObservedMeta::default()
            },
        });
        assert_eq!(plan_one(&s, NOW, &config(true)).strays.len(), 1);
    }
}
