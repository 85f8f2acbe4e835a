//! The shared propagation I/O (`propagate::sync_namespace`, `k8s::dynamic`) against the real
//! control plane: copies from two ancestors (top-most wins), steady state writes nothing,
//! source edits and deletions, conflicts and forged copies never touched, roleRef change
//! recreates, immutable ConfigMaps and Secrets, GitOps metadata stripped, unknown kinds refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hierarchy_support;
mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use namespace_provisioner::k8s::ResolveKindsError;
use namespace_provisioner::propagate::Propagation;
use namespace_provisioner::rules::hierarchy::config::PropagationConfig;
use namespace_provisioner::rules::hierarchy::keys;

use hierarchy_support::*;
use support::Fixture;

const SELECTOR_KEY: &str = "np-test/hierarchy";

#[tokio::test]
async fn three_levels_copy_from_both_ancestors_top_most_wins_and_steady_state_writes_nothing() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let top = tree_namespace(&fx, "hp-top", None, &[]).await;
    let mid = tree_namespace(&fx, "hp-mid", Some(&top), &[]).await;
    let leaf = tree_namespace(&fx, "hp-leaf", Some(&mid), &[]).await;
    // Same name in both ancestors: the top-most one's content wins.
    config_map(&client, &top, "shared", "from-top", &[], &[]).await;
    config_map(&client, &mid, "shared", "from-mid", &[], &[]).await;
    config_map(&client, &mid, "mid-only", "mid", &[], &[]).await;
    role(&client, &top, "reader", &["get"]).await;
    role_binding(&client, &top, "readers", "reader", "alice").await;
    let propagation = propagation(&client, CONFIG).await;

    let first = sync(&client, &propagation, &leaf, &[&top, &mid]).await;
    assert_eq!(counts(&first), (4, 0, 0, 0, 0), "{first:?}");
    assert_eq!(first.writes, 4);
    assert!(first.conflicts.is_empty() && first.forged.is_empty() && first.failures.is_empty());

    let shared = get_config_map(&client, &leaf, "shared").await.unwrap();
    assert_eq!(data_of(&shared), "from-top");
    assert_eq!(inherited_from(&shared).as_deref(), Some(top.as_str()));
    let mid_only = get_config_map(&client, &leaf, "mid-only").await.unwrap();
    assert_eq!(inherited_from(&mid_only).as_deref(), Some(mid.as_str()));
    assert!(shared.metadata.owner_references.is_none());
    let rb = Api::<RoleBinding>::namespaced(client.clone(), &leaf)
        .get("readers")
        .await
        .unwrap();
    assert_eq!(inherited_from(&rb).as_deref(), Some(top.as_str()));

    // Steady state: nothing to write, and no write request leaves the client.
    let (counting, log) = support::counting_client().await;
    let second = sync(&counting, &propagation, &leaf, &[&top, &mid]).await;
    assert_eq!(counts(&second), (0, 0, 0, 0, 4), "{second:?}");
    assert_eq!(second.writes, 0);
    let writes = log
        .entries()
        .into_iter()
        .filter(|(method, _, _)| method != http::Method::GET)
        .count();
    assert_eq!(writes, 0, "requests: {:?}", log.entries());
}

#[tokio::test]
async fn edits_and_deletions_follow_the_source_and_an_edited_copy_is_restored() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let parent = tree_namespace(&fx, "hp-p", None, &[]).await;
    let child = tree_namespace(&fx, "hp-c", Some(&parent), &[]).await;
    config_map(&client, &parent, "cfg", "v1", &[], &[]).await;
    let propagation = propagation(&client, CONFIG).await;
    sync(&client, &propagation, &child, &[&parent]).await;

    // Source edited: the copy is updated in place (one write).
    let parents = Api::<ConfigMap>::namespaced(client.clone(), &parent);
    parents
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "v2"}})),
        )
        .await
        .unwrap();
    let report = sync(&client, &propagation, &child, &[&parent]).await;
    assert_eq!(counts(&report), (0, 1, 0, 0, 0), "{report:?}");
    assert_eq!(report.writes, 1);
    assert_eq!(
        data_of(&get_config_map(&client, &child, "cfg").await.unwrap()),
        "v2"
    );

    // Copy edited by someone: restored.
    Api::<ConfigMap>::namespaced(client.clone(), &child)
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "hacked"}})),
        )
        .await
        .unwrap();
    // An edited copy no longer hashes to its mark, but its source uid still proves it ours.
    let report = sync(&client, &propagation, &child, &[&parent]).await;
    assert_eq!(counts(&report), (0, 1, 0, 0, 0), "{report:?}");
    assert_eq!(
        data_of(&get_config_map(&client, &child, "cfg").await.unwrap()),
        "v2"
    );

    // Copy deleted: recreated.
    Api::<ConfigMap>::namespaced(client.clone(), &child)
        .delete("cfg", &DeleteParams::default())
        .await
        .unwrap();
    let report = sync(&client, &propagation, &child, &[&parent]).await;
    assert_eq!(counts(&report), (1, 0, 0, 0, 0), "{report:?}");

    // Source deleted: the copy goes.
    parents.delete("cfg", &DeleteParams::default()).await.unwrap();
    let report = sync(&client, &propagation, &child, &[&parent]).await;
    assert_eq!(counts(&report), (0, 0, 0, 1, 0), "{report:?}");
    assert!(get_config_map(&client, &child, "cfg").await.is_none());
}

#[tokio::test]
async fn conflicts_and_forged_copies_are_reported_and_never_touched() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let parent = tree_namespace(&fx, "hp-p", None, &[]).await;
    let child = tree_namespace(&fx, "hp-c", Some(&parent), &[]).await;
    config_map(&client, &parent, "taken", "source", &[], &[]).await;
    // The child's own object with a source's name: a conflict.
    config_map(&client, &child, "taken", "mine", &[], &[]).await;
    // A user's object claiming to be a copy of a source that does not exist.
    config_map(
        &client,
        &child,
        "forged",
        "mine",
        &[(keys::INHERITED_FROM_LABEL, parent.as_str())],
        &[],
    )
    .await;
    let propagation = propagation(&client, CONFIG).await;
    let report = sync(&client, &propagation, &child, &[&parent]).await;
    assert_eq!(report.writes, 0, "{report:?}");
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(report.conflicts[0].name, "taken");
    assert_eq!(report.conflicts[0].detail, parent);
    assert_eq!(report.forged.len(), 1, "{report:?}");
    assert_eq!(report.forged[0].name, "forged");
    assert_eq!(
        data_of(&get_config_map(&client, &child, "taken").await.unwrap()),
        "mine"
    );
    assert_eq!(
        data_of(&get_config_map(&client, &child, "forged").await.unwrap()),
        "mine"
    );
}

#[tokio::test]
async fn role_ref_change_recreates_and_immutable_config_map_is_recreated() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let parent = tree_namespace(&fx, "hp-p", None, &[]).await;
    let child = tree_namespace(&fx, "hp-c", Some(&parent), &[]).await;
    role(&client, &parent, "a", &["get"]).await;
    role(&client, &parent, "b", &["list"]).await;
    role_binding(&client, &parent, "rb", "a", "alice").await;
    let immutable = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("frozen".into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v1".to_string())].into()),
        immutable: Some(true),
        ..ConfigMap::default()
    };
    let parent_cms = Api::<ConfigMap>::namespaced(client.clone(), &parent);
    parent_cms
        .create(&PostParams::default(), &immutable)
        .await
        .unwrap();
    let propagation = propagation(&client, CONFIG).await;
    let report = sync(&client, &propagation, &child, &[&parent]).await;
    assert_eq!(report.created, 4, "{report:?}");
    let old_uid = Api::<RoleBinding>::namespaced(client.clone(), &child)
        .get("rb")
        .await
        .unwrap()
        .uid();

    // roleRef is immutable: delete + create the source, the copy is recreated.
    let parent_rbs = Api::<RoleBinding>::namespaced(client.clone(), &parent);
    parent_rbs.delete("rb", &DeleteParams::default()).await.unwrap();
    parent_rbs
        .create(&PostParams::default(), &binding("rb", "b", "alice"))
        .await
        .unwrap();
    // An immutable source can only change by being recreated too.
    parent_cms
        .delete("frozen", &DeleteParams::default())
        .await
        .unwrap();
    let mut v2 = immutable.clone();
    v2.data = Some([("k".to_string(), "v2".to_string())].into());
    parent_cms.create(&PostParams::default(), &v2).await.unwrap();

    let report = sync(&client, &propagation, &child, &[&parent]).await;
    assert_eq!(counts(&report), (0, 0, 2, 0, 2), "{report:?}");
    assert_eq!(report.writes, 4, "a recreate is one delete and one create");
    let rb = Api::<RoleBinding>::namespaced(client.clone(), &child)
        .get("rb")
        .await
        .unwrap();
    assert_eq!(rb.role_ref.name, "b");
    assert_ne!(rb.uid(), old_uid);
    assert_eq!(
        data_of(&get_config_map(&client, &child, "frozen").await.unwrap()),
        "v2"
    );
}

#[tokio::test]
async fn gitops_metadata_is_stripped_and_never_propagated_objects_are_skipped() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let parent = tree_namespace(&fx, "hp-p", None, &[]).await;
    let child = tree_namespace(&fx, "hp-c", Some(&parent), &[]).await;
    config_map(
        &client,
        &parent,
        "tracked",
        "v",
        &[("app.kubernetes.io/instance", "argo-app"), ("team", "a")],
        &[
            ("argocd.argoproj.io/tracking-id", "app:/ConfigMap:x/tracked"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            ("note", "kept"),
        ],
    )
    .await;
    let mut with_finalizer = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("held".into()),
            finalizers: Some(vec!["example.com/hold".into()]),
            ..Default::default()
        },
        ..ConfigMap::default()
    };
    let parent_cms = Api::<ConfigMap>::namespaced(client.clone(), &parent);
    with_finalizer = parent_cms
        .create(&PostParams::default(), &with_finalizer)
        .await
        .unwrap();
    let propagation = propagation(&client, CONFIG).await;
    let report = sync(&client, &propagation, &child, &[&parent]).await;

    let copy = get_config_map(&client, &child, "tracked").await.unwrap();
    let labels = copy.labels();
    let annotations = copy.annotations();
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    assert!(!labels.contains_key("app.kubernetes.io/instance"), "{labels:?}");
    assert!(!annotations.contains_key("argocd.argoproj.io/tracking-id"));
    assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    assert_eq!(annotations.get("note").map(String::as_str), Some("kept"));
    // kube-root-ca.crt and the held ConfigMap are never propagated, and said so.
    assert!(get_config_map(&client, &child, "held").await.is_none());
    let skipped: Vec<(&str, &str)> = report
        .skips
        .iter()
        .map(|f| (f.name.as_str(), f.detail.as_str()))
        .collect();
    assert!(
        skipped.contains(&("held", &format!("{parent}: finalizers"))),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|(name, detail)| *name == "kube-root-ca.crt" && detail.ends_with("ca-bundle")),
        "{skipped:?}"
    );
    // Let the namespace go at cleanup.
    parent_cms
        .patch(
            &with_finalizer.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_and_cluster_scoped_kinds_are_refused_by_name() {
    let client = support::admin().await;
    let unknown = PropagationConfig::from_yaml("resources:\n- group: example.com\n  kind: Widget\n").unwrap();
    let error = Propagation::discover(&client, unknown).await.unwrap_err();
    assert!(matches!(error, ResolveKindsError::Unknown { .. }), "{error}");
    assert!(error.to_string().contains("Widget"), "{error}");

    let cluster_scoped =
        PropagationConfig::from_yaml("resources:\n- group: rbac.authorization.k8s.io\n  kind: ClusterRole\n")
            .unwrap();
    let error = Propagation::discover(&client, cluster_scoped).await.unwrap_err();
    assert!(
        matches!(error, ResolveKindsError::ClusterScoped { .. }),
        "{error}"
    );

    let by_resource =
        PropagationConfig::from_yaml("resources:\n- group: \"\"\n  resource: secrets\n").unwrap();
    let resolved = Propagation::discover(&client, by_resource).await.unwrap();
    let kinds: Vec<String> = resolved.kinds.iter().map(|k| k.label()).collect();
    assert_eq!(
        kinds,
        [
            "rbac.authorization.k8s.io/Role",
            "rbac.authorization.k8s.io/RoleBinding",
            "Secret"
        ]
    );
}

#[tokio::test]
async fn immutable_secret_is_recreated_when_its_source_is() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let parent = tree_namespace(&fx, "hp-sp", None, &[]).await;
    let child = tree_namespace(&fx, "hp-sc", Some(&parent), &[]).await;
    let secret = |value: &str| Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("frozen".into()),
            ..Default::default()
        },
        string_data: Some([("k".to_string(), value.to_string())].into()),
        immutable: Some(true),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    let parent_secrets = Api::<Secret>::namespaced(client.clone(), &parent);
    parent_secrets
        .create(&PostParams::default(), &secret("v1"))
        .await
        .unwrap();
    let propagation = propagation(&client, &format!("{CONFIG}- kind: Secret\n  mode: Propagate\n")).await;
    let report = sync(&client, &propagation, &child, &[&parent]).await;
    assert_eq!(counts(&report), (1, 0, 0, 0, 0), "{report:?}");
    let child_secrets = Api::<Secret>::namespaced(client.clone(), &child);
    let value = |s: Secret| s.data.unwrap()["k"].0.clone();
    let first = child_secrets.get("frozen").await.unwrap();
    assert_eq!(first.immutable, Some(true));
    assert_eq!(value(first.clone()), b"v1");

    parent_secrets
        .delete("frozen", &DeleteParams::default())
        .await
        .unwrap();
    parent_secrets
        .create(&PostParams::default(), &secret("v2"))
        .await
        .unwrap();
    let report = sync(&client, &propagation, &child, &[&parent]).await;
    assert_eq!(counts(&report), (0, 0, 1, 0, 0), "{report:?}");
    assert_eq!(report.writes, 2, "a recreate is one delete and one create");
    let second = child_secrets.get("frozen").await.unwrap();
    assert_ne!(second.uid(), first.uid());
    assert_eq!(value(second), b"v2");
    assert!(
        sync(&client, &propagation, &child, &[&parent]).await.writes == 0,
        "steady state writes nothing"
    );
}
