//! Least privilege of the reaper's tree part with the shipped manifests (cronjob/base RBAC and
//! admission policies) against the real control plane: `reaper --once` running as its
//! ServiceAccount labels a tree and propagates Roles and RoleBindings (including one to a
//! ClusterRole) and updates them, without one refusal; the same identity is refused a
//! RoleBinding that is not a copy, a copy outside a tree and any other namespace label; and a
//! copy is read-only for everyone else, the cluster admin included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deploy_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use deploy_support::{REAPER_SA, Running, forbidden_lines, kubectl, kubectl_as, sa_kubeconfig, text};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::rules::hierarchy::keys;

const DENIED_BY_POLICY: &str = "denied request";

async fn role(client: &Client, namespace: &str, name: &str, verbs: &[&str]) {
    let role = Role {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
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
        .unwrap();
}

async fn binding(client: &Client, namespace: &str, name: &str, kind: &str, role: &str) {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: "alice".into(),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

async fn reaper_once_as_sa(identity: &Path, selector: &str) -> String {
    let reaper = Running::spawn(
        "reaper --once (trees)",
        Path::new(env!("CARGO_BIN_EXE_reaper")),
        &["--once".into(), "--output".into(), "json".into()],
        &[
            ("NP_KUBECONFIG", identity.display().to_string()),
            ("NP_SELECTOR", selector.to_string()),
            ("NP_MAX_TTL", "1h".into()),
        ],
    );
    let (status, log) = reaper.wait(Duration::from_secs(120)).await;
    assert!(
        status.success(),
        "reaper --once as its ServiceAccount failed ({status}):\n{log}"
    );
    assert!(
        forbidden_lines(&log).is_empty(),
        "the reaper was refused something:\n{log}"
    );
    log
}

fn assert_refused(out: &std::process::Output, what: &str) {
    let all = text(out);
    assert!(!out.status.success(), "{what} was allowed:\n{all}");
    assert!(
        all.contains(DENIED_BY_POLICY),
        "{what} failed, but not by the policy:\n{all}"
    );
}

#[tokio::test]
async fn reaper_as_its_service_account_propagates_rbac_in_trees_and_is_refused_elsewhere() {
    let identity = sa_kubeconfig(REAPER_SA).await;
    let kc = identity.path();
    let admin = support::admin().await;
    let fx = deploy_support::fixture().await;
    let selector = fx.selector.to_string();
    // Full namespaces (no selector): only the tree rules let the reaper write there.
    let parent = fx.create_unmanaged("hrb-p", BTreeMap::new()).await;
    let child = fx
        .create_unmanaged(
            "hrb-c",
            BTreeMap::from([(keys::PARENT_LABEL.to_string(), parent.clone())]),
        )
        .await;
    let unrelated = fx.create_unmanaged("hrb-x", BTreeMap::new()).await;
    role(&admin, &parent, "reader", &["get"]).await;
    binding(&admin, &parent, "readers", "Role", "reader").await;
    binding(&admin, &parent, "viewers", "ClusterRole", "view").await;

    let log = reaper_once_as_sa(kc, &selector).await;
    let roles = Api::<Role>::namespaced(admin.clone(), &child);
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &child);
    for name in ["readers", "viewers"] {
        let copy = bindings
            .get_opt(name)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no copy of {name}\n{log}"));
        assert_eq!(copy.labels()[keys::INHERITED_FROM_LABEL], parent);
    }
    assert!(roles.get_opt("reader").await.unwrap().is_some(), "{log}");
    let child_labels = Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .get(&child)
        .await
        .unwrap()
        .labels()
        .clone();
    assert_eq!(
        child_labels.get(&keys::tree_label(&parent)).map(String::as_str),
        Some("1")
    );

    // A source change is carried by an update of the copy (`update` suffices).
    Api::<Role>::namespaced(admin.clone(), &parent)
        .patch(
            "reader",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})),
        )
        .await
        .unwrap();
    let log = reaper_once_as_sa(kc, &selector).await;
    let copy = roles.get("reader").await.unwrap();
    assert_eq!(copy.rules.unwrap()[0].verbs, ["get", "list"], "{log}");

    // Refused: a RoleBinding that is not a copy, to anything but the grant, even in a tree.
    assert_refused(
        &kubectl_as(
            kc,
            &[
                "create",
                "rolebinding",
                "planted",
                "-n",
                &child,
                "--clusterrole=cluster-admin",
                "--user=mallory",
            ],
        ),
        "a RoleBinding to cluster-admin in a tree namespace",
    );
    // Refused: a copy outside any tree.
    let forged = support::temp_file(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: planted\n  namespace: {unrelated}\n  labels:\n    {}: {parent}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: mallory\n",
        keys::INHERITED_FROM_LABEL
    ));
    assert_refused(
        &kubectl_as(kc, &["create", "-f", forged.path().to_str().unwrap()]),
        "a copy-labelled RoleBinding outside a tree",
    );
    // Refused: any namespace label that is not a tree label.
    assert_refused(
        &kubectl_as(kc, &["label", "namespace", &child, "team=mallory"]),
        "a non-tree label on a tree namespace",
    );
    assert_refused(
        &kubectl_as(
            kc,
            &["label", "namespace", &child, &format!("{}-", keys::PARENT_LABEL)],
        ),
        "removing the parent label",
    );

    // Copies are read-only for everyone else, the cluster admin included; sources are not.
    assert_refused(
        &kubectl(&["label", "rolebinding", "readers", "-n", &child, "edited=yes"]),
        "the admin editing a copy",
    );
    let source_edit = kubectl(&["label", "rolebinding", "readers", "-n", &parent, "edited=yes"]);
    assert!(source_edit.status.success(), "{}", text(&source_edit));
    // The reaper carries that edit to the copy.
    let log = reaper_once_as_sa(kc, &selector).await;
    assert_eq!(
        bindings
            .get("readers")
            .await
            .unwrap()
            .labels()
            .get("edited")
            .map(String::as_str),
        Some("yes"),
        "{log}"
    );
}
