//! Least privilege of Kubernetes identities (issue 13), against the real
//! control plane: the real provisioner binary, running as the ServiceAccount
//! function/ creates with `--auth both`, can review tokens and access and do
//! its whole job for a Kubernetes caller (create with bindCaller, list, get,
//! extend, delete; 403 and 401 where due) and gains nothing more than
//! `create` on tokenreviews and subjectaccessreviews.
//!
//! Each test owns a [`support::Fixture`] under the selector key the
//! admission policy knows: dumped if the test fails, cleaned up by label.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deploy_support;
mod support;

use std::collections::BTreeMap;

use deploy_support::{GRANT, PROVISIONER_SA, REAPER_SA, can_i, deployed, forbidden_lines, sa_kubeconfig};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{RoleBinding, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use namespace_provisioner::labels::OBJECT_NAME;
use support::process::start_provisioner;

const STATIC_TOKEN: &str = "static-rbac-0123456789abcdef";

/// A ServiceAccount `name` in `namespace` and its token.
async fn account(client: &kube::Client, namespace: &str, name: &str) -> (Subject, String) {
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let kubeconfig = support::service_account_kubeconfig(client, namespace, name).await;
    let value: serde_json::Value = serde_yaml_ng::from_str(&kubeconfig).unwrap();
    let token = value["users"][0]["user"]["token"].as_str().unwrap().to_owned();
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: name.to_owned(),
        namespace: Some(namespace.to_owned()),
        api_group: None,
    };
    (subject, token)
}

#[tokio::test]
async fn provisioner_least_privilege_suffices_for_kubernetes_identities() {
    let identity = sa_kubeconfig(PROVISIONER_SA).await;
    let fx = deploy_support::fixture().await;
    let callers = fx.create_unmanaged("id-rbac", BTreeMap::new()).await;
    let (lead, lead_token) = account(&fx.client, &callers, "lead").await;
    let (_, nobody_token) = account(&fx.client, &callers, "nobody").await;
    fx.create_cluster_role_binding(
        &support::unique("np-id"),
        "namespace-provisioner:manager",
        lead.clone(),
    )
    .await;
    let tokens = support::temp_file(&format!("ci {STATIC_TOKEN}\n"));
    let served = start_provisioner(
        "provisioner-identity",
        &[],
        &[
            ("NP_KUBECONFIG", identity.path().display().to_string()),
            ("NP_AUTH", "both".into()),
            ("NP_TOKEN_FILE", tokens.path().display().to_string()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_TTL", "15m".into()),
        ],
        "/readyz",
    )
    .await;
    let (addr, provisioner) = (served.addr, served.process);
    let lead_t = Some(lead_token.as_str());

    // Create with bindCaller: TokenReview, SubjectAccessReview, and a
    // RoleBinding with a User subject, all as the provisioner's account.
    let created = support::http(
        &addr,
        "POST",
        "/api/v1/namespaces",
        lead_t,
        Some(r#"{"ttl":"10m","bindCaller":true}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}\n{}", provisioner.log());
    let name = created.json()["name"].as_str().unwrap().to_owned();
    let rb = Api::<RoleBinding>::namespaced(fx.client.clone(), &name)
        .get(OBJECT_NAME)
        .await
        .unwrap();
    assert_eq!(rb.role_ref.name, GRANT);
    assert_eq!(rb.subjects.unwrap().len(), 2);
    let listed = support::http(&addr, "GET", "/api/v1/namespaces", lead_t, None).await;
    assert!(listed.body.contains(&name), "{listed:?}");
    let path = format!("/api/v1/namespaces/{name}");
    let extended = support::http(&addr, "PATCH", &path, lead_t, Some(r#"{"ttl":"12m"}"#)).await;
    assert_eq!(extended.status, 200, "{extended:?}\n{}", provisioner.log());

    // Refusals need the reviews too.
    let nobody = Some(nobody_token.as_str());
    let refused = support::http(&addr, "POST", "/api/v1/namespaces", nobody, Some("{}")).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let hidden = support::http(&addr, "GET", &path, nobody, None).await;
    assert_eq!(hidden.status, 404, "{hidden:?}");
    let bogus = support::http(
        &addr,
        "GET",
        "/api/v1/namespaces",
        Some("bogus-0123456789abcdef"),
        None,
    )
    .await;
    assert_eq!(bogus.status, 401, "{bogus:?}");
    // Static tokens still work beside them.
    let listed = support::http(&addr, "GET", "/api/v1/namespaces", Some(STATIC_TOKEN), None).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert!(!listed.body.contains(&name));

    let deleted = support::http(&addr, "DELETE", &path, lead_t, None).await;
    assert_eq!(deleted.status, 202, "{deleted:?}\n{}", provisioner.log());
    let log = provisioner.log();
    // No API refusal of the provisioner itself (our own 403 answers aside).
    let refused_by_api: Vec<&str> = forbidden_lines(&log)
        .into_iter()
        .filter(|l| !l.contains("request refused") && !l.contains("api::audit"))
        .collect();
    assert!(refused_by_api.is_empty(), "{log}");
    for secret in [&lead_token, &nobody_token] {
        assert!(!log.contains(secret.as_str()), "a token reached the log");
    }
}

#[tokio::test]
async fn identity_rights_are_least() {
    deployed();
    let provisioner = sa_kubeconfig(PROVISIONER_SA).await;
    let reaper = sa_kubeconfig(REAPER_SA).await;
    let kc = provisioner.path();
    assert!(can_i(kc, &["create", "tokenreviews.authentication.k8s.io"]));
    assert!(can_i(
        kc,
        &["create", "subjectaccessreviews.authorization.k8s.io"]
    ));
    for args in [
        // Reviews are create-only; nothing to read, and no namespaced variant.
        vec!["get", "tokenreviews.authentication.k8s.io"],
        vec![
            "create",
            "localsubjectaccessreviews.authorization.k8s.io",
            "-n",
            "kube-system",
        ],
        // Asking about a user is not acting as one.
        vec!["impersonate", "users"],
        vec!["impersonate", "serviceaccounts"],
        vec!["impersonate", "groups"],
        // The rights it checks are not its own to use or hand out.
        vec!["create", "namespaces.controller.observatorium.io"],
        // (`bind` on ClusterRoles it holds for copies of ancestors'
        // RoleBindings; the admission policy confines it to copies in tree
        // namespaces: tests/hierarchy_rbac.rs.)
        vec!["update", "clusterroles"],
    ] {
        assert!(!can_i(kc, &args), "provisioner can {args:?}");
    }
    // The reaper reviews nothing.
    for args in [
        vec!["create", "tokenreviews.authentication.k8s.io"],
        vec!["create", "subjectaccessreviews.authorization.k8s.io"],
    ] {
        assert!(!can_i(reaper.path(), &args), "reaper can {args:?}");
    }
}
