//! Events the reaper records on the objects it acts on. Does Kubernetes I/O.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::KubeError;

/// Writes Events as one controller instance (`reportingController`/`reportingInstance`).
#[derive(Clone)]
pub struct EventRecorder(Recorder);

impl EventRecorder {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self(Recorder::new(
            client,
            Reporter {
                controller: controller.to_owned(),
                instance: Some(instance.to_owned()),
            },
        ))
    }

    /// A Normal Event on the Namespace `name` (uid `uid`). Namespaces are
    /// cluster-scoped, so it is written to `default`.
    pub async fn on_namespace(
        &self,
        name: &str,
        uid: &str,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), KubeError> {
        self.publish(EventType::Normal, name, uid, reason, action, note)
            .await
    }

    /// A Warning Event on the Namespace `name`: something an operator should look at.
    pub async fn warn_on_namespace(
        &self,
        name: &str,
        uid: &str,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), KubeError> {
        self.publish(EventType::Warning, name, uid, reason, action, note)
            .await
    }

    async fn publish(
        &self,
        type_: EventType,
        name: &str,
        uid: &str,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), KubeError> {
        let reference = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Namespace".to_owned()),
            name: Some(name.to_owned()),
            uid: Some(uid.to_owned()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        Ok(self.0.publish(&event, &reference).await?)
    }
}

impl EventRecorder {
    /// A Normal Event on the Namespace `name` (uid `uid`), written inside that
    /// namespace, where its users (whose credentials act only there) see it
    /// with `kubectl get events`; it goes with the namespace.
    pub async fn in_namespace(
        &self,
        name: &str,
        uid: &str,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), KubeError> {
        let reference = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Namespace".to_owned()),
            name: Some(name.to_owned()),
            namespace: Some(name.to_owned()),
            uid: Some(uid.to_owned()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        Ok(self.0.publish(&event, &reference).await?)
    }
}

/// Set annotation `key` on the Namespace `name` to `value` (`None` removes
/// it). With `resource_version`, only if the namespace is still at that
/// version: the merge patch carries it and the API server refuses the write
/// with 409 Conflict otherwise, so of two writers that saw the same version
/// exactly one succeeds.
pub async fn annotate_namespace(
    client: &Client,
    name: &str,
    resource_version: Option<&str>,
    key: &str,
    value: Option<&str>,
) -> Result<(), KubeError> {
    let mut metadata = serde_json::json!({ "annotations": { key: value } });
    if let (Some(rv), Some(fields)) = (resource_version, metadata.as_object_mut()) {
        fields.insert("resourceVersion".to_owned(), serde_json::Value::from(rv));
    }
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&serde_json::json!({ "metadata": metadata })),
        )
        .await?;
    Ok(())
}
