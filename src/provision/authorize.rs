//! Authorization of Kubernetes users by RBAC (SubjectAccessReview on
//! `namespaces.controller.observatorium.io`, cluster-wide for top-level
//! namespaces, in the parent for children) for the provisioning pipeline.
//! Static tenants are authorized by the token file and pass. Does Kubernetes
//! I/O through [`crate::k8s`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;

use super::{NamespaceInfo, ProvisionError, Provisioner, info_of};
use crate::k8s;
use crate::rules::auth::{Identity, Right, UserInfo, Verb};
use crate::rules::hierarchy::keys::PARENT_LABEL;
use crate::rules::labels;
use crate::rules::params::is_dns_label;

impl Provisioner {
    /// Whether `user` holds `right` (one SubjectAccessReview).
    pub(super) async fn may(&self, user: &UserInfo, right: &Right) -> Result<bool, ProvisionError> {
        k8s::review_access(&self.client, user, right)
            .await
            .map_err(|source| ProvisionError::ReviewAccess {
                user: user.username.clone(),
                source,
            })
    }

    /// Check that `who` may `verb` managed namespaces: cluster-wide
    /// (`parent: None`, top-level namespaces) or in namespace `parent` (its
    /// children). A static tenant is authorized by the token file; a
    /// Kubernetes user by RBAC, else [`ProvisionError::Forbidden`] naming the
    /// missing right.
    pub async fn authorize(
        &self,
        who: &Identity,
        verb: Verb,
        parent: Option<&str>,
    ) -> Result<(), ProvisionError> {
        let Some(user) = who.kubernetes_user() else {
            return Ok(());
        };
        let right = Right {
            verb,
            namespace: parent.map(str::to_owned),
        };
        if self.may(user, &right).await? {
            Ok(())
        } else {
            Err(ProvisionError::Forbidden {
                who: who.to_string(),
                right,
            })
        }
    }

    /// Whether `who` may `verb` a managed namespace it does not own: RBAC in
    /// the namespace's scope; never for a static tenant.
    pub(super) async fn may_touch(
        &self,
        who: &Identity,
        ns: &Namespace,
        verb: Verb,
    ) -> Result<bool, ProvisionError> {
        let Some(user) = who.kubernetes_user() else {
            return Ok(false);
        };
        let right = Right {
            verb,
            namespace: scope_of(ns),
        };
        self.may(user, &right).await
    }

    /// A Kubernetes user's list: its own plus those RBAC lets it `list`.
    pub(super) async fn list_for_user(
        &self,
        who: &Identity,
        user: &UserInfo,
    ) -> Result<Vec<NamespaceInfo>, ProvisionError> {
        let items = k8s::list_namespaces(
            &self.client,
            &self.config.set.selector.to_label_selector(),
            self.config.page_size,
        )
        .await
        .map_err(|source| ProvisionError::ListNamespaces { source })?;
        // One review per scope (cluster, or each parent), whatever the count.
        let mut allowed: BTreeMap<Option<String>, bool> = BTreeMap::new();
        let mut shown = Vec::new();
        for ns in &items {
            if labels::belongs_to(ns.labels(), who.tenant()) {
                shown.push(info_of(ns));
                continue;
            }
            let scope = scope_of(ns);
            let may = match allowed.get(&scope) {
                Some(may) => *may,
                None => {
                    let right = Right {
                        verb: Verb::List,
                        namespace: scope.clone(),
                    };
                    let may = self.may(user, &right).await?;
                    allowed.insert(scope, may);
                    may
                }
            };
            if may {
                shown.push(info_of(ns));
            }
        }
        Ok(shown)
    }
}

/// Where RBAC decides about `ns`: its parent namespace, or the cluster for a
/// top-level one.
fn scope_of(ns: &Namespace) -> Option<String> {
    ns.labels().get(PARENT_LABEL).filter(|p| is_dns_label(p)).cloned()
}
