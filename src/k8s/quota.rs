//! The aggregate quota's I/O (issue 12): HierarchicalResourceQuotas (list, status replace
//! with a `resourceVersion` precondition) and the native ResourceQuotas that enforce them
//! (get, create, replace and replace status with their own `resourceVersion`, list by name). Does Kubernetes
//! I/O; every decision is in [`crate::rules::quota`].

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::{KubeError, list_all, post_params};
use crate::rules::quota::crd::HierarchicalResourceQuota;

/// The budgets in one namespace (a parent has at most one; the caller refuses more).
pub async fn list_budgets(
    client: &Client,
    namespace: &str,
) -> Result<Vec<HierarchicalResourceQuota>, KubeError> {
    Ok(
        Api::<HierarchicalResourceQuota>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await?
            .items,
    )
}

/// One budget by namespace and name, `None` if it is gone (a ledger write's re-read after a
/// conflict: one GET, so the window between read and write stays short).
pub async fn get_budget(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<HierarchicalResourceQuota>, KubeError> {
    Ok(
        Api::<HierarchicalResourceQuota>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?,
    )
}

/// Every budget in the cluster, page by page (the reaper's rebuild).
pub async fn list_all_budgets(
    client: &Client,
    page_size: u32,
) -> Result<Vec<HierarchicalResourceQuota>, KubeError> {
    list_all(
        &Api::<HierarchicalResourceQuota>::all(client.clone()),
        "",
        page_size,
    )
    .await
}

/// Replace a budget's status. `budget` carries the `resourceVersion` it was read at, which
/// the API server checks: a concurrent writer makes this fail with a conflict
/// ([`KubeError::is_conflict`]) and nothing is written. Returns the stored object.
pub async fn replace_budget_status(
    client: &Client,
    budget: &HierarchicalResourceQuota,
) -> Result<HierarchicalResourceQuota, KubeError> {
    let namespace = budget.namespace().unwrap_or_default();
    Ok(
        Api::<HierarchicalResourceQuota>::namespaced(client.clone(), &namespace)
            .replace_status(&budget.name_any(), &post_params(), budget)
            .await?,
    )
}

/// A ResourceQuota by namespace and name, `None` if there is none.
pub async fn get_quota(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<ResourceQuota>, KubeError> {
    Ok(Api::<ResourceQuota>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?)
}

/// Create a ResourceQuota (a conflict if one of that name exists).
pub async fn create_quota(
    client: &Client,
    namespace: &str,
    quota: &ResourceQuota,
) -> Result<ResourceQuota, KubeError> {
    Ok(Api::<ResourceQuota>::namespaced(client.clone(), namespace)
        .create(&post_params(), quota)
        .await?)
}

/// Replace a ResourceQuota; `quota` carries the `resourceVersion` it was read at, so a
/// concurrent writer makes this a conflict.
pub async fn replace_quota(
    client: &Client,
    namespace: &str,
    quota: &ResourceQuota,
) -> Result<ResourceQuota, KubeError> {
    Ok(Api::<ResourceQuota>::namespaced(client.clone(), namespace)
        .replace(&quota.name_any(), &post_params(), quota)
        .await?)
}

/// Replace a ResourceQuota's status (the `status` subresource); `quota` carries the
/// `resourceVersion` it was read at, so any write since (an admitted object raising
/// `status.used`, the quota controller) makes this a conflict and nothing is written.
pub async fn replace_quota_status(
    client: &Client,
    namespace: &str,
    quota: &ResourceQuota,
) -> Result<ResourceQuota, KubeError> {
    Ok(Api::<ResourceQuota>::namespaced(client.clone(), namespace)
        .replace_status(&quota.name_any(), &post_params(), quota)
        .await?)
}

/// Every ResourceQuota named `name`, cluster-wide, page by page (the children's allocation
/// quotas, found by name: one LIST for all parents).
pub async fn list_quotas_named(
    client: &Client,
    name: &str,
    page_size: u32,
) -> Result<Vec<ResourceQuota>, KubeError> {
    let api = Api::<ResourceQuota>::all(client.clone());
    let mut items = Vec::new();
    let mut params = ListParams::default()
        .fields(&format!("metadata.name={name}"))
        .limit(page_size);
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}
