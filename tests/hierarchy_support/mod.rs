//! Shared by the hierarchy tests: trees of fixture-owned namespaces, sources of the default
//! kinds, a propagation resolved against the test control plane, and reading copies back.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::propagate::{Destination, Propagation, SyncReport, sync_namespace};
use namespace_provisioner::rules::hierarchy::config::PropagationConfig;
use namespace_provisioner::rules::hierarchy::keys;

use crate::support::Fixture;

/// Roles, RoleBindings (always) and ConfigMaps propagate.
pub const CONFIG: &str = "resources:\n- group: \"\"\n  kind: ConfigMap\n  mode: Propagate\n";

pub async fn propagation(client: &Client, yaml: &str) -> Propagation {
    Propagation::discover(client, PropagationConfig::from_yaml(yaml).unwrap())
        .await
        .unwrap()
}

/// A fixture-owned namespace under `parent` (a root when `None`), with `labels`.
pub async fn tree_namespace(
    fx: &Fixture,
    prefix: &str,
    parent: Option<&str>,
    labels: &[(&str, &str)],
) -> String {
    let mut all: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(parent) = parent {
        all.insert(keys::PARENT_LABEL.into(), parent.into());
    }
    fx.create_unmanaged(prefix, all).await
}

pub async fn labels_of(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    Api::<Namespace>::all(client.clone())
        .get(namespace)
        .await
        .unwrap()
        .labels()
        .clone()
}

/// Syncs `destination` from `ancestors` (top-most first) with its current labels.
pub async fn sync(
    client: &Client,
    propagation: &Propagation,
    destination: &str,
    ancestors: &[&str],
) -> SyncReport {
    let labels = labels_of(client, destination).await;
    let ancestors: Vec<String> = ancestors.iter().map(|a| a.to_string()).collect();
    sync_namespace(
        client,
        propagation,
        Destination {
            name: destination,
            labels: &labels,
        },
        &ancestors,
        500,
    )
    .await
    .unwrap()
}

fn meta(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        annotations: Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

pub async fn config_map(
    client: &Client,
    namespace: &str,
    name: &str,
    data: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> ConfigMap {
    let cm = ConfigMap {
        metadata: meta(name, labels, annotations),
        data: Some(BTreeMap::from([("k".to_string(), data.to_string())])),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap_or_else(|e| panic!("create ConfigMap {namespace}/{name}: {e}"))
}

pub async fn get_config_map(client: &Client, namespace: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .unwrap()
}

pub fn data_of(cm: &ConfigMap) -> String {
    cm.data
        .as_ref()
        .and_then(|d| d.get("k"))
        .cloned()
        .unwrap_or_default()
}

pub fn inherited_from(object: &impl kube::Resource) -> Option<String> {
    object
        .meta()
        .labels
        .as_ref()?
        .get(keys::INHERITED_FROM_LABEL)
        .cloned()
}

pub async fn role(client: &Client, namespace: &str, name: &str, verbs: &[&str]) -> Role {
    let role = Role {
        metadata: meta(name, &[], &[]),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .unwrap_or_else(|e| panic!("create Role {namespace}/{name}: {e}"))
}

pub fn binding(name: &str, role: &str, user: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(name, &[], &[]),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.into(),
            ..Subject::default()
        }]),
    }
}

pub async fn role_binding(
    client: &Client,
    namespace: &str,
    name: &str,
    role: &str,
    user: &str,
) -> RoleBinding {
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding(name, role, user))
        .await
        .unwrap_or_else(|e| panic!("create RoleBinding {namespace}/{name}: {e}"))
}

/// Counts of a report as one comparable tuple: created, updated, recreated, deleted, in sync.
pub fn counts(report: &SyncReport) -> (usize, usize, usize, usize, usize) {
    (
        report.created,
        report.updated,
        report.recreated,
        report.deleted,
        report.in_sync,
    )
}
