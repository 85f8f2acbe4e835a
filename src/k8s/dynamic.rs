//! Kinds chosen at run time (issue 11, propagation): resolving the kinds a propagation
//! configuration names through API discovery, and LIST / create / replace / apply / delete of
//! their objects as JSON. Does Kubernetes I/O.
//!
//! Objects travel as `serde_json::Value` because the pure planner
//! ([`crate::rules::hierarchy::propagation`]) reads them that way. Listed objects get their
//! `apiVersion`/`kind` filled in (LIST items may lack them, and the planner's never-propagated
//! and recreate rules read them) and lose `managedFields` (the bulk of an object, never needed).

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiResource, Discovery, Scope};
use serde_json::Value;

use super::KubeError;
use super::write::{guarded, post_params};
use crate::rules::hierarchy::config::{KindId, Mode, PropagationConfig, RBAC_GROUP, find_overlaps};
use crate::rules::labels::FIELD_MANAGER;

/// A configured kind as the API server serves it, with its mode.
#[derive(Debug, Clone)]
pub struct ResolvedKind {
    pub id: KindId,
    pub resource: ApiResource,
    pub mode: Mode,
}

impl ResolvedKind {
    /// `group/Kind` (`Kind` for core), for reports, metric labels and errors.
    pub fn label(&self) -> String {
        if self.id.group.is_empty() {
            self.id.kind.clone()
        } else {
            format!("{}/{}", self.id.group, self.id.kind)
        }
    }
}

/// Why the configured kinds could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveKindsError {
    #[error("discover the API groups {groups:?}")]
    Discover {
        groups: Vec<String>,
        #[source]
        source: KubeError,
    },
    #[error(
        "propagation config names {name:?} in API group {group:?}, which the API server does not serve (neither a kind nor a resource of that group)"
    )]
    Unknown { group: String, name: String },
    #[error(
        "propagation config names {name:?} in API group {group:?}, which is cluster-scoped: only namespaced kinds propagate"
    )]
    ClusterScoped { group: String, name: String },
    #[error(
        "propagation config names kind {kind:?} of API group {group:?} twice (resources[{first}] and resources[{second}])"
    )]
    Overlap {
        group: String,
        kind: String,
        first: usize,
        second: usize,
    },
}

/// Resolves Roles, RoleBindings and every kind the configuration lists (by kind or plural
/// resource) through discovery of just the groups named. Unknown, cluster-scoped or doubly
/// named kinds are refused, naming the entry.
pub async fn resolve_kinds(
    client: &Client,
    config: &PropagationConfig,
) -> Result<Vec<ResolvedKind>, ResolveKindsError> {
    let mut wanted: Vec<(String, String)> = vec![
        (RBAC_GROUP.to_string(), "Role".to_string()),
        (RBAC_GROUP.to_string(), "RoleBinding".to_string()),
    ];
    wanted.extend(config.listed().map(|(g, n)| (g.to_string(), n.to_string())));
    let mut groups: Vec<String> = wanted.iter().map(|(g, _)| g.clone()).collect();
    groups.sort();
    groups.dedup();
    let filter: Vec<&str> = groups.iter().map(String::as_str).collect();
    let discovery = Discovery::new(client.clone())
        .filter(&filter)
        .run_aggregated()
        .await
        .map_err(|source| ResolveKindsError::Discover {
            groups: groups.clone(),
            source: source.into(),
        })?;
    let mut resolved: Vec<ResolvedKind> = Vec::new();
    for (group, name) in wanted {
        let found = discovery.get(&group).and_then(|api_group| {
            api_group
                .recommended_resources()
                .into_iter()
                .find(|(ar, _)| ar.kind == name || ar.plural == name)
        });
        let Some((resource, capabilities)) = found else {
            return Err(ResolveKindsError::Unknown { group, name });
        };
        if capabilities.scope != Scope::Namespaced {
            return Err(ResolveKindsError::ClusterScoped { group, name });
        }
        let id = KindId::new(&group, &resource.kind, &resource.plural);
        if resolved.iter().any(|k| k.id == id) {
            // Roles/RoleBindings listed in the file as well, or a kind named twice: the
            // overlap check below reports the latter.
            continue;
        }
        let mode = config.mode(&id);
        resolved.push(ResolvedKind { id, resource, mode });
    }
    let ids: Vec<KindId> = resolved.iter().map(|k| k.id.clone()).collect();
    if let Some((first, second)) = find_overlaps(config, &ids).first().copied() {
        let (group, kind) = config
            .listed()
            .nth(first)
            .map(|(g, n)| (g.to_string(), n.to_string()))
            .unwrap_or_default();
        return Err(ResolveKindsError::Overlap {
            group,
            kind,
            first,
            second,
        });
    }
    Ok(resolved)
}

fn api(client: &Client, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// A listed object as the planner reads it. Its managedFields (often most of its size) are
/// dropped before it is serialized, not after.
fn to_value(resource: &ApiResource, mut object: DynamicObject) -> Result<Value, KubeError> {
    object.metadata.managed_fields = None;
    Ok(planner_value(resource, &object).map_err(kube::Error::SerdeError)?)
}

/// An object of `resource` as the planner reads it (listed, or watched): typed (LIST items
/// and watch events may lack `apiVersion`/`kind`), without managedFields.
pub fn planner_value(resource: &ApiResource, object: &DynamicObject) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(object)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(resource.api_version.clone()));
        map.insert("kind".into(), Value::String(resource.kind.clone()));
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    Ok(value)
}

fn from_value(object: &Value) -> Result<DynamicObject, KubeError> {
    Ok(serde_json::from_value(object.clone()).map_err(kube::Error::SerdeError)?)
}

/// Every object of `resource` carrying `selector` (`""` = all), cluster-wide or inside
/// `namespace`, page by page.
pub async fn list_dynamic(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
    selector: &str,
    page_size: u32,
) -> Result<Vec<Value>, KubeError> {
    let api = api(client, resource, namespace);
    super::list_all_map(&api, selector, page_size, |object| to_value(resource, object))
        .await?
        .into_iter()
        .collect()
}

/// One page of every object of `resource`, cluster-wide: its objects and the token of the
/// next page (`None` after the last).
pub async fn list_dynamic_page(
    client: &Client,
    resource: &ApiResource,
    page_size: u32,
    continue_token: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), KubeError> {
    let (items, next) =
        super::list::list_page(&api(client, resource, None), "", page_size, continue_token).await?;
    let items = items
        .into_iter()
        .map(|object| to_value(resource, object))
        .collect::<Result<_, _>>()?;
    Ok((items, next))
}

/// Create `object` in `namespace` (a POST under our field manager: the copy must not exist).
pub async fn create_dynamic(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    object: &Value,
) -> Result<(), KubeError> {
    api(client, resource, Some(namespace))
        .create(&post_params(), &from_value(object)?)
        .await?;
    Ok(())
}

/// Replace the object named `name` with `object`, which carries the resourceVersion it
/// replaces: a concurrent write makes this a conflict instead of a lost update.
pub async fn replace_dynamic(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    object: &Value,
) -> Result<(), KubeError> {
    api(client, resource, Some(namespace))
        .replace(name, &post_params(), &from_value(object)?)
        .await?;
    Ok(())
}

/// Server-side apply of `object` in `namespace` under [`FIELD_MANAGER`], forced.
pub async fn apply_dynamic(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    object: &Value,
) -> Result<(), KubeError> {
    api(client, resource, Some(namespace))
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?;
    Ok(())
}

/// Delete the object named `name` only if it is still the one with `uid`.
pub async fn delete_dynamic(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<(), KubeError> {
    api(client, resource, Some(namespace))
        .delete(name, &guarded(uid, None))
        .await?;
    Ok(())
}

/// Merge-patch a Namespace's labels: `Some` sets, `None` removes (only the keys given).
pub async fn patch_namespace_labels(
    client: &Client,
    name: &str,
    labels: &std::collections::BTreeMap<String, Option<String>>,
) -> Result<(), KubeError> {
    let body = serde_json::json!({ "metadata": { "labels": labels } });
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// Watch events of every object of `resource` in every namespace (re-listing after a break).
pub fn watch_dynamic(
    client: &Client,
    resource: &ApiResource,
) -> impl futures::Stream<
    Item = Result<kube::runtime::watcher::Event<DynamicObject>, kube::runtime::watcher::Error>,
> + Send
+ 'static {
    use kube::runtime::WatchStreamExt;
    let api = Api::<DynamicObject>::all_with(client.clone(), resource);
    // Backing off (client-go's schedule): without it a watch whose API server is unreachable
    // re-connects in a tight loop (thousands a second; issue 15).
    kube::runtime::watcher(api, kube::runtime::watcher::Config::default()).default_backoff()
}

/// Watch events of every Namespace (re-listing after a break).
pub fn watch_namespaces(
    client: &Client,
) -> impl futures::Stream<
    Item = Result<
        kube::runtime::watcher::Event<k8s_openapi::api::core::v1::Namespace>,
        kube::runtime::watcher::Error,
    >,
> + Send
+ 'static {
    use kube::runtime::WatchStreamExt;
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    // Backing off, as `watch_dynamic`.
    kube::runtime::watcher(api, kube::runtime::watcher::Config::default()).default_backoff()
}
