//! The warm pool's one write of its own (issue 16): a JSON merge patch of a Namespace that
//! carries `metadata.resourceVersion`, so the API server applies it only to the object as it
//! was read (409 Conflict otherwise). Claims and the reaper's "ready" mark use it; the patch
//! body comes from [`crate::rules::pool`]. Does Kubernetes I/O.

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use super::KubeError;
use crate::rules::labels::FIELD_MANAGER;

/// Merge-patch Namespace `name` with `patch` (which names the resourceVersion it expects);
/// returns the Namespace as stored. A stale resourceVersion is a conflict, a missing
/// Namespace not-found: both mean "someone else got there first".
pub async fn patch_namespace_if_unchanged(
    client: &Client,
    name: &str,
    patch: &Value,
) -> Result<Namespace, KubeError> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    Ok(Api::<Namespace>::all(client.clone())
        .patch(name, &params, &Patch::Merge(patch))
        .await?)
}

/// Watch events of the Namespaces `selector` selects (re-listing after a break): pool
/// members, whose claim (the pool label removed) shows as the member leaving the selection.
pub fn watch_namespaces_selected(
    client: &Client,
    selector: &str,
) -> impl futures::Stream<Item = Result<kube::runtime::watcher::Event<Namespace>, kube::runtime::watcher::Error>>
+ Send
+ 'static {
    let api = Api::<Namespace>::all(client.clone());
    kube::runtime::watcher(api, kube::runtime::watcher::Config::default().labels(selector))
}
