//! Every write: server-side apply under one field manager, the Namespace
//! create (a POST, for `generateName`), and deletes guarded by a uid (and
//! optionally resourceVersion) precondition. Does Kubernetes I/O.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Kind, KubeError, Object};
use crate::rules::desired::{DesiredSet, NamespacedRole};
use crate::rules::labels::FIELD_MANAGER;

fn apply_params() -> PatchParams {
    // Force: we own these objects; a human's kubectl edit is drift to undo.
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Create parameters under our field manager.
pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

/// Server-side apply of one object, created if absent.
pub async fn apply<K>(api: Api<K>, object: &K) -> Result<K, KubeError>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    Ok(api
        .patch(&object.name_any(), &apply_params(), &Patch::Apply(object))
        .await?)
}

/// Server-side apply of a Namespace.
pub async fn apply_namespace(client: &Client, namespace: &Namespace) -> Result<(), KubeError> {
    apply(Api::<Namespace>::all(client.clone()), namespace)
        .await
        .map(drop)
}

/// Server-side apply of one object of any managed kind; namespaced kinds go
/// into `namespace`.
pub async fn apply_object(client: &Client, namespace: &str, object: &Object) -> Result<(), KubeError> {
    let client = client.clone();
    match object {
        Object::Namespace(o) => apply_namespace(&client, o).await,
        Object::ServiceAccount(o) => apply(Api::<ServiceAccount>::namespaced(client, namespace), o.as_ref())
            .await
            .map(drop),
        Object::Role(o) => apply(Api::<Role>::namespaced(client, namespace), o.as_ref())
            .await
            .map(drop),
        Object::RoleBinding(o) => apply(Api::<RoleBinding>::namespaced(client, namespace), o.as_ref())
            .await
            .map(drop),
    }
}

/// Which object of a set failed to apply.
#[derive(Debug, thiserror::Error)]
#[error("apply {kind} {namespace}/{name}")]
pub struct ApplyError {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: KubeError,
}

/// The objects of a set inside its namespace (not the Namespace itself), in
/// apply order. Destructured without `..`: a new part cannot be forgotten.
fn contents(set: &DesiredSet) -> Vec<Object> {
    let DesiredSet {
        namespace: _,
        service_account,
        role_binding,
        role,
    } = set;
    let mut objects = vec![
        Object::ServiceAccount(Box::new(service_account.clone())),
        Object::RoleBinding(Box::new(role_binding.clone())),
    ];
    if let Some(NamespacedRole { role, binding }) = role {
        objects.push(Object::Role(Box::new(role.clone())));
        objects.push(Object::RoleBinding(Box::new(binding.clone())));
    }
    objects
}

/// Apply everything of a set inside its namespace (not the Namespace itself),
/// concurrently: the objects do not depend on each other. The first failure
/// in apply order is returned.
pub async fn apply_contents(client: &Client, set: &DesiredSet) -> Result<(), ApplyError> {
    let ns = set.namespace.name_any();
    let objects = contents(set);
    let results = futures::future::join_all(objects.iter().map(|o| apply_object(client, &ns, o))).await;
    for (object, result) in objects.iter().zip(results) {
        result.map_err(|source| ApplyError {
            kind: object.kind().as_str(),
            namespace: ns.clone(),
            name: object.name(),
            source,
        })?;
    }
    Ok(())
}

/// Create a Namespace (a POST: `generateName` needs one); returns it as stored.
pub async fn create_namespace(client: &Client, namespace: &Namespace) -> Result<Namespace, KubeError> {
    Ok(Api::<Namespace>::all(client.clone())
        .create(&post_params(), namespace)
        .await?)
}

/// A Namespace by name, `None` if there is none.
pub async fn get_namespace(client: &Client, name: &str) -> Result<Option<Namespace>, KubeError> {
    Ok(Api::<Namespace>::all(client.clone()).get_opt(name).await?)
}

/// Delete only the object with `uid` (and `resource_version`, if given); the
/// rest of the object's contents go in the background.
pub(super) fn guarded(uid: &str, resource_version: Option<&str>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: resource_version.map(str::to_owned),
        }),
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    }
}

/// Delete a Namespace, only if it is still the object with `uid` (a namespace
/// recreated under the same name is left alone). Kubernetes deletes its contents.
pub async fn delete_namespace(client: &Client, name: &str, uid: &str) -> Result<(), KubeError> {
    delete_object(client, Kind::Namespace, None, name, uid).await
}

/// Delete a Namespace only if it is still exactly the object we looked at:
/// same `uid` and same `resourceVersion` (so one extended or relabelled since
/// it was read is left for the next look). A mismatch is a conflict.
pub async fn delete_namespace_unchanged(
    client: &Client,
    name: &str,
    uid: &str,
    resource_version: &str,
) -> Result<(), KubeError> {
    Api::<Namespace>::all(client.clone())
        .delete(name, &guarded(uid, Some(resource_version)))
        .await?;
    Ok(())
}

/// Delete one object of `kind` only if it is still the one with `uid`.
pub async fn delete_object(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    uid: &str,
) -> Result<(), KubeError> {
    let params = guarded(uid, None);
    let ns = namespace.unwrap_or_default();
    let client = client.clone();
    match kind {
        Kind::Namespace => Api::<Namespace>::all(client)
            .delete(name, &params)
            .await
            .map(drop),
        Kind::ServiceAccount => Api::<ServiceAccount>::namespaced(client, ns)
            .delete(name, &params)
            .await
            .map(drop),
        Kind::Role => Api::<Role>::namespaced(client, ns)
            .delete(name, &params)
            .await
            .map(drop),
        Kind::RoleBinding => Api::<RoleBinding>::namespaced(client, ns)
            .delete(name, &params)
            .await
            .map(drop),
    }?;
    Ok(())
}
