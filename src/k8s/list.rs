//! Paginated LIST by label selector, typed or per [`Kind`]. Does Kubernetes I/O.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::{Kind, KubeError, Object};

/// Every object of kind `K` that carries `selector`, page by page.
pub async fn list_all<K>(api: &Api<K>, selector: &str, page_size: u32) -> Result<Vec<K>, KubeError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    list_all_map(api, selector, page_size, |object| object).await
}

/// Like [`list_all`], but turns each object into `T` as its page arrives, so
/// only one page of full objects is in memory at a time (e.g. to drop
/// `managedFields`, the bulk of a listed object).
pub async fn list_all_map<K, T>(
    api: &Api<K>,
    selector: &str,
    page_size: u32,
    mut map: impl FnMut(K) -> T,
) -> Result<Vec<T>, KubeError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().labels(selector).limit(page_size);
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items.into_iter().map(&mut map));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

/// Every object of `kind` carrying `selector`, cluster-wide or inside
/// `namespace`, each turned into `T` as its page arrives.
pub async fn list_kind<T>(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
    selector: &str,
    page_size: u32,
    map: impl FnMut(Object) -> T,
) -> Result<Vec<T>, KubeError> {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let mut map = map;
    match kind {
        Kind::Namespace => {
            let namespaces = Api::<Namespace>::all(client.clone());
            list_all_map(&namespaces, selector, page_size, |o| {
                map(Object::Namespace(Box::new(o)))
            })
            .await
        }
        Kind::ServiceAccount => {
            list_all_map(
                &api::<ServiceAccount>(client, namespace),
                selector,
                page_size,
                |o| map(Object::ServiceAccount(Box::new(o))),
            )
            .await
        }
        Kind::Role => {
            list_all_map(&api::<Role>(client, namespace), selector, page_size, |o| {
                map(Object::Role(Box::new(o)))
            })
            .await
        }
        Kind::RoleBinding => {
            list_all_map(&api::<RoleBinding>(client, namespace), selector, page_size, |o| {
                map(Object::RoleBinding(Box::new(o)))
            })
            .await
        }
    }
}

/// Every Namespace carrying `selector`.
pub async fn list_namespaces(
    client: &Client,
    selector: &str,
    page_size: u32,
) -> Result<Vec<Namespace>, KubeError> {
    list_all(&Api::<Namespace>::all(client.clone()), selector, page_size).await
}

/// One page of the Namespaces carrying `selector`: at most `limit`, from
/// `continue_token`; the items and the token of the next page (`None` after
/// the last). For a count that only needs to know "at least N", so its cost
/// does not grow with how many there are.
pub async fn list_namespaces_page(
    client: &Client,
    selector: &str,
    limit: u32,
    continue_token: Option<&str>,
) -> Result<(Vec<Namespace>, Option<String>), KubeError> {
    list_page(
        &Api::<Namespace>::all(client.clone()),
        selector,
        limit,
        continue_token,
    )
    .await
}

/// One page of the objects of `api` carrying `selector`: at most `limit`, from
/// `continue_token`; the items and the token of the next page (`None` after the last).
pub async fn list_page<K>(
    api: &Api<K>,
    selector: &str,
    limit: u32,
    continue_token: Option<&str>,
) -> Result<(Vec<K>, Option<String>), KubeError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut params = ListParams::default().labels(selector).limit(limit);
    if let Some(token) = continue_token {
        params = params.continue_token(token);
    }
    let page = api.list(&params).await?;
    let next = page.metadata.continue_.filter(|token| !token.is_empty());
    Ok((page.items, next))
}
