//! The permissions each binary uses, as data: verbs × resources × scope, each
//! with the manifest that grants it. Derived from [`MANAGED_KINDS`] plus the
//! few resources that are not managed kinds (TokenRequests, the grant
//! ClusterRole, Events, the Lease). The preflight ([`crate::k8s::preflight`])
//! asks the API server about each of them; a new kind or a new feature
//! (propagation, quota) adds its rows here and nowhere else. Pure.

use std::fmt;

use super::desired::SetConfig;
use super::kinds::{Kind, MANAGED_KINDS};
use super::labels::OBJECT_NAME;

/// The shipped manifests that grant the permissions, named in messages.
pub const PROVISIONER_CLUSTER_ROLE: &str = "function/clusterrole.yaml";
pub const REAPER_CLUSTER_ROLE: &str = "cronjob/base/clusterrole.yaml";
pub const REAPER_LEASE_ROLE: &str = "cronjob/watch/lease-role.yaml";
pub const ROLE_RULES_GRANT: &str = "function/role-rules/rbac.yaml";
pub const GRANT_CLUSTER_ROLE: &str = "function/grant-clusterrole.yaml";

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
    /// `--cluster-role`: the ClusterRole every managed namespace binds.
    pub grant_cluster_role: &'a str,
    /// `--role-rules-file` is set: a Role with rules is written too.
    pub role_rules: bool,
    /// Namespace of the leader Lease (`reaper --watch`).
    pub lease_namespace: Option<&'a str>,
}

impl<'a> PermissionContext<'a> {
    pub fn from_set(set: &'a SetConfig, lease_namespace: Option<&'a str>) -> Self {
        Self {
            grant_cluster_role: &set.cluster_role,
            role_rules: set.role_rules.is_some(),
            lease_namespace,
        }
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
        (Identity::Reaper { watch: false }, Kind::Namespace) => &["get", "list", "patch", "delete"],
        (Identity::Reaper { watch: true }, Kind::Namespace) => &["get", "list", "watch", "patch", "delete"],
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
    // Binding the grant ClusterRole in each namespace's RoleBinding.
    rows.push(Permission {
        name: Some(context.grant_cluster_role.to_owned()),
        ..row(
            "bind",
            "rbac.authorization.k8s.io",
            "clusterroles",
            Scope::Cluster,
            manifest,
        )
    });
    // A Role with rules: `escalate` and `bind` on that Role (or holding its rules).
    if context.role_rules {
        for verb in ["escalate", "bind"] {
            rows.push(Permission {
                name: Some(OBJECT_NAME.to_owned()),
                ..row(
                    verb,
                    "rbac.authorization.k8s.io",
                    "roles",
                    Scope::Cluster,
                    ROLE_RULES_GRANT,
                )
            });
        }
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

    fn context() -> PermissionContext<'static> {
        PermissionContext {
            grant_cluster_role: "namespace-provisioner-grant",
            role_rules: false,
            lease_namespace: Some("ops"),
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
        let reaper = texts(Identity::Reaper { watch: true }, &context());
        for want in [
            "list serviceaccounts at cluster scope",
            "watch rolebindings.rbac.authorization.k8s.io at cluster scope",
            "bind clusterroles.rbac.authorization.k8s.io/namespace-provisioner-grant at cluster scope",
            "create events.events.k8s.io in namespace default",
            "patch leases.coordination.k8s.io in namespace ops",
        ] {
            assert!(reaper.iter().any(|t| t == want), "{want} not in {reaper:#?}");
        }
        let provisioner = texts(Identity::Provisioner, &context());
        assert!(
            provisioner
                .iter()
                .any(|t| t == "create serviceaccounts/token at cluster scope")
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
            let ctx = PermissionContext {
                role_rules: true,
                ..context()
            };
            let rows = required(identity, &ctx);
            let unique: std::collections::BTreeSet<_> = rows.iter().collect();
            assert_eq!(unique.len(), rows.len());
            assert!(
                rows.iter()
                    .any(|p| p.verb == "escalate" && p.manifest == ROLE_RULES_GRANT)
            );
            assert!(rows.iter().all(|p| p.manifest.ends_with(".yaml")));
        }
    }
}
