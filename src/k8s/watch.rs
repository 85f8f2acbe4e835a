//! The watch streams of watch mode and its leader Lease. Does Kubernetes I/O.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject};
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
/// `duration_secs` and renewed `grace_secs` before it runs out.
pub async fn build_lease_manager(
    client: &Client,
    name: &str,
    namespace: &str,
    identity: &str,
    duration_secs: u64,
    grace_secs: u64,
) -> Result<LeaseManager, LeaseManagerError> {
    LeaseManagerBuilder::new(client.clone(), name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(duration_secs)
        .with_grace(grace_secs)
        .build()
        .await
}
