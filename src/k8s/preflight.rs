//! The start-up permission check: one SelfSubjectAccessReview per row of
//! [`crate::rules::permissions::required`], asked concurrently, so a missing
//! RBAC grant is named (with the manifest that grants it) before the first
//! real call fails. Does Kubernetes I/O.
//!
//! What it cannot see: admission (ValidatingAdmissionPolicies, webhooks) is
//! decided per request on the object's content, so a write that RBAC allows
//! may still be refused there; no review can ask about it in advance.

use std::fmt;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Client;
use kube::api::{Api, PostParams};

use super::KubeError;
use crate::rules::permissions::{Permission, Scope};

/// Reviews in flight at once: ~30 small POSTs, no need to burst them all.
const CONCURRENT_REVIEWS: usize = 8;

/// A permission the API server says this identity does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub Permission);

impl fmt::Display for Missing {
    /// `cannot list serviceaccounts at cluster scope — apply cronjob/base/clusterrole.yaml`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} — apply {}", self.0, self.0.manifest)
    }
}

/// The outcome of a preflight that could ask.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Preflight {
    pub missing: Vec<Missing>,
}

impl Preflight {
    pub fn passed(&self) -> bool {
        self.missing.is_empty()
    }

    /// Every missing permission, `; `-separated, for one line.
    pub fn summary(&self) -> String {
        let each: Vec<String> = self.missing.iter().map(ToString::to_string).collect();
        format!(
            "this identity lacks {} permission(s): {}",
            self.missing.len(),
            each.join("; ")
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("ask the API server whether this identity may {permission}")]
pub struct PreflightError {
    pub permission: String,
    #[source]
    pub source: KubeError,
}

fn review(permission: &Permission) -> SelfSubjectAccessReview {
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(permission.verb.to_owned()),
                group: Some(permission.group.clone()),
                resource: Some(permission.resource.clone()),
                subresource: permission.subresource.map(str::to_owned),
                name: permission.name.clone(),
                namespace: match &permission.scope {
                    Scope::Cluster => None,
                    Scope::Namespace(ns) => Some(ns.clone()),
                },
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    }
}

/// Ask about every permission; the missing ones come back in input order.
pub async fn preflight(client: &Client, permissions: &[Permission]) -> Result<Preflight, PreflightError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    // `buffered` keeps input order, so the missing ones read in list order.
    // Owned per future: borrowed items make the stream's future not `Send`
    // for every lifetime, which `tokio::spawn` of the caller needs.
    let allowed: Vec<bool> = futures::stream::iter(permissions.to_vec())
        .map(move |permission| {
            let api = api.clone();
            async move {
                let answer = api
                    .create(&PostParams::default(), &review(&permission))
                    .await
                    .map_err(|e| PreflightError {
                        permission: permission.to_string(),
                        source: KubeError::from(e),
                    })?;
                Ok::<_, PreflightError>(answer.status.is_some_and(|s| s.allowed))
            }
        })
        .buffered(CONCURRENT_REVIEWS)
        .try_collect()
        .await?;
    Ok(Preflight {
        missing: permissions
            .iter()
            .zip(allowed)
            .filter(|(_, allowed)| !allowed)
            .map(|(permission, _)| Missing(permission.clone()))
            .collect(),
    })
}

/// Whether the ClusterRole `name` exists. A RoleBinding to a missing
/// ClusterRole is accepted from an identity that may `bind` any ClusterRole
/// (the API server then never looks the role up), so the provisioner asks.
pub async fn cluster_role_exists(client: &Client, name: &str) -> Result<bool, KubeError> {
    let role = Api::<ClusterRole>::all(client.clone()).get_opt(name).await?;
    Ok(role.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::permissions::REAPER_CLUSTER_ROLE;

    #[test]
    fn missing_permissions_name_their_manifest() {
        let missing = Missing(Permission {
            verb: "list",
            group: String::new(),
            resource: "serviceaccounts".into(),
            subresource: None,
            name: None,
            scope: Scope::Cluster,
            manifest: REAPER_CLUSTER_ROLE,
        });
        assert_eq!(
            missing.to_string(),
            "cannot list serviceaccounts at cluster scope — apply cronjob/base/clusterrole.yaml"
        );
        let review = review(&missing.0);
        let attributes = review.spec.resource_attributes.unwrap();
        assert_eq!(attributes.namespace, None);
        assert_eq!(attributes.group.as_deref(), Some(""));
        let preflight = Preflight {
            missing: vec![missing],
        };
        assert!(
            preflight
                .summary()
                .starts_with("this identity lacks 1 permission(s): cannot list")
        );
    }
}
