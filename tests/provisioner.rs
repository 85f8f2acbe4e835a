//! The provisioner against the real control plane: returned kubeconfigs used
//! with the real kubectl, bad input that changes nothing, rollback, tenants,
//! limits, extend, concurrency, client disconnects, the real binary.
//!
//! Each test owns a [`support::Fixture`]: its own selector value and grant
//! ClusterRole, so tests run in parallel on one cluster without seeing each
//! other's namespaces; its objects are dumped if it fails and cleaned up by
//! label.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, Subject};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::api::{self, AppState};
use namespace_provisioner::auth::Tokens;
use namespace_provisioner::params::TtlPolicy;
use namespace_provisioner::provision::{Provisioner, ProvisionerConfig};
use support::process::start_provisioner;
use support::{Answer, Fixture, admin, cluster, eventually, kubectl, now, temp_file, unique};
use tower::ServiceExt;

const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdefgh";
const SELECTOR_KEY: &str = "np-test.example.com/provisioner";
const EXPIRY: &str = "controller.observatorium.io/expiry";
const TENANT: &str = "controller.observatorium.io/tenant";

/// A test's fixture (its selector and grant ClusterRole, dumped on failure,
/// cleaned up by label) and the provisioner's router over the real cluster.
struct Service {
    fx: Fixture,
    app: Router,
}

impl Service {
    async fn new(max_per_tenant: Option<u32>) -> Service {
        Self::with_client(admin().await, max_per_tenant, vec![]).await
    }

    /// `grant_rules`: rules of the grant ClusterRole (empty by default, as shipped).
    async fn with_client(
        client: Client,
        max_per_tenant: Option<u32>,
        grant_rules: Vec<PolicyRule>,
    ) -> Service {
        Self::build(client, max_per_tenant, grant_rules, None).await
    }

    async fn build(
        client: Client,
        max_per_tenant: Option<u32>,
        grant_rules: Vec<PolicyRule>,
        role_rules: Option<Vec<PolicyRule>>,
    ) -> Service {
        let fx = Fixture::new(SELECTOR_KEY)
            .await
            .create_grant(grant_rules)
            .await
            .with_role_rules(role_rules);
        let config = ProvisionerConfig {
            set: fx.set.clone(),
            ttl: TtlPolicy::new(Duration::from_secs(3600), Some(Duration::from_secs(7200))).unwrap(),
            prefix: "np".parse().unwrap(),
            server: cluster().server_url(),
            ca_pem: Some(cluster().ca_pem()),
            max_namespaces_per_tenant: max_per_tenant,
            page_size: 500,
            max_depth: 3,
            propagation: Default::default(),
        };
        let tokens = Tokens::parse(&format!("alice {ALICE}\nbob {BOB}\n")).unwrap();
        let state = AppState::new(Provisioner::new(client, config), Some(tokens)).unwrap();
        let app = api::router(state, Duration::from_secs(60));
        Service { fx, app }
    }

    async fn call(&self, method: &str, uri: &str, token: Option<&str>, body: Option<&str>) -> Answer {
        let request = support::request(method, uri, token, body).map(Body::from);
        support::answer(self.app.clone().oneshot(request).await.unwrap()).await
    }

    /// Create through the compat call; returns (name, kubeconfig YAML).
    async fn create(&self, token: &str, query: &str) -> (String, String) {
        let answer = self
            .call("POST", &format!("/api/v1/namespace{query}"), Some(token), None)
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        let location = answer.headers["location"].to_str().unwrap().to_owned();
        let name = location.rsplit('/').next().unwrap().to_owned();
        (name, answer.body)
    }
}

fn token_of(kubeconfig: &str) -> String {
    let value: serde_json::Value = serde_yaml_ng::from_str(kubeconfig).unwrap();
    value["users"][0]["user"]["token"].as_str().unwrap().to_owned()
}

fn assert_problem(answer: &Answer, status: u16, detail_contains: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    let body = answer.json();
    assert_eq!(body["status"], status);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(detail_contains),
        "{detail:?} lacks {detail_contains:?}"
    );
    for token in [ALICE, BOB] {
        assert!(!answer.body.contains(token), "token echoed");
    }
}

#[tokio::test]
async fn kubeconfig_works_with_kubectl_only_inside_its_namespace() {
    let svc = Service::new(None).await;
    let before = now();
    let (name, kubeconfig) = svc.create(ALICE, "?ttl=30m").await;
    let file = temp_file(&kubeconfig);
    let path = file.path();

    // The set, labelled as the contract says.
    let ns = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&name)
        .await
        .unwrap();
    let labels = ns.labels();
    assert_eq!(labels[svc.fx.selector.key()], svc.fx.selector.value());
    assert_eq!(labels[TENANT], "alice");
    let expiry: i64 = labels[EXPIRY].parse().unwrap();
    assert!(
        (before + 1800..=now() + 1800).contains(&expiry),
        "expiry {expiry}"
    );
    assert!(ns.annotations()["controller.observatorium.io/expires-at"].ends_with('Z'));
    let sa = Api::<ServiceAccount>::namespaced(svc.fx.client.clone(), &name)
        .get("namespace-provisioner")
        .await
        .unwrap();
    assert_eq!(sa.labels()[EXPIRY], labels[EXPIRY]);
    let rb = Api::<RoleBinding>::namespaced(svc.fx.client.clone(), &name)
        .get("namespace-provisioner")
        .await
        .unwrap();
    assert_eq!(rb.role_ref.name, svc.fx.set.cluster_role);

    // What the original tool's clients read.
    let parsed: serde_json::Value = serde_yaml_ng::from_str(&kubeconfig).unwrap();
    assert_eq!(parsed["contexts"][0]["context"]["namespace"], name.as_str());

    // Token lifetime = the namespace's lifetime.
    let claims = support::jwt_claims(&token_of(&kubeconfig));
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!((1795..=1800).contains(&lifetime), "token lifetime {lifetime}");
    assert_eq!(claims["kubernetes.io"]["namespace"], name.as_str());

    // The shipped grant grants nothing.
    let denied = kubectl(path, &["get", "configmaps"]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("forbidden"),
        "{denied:?}"
    );

    // An administrator edits the grant: now ConfigMaps work, here only.
    let mut grant = Api::<ClusterRole>::all(svc.fx.client.clone())
        .get(&svc.fx.set.cluster_role)
        .await
        .unwrap();
    grant.rules = Some(vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: vec!["*".into()],
        ..PolicyRule::default()
    }]);
    Api::<ClusterRole>::all(svc.fx.client.clone())
        .replace(&svc.fx.set.cluster_role, &PostParams::default(), &grant)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the grant to take effect", || async {
        kubectl(path, &["auth", "can-i", "create", "configmaps"])
            .status
            .success()
    })
    .await;
    support::kubectl_ok(path, &["create", "configmap", "hello", "--from-literal=a=b"]);
    let listed = support::kubectl_ok(path, &["get", "configmaps", "-o", "name"]);
    assert!(listed.contains("configmap/hello"), "{listed}");
    for args in [
        vec!["get", "configmaps", "-n", "default"],
        vec!["create", "configmap", "x", "-n", "default"],
        vec!["get", "namespaces"],
        vec!["get", "clusterroles"],
        vec!["delete", "namespace", &name],
    ] {
        let out = kubectl(path, &args);
        assert!(!out.status.success(), "{args:?} should be forbidden");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("forbidden"),
            "{args:?}: {out:?}"
        );
    }
}

#[tokio::test]
async fn short_ttl_gets_the_ten_minute_token_floor_and_json_create_works() {
    let svc = Service::new(None).await;
    let answer = svc
        .call(
            "POST",
            "/api/v1/namespaces",
            Some(ALICE),
            Some(r#"{"ttl":"30s","server":"https://kube.example:6443"}"#),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let body = answer.json();
    let name = body["name"].as_str().unwrap();
    assert_eq!(
        answer.headers["location"],
        format!("/api/v1/namespaces/{name}").as_str()
    );
    let kubeconfig = body["kubeconfig"].as_str().unwrap();
    let parsed: serde_json::Value = serde_yaml_ng::from_str(kubeconfig).unwrap();
    assert_eq!(
        parsed["clusters"][0]["cluster"]["server"],
        "https://kube.example:6443"
    );
    let claims = support::jwt_claims(&token_of(kubeconfig));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert!(body["expiresAt"].as_str().unwrap() < body["tokenExpiresAt"].as_str().unwrap());

    // ttl=0 means the default (1h here).
    let before = now();
    let (name0, _) = svc.create(BOB, "?ttl=0").await;
    let ns = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&name0)
        .await
        .unwrap();
    let expiry: i64 = ns.labels()[EXPIRY].parse().unwrap();
    assert!(
        (before + 3600..=now() + 3600).contains(&expiry),
        "expiry {expiry}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let svc = Service::new(None).await;
    let (alices, _) = svc.create(ALICE, "").await;
    // Looks expired, lacks the selector: not ours.
    let unmanaged = svc
        .fx
        .create_unmanaged(
            "np-unmanaged",
            BTreeMap::from([
                (EXPIRY.to_owned(), "1".to_owned()),
                (TENANT.to_owned(), "bob".to_owned()),
            ]),
        )
        .await;
    let snapshot = |nss: Vec<Namespace>| {
        nss.iter()
            .map(|n| (n.name_any(), n.resource_version()))
            .collect::<Vec<_>>()
    };
    let before = snapshot(svc.fx.managed().await);

    // (method, uri, token, body, status, words the detail must contain)
    type Case<'a> = (&'a str, String, Option<&'a str>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/namespace?ttl=forever".into(),
            Some(BOB),
            None,
            400,
            "not a duration",
        ),
        (
            "POST",
            "/api/v1/namespace?ttl=-5m".into(),
            Some(BOB),
            None,
            400,
            "negative",
        ),
        (
            "POST",
            "/api/v1/namespace?ttl=99999999999999999999h".into(),
            Some(BOB),
            None,
            400,
            "not a duration",
        ),
        (
            "POST",
            "/api/v1/namespace?ttl=3h".into(),
            Some(BOB),
            None,
            400,
            "at most 2h",
        ),
        (
            "POST",
            "/api/v1/namespace?server=foo".into(),
            Some(BOB),
            None,
            400,
            "absolute http(s) URL",
        ),
        (
            "POST",
            "/api/v1/namespaces".into(),
            Some(BOB),
            Some("{\"ttl\":"),
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/api/v1/namespace".into(),
            Some("not-a-valid-token-at-all"),
            None,
            401,
            "not valid",
        ),
        ("POST", "/api/v1/namespace".into(), None, None, 401, "Bearer"),
        (
            "DELETE",
            "/api/v1/namespace/kube-system".into(),
            Some(BOB),
            None,
            404,
            "kube-system",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/kube-system".into(),
            Some(BOB),
            None,
            404,
            "kube-system",
        ),
        (
            "DELETE",
            format!("/api/v1/namespace/{unmanaged}"),
            Some(BOB),
            None,
            404,
            "belongs to you",
        ),
        (
            "DELETE",
            format!("/api/v1/namespace/{alices}"),
            Some(BOB),
            None,
            404,
            "belongs to you",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/np-doesnotexist".into(),
            Some(BOB),
            None,
            404,
            "belongs to you",
        ),
        (
            "PATCH",
            format!("/api/v1/namespaces/{alices}"),
            Some(ALICE),
            Some(r#"{"ttl":"5h"}"#),
            400,
            "at most 2h",
        ),
        (
            "PATCH",
            format!("/api/v1/namespaces/{alices}"),
            Some(BOB),
            Some(r#"{"ttl":"5m"}"#),
            404,
            "belongs to you",
        ),
        (
            "GET",
            format!("/api/v1/namespaces/{alices}"),
            Some(BOB),
            None,
            404,
            "belongs to you",
        ),
    ];
    for (method, uri, token, body, status, detail) in cases {
        let answer = svc.call(method, &uri, token, body).await;
        assert_problem(&answer, status, detail);
        if status == 401 {
            assert!(
                answer.headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer")
            );
        }
    }

    assert_eq!(
        snapshot(svc.fx.managed().await),
        before,
        "managed namespaces changed"
    );
    let nss = Api::<Namespace>::all(svc.fx.client.clone());
    for survivor in ["kube-system", &unmanaged, &alices] {
        let ns = nss.get(survivor).await.unwrap();
        assert!(
            ns.metadata.deletion_timestamp.is_none(),
            "{survivor} is being deleted"
        );
    }
}

/// The provisioner may create namespaces but may not `bind` the grant: the
/// RoleBinding is refused, so the namespace it created must go.
#[tokio::test]
async fn forbidden_role_binding_rolls_back_the_namespace() {
    // The limited identity's home, ClusterRole and binding: owner-labelled.
    let infra = Fixture::new(SELECTOR_KEY).await;
    let admin = infra.client.clone();
    let home = infra.create_unmanaged("np-limited", BTreeMap::new()).await;
    support::create_named(
        &Api::<ServiceAccount>::namespaced(admin.clone(), &home),
        "limited",
        BTreeMap::new(),
    )
    .await;
    let rule = support::rule;
    let role = unique("np-limited");
    infra
        .create_cluster_role(
            &role,
            vec![
                rule(
                    &[""],
                    &["namespaces"],
                    &["create", "get", "list", "delete", "patch"],
                ),
                rule(&[""], &["serviceaccounts"], &["create", "get", "patch"]),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
                rule(
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings"],
                    &["create", "get", "patch"],
                ),
            ],
        )
        .await;
    infra
        .create_cluster_role_binding(
            &role,
            &role,
            Subject {
                kind: "ServiceAccount".into(),
                name: "limited".into(),
                namespace: Some(home.clone()),
                api_group: None,
            },
        )
        .await;
    let limited =
        support::client_from_yaml(&support::service_account_kubeconfig(&admin, &home, "limited").await).await;
    // The grant holds a permission the limited identity lacks, so binding it needs `bind`.
    let probe = Api::<Namespace>::all(limited.clone());
    eventually(Duration::from_secs(10), "the limited identity's RBAC", || async {
        probe.list(&ListParams::default().limit(1)).await.is_ok()
    })
    .await;
    let svc = Service::with_client(limited, None, vec![rule(&[""], &["secrets"], &["get"])]).await;

    let answer = svc
        .call("POST", "/api/v1/namespace?ttl=10m", Some(ALICE), None)
        .await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    let detail = answer.json()["detail"].as_str().unwrap().to_owned();
    assert!(!detail.contains("forbidden"), "5xx leaks internals: {detail}");
    // It did create a namespace (so the refusal came later), and is deleting it.
    let made = svc.fx.managed().await;
    assert_eq!(made.len(), 1, "expected the one namespace it created");
    assert!(
        made[0].metadata.deletion_timestamp.is_some(),
        "not rolled back: {:?}",
        made[0].metadata
    );
    assert!(
        Api::<RoleBinding>::namespaced(admin.clone(), &made[0].name_any())
            .get_opt("namespace-provisioner")
            .await
            .unwrap()
            .is_none()
    );

    // The namespace it made is being deleted, then gone.
    eventually(
        Duration::from_secs(60),
        "the rolled-back namespace to disappear",
        || async { svc.fx.managed().await.is_empty() },
    )
    .await;
}

#[tokio::test]
async fn tenants_are_isolated_limited_listed_and_extended() {
    let svc = Service::new(Some(2)).await;
    let (first, first_kubeconfig) = svc.create(ALICE, "?ttl=10m").await;
    let (second, _) = svc.create(ALICE, "").await;
    let refused = svc.call("POST", "/api/v1/namespace", Some(ALICE), None).await;
    assert_problem(&refused, 429, "2 live namespaces");
    assert_eq!(svc.fx.managed().await.len(), 2);

    // Bob sees none of Alice's, and can still create his own.
    let bobs = svc.call("GET", "/api/v1/namespaces", Some(BOB), None).await;
    assert_eq!(bobs.json()["items"], serde_json::json!([]));
    let (bob_ns, _) = svc.create(BOB, "").await;

    let listed = svc
        .call("GET", "/api/v1/namespaces", Some(ALICE), None)
        .await
        .json();
    let names: BTreeSet<_> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, BTreeSet::from([first.clone(), second.clone()]));
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["tenant"] == "alice" && i["phase"] == "Active")
    );
    let one = svc
        .call("GET", &format!("/api/v1/namespaces/{first}"), Some(ALICE), None)
        .await
        .json();
    assert_eq!(one["name"], first.as_str());

    // Extend: new expiry on every object, a fresh token that works.
    let old_expiry: i64 = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&first)
        .await
        .unwrap()
        .labels()[EXPIRY]
        .parse()
        .unwrap();
    let extended = svc
        .call(
            "PATCH",
            &format!("/api/v1/namespaces/{first}"),
            Some(ALICE),
            Some(r#"{"ttl":"2h"}"#),
        )
        .await;
    assert_eq!(extended.status, 200, "{}", extended.body);
    let new_kubeconfig = extended.json()["kubeconfig"].as_str().unwrap().to_owned();
    assert_ne!(token_of(&new_kubeconfig), token_of(&first_kubeconfig));
    let ns = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&first)
        .await
        .unwrap();
    let new_expiry: i64 = ns.labels()[EXPIRY].parse().unwrap();
    assert!(
        new_expiry >= old_expiry + 7200 - 600 - 5,
        "{old_expiry} -> {new_expiry}"
    );
    let sa = Api::<ServiceAccount>::namespaced(svc.fx.client.clone(), &first)
        .get("namespace-provisioner")
        .await
        .unwrap();
    assert_eq!(sa.labels()[EXPIRY], new_expiry.to_string());
    let claims = support::jwt_claims(&token_of(&new_kubeconfig));
    assert!((7195..=7200).contains(&(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap())));
    let file = temp_file(&new_kubeconfig);
    let whoami = support::kubectl_ok(
        file.path(),
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert_eq!(
        whoami,
        format!("system:serviceaccount:{first}:namespace-provisioner")
    );

    // Delete: 202, Terminating, and the slot frees up at once.
    let deleted = svc
        .call(
            "DELETE",
            &format!("/api/v1/namespaces/{first}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    assert_eq!(deleted.json()["phase"], "Terminating");
    let again = svc
        .call("DELETE", &format!("/api/v1/namespace/{first}"), Some(ALICE), None)
        .await;
    assert!(again.status == 200 || again.status == 404, "{}", again.body);
    let extend_dying = svc
        .call("PATCH", &format!("/api/v1/namespaces/{first}"), Some(ALICE), None)
        .await;
    assert!(
        extend_dying.status == 409 || extend_dying.status == 404,
        "{}",
        extend_dying.body
    );
    svc.create(ALICE, "").await;
    assert!(
        Api::<Namespace>::all(svc.fx.client.clone())
            .get(&bob_ns)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
}

#[tokio::test]
async fn two_hundred_concurrent_creates_make_two_hundred_complete_sets() {
    let svc = Service::new(None).await;
    let answers: Vec<Answer> = futures::stream::iter(0..200)
        .map(|i| {
            let svc = &svc;
            async move {
                let token = if i % 2 == 0 { ALICE } else { BOB };
                svc.call("POST", "/api/v1/namespace?ttl=10m", Some(token), None)
                    .await
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let failed: Vec<_> = answers
        .iter()
        .filter(|a| a.status != 201)
        .map(|a| (a.status, a.body.clone()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let names: BTreeSet<String> = answers
        .iter()
        .map(|a| {
            a.headers["location"]
                .to_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names.len(), 200, "names not distinct");

    let selector = svc.fx.selector.to_string();
    let in_ns = |items: Vec<String>| items.into_iter().collect::<BTreeSet<_>>();
    let sas = Api::<ServiceAccount>::all(svc.fx.client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    let rbs = Api::<RoleBinding>::all(svc.fx.client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert_eq!(
        in_ns(svc.fx.managed().await.iter().map(|n| n.name_any()).collect()),
        names
    );
    assert_eq!(
        in_ns(sas.items.iter().map(|o| o.namespace().unwrap()).collect()),
        names
    );
    assert_eq!(
        in_ns(rbs.items.iter().map(|o| o.namespace().unwrap()).collect()),
        names
    );
    assert!(
        rbs.items
            .iter()
            .all(|rb| rb.role_ref.name == svc.fx.set.cluster_role)
    );
}

/// Callers that hang up mid-create leave either a complete set or nothing.
#[tokio::test]
async fn client_disconnects_leave_no_half_made_set() {
    use tokio::io::AsyncWriteExt;
    let svc = Service::new(None).await;
    let token_file = temp_file(&format!("alice {ALICE}\n"));
    let served = start_provisioner(
        "provisioner",
        &[],
        &[
            ("NP_TOKEN_FILE", token_file.path().display().to_string()),
            ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
            ("NP_SELECTOR", svc.fx.selector.to_string()),
            ("NP_CLUSTER_ROLE", svc.fx.set.cluster_role.clone()),
        ],
        "/healthz",
    )
    .await;
    for delay_ms in [0u64, 1, 2, 5, 10, 20] {
        let mut stream = tokio::net::TcpStream::connect(&served.addr).await.unwrap();
        let request = format!(
            "POST /api/v1/namespace?ttl=10m HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ncontent-length: 0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        drop(stream);
    }
    // Every namespace that exists ends up complete (or is gone after rollback).
    eventually(Duration::from_secs(30), "every set to be complete", || async {
        let mut complete = true;
        for ns in svc.fx.managed().await {
            if ns.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = ns.name_any();
            let sa = Api::<ServiceAccount>::namespaced(svc.fx.client.clone(), &name)
                .get_opt("namespace-provisioner")
                .await
                .unwrap();
            let rb = Api::<RoleBinding>::namespaced(svc.fx.client.clone(), &name)
                .get_opt("namespace-provisioner")
                .await
                .unwrap();
            complete &= sa.is_some() && rb.is_some();
        }
        complete
    })
    .await;
    assert!(
        !svc.fx.managed().await.is_empty(),
        "no request reached the provisioner"
    );
    let (status, log) = served.process.terminate().await;
    assert!(status.success(), "graceful shutdown failed: {status}\n{log}");
}

#[tokio::test]
async fn real_binary_serves_and_refuses_to_start_without_a_token() {
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["--kubeconfig", cluster().kubeconfig.to_str().unwrap()])
        .env_remove("NP_TOKEN")
        .env_remove("NP_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no token configured"), "{stderr}");

    let bad_flag = std::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args([
            "--ttl",
            "2h",
            "--max-ttl",
            "1h",
            "--insecure-allow-unauthenticated",
        ])
        .output()
        .unwrap();
    assert!(!bad_flag.status.success());
    assert!(
        String::from_utf8_lossy(&bad_flag.stderr).contains("--max-ttl"),
        "{bad_flag:?}"
    );

    let svc = Service::new(None).await;
    let served = start_provisioner(
        "provisioner",
        &["--log-format".to_owned(), "json".to_owned()],
        &[
            ("NP_TOKEN", ALICE.to_owned()),
            ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
            ("NP_SELECTOR", svc.fx.selector.to_string()),
            ("NP_CLUSTER_ROLE", svc.fx.set.cluster_role.clone()),
            ("NP_COUNT_LIVE_NAMESPACES", "true".to_owned()),
        ],
        "/readyz",
    )
    .await;
    let (addr, internal_addr) = (served.addr.clone(), served.internal.clone());
    let created = support::http(&addr, "POST", "/api/v1/namespace?ttl=5m", Some(ALICE), None).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.headers["content-type"], "application/yaml");
    let file = temp_file(&created.body);
    let ns = support::kubectl_ok(
        file.path(),
        &[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.contexts[0].context.namespace}",
        ],
    );
    assert!(ns.starts_with("np-"), "{ns}");
    support::kubectl_ok(file.path(), &["auth", "whoami"]);
    let metrics = support::http(&internal_addr, "GET", "/metrics", None, None).await;
    assert!(
        metrics
            .body
            .contains("namespace_provisioner_live_namespaces{tenant=\"default\"} 1"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("route=\"/api/v1/namespace\",method=\"POST\",status=\"201\"")
    );
    let unauth = support::http(
        &addr,
        "GET",
        "/api/v1/namespaces",
        Some("wrong-token-0123456789"),
        None,
    )
    .await;
    assert_eq!(unauth.status, 401);
    let (status, log) = served.process.terminate().await;
    assert!(status.success(), "{status}\n{log}");
    // JSON logs; no token of a caller's or of a kubeconfig's in them.
    assert!(log.lines().any(|l| l.contains("\"namespace created\"")), "{log}");
    assert!(!log.contains(ALICE));
    assert!(!log.contains(&token_of(&created.body)));
}

/// `--role-rules-file`: a namespaced Role with those rules, bound to the
/// ServiceAccount, works at once even though the grant ClusterRole is empty.
#[tokio::test]
async fn namespaced_role_rules_are_granted() {
    let rules = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: vec!["get".into(), "list".into(), "create".into()],
        ..PolicyRule::default()
    }];
    let svc = Service::build(admin().await, None, vec![], Some(rules.clone())).await;
    let (name, kubeconfig) = svc.create(ALICE, "").await;
    let role = Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(svc.fx.client.clone(), &name)
        .get("namespace-provisioner")
        .await
        .unwrap();
    assert_eq!(role.rules, Some(rules));
    let binding = Api::<RoleBinding>::namespaced(svc.fx.client.clone(), &name)
        .get("namespace-provisioner-role")
        .await
        .unwrap();
    assert_eq!(binding.role_ref.kind, "Role");
    let file = temp_file(&kubeconfig);
    eventually(Duration::from_secs(10), "the Role to take effect", || async {
        kubectl(file.path(), &["auth", "can-i", "create", "configmaps"])
            .status
            .success()
    })
    .await;
    support::kubectl_ok(file.path(), &["create", "configmap", "via-role"]);
    let denied = kubectl(file.path(), &["delete", "configmap", "via-role"]);
    assert!(!denied.status.success(), "delete was not in the rules");
}

/// The real binary against an API server that has gone away: 503 with
/// Retry-After on the API, 503 on /readyz, and the process stays up.
#[tokio::test]
async fn api_server_down_is_503_with_retry_after() {
    let doomed = support::Cluster::start();
    let kubeconfig = temp_file(&std::fs::read_to_string(&doomed.kubeconfig).unwrap());
    doomed.stop();
    let served = start_provisioner(
        "provisioner",
        &[],
        &[
            ("NP_TOKEN", ALICE.to_owned()),
            ("NP_KUBECONFIG", kubeconfig.path().display().to_string()),
        ],
        "/healthz",
    )
    .await;
    let ready = support::http(&served.internal, "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503);
    let addr = served.addr.clone();
    for (method, path) in [
        ("POST", "/api/v1/namespace"),
        ("GET", "/api/v1/namespaces"),
        ("DELETE", "/api/v1/namespaces/np-x"),
    ] {
        let answer = support::http(&addr, method, path, Some(ALICE), None).await;
        assert_problem(&answer, 503, "unavailable");
        assert_eq!(answer.headers["retry-after"], "5");
    }
    let (status, log) = served.process.terminate().await;
    assert!(status.success(), "{log}");
}

/// Issue 16: `--max-namespaces-per-tenant` is decided by a LIST of at most
/// `max + 1` of the tenant's namespaces, whatever it holds; a further page only
/// while the pages seen held namespaces that no longer count (here: expired
/// ones the reaper has not removed yet), never because of live ones.
#[tokio::test]
async fn the_tenant_limit_lists_at_most_max_plus_one() {
    let (client, log) = support::counting_client().await;
    let svc = Service::with_client(client, Some(2), vec![]).await;
    let alice: namespace_provisioner::params::TenantName = "alice".parse().unwrap();
    for _ in 0..3 {
        let expired = namespace_provisioner::desired::desired_set(
            &unique("np-expired"),
            &alice,
            namespace_provisioner::params::Expiry::from_unix(now() - 60),
            &svc.fx.set,
        );
        support::fixture::make_set(&svc.fx.client, &expired).await;
    }
    let namespace_lists = || {
        log.entries()
            .into_iter()
            .filter(|(m, p, _)| m == http::Method::GET && p.starts_with("/api/v1/namespaces?"))
            .map(|(_, p, _)| p)
            .collect::<Vec<_>>()
    };
    log.clear();
    svc.create(ALICE, "").await;
    svc.create(ALICE, "").await;
    let refused = svc.call("POST", "/api/v1/namespace", Some(ALICE), None).await;
    assert_problem(&refused, 429, "2 live namespaces");
    let lists = namespace_lists();
    assert!(!lists.is_empty());
    assert!(lists.iter().all(|p| p.contains("limit=3")), "{lists:#?}");
    // 3 expired + at most 2 live: at most two pages of 3 per create.
    assert!(lists.len() <= 6, "{lists:#?}");
    // Bob holds nothing: one LIST decides, and his create stays at the minimum.
    log.clear();
    svc.create(BOB, "").await;
    assert_eq!(namespace_lists().len(), 1, "{:#?}", log.entries());
}
