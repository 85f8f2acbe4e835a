//! The one definition of a complete managed set: what the provisioner creates
//! and what the reaper compares against and repairs to. Pure: no client, no
//! clock, no randomness.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::ObjectMeta;

use std::collections::BTreeMap;

use super::labels::{
    self, BOUND_USER_ANNOTATION, Labels, OBJECT_NAME, OWNER_ANNOTATION, ROLE_BINDING_FOR_ROLE, expiry_labels,
    set_annotations, set_labels,
};
use super::params::{Expiry, NamePrefix, Selector, TenantName};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// What a set is made of, beyond its name, tenant and expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct SetConfig {
    pub selector: Selector,
    /// The ClusterRole bound inside every namespace (`--cluster-role`).
    pub cluster_role: String,
    /// Namespaced rules (`--role-rules-file`): a Role plus its own RoleBinding.
    pub role_rules: Option<Vec<PolicyRule>>,
}

/// A namespaced Role and the RoleBinding that grants it.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespacedRole {
    pub role: Role,
    pub binding: RoleBinding,
}

/// Every object of one managed namespace, by name of its part.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSet {
    pub namespace: Namespace,
    pub service_account: ServiceAccount,
    pub role_binding: RoleBinding,
    pub role: Option<NamespacedRole>,
}

/// Whose set it is, as recorded on its Namespace: the tenant (label), and
/// for a Kubernetes identity its username and, when it asked to be bound,
/// the user bound inside (annotations). Everything the desired set needs
/// besides name, expiry and config, so the reaper rebuilds it from the
/// Namespace's metadata alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub tenant: TenantName,
    /// Kubernetes username of the creator ([`OWNER_ANNOTATION`]).
    pub user: Option<String>,
    /// Kubernetes user bound to the grant ClusterRole ([`BOUND_USER_ANNOTATION`]).
    pub bound_user: Option<String>,
}

impl Owner {
    /// A static-token tenant's set.
    pub fn tenant(tenant: TenantName) -> Self {
        Self {
            tenant,
            user: None,
            bound_user: None,
        }
    }

    /// Read from a Namespace's labels and annotations; `None` without a valid tenant.
    pub fn of(labels: &impl Labels, annotations: &impl Labels) -> Option<Self> {
        let non_empty = |key| {
            annotations
                .label(key)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Some(Self {
            tenant: labels::tenant_of(labels)?,
            user: non_empty(OWNER_ANNOTATION),
            bound_user: non_empty(BOUND_USER_ANNOTATION),
        })
    }

    fn annotations(&self) -> impl Iterator<Item = (String, String)> + '_ {
        [
            (OWNER_ANNOTATION, &self.user),
            (BOUND_USER_ANNOTATION, &self.bound_user),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), v.clone())))
    }
}

/// Metadata every object of a set carries (the owner's annotations go on
/// the Namespace only).
fn set_meta(
    selector: &Selector,
    tenant: &TenantName,
    expiry: Expiry,
    name: &str,
    namespace: Option<&str>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(set_labels(selector, tenant, expiry)),
        annotations: Some(set_annotations(expiry)),
        ..ObjectMeta::default()
    }
}

fn namespace_meta(selector: &Selector, owner: &Owner, expiry: Expiry, name: &str) -> ObjectMeta {
    let mut meta = set_meta(selector, &owner.tenant, expiry, name, None);
    let annotations: &mut BTreeMap<String, String> = meta.annotations.get_or_insert_default();
    annotations.extend(owner.annotations());
    meta
}

/// The set's Namespace before its name is chosen: the desired Namespace
/// with `generateName: <prefix>-` instead of a name. Labelled from this first
/// write, so a crash right after it leaves something the reaper can find.
pub fn namespace_to_create(
    prefix: &NamePrefix,
    tenant: &TenantName,
    expiry: Expiry,
    config: &SetConfig,
) -> Namespace {
    namespace_to_create_for(prefix, &Owner::tenant(tenant.clone()), expiry, config)
}

/// [`namespace_to_create`] for any [`Owner`].
pub fn namespace_to_create_for(
    prefix: &NamePrefix,
    owner: &Owner,
    expiry: Expiry,
    config: &SetConfig,
) -> Namespace {
    let mut metadata = namespace_meta(&config.selector, owner, expiry, "");
    metadata.name = None;
    metadata.generate_name = Some(format!("{}-", prefix.as_str()));
    Namespace {
        metadata,
        ..Namespace::default()
    }
}

/// For a managed namespace without a tenant (e.g. adopted from the original
/// tool): only the expiry label and annotation are ours to write; its other
/// labels and its contents stay someone else's.
pub fn expiry_only_namespace(name: &str, expiry: Expiry) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(expiry_labels(expiry)),
            annotations: Some(set_annotations(expiry)),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The complete set for namespace `name` of a static-token tenant.
pub fn desired_set(name: &str, tenant: &TenantName, expiry: Expiry, config: &SetConfig) -> DesiredSet {
    desired_set_for(name, &Owner::tenant(tenant.clone()), expiry, config)
}

/// The complete set for namespace `name` of any [`Owner`]: a bound user is a
/// second subject of the grant RoleBinding (so the reaper repairs it with
/// the rest).
pub fn desired_set_for(name: &str, owner: &Owner, expiry: Expiry, config: &SetConfig) -> DesiredSet {
    let meta = |object_name: &str, namespace: Option<&str>| {
        set_meta(&config.selector, &owner.tenant, expiry, object_name, namespace)
    };
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: OBJECT_NAME.to_owned(),
        namespace: Some(name.to_owned()),
        api_group: None,
    };
    let binding = |binding_name: &str, kind: &str, role_name: &str, subjects: Vec<Subject>| RoleBinding {
        metadata: meta(binding_name, Some(name)),
        role_ref: RoleRef {
            api_group: RBAC_GROUP.to_owned(),
            kind: kind.to_owned(),
            name: role_name.to_owned(),
        },
        subjects: Some(subjects),
    };
    let mut grant_subjects = vec![subject.clone()];
    grant_subjects.extend(owner.bound_user.as_ref().map(|user| Subject {
        kind: "User".to_owned(),
        name: user.clone(),
        namespace: None,
        api_group: Some(RBAC_GROUP.to_owned()),
    }));
    DesiredSet {
        namespace: Namespace {
            metadata: namespace_meta(&config.selector, owner, expiry, name),
            ..Namespace::default()
        },
        service_account: ServiceAccount {
            metadata: meta(OBJECT_NAME, Some(name)),
            ..ServiceAccount::default()
        },
        role_binding: binding(OBJECT_NAME, "ClusterRole", &config.cluster_role, grant_subjects),
        role: config.role_rules.as_ref().map(|rules| NamespacedRole {
            role: Role {
                metadata: meta(OBJECT_NAME, Some(name)),
                rules: Some(rules.clone()),
            },
            binding: binding(ROLE_BINDING_FOR_ROLE, "Role", OBJECT_NAME, vec![subject.clone()]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rules: Option<Vec<PolicyRule>>) -> SetConfig {
        SetConfig {
            selector: "controller.observatorium.io=namespace-provisioner"
                .parse()
                .unwrap(),
            cluster_role: "namespace-provisioner-grant".to_owned(),
            role_rules: rules,
        }
    }

    #[test]
    fn every_object_carries_selector_expiry_and_tenant() {
        let tenant: TenantName = "ci".parse().unwrap();
        let set = desired_set(
            "np-abcde",
            &tenant,
            Expiry::from_unix(1_800_000_000),
            &config(None),
        );
        let metas = [
            &set.namespace.metadata,
            &set.service_account.metadata,
            &set.role_binding.metadata,
        ];
        for meta in metas {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["controller.observatorium.io"], "namespace-provisioner");
            assert_eq!(labels["controller.observatorium.io/expiry"], "1800000000");
            assert_eq!(labels["controller.observatorium.io/tenant"], "ci");
            assert_eq!(
                meta.annotations.as_ref().unwrap()["controller.observatorium.io/expires-at"],
                "2027-01-15T08:00:00Z"
            );
        }
        assert_eq!(set.namespace.metadata.name.as_deref(), Some("np-abcde"));
        assert_eq!(set.namespace.metadata.namespace, None);
        assert_eq!(
            set.service_account.metadata.namespace.as_deref(),
            Some("np-abcde")
        );
        assert!(set.role.is_none());
    }

    #[test]
    fn the_namespace_to_create_is_the_desired_one_with_a_generated_name() {
        let tenant: TenantName = "ci".parse().unwrap();
        let expiry = Expiry::from_unix(1_800_000_000);
        let created = namespace_to_create(&"np".parse().unwrap(), &tenant, expiry, &config(None));
        assert_eq!(created.metadata.generate_name.as_deref(), Some("np-"));
        assert_eq!(created.metadata.name, None);
        let desired = desired_set("np-x", &tenant, expiry, &config(None)).namespace;
        assert_eq!(created.metadata.labels, desired.metadata.labels);
        assert_eq!(created.metadata.annotations, desired.metadata.annotations);
    }

    #[test]
    fn role_binding_grants_the_cluster_role_to_the_service_account() {
        let tenant: TenantName = "ci".parse().unwrap();
        let rb = desired_set("np-x", &tenant, Expiry::from_unix(1), &config(None)).role_binding;
        assert_eq!(rb.role_ref.kind, "ClusterRole");
        assert_eq!(rb.role_ref.name, "namespace-provisioner-grant");
        assert_eq!(rb.role_ref.api_group, "rbac.authorization.k8s.io");
        let subjects = rb.subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "namespace-provisioner");
        assert_eq!(subjects[0].namespace.as_deref(), Some("np-x"));
    }

    #[test]
    fn a_bound_user_is_recorded_on_the_namespace_and_bound_to_the_grant() {
        let owner = Owner {
            tenant: "u-abc".parse().unwrap(),
            user: Some("system:serviceaccount:team-a:ci".into()),
            bound_user: Some("system:serviceaccount:team-a:ci".into()),
        };
        let set = desired_set_for("np-x", &owner, Expiry::from_unix(1), &config(None));
        let ns_meta = &set.namespace.metadata;
        let read = Owner::of(
            ns_meta.labels.as_ref().unwrap(),
            ns_meta.annotations.as_ref().unwrap(),
        );
        assert_eq!(
            read.as_ref(),
            Some(&owner),
            "the owner round-trips through the namespace"
        );
        let subjects = set.role_binding.subjects.unwrap();
        assert_eq!(subjects.len(), 2);
        assert_eq!(subjects[1].kind, "User");
        assert_eq!(subjects[1].name, "system:serviceaccount:team-a:ci");
        // Only the namespace carries the owner's annotations.
        assert!(
            !set.service_account
                .metadata
                .annotations
                .unwrap()
                .contains_key(OWNER_ANNOTATION)
        );
        let created = namespace_to_create_for(
            &"np".parse().unwrap(),
            &owner,
            Expiry::from_unix(1),
            &config(None),
        );
        assert_eq!(created.metadata.annotations, set.namespace.metadata.annotations);
        // A static tenant's set is unchanged.
        let plain = desired_set("np-x", &owner.tenant, Expiry::from_unix(1), &config(None));
        assert_eq!(plain.role_binding.subjects.unwrap().len(), 1);
    }

    #[test]
    fn namespaced_rules_add_a_role_and_its_binding() {
        let rules = vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            verbs: vec!["get".to_owned()],
            ..PolicyRule::default()
        }];
        let tenant: TenantName = "ci".parse().unwrap();
        let set = desired_set(
            "np-x",
            &tenant,
            Expiry::from_unix(1),
            &config(Some(rules.clone())),
        );
        let role = set.role.unwrap();
        assert_eq!(role.role.rules, Some(rules));
        assert_eq!(
            role.binding.metadata.name.as_deref(),
            Some("namespace-provisioner-role")
        );
        assert_eq!(role.binding.role_ref.kind, "Role");
        assert_eq!(role.binding.role_ref.name, "namespace-provisioner");
    }
}
