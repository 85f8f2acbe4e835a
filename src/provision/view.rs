//! The tree as a tenant sees it (issue 11 "See the tree", issue 12 usage): one namespace with
//! its parent, children, copies of its ancestors' objects, conflicts (its own objects named like
//! an ancestor's source, never overwritten) and its allocation; and the tenant's namespaces
//! under a parent. Reads only; conflicts are the shared planner's, run without writing.

use std::collections::BTreeMap;

use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;

use super::{NamespaceInfo, ProvisionError, Provisioner, info_of};
use crate::k8s;
use crate::propagate::{self, Destination, Propagation, SyncListError};
use crate::rules::auth::{Identity, Verb};
use crate::rules::hierarchy::keys::{INHERITED_FROM_LABEL, PARENT_LABEL, tree_label};
use crate::rules::hierarchy::tree::Forest;
use crate::rules::quota::objects::{ALLOCATION_QUOTA, hard_of, used_of};
use crate::rules::quota::resources::ResourceList;

/// One object in a namespace, as the view names it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// `Kind` or `group/Kind`.
    pub kind: String,
    pub name: String,
    /// For a copy, the namespace of its source; for a conflict, the ancestor whose object of
    /// that name is not copied here.
    pub source: String,
}

/// A namespace's allocation from its parent's budget and what it uses of it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    #[schema(value_type = Object)]
    pub allocation: BTreeMap<String, String>,
    #[schema(value_type = Object)]
    pub used: BTreeMap<String, String>,
}

/// One of the caller's namespaces and its place in a tree.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceView {
    #[serde(flatten)]
    pub info: NamespaceInfo,
    /// Its parent, if it is a child.
    pub parent: Option<String>,
    /// Its children's names (every tenant's: they live in this namespace's subtree).
    pub children: Vec<String>,
    /// How many copies of its ancestors' objects it holds, and which.
    pub copy_count: usize,
    pub copies: Vec<ObjectRef>,
    /// Its own objects that have the name of an ancestor's propagated object: reported, never overwritten.
    pub conflicts: Vec<ObjectRef>,
    /// Its allocation, when it is a child under a budget.
    pub quota: Option<QuotaView>,
}

impl Provisioner {
    /// One of the tenant's namespaces with its tree.
    pub async fn describe(&self, who: &Identity, name: &str) -> Result<NamespaceView, ProvisionError> {
        let ns = self.owned(who, name, Verb::Get).await?;
        let chain = self.ancestry(&ns).await?;
        let forest = Forest::build(&chain);
        let ancestors: Vec<String> = forest.ancestors(name).into_iter().map(str::to_owned).collect();
        let children = k8s::list_namespaces(
            &self.client,
            &format!("{PARENT_LABEL}={name}"),
            self.config.page_size,
        )
        .await
        .map_err(|source| ProvisionError::ListChildren {
            parent: name.to_owned(),
            source,
        })?
        .iter()
        .map(ResourceExt::name_any)
        .collect();
        let (copies, conflicts) = self.copies_and_conflicts(name, ns.labels(), &ancestors).await?;
        let quota = self.read_quota(name, ALLOCATION_QUOTA).await?.map(|q| QuotaView {
            allocation: strings(hard_of(&q).map(|r| r.to_list()).unwrap_or_default()),
            used: strings(used_of(&q).map(|r| r.to_list()).unwrap_or_default()),
        });
        Ok(NamespaceView {
            info: info_of(&ns),
            parent: ns.labels().get(PARENT_LABEL).filter(|p| !p.is_empty()).cloned(),
            children,
            copy_count: copies.len(),
            copies,
            conflicts,
            quota,
        })
    }

    /// Copies in `name` (objects of a propagated kind with the inherited-from label) and the
    /// conflicts the planner finds there, from a plan that writes nothing.
    async fn copies_and_conflicts(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        ancestors: &[String],
    ) -> Result<(Vec<ObjectRef>, Vec<ObjectRef>), ProvisionError> {
        let propagation = self.propagation().await?;
        let (mut copies, mut conflicts) = (Vec::new(), Vec::new());
        for kind in propagation.active_kinds() {
            let list = |namespace: String| async move {
                k8s::list_dynamic(
                    &self.client,
                    &kind.resource,
                    Some(&namespace),
                    "",
                    self.config.page_size,
                )
                .await
                .map_err(|source| SyncListError {
                    kind: kind.label(),
                    namespace,
                    source,
                })
            };
            let own = list(name.to_owned()).await?;
            for object in &own {
                let meta = object.get("metadata");
                let source = meta
                    .and_then(|m| m.get("labels"))
                    .and_then(|l| l.get(INHERITED_FROM_LABEL))
                    .and_then(Value::as_str);
                if let Some(source) = source {
                    copies.push(ObjectRef {
                        kind: kind.label(),
                        name: meta
                            .and_then(|m| m.get("name"))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        source: source.to_owned(),
                    });
                }
            }
            if ancestors.is_empty() {
                continue;
            }
            let sources = futures::future::try_join_all(ancestors.iter().cloned().map(list)).await?;
            let by_ancestor: Vec<(&str, &[Value])> = ancestors
                .iter()
                .map(String::as_str)
                .zip(sources.iter().map(Vec::as_slice))
                .collect();
            let destination = Destination { name, labels };
            let report = propagate::sync_kind(
                &self.client,
                propagation,
                kind,
                destination,
                &by_ancestor,
                &own,
                propagate::SyncOptions {
                    dry_run: true,
                    hashes: None,
                },
            )
            .await;
            conflicts.extend(report.conflicts.into_iter().map(|f| ObjectRef {
                kind: f.kind,
                name: f.name,
                source: f.detail,
            }));
        }
        Ok((copies, conflicts))
    }

    /// `config.propagation` resolved through discovery, once per process.
    pub(super) async fn propagation(&self) -> Result<&Propagation, ProvisionError> {
        self.propagation
            .get_or_try_init(|| async {
                let discovered = Propagation::discover(&self.client, self.config.propagation.clone()).await?;
                // A managed parent's own set (its ServiceAccount's RoleBinding) is not policy to
                // hand down: the reaper excludes it too.
                Ok(discovered.excluding_sets(self.config.set.selector.clone()))
            })
            .await
            .map_err(ProvisionError::ResolveKinds)
    }

    /// The tenant's namespaces anywhere below `parent` (its tree label), `parent` excluded.
    pub async fn list_under(
        &self,
        who: &Identity,
        parent: &str,
    ) -> Result<Vec<NamespaceInfo>, ProvisionError> {
        let selector = format!("{},{}", self.tenant_selector(who.tenant()), tree_label(parent));
        let items = k8s::list_namespaces(&self.client, &selector, self.config.page_size)
            .await
            .map_err(|source| ProvisionError::ListNamespaces { source })?;
        Ok(items
            .iter()
            .filter(|ns| ns.name_any() != parent)
            .map(info_of)
            .collect())
    }
}

fn strings(list: ResourceList) -> BTreeMap<String, String> {
    list.into_iter().map(|(k, v)| (k, v.0)).collect()
}
