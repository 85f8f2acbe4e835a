//! The watch streams of watch mode and its leader Lease. Does Kubernetes I/O.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};

use super::MANAGED_KINDS;

/// A controller over the Namespaces carrying `selector`, triggered also by
/// every change to a selector-labelled object of the other managed kinds
/// (mapped to its namespace). The kinds come from [`MANAGED_KINDS`], watched
/// as `DynamicObject`s: all the trigger needs is the object's namespace.
pub fn managed_controller(client: &Client, selector: &str) -> Controller<Namespace> {
    let wc = watcher::Config::default().labels(selector);
    let mut controller = Controller::new(Api::<Namespace>::all(client.clone()), wc.clone());
    for kind in MANAGED_KINDS.into_iter().filter(|k| k.is_namespaced()) {
        let resource = kind.api_resource();
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        controller = controller.watches_with(api, resource, wc.clone(), |object: DynamicObject| {
            object.namespace().map(|ns| ObjectRef::new(&ns))
        });
    }
    controller
}

/// A manager of the Lease `name` in `namespace` for `identity`, held for
/// `duration_secs` and renewed `grace_secs` before it runs out. Its renewals
/// go through [`GuardRenewals`].
pub async fn build_lease_manager(
    client: &Client,
    name: &str,
    namespace: &str,
    identity: &str,
    duration_secs: u64,
    grace_secs: u64,
) -> Result<LeaseManager, LeaseManagerError> {
    let guarded = Client::new(
        GuardRenewals {
            client: client.clone(),
            identity: identity.into(),
        },
        client.default_namespace(),
    );
    LeaseManagerBuilder::new(guarded, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(duration_secs)
        .with_grace(grace_secs)
        .build()
        .await
}

/// What a release at shutdown found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// The Lease was this replica's and is free now.
    Freed,
    /// Someone else holds it (or nobody): left as it is.
    NotHeld(Option<String>),
    /// It changed between the read and the write (a successor took it): left as it is.
    Changed,
}

/// Frees the Lease `name` in `namespace` if `identity` holds it, with the
/// resourceVersion just read as a precondition. kube-lease-manager's own release
/// is an unconditional PATCH (nulling the holder) that also frees a Lease it
/// finds expired: held up in the network, it could clear a successor's hold.
/// This one changes nothing it did not see as its own.
pub async fn release_lease(
    client: &Client,
    name: &str,
    namespace: &str,
    identity: &str,
) -> Result<Released, super::KubeError> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| super::KubeError::from(e).with_target(Some(namespace), name))?;
    let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
    if holder.as_deref() != Some(identity) {
        return Ok(Released::NotHeld(holder));
    }
    let seen = lease.metadata.resource_version.as_deref().unwrap_or_default();
    Ok(if free_lease_unchanged(client, name, namespace, seen).await? {
        Released::Freed
    } else {
        Released::Changed
    })
}

/// Frees the Lease if it is still at `resource_version`; `false` if it changed.
pub async fn free_lease_unchanged(
    client: &Client,
    name: &str,
    namespace: &str,
    resource_version: &str,
) -> Result<bool, super::KubeError> {
    let body = release_patch(resource_version);
    match Api::<Lease>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) => {
            let error = super::KubeError::from(e).with_target(Some(namespace), name);
            if error.is_conflict() {
                Ok(false)
            } else {
                Err(error)
            }
        }
    }
}

/// The merge patch freeing a Lease last seen at `resource_version` (the API
/// server refuses it with 409 if the Lease changed since).
fn release_patch(resource_version: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"resourceVersion": resource_version},
        "spec": {"holderIdentity": null, "renewTime": null, "acquireTime": null, "leaseDurationSeconds": null},
    })
}

/// kube-lease-manager renews a Lease it holds with a strategic-merge PATCH of
/// `spec.renewTime` alone: no resourceVersion, no holder. Held up in the network
/// or in an API server stuck on etcd, such a renewal lands after another replica
/// took the Lease over, backdates its `renewTime`, and the Lease looks expired
/// (issue 15: a partitioned leader took leadership back on healing). This
/// service sends every such renewal as a JSON Patch that first tests that
/// `holderIdentity` is still this replica: a late one fails (422) instead, and
/// the replica learns it no longer leads. Other requests pass unchanged.
#[derive(Clone)]
struct GuardRenewals {
    client: Client,
    identity: std::sync::Arc<str>,
}

impl tower::Service<http::Request<kube::client::Body>> for GuardRenewals {
    type Response = http::Response<kube::client::Body>;
    type Error = kube::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, kube::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), kube::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let (client, identity) = (self.client.clone(), self.identity.clone());
        Box::pin(async move {
            let strategic = request.method() == http::Method::PATCH
                && request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|t| t == STRATEGIC_MERGE);
            if !strategic {
                return client.send(request).await;
            }
            let (mut parts, body) = request.into_parts();
            let body = body.collect_bytes().await?;
            let body = match guarded_renewal(&body, &identity) {
                Some(patch) => {
                    parts.headers.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(JSON_PATCH),
                    );
                    patch
                }
                None => body.to_vec(),
            };
            client
                .send(http::Request::from_parts(parts, kube::client::Body::from(body)))
                .await
        })
    }
}

const STRATEGIC_MERGE: &str = "application/strategic-merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

/// For a renewal (a strategic-merge patch whose `spec` sets `renewTime` and no
/// `holderIdentity`): the JSON Patch doing the same only while `identity`
/// holds the Lease. `None` for anything else (taking, releasing a Lease).
fn guarded_renewal(body: &[u8], identity: &str) -> Option<Vec<u8>> {
    let patch: serde_json::Value = serde_json::from_slice(body).ok()?;
    let spec = patch.get("spec")?.as_object()?;
    if spec.contains_key("holderIdentity") || !spec.contains_key("renewTime") {
        return None;
    }
    let mut ops = vec![serde_json::json!({"op": "test", "path": "/spec/holderIdentity", "value": identity})];
    // `add` on an existing member replaces it (RFC 6902).
    ops.extend(spec.iter().map(
        |(key, value)| serde_json::json!({"op": "add", "path": format!("/spec/{key}"), "value": value}),
    ));
    serde_json::to_vec(&ops).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_renewal_is_guarded_by_its_holder() {
        let renewal = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "spec": {"renewTime": "2026-12-01T00:00:00.000000Z", "leaseDurationSeconds": 3}});
        let guarded: serde_json::Value =
            serde_json::from_slice(&guarded_renewal(renewal.to_string().as_bytes(), "me").unwrap()).unwrap();
        assert_eq!(
            guarded,
            json!([
                {"op": "test", "path": "/spec/holderIdentity", "value": "me"},
                {"op": "add", "path": "/spec/leaseDurationSeconds", "value": 3},
                {"op": "add", "path": "/spec/renewTime", "value": "2026-12-01T00:00:00.000000Z"},
            ])
        );
        let take = json!({"spec": {"renewTime": "t", "holderIdentity": "me", "acquireTime": "t"}});
        let release = json!({"spec": {"renewTime": null, "holderIdentity": null}});
        let transitions = json!({"spec": {"leaseTransitions": 2}});
        for other in [take, release, transitions] {
            assert_eq!(
                guarded_renewal(other.to_string().as_bytes(), "me"),
                None,
                "{other}"
            );
        }
        assert_eq!(guarded_renewal(b"not json", "me"), None);
    }

    #[test]
    fn a_release_is_conditional_on_what_was_read() {
        assert_eq!(
            release_patch("42"),
            json!({"metadata": {"resourceVersion": "42"},
                "spec": {"holderIdentity": null, "renewTime": null, "acquireTime": null, "leaseDurationSeconds": null}})
        );
    }
}
