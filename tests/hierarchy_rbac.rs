//! Least privilege of the reaper's tree part with the shipped manifests (cronjob/base RBAC and
//! admission policies) against the real control plane: `reaper --once` running as its
//! ServiceAccount labels a tree and propagates Roles and RoleBindings (including one to a
//! ClusterRole) and updates them, without one refusal; the same identity is refused a
//! RoleBinding that is not a copy, a copy outside a tree and any other namespace label; and a
//! copy is read-only for everyone else, the cluster admin included. The provisioner, running as
//! its ServiceAccount, copies a parent's Role and its RoleBinding to a ClusterRole it does not
//! hold into a new child before it answers (the returned kubeconfig uses them at once), and is
//! refused the same writes when they are not copies or not in a tree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deploy_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use deploy_support::{
    PROVISIONER_SA, REAPER_SA, Running, can_i, forbidden_lines, kubectl, kubectl_as, sa_kubeconfig, text,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::rules::hierarchy::keys;
use support::process::start_provisioner;

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
    binding_for(client, namespace, name, kind, role, ("User", "alice")).await;
}

async fn binding_for(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: &str,
    role: &str,
    (subject_kind, subject): (&str, &str),
) {
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
            kind: subject_kind.into(),
            name: subject.into(),
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

/// A manifest of a copy-labelled (claiming `source`) `kind` in `namespace`: a RoleBinding to
/// cluster-admin, or a Role with every right.
fn forged(kind: &str, namespace: &str, source: &str) -> tempfile::NamedTempFile {
    let body = match kind {
        "RoleBinding" => {
            "roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: mallory\n"
        }
        _ => "rules:\n- apiGroups: [\"*\"]\n  resources: [\"*\"]\n  verbs: [\"*\"]\n",
    };
    support::temp_file(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {}\n  namespace: {namespace}\n  labels:\n    {}: {source}\n{body}",
        support::unique("planted"),
        keys::INHERITED_FROM_LABEL
    ))
}

#[tokio::test]
async fn provisioner_as_its_service_account_copies_rbac_into_a_child_and_is_refused_elsewhere() {
    const TOKEN: &str = "token-h-0123456789abcdef";
    let identity = sa_kubeconfig(PROVISIONER_SA).await;
    let kc = identity.path();
    let admin = support::admin().await;
    let fx = deploy_support::fixture().await;
    let selector = fx.selector.to_string();
    // The parent: a full namespace an administrator opened to every tenant.
    let parent = fx.create_unmanaged("hrb-pp", BTreeMap::new()).await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .patch(
            &parent,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                "controller.observatorium.io/allowed-tenants": "*"}}})),
        )
        .await
        .unwrap();
    let unrelated = fx.create_unmanaged("hrb-px", BTreeMap::new()).await;
    // In the parent, every ServiceAccount may list ConfigMaps (a ClusterRole the provisioner
    // does not hold: copying its binding takes `bind`) and create them (a Role it does not
    // hold: copying it takes `escalate`). The grant itself gives nothing.
    let reader = support::unique("np-hrb-reader");
    fx.create_cluster_role(
        &reader,
        vec![support::rule(&[""], &["configmaps"], &["get", "list"])],
    )
    .await;
    let everyone = ("Group", "system:serviceaccounts");
    binding_for(&admin, &parent, "team-readers", "ClusterRole", &reader, everyone).await;
    role(&admin, &parent, "creator", &["create"]).await;
    binding_for(&admin, &parent, "team-creators", "Role", "creator", everyone).await;
    assert!(
        !can_i(kc, &["list", "configmaps", "-n", &unrelated]),
        "the provisioner holds the reader's rights itself: the test proves nothing"
    );

    let tokens = support::temp_file(&format!("ci-h {TOKEN}\n"));
    let served = start_provisioner(
        "provisioner (children)",
        &[],
        &[
            ("NP_KUBECONFIG", kc.display().to_string()),
            ("NP_TOKEN_FILE", tokens.path().display().to_string()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_TTL", "15m".into()),
            ("NP_MAX_TTL", "1h".into()),
        ],
        "/readyz",
    )
    .await;
    let body = serde_json::json!({"parent": parent, "ttl": "20m"}).to_string();
    let created = support::http(
        &served.addr,
        "POST",
        "/api/v1/namespaces",
        Some(TOKEN),
        Some(&body),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}\n{}", served.process.log());
    let child = created.json()["name"].as_str().unwrap().to_owned();
    let returned = support::temp_file(created.json()["kubeconfig"].as_str().unwrap());
    // At once, no waiting: both rights come only from the copies, which exist before the answer.
    let listed = kubectl_as(
        returned.path(),
        &["get", "configmaps", "-n", &child, "-o", "name"],
    );
    assert!(listed.status.success(), "{}", text(&listed));
    let made = kubectl_as(
        returned.path(),
        &["create", "configmap", "made-by-the-child", "-n", &child],
    );
    assert!(made.status.success(), "{}", text(&made));
    for name in ["team-readers", "team-creators"] {
        let copy = Api::<RoleBinding>::namespaced(admin.clone(), &child)
            .get(name)
            .await
            .unwrap();
        assert_eq!(copy.labels()[keys::INHERITED_FROM_LABEL], parent);
    }
    let log = served.process.log();
    assert!(
        forbidden_lines(&log).is_empty(),
        "the provisioner was refused something:\n{log}"
    );
    let (status, log) = served.process.terminate().await;
    assert!(status.success(), "provisioner exit {status}:\n{log}");

    // The same identity is refused a RoleBinding that is not a copy, even in its child ...
    assert_refused(
        &kubectl_as(
            kc,
            &[
                "create",
                "rolebinding",
                "planted",
                "-n",
                &child,
                &format!("--clusterrole={reader}"),
                "--user=mallory",
            ],
        ),
        "a provisioner RoleBinding that is not a copy in its child",
    );
    // ... and copies (a RoleBinding to cluster-admin, a Role with every right) outside a tree,
    // and a Role that is not a copy there.
    for kind in ["RoleBinding", "Role"] {
        let manifest = forged(kind, &unrelated, &parent);
        assert_refused(
            &kubectl_as(kc, &["create", "-f", manifest.path().to_str().unwrap()]),
            &format!("a provisioner copy-labelled {kind} outside a tree"),
        );
    }
    assert_refused(
        &kubectl_as(
            kc,
            &[
                "create",
                "role",
                "planted",
                "-n",
                &unrelated,
                "--verb=get",
                "--resource=pods",
            ],
        ),
        "a provisioner Role that is not a copy outside a tree",
    );
}
