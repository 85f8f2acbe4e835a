//! The permissions each binary uses, as data: verbs × resources × scope, each
//! with the manifest that grants it. Derived from [`MANAGED_KINDS`] plus the
//! few resources that are not managed kinds (TokenRequests, the grant
//! ClusterRole, Events, the Lease), the propagated kinds (Roles and
//! RoleBindings always, plus those of the propagation configuration, resolved
//! at start-up) and the aggregate quota (HierarchicalResourceQuotas, their
//! status, ResourceQuotas). The preflight ([`crate::k8s::preflight`])
//! asks the API server about each of them; a new kind or a new feature
//! (propagation, quota) adds its rows here and nowhere else. Pure.

use std::fmt;

use super::kinds::{Kind, MANAGED_KINDS};

/// The shipped manifests that grant the permissions, named in messages.
pub const PROVISIONER_CLUSTER_ROLE: &str = "function/clusterrole.yaml";
pub const REAPER_CLUSTER_ROLE: &str = "cronjob/base/clusterrole.yaml";
pub const REAPER_LEASE_ROLE: &str = "cronjob/watch/lease-role.yaml";
pub const GRANT_CLUSTER_ROLE: &str = "function/grant-clusterrole.yaml";

/// A kind copied from parents to children: Roles and RoleBindings always,
/// plus the kinds of the propagation configuration (resolved at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropagatedKind {
    /// API group; `""` is the core group.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const QUOTA_GROUP: &str = "controller.observatorium.io";

/// Which process, doing what: the permissions differ by mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Provisioner,
    /// `reaper --once` (`watch: false`) or `reaper --watch`.
    Reaper {
        watch: bool,
    },
}

/// Where a permission must hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every namespace (namespaced kinds) or the cluster-scoped kind itself.
    Cluster,
    Namespace(String),
}

/// One verb on one resource in one scope (optionally one named object).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    pub verb: &'static str,
    /// API group; `""` is the core group.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
    /// Subresource (`token` of `serviceaccounts`), if any.
    pub subresource: Option<&'static str>,
    /// One object only (`bind` on the grant ClusterRole).
    pub name: Option<String>,
    pub scope: Scope,
    /// The manifest that grants it, for the message.
    pub manifest: &'static str,
}

impl Permission {
    /// `resource[/subresource][.group][/name]`, as kubectl spells resources.
    pub fn resource_text(&self) -> String {
        let mut text = self.resource.clone();
        if let Some(sub) = self.subresource {
            text.push('/');
            text.push_str(sub);
        }
        if !self.group.is_empty() {
            text.push('.');
            text.push_str(&self.group);
        }
        if let Some(name) = &self.name {
            text.push('/');
            text.push_str(name);
        }
        text
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cluster => f.write_str("at cluster scope"),
            Self::Namespace(ns) => write!(f, "in namespace {ns}"),
        }
    }
}

impl fmt::Display for Permission {
    /// `list serviceaccounts at cluster scope`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.verb, self.resource_text(), self.scope)
    }
}

/// What the preflight needs to know besides the identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionContext<'a> {
    /// `--cluster-role`: the ClusterRole every managed namespace binds (the
    /// provisioner checks that it exists).
    pub grant_cluster_role: &'a str,
    /// Namespace of the leader Lease (`reaper --watch`).
    pub lease_namespace: Option<&'a str>,
    /// Kinds of the propagation configuration besides Roles and RoleBindings
    /// (which are always propagated and always listed).
    pub propagated: &'a [PropagatedKind],
}

impl<'a> PermissionContext<'a> {
    pub fn new(grant_cluster_role: &'a str, lease_namespace: Option<&'a str>) -> Self {
        Self {
            grant_cluster_role,
            lease_namespace,
            propagated: &[],
        }
    }

    /// The same, with the configured propagated kinds.
    pub fn with_propagated(self, propagated: &'a [PropagatedKind]) -> Self {
        Self { propagated, ..self }
    }
}

/// The verbs `identity` uses on a managed kind. Server-side apply that
/// creates an object takes `create` besides `patch`; the reaper deletes and
/// recreates a RoleBinding whose immutable roleRef drifted, hence `delete`
/// on every kind.
fn kind_verbs(kind: Kind, identity: Identity) -> &'static [&'static str] {
    match (identity, kind) {
        (Identity::Provisioner, Kind::Namespace) => &["get", "list", "create", "patch", "delete"],
        (Identity::Provisioner, _) => &["get", "create", "patch"],
        // `create`: warm-pool members (issue 16).
        (Identity::Reaper { watch: false }, Kind::Namespace) => &["get", "list", "create", "patch", "delete"],
        (Identity::Reaper { watch: true }, Kind::Namespace) => {
            &["get", "list", "watch", "create", "patch", "delete"]
        }
        (Identity::Reaper { watch: false }, _) => &["get", "list", "create", "patch", "delete"],
        (Identity::Reaper { watch: true }, _) => &["get", "list", "watch", "create", "patch", "delete"],
    }
}

/// Every permission `identity` uses, in a stable order: the managed kinds
/// first (in [`MANAGED_KINDS`] order), then the extra resources.
pub fn required(identity: Identity, context: &PermissionContext<'_>) -> Vec<Permission> {
    let manifest = match identity {
        Identity::Provisioner => PROVISIONER_CLUSTER_ROLE,
        Identity::Reaper { .. } => REAPER_CLUSTER_ROLE,
    };
    let row = |verb, group: &str, resource: &str, scope: Scope, manifest| Permission {
        verb,
        group: group.to_owned(),
        resource: resource.to_owned(),
        subresource: None,
        name: None,
        scope,
        manifest,
    };
    let mut rows = Vec::new();
    for kind in MANAGED_KINDS {
        let resource = kind.api_resource();
        for verb in kind_verbs(kind, identity) {
            rows.push(row(
                verb,
                &resource.group,
                &resource.plural,
                Scope::Cluster,
                manifest,
            ));
        }
    }
    // Reading the grant ClusterRole: the provisioner checks that it exists
    // (`bind` on any ClusterRole would accept a binding to a missing one).
    if identity == Identity::Provisioner {
        rows.push(Permission {
            name: Some(context.grant_cluster_role.to_owned()),
            ..row("get", RBAC_GROUP, "clusterroles", Scope::Cluster, manifest)
        });
    }
    match identity {
        Identity::Provisioner => rows.push(Permission {
            subresource: Some("token"),
            ..row("create", "", "serviceaccounts", Scope::Cluster, manifest)
        }),
        Identity::Reaper { watch } => {
            // Events about Namespaces go to `default` (Namespaces have no namespace).
            for verb in ["create", "patch"] {
                rows.push(row(
                    verb,
                    "events.k8s.io",
                    "events",
                    Scope::Namespace("default".to_owned()),
                    manifest,
                ));
            }
            if let (true, Some(ns)) = (watch, context.lease_namespace) {
                for verb in ["get", "create", "patch"] {
                    rows.push(row(
                        verb,
                        "coordination.k8s.io",
                        "leases",
                        Scope::Namespace(ns.to_owned()),
                        REAPER_LEASE_ROLE,
                    ));
                }
            }
        }
    }
    // Propagation (issue 11): copies in tree namespaces. The provisioner
    // writes a new child's first copies; the reaper keeps every copy in step
    // (replaced with their resourceVersion, deleted when the source goes).
    let copy_verbs: &[&str] = match identity {
        Identity::Provisioner => &["list", "create"],
        Identity::Reaper { watch: false } => &["list", "create", "update", "delete"],
        Identity::Reaper { watch: true } => &["list", "watch", "create", "update", "delete"],
    };
    let rbac = [(RBAC_GROUP, "roles"), (RBAC_GROUP, "rolebindings")];
    let configured = context
        .propagated
        .iter()
        .map(|k| (k.group.as_str(), k.plural.as_str()));
    for (group, plural) in rbac.into_iter().chain(configured) {
        for verb in copy_verbs {
            let wanted = row(verb, group, plural, Scope::Cluster, manifest);
            if !rows.contains(&wanted) {
                rows.push(wanted);
            }
        }
    }
    // Copied Roles and RoleBindings hold or bind whatever their sources do:
    // `escalate`/`bind` on Roles, `bind` on any ClusterRole (both binaries
    // write copies; the admission policies confine these rights to copies
    // in tree namespaces). They also cover the grant ClusterRole and the
    // `--role-rules-file` Role of every set.
    for verb in ["escalate", "bind"] {
        rows.push(row(verb, RBAC_GROUP, "roles", Scope::Cluster, manifest));
    }
    rows.push(row("bind", RBAC_GROUP, "clusterroles", Scope::Cluster, manifest));
    // Aggregate quota (issue 12): budgets (read), their ledger in the status
    // (replaced with a resourceVersion precondition), the ResourceQuotas that
    // enforce allocations and remainders.
    let (budget_verbs, quota_verbs): (&[&str], &[&str]) = match identity {
        Identity::Provisioner => (&["list"], &["get", "create", "update"]),
        Identity::Reaper { .. } => (&["list"], &["list", "create", "update"]),
    };
    for verb in budget_verbs {
        rows.push(row(
            verb,
            QUOTA_GROUP,
            "hierarchicalresourcequotas",
            Scope::Cluster,
            manifest,
        ));
    }
    rows.push(Permission {
        subresource: Some("status"),
        ..row(
            "update",
            QUOTA_GROUP,
            "hierarchicalresourcequotas",
            Scope::Cluster,
            manifest,
        )
    });
    for verb in quota_verbs {
        rows.push(row(verb, "", "resourcequotas", Scope::Cluster, manifest));
    }
    if identity == Identity::Provisioner {
        // The lowered remainder applied at once (provision::quota).
        rows.push(Permission {
            subresource: Some("status"),
            ..row("update", "", "resourcequotas", Scope::Cluster, manifest)
        });
    }
    rows
}

/// What the provisioner needs on top of [`required`] when it accepts callers'
/// own Kubernetes tokens (`--auth kubernetes|both`): a TokenReview to
/// authenticate them and a SubjectAccessReview to authorize each call.
pub fn caller_reviews() -> Vec<Permission> {
    [
        ("authentication.k8s.io", "tokenreviews"),
        ("authorization.k8s.io", "subjectaccessreviews"),
    ]
    .into_iter()
    .map(|(group, resource)| Permission {
        verb: "create",
        group: group.to_owned(),
        resource: resource.to_owned(),
        subresource: None,
        name: None,
        scope: Scope::Cluster,
        manifest: PROVISIONER_CLUSTER_ROLE,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_maps() -> Vec<PropagatedKind> {
        vec![PropagatedKind {
            group: String::new(),
            plural: "configmaps".into(),
        }]
    }

    fn context() -> PermissionContext<'static> {
        PermissionContext {
            grant_cluster_role: "namespace-provisioner-grant",
            lease_namespace: Some("ops"),
            propagated: &[],
        }
    }

    fn texts(identity: Identity, context: &PermissionContext<'_>) -> Vec<String> {
        required(identity, context)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn caller_reviews_name_both_review_apis() {
        let texts: Vec<String> = caller_reviews().iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "create tokenreviews.authentication.k8s.io at cluster scope",
                "create subjectaccessreviews.authorization.k8s.io at cluster scope",
            ]
        );
    }

    #[test]
    fn every_managed_kind_is_listed_by_the_reaper() {
        let rows = required(Identity::Reaper { watch: false }, &context());
        for kind in MANAGED_KINDS {
            let plural = kind.api_resource().plural;
            assert!(
                rows.iter().any(|p| p.verb == "list" && p.resource == plural),
                "{plural}"
            );
        }
        assert!(!rows.iter().any(|p| p.verb == "watch" || p.resource == "leases"));
    }

    #[test]
    fn rows_read_as_a_person_would_say_them() {
        let kinds = config_maps();
        let with_kinds = || context().with_propagated(&kinds);
        let reaper = texts(Identity::Reaper { watch: true }, &with_kinds());
        for want in [
            "list serviceaccounts at cluster scope",
            "watch rolebindings.rbac.authorization.k8s.io at cluster scope",
            "bind clusterroles.rbac.authorization.k8s.io at cluster scope",
            "escalate roles.rbac.authorization.k8s.io at cluster scope",
            "update roles.rbac.authorization.k8s.io at cluster scope",
            "watch configmaps at cluster scope",
            "delete configmaps at cluster scope",
            "list hierarchicalresourcequotas.controller.observatorium.io at cluster scope",
            "update hierarchicalresourcequotas/status.controller.observatorium.io at cluster scope",
            "update resourcequotas at cluster scope",
            "create events.events.k8s.io in namespace default",
            "patch leases.coordination.k8s.io in namespace ops",
        ] {
            assert!(reaper.iter().any(|t| t == want), "{want} not in {reaper:#?}");
        }
        let provisioner = texts(Identity::Provisioner, &with_kinds());
        for want in [
            "create serviceaccounts/token at cluster scope",
            "get clusterroles.rbac.authorization.k8s.io/namespace-provisioner-grant at cluster scope",
            "bind clusterroles.rbac.authorization.k8s.io at cluster scope",
            "escalate roles.rbac.authorization.k8s.io at cluster scope",
            "list rolebindings.rbac.authorization.k8s.io at cluster scope",
            "create configmaps at cluster scope",
            "get resourcequotas at cluster scope",
            "update hierarchicalresourcequotas/status.controller.observatorium.io at cluster scope",
        ] {
            assert!(
                provisioner.iter().any(|t| t == want),
                "{want} not in {provisioner:#?}"
            );
        }
        assert!(
            !provisioner
                .iter()
                .any(|t| t.starts_with("delete configmaps") || t.starts_with("update configmaps"))
        );
        assert!(
            !provisioner
                .iter()
                .any(|t| t.contains("leases") || t.contains("events"))
        );
    }

    #[test]
    fn rows_are_unique_and_name_their_manifest() {
        for identity in [Identity::Provisioner, Identity::Reaper { watch: true }] {
            let rows = required(identity, &context());
            let unique: std::collections::BTreeSet<_> = rows.iter().collect();
            assert_eq!(unique.len(), rows.len());
            assert!(rows.iter().any(|p| p.verb == "escalate" && p.name.is_none()));
            assert!(rows.iter().all(|p| p.manifest.ends_with(".yaml")));
        }
    }
}
