//! Proof that the test control plane is real: the namespace controller
//! finalizes deletions, the garbage collector follows owner references,
//! TokenRequest tokens authenticate through the real kubectl under RBAC, and
//! two clusters do not clash.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use support::{Fixture, cluster, kubectl, service_account_kubeconfig, temp_file, unique};

const SELECTOR_KEY: &str = "np-test/harness";

/// A namespace of this test (owner-labelled: dumped if the test fails,
/// cleaned up when it ends).
async fn create_namespace(fx: &Fixture, prefix: &str) -> Namespace {
    let name = fx.create_unmanaged(prefix, BTreeMap::new()).await;
    Api::<Namespace>::all(fx.client.clone()).get(&name).await.unwrap()
}

#[tokio::test]
async fn namespace_deletion_is_finalized_by_the_namespace_controller() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let ns = create_namespace(&fx, "harness-del").await;
    let name = ns.name_any();
    let api = Api::<Namespace>::all(client.clone());
    // Content, so the controller has something to finalize.
    support::create_named(
        &Api::<ConfigMap>::namespaced(client.clone(), &name),
        "c",
        BTreeMap::new(),
    )
    .await;
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let terminating = api.get(&name).await.unwrap();
    assert_eq!(terminating.status.unwrap().phase.as_deref(), Some("Terminating"));
    let uid = ns.uid().unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(api.clone(), &name, conditions::is_deleted(&uid)),
    )
    .await
    .expect("namespace finalized within 60s")
    .unwrap();
    assert!(
        api.get_opt(&name).await.unwrap().is_none(),
        "namespace {name} still exists"
    );
}

#[tokio::test]
async fn garbage_collector_removes_objects_whose_owner_is_gone() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let name = create_namespace(&fx, "harness-gc").await.name_any();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &name);
    let owner = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .unwrap();
    let dependent = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("dependent".into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "ConfigMap".into(),
                        name: "owner".into(),
                        uid: owner.uid().unwrap(),
                        ..OwnerReference::default()
                    }]),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::background()).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(
            cms.clone(),
            "dependent",
            conditions::is_deleted(&dependent.uid().unwrap()),
        ),
    )
    .await
    .expect("dependent collected within 60s")
    .unwrap();
    assert!(cms.get_opt("dependent").await.unwrap().is_none());
}

#[tokio::test]
async fn service_account_token_works_with_kubectl_only_where_rbac_allows() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let home = create_namespace(&fx, "harness-home").await.name_any();
    let other = create_namespace(&fx, "harness-other").await.name_any();
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(home.clone()),
        ..ObjectMeta::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), &home)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("worker"),
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let kubeconfig = temp_file(&service_account_kubeconfig(&client, &home, "worker").await);

    // Before any grant: forbidden.
    let denied = kubectl(kubeconfig.path(), &["create", "configmap", "before", "-n", &home]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("forbidden"),
        "{denied:?}"
    );

    Api::<Role>::namespaced(client.clone(), &home)
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta("cm"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["configmaps".into()]),
                    verbs: vec!["create".into(), "get".into()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &home)
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta("cm"),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "cm".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "worker".into(),
                    namespace: Some(home.clone()),
                    api_group: None,
                }]),
            },
        )
        .await
        .unwrap();

    // RBAC changes reach the authorizer through an informer: allow a moment.
    support::eventually(
        Duration::from_secs(10),
        "the RoleBinding to take effect",
        || async {
            kubectl(
                kubeconfig.path(),
                &["auth", "can-i", "create", "configmaps", "-n", &home],
            )
            .status
            .success()
        },
    )
    .await;
    let made = kubectl(
        kubeconfig.path(),
        &["create", "configmap", "made-by-sa", "-n", &home],
    );
    assert!(made.status.success(), "{made:?}");
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &home)
            .get_opt("made-by-sa")
            .await
            .unwrap()
            .is_some()
    );

    let elsewhere = kubectl(kubeconfig.path(), &["create", "configmap", "nope", "-n", &other]);
    assert!(!elsewhere.status.success());
    assert!(
        String::from_utf8_lossy(&elsewhere.stderr).contains("forbidden"),
        "{elsewhere:?}"
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &other)
            .get_opt("nope")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn two_clusters_do_not_share_ports_data_or_state() {
    let shared = cluster();
    let second = support::Cluster::start();
    assert_ne!(shared.server, second.server);
    assert_ne!(shared.data_dir, second.data_dir);

    let name = unique("harness-only-here");
    support::create_namespace(&second.client().await, &name, &[("np-test", "harness")]).await;
    assert!(
        Api::<Namespace>::all(second.client().await)
            .get_opt(&name)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<Namespace>::all(shared.client().await)
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
    );

    let data_dir = second.data_dir.clone();
    let port = second.server.rsplit(':').next().unwrap().to_owned();
    second.stop();
    // Stopped cleanly: its temporary data is gone and its port is free again.
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
    std::net::TcpListener::bind(format!("127.0.0.1:{port}")).expect("apiserver port released");
}
