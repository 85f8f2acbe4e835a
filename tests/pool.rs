//! The warm pool (issue 16) against the real control plane: `reaper --once` (the real binary)
//! fills a pool; a create claims a member and its kubeconfig works with the real kubectl; pool
//! members are in no tenant's list; concurrent creates never share a member (the rest go
//! cold); stale and surplus members are replaced by the expiry rule; `reaper --watch` refills
//! after claims; a parent's pool members carry the parent's propagated copies and a child
//! create claims one; no pool is kept under an aggregate budget, and a bad size says why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::api::{self, AppState};
use namespace_provisioner::auth::Tokens;
use namespace_provisioner::params::TtlPolicy;
use namespace_provisioner::provision::{Provisioner, ProvisionerConfig};
use namespace_provisioner::rules::quota::crd::HierarchicalResourceQuota;
use serde_json::json;
use support::{Answer, Fixture, Process, cluster, eventually, kubectl, metric, rule, temp_file};
use tower::ServiceExt;

const ALICE: &str = "alice-token-0123456789abcdef";
const SELECTOR_KEY: &str = "np-test.example.com/pool";
const POOL: &str = "controller.observatorium.io/pool";
const PARENT: &str = "controller.observatorium.io/parent";
const TENANT: &str = "controller.observatorium.io/tenant";
const EXPIRY: &str = "controller.observatorium.io/expiry";
const ALLOWED: &str = "controller.observatorium.io/allowed-tenants";
const POOL_SIZE: &str = "controller.observatorium.io/pool-size";

/// A fixture whose grant lets a set's ServiceAccount read and write ConfigMaps, and the
/// provisioner's router over it, claiming from the top-level pool.
struct Pool {
    fx: Fixture,
    app: Router,
    /// A second replica (its own cache of listed members), as two provisioner pods.
    other: Router,
}

impl Pool {
    async fn new() -> Pool {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let fx = Fixture::new(SELECTOR_KEY)
            .await
            .create_grant(vec![rule(&[""], &["configmaps"], &["get", "list", "create"])])
            .await;
        let config = ProvisionerConfig {
            set: fx.set.clone(),
            ttl: TtlPolicy::new(Duration::from_secs(1800), Some(Duration::from_secs(7200))).unwrap(),
            prefix: "np".parse().unwrap(),
            server: cluster().server_url(),
            ca_pem: Some(cluster().ca_pem()),
            max_namespaces_per_tenant: None,
            page_size: 500,
            max_depth: 3,
            propagation: Default::default(),
        };
        let replica = || {
            let tokens = Tokens::parse(&format!("alice {ALICE}\n")).unwrap();
            let provisioner = Provisioner::new(fx.client.clone(), config.clone()).with_pool_claims(true);
            let state = AppState::new(provisioner, Some(tokens)).unwrap();
            api::router(state, Duration::from_secs(120))
        };
        Pool {
            app: replica(),
            other: replica(),
            fx,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> Answer {
        self.call_on(&self.app, method, uri, body).await
    }

    async fn call_on(&self, app: &Router, method: &str, uri: &str, body: Option<&str>) -> Answer {
        let request = support::request(method, uri, Some(ALICE), body).map(Body::from);
        support::answer(app.clone().oneshot(request).await.unwrap()).await
    }

    /// POST /api/v1/namespaces as alice; the new namespace's name and kubeconfig.
    async fn create(&self, body: serde_json::Value) -> (String, String) {
        self.create_on(&self.app, body).await
    }

    async fn create_on(&self, app: &Router, body: serde_json::Value) -> (String, String) {
        let answer = self
            .call_on(app, "POST", "/api/v1/namespaces", Some(&body.to_string()))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        let json = answer.json();
        (
            json["name"].as_str().unwrap().to_owned(),
            json["kubeconfig"].as_str().unwrap().to_owned(),
        )
    }

    /// The real `reaper` binary once, keeping pools with `args`.
    fn reaper_once(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_reaper"))
            .args(["--kubeconfig", &cluster().kubeconfig.display().to_string()])
            .args(["--selector", &self.fx.selector.to_string()])
            .args(["--cluster-role", &self.fx.set.cluster_role])
            .args(["--max-ttl", "2h", "--once"])
            .args(args)
            .env_remove("NP_SELECTOR")
            .env("NP_LOG", "info")
            .output()
            .expect("run the reaper binary");
        assert!(
            out.status.success(),
            "reaper --once failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// This test's pool members (`parent`: of that parent's pool, else top-level), live ones only.
    async fn members(&self, parent: Option<&str>, state: &str) -> Vec<Namespace> {
        let place = match parent {
            Some(parent) => format!("{PARENT}={parent}"),
            None => format!("!{PARENT}"),
        };
        let selector = format!("{},{POOL}={state},{place}", self.fx.selector.to_label_selector());
        Api::<Namespace>::all(self.fx.client.clone())
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .filter(|ns| {
                ns.labels()
                    .get(EXPIRY)
                    .and_then(|e| e.parse::<i64>().ok())
                    .is_some_and(|e| e > support::now())
            })
            .collect()
    }

    fn names(namespaces: &[Namespace]) -> BTreeSet<String> {
        namespaces.iter().map(ResourceExt::name_any).collect()
    }

    /// A parent every tenant may create children under, with a pool of `size` and room for
    /// `max_children` children.
    async fn parent(&self, size: u32, max_children: u32) -> String {
        let name = self.fx.create_unmanaged("pool-parent", BTreeMap::new()).await;
        let annotations = json!({
            ALLOWED: "*",
            POOL_SIZE: size.to_string(),
            "controller.observatorium.io/max-children": max_children.to_string(),
        });
        Api::<Namespace>::all(self.fx.client.clone())
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await
            .unwrap();
        name
    }
}

/// The ServiceAccount and grant RoleBinding of a set exist in `namespace`.
async fn has_set(client: &Client, namespace: &str) -> bool {
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .get_opt("namespace-provisioner")
        .await
        .unwrap();
    let rb = Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .get_opt("namespace-provisioner")
        .await
        .unwrap();
    sa.is_some() && rb.is_some()
}

#[tokio::test]
async fn once_fills_the_pool_and_a_create_claims_a_member_whose_kubeconfig_works() {
    let pool = Pool::new().await;
    let client = pool.fx.client.clone();
    let out = pool.reaper_once(&["--pool-size", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pool (top-level): wanted 3, ready 0, filled 3"),
        "{text}"
    );
    let members = pool.members(None, "ready").await;
    assert_eq!(members.len(), 3, "{members:?}");
    for member in &members {
        let name = member.name_any();
        assert!(has_set(&client, &name).await, "{name} lacks its set");
        assert!(!member.labels().contains_key(TENANT), "a member has no tenant");
    }
    let before = Pool::names(&members);

    let (name, kubeconfig) = pool.create(json!({"ttl": "20m"})).await;
    assert!(before.contains(&name), "{name} was not claimed from {before:?}");
    let claimed = Api::<Namespace>::all(client.clone()).get(&name).await.unwrap();
    assert_eq!(claimed.labels().get(TENANT).map(String::as_str), Some("alice"));
    assert!(
        !claimed.labels().contains_key(POOL),
        "the claim removes the pool label"
    );
    let expiry: i64 = claimed.labels()[EXPIRY].parse().unwrap();
    assert!(
        (expiry - support::now() - 1200).abs() < 60,
        "expiry {expiry} is not 20m out"
    );

    // The kubeconfig works at once, inside the namespace, with the real kubectl.
    let file = temp_file(&kubeconfig);
    let made = kubectl(
        file.path(),
        &["create", "configmap", "from-pool", "--from-literal=a=b"],
    );
    assert!(made.status.success(), "{}", support::text(&made));
    let got = kubectl(file.path(), &["get", "configmap", "from-pool", "-o", "name"]);
    assert!(
        support::text(&got).contains("configmap/from-pool"),
        "{}",
        support::text(&got)
    );

    // The tenant's list shows the claimed namespace and no member.
    let list = pool.call("GET", "/api/v1/namespaces", None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let listed: BTreeSet<String> = list.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, BTreeSet::from([name.clone()]));

    // The next sweep refills the pool and brings the claimed set's tenant label along.
    pool.reaper_once(&["--pool-size", "3"]);
    let after = Pool::names(&pool.members(None, "ready").await);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(!after.contains(&name));
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &name)
        .get("namespace-provisioner")
        .await
        .unwrap();
    assert_eq!(sa.labels().get(TENANT).map(String::as_str), Some("alice"));
}

#[tokio::test]
async fn concurrent_creates_never_share_a_member_and_the_rest_go_cold() {
    let pool = Pool::new().await;
    pool.reaper_once(&["--pool-size", "3"]);
    let members = Pool::names(&pool.members(None, "ready").await);
    assert_eq!(members.len(), 3);
    // Two replicas, each with its own cache of listed members: only the conditional write
    // keeps them apart.
    let creates =
        (0..10).map(|i| pool.create_on(if i % 2 == 0 { &pool.app } else { &pool.other }, json!({})));
    let names: Vec<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let distinct: BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        distinct.len(),
        10,
        "two creates got the same namespace: {names:?}"
    );
    let claimed = names.iter().filter(|n| members.contains(*n)).count();
    assert!(
        (1..=3).contains(&claimed),
        "{claimed} claimed of {members:?}: {names:?}"
    );
    assert!(pool.members(None, "ready").await.len() + claimed == 3);
    for name in &names {
        let ns = Api::<Namespace>::all(pool.fx.client.clone())
            .get(name)
            .await
            .unwrap();
        assert_eq!(
            ns.labels().get(TENANT).map(String::as_str),
            Some("alice"),
            "{name}"
        );
        assert!(has_set(&pool.fx.client, name).await, "{name}");
    }
}

#[tokio::test]
async fn one_replicas_concurrent_creates_each_claim_a_member_of_their_own() {
    let pool = Pool::new().await;
    pool.reaper_once(&["--pool-size", "16"]);
    let members = Pool::names(&pool.members(None, "ready").await);
    assert_eq!(members.len(), 16);
    // One replica: its claims share one LIST of the whole pool and never race each other,
    // so 16 concurrent creates take all 16 members and none goes cold.
    let creates = (0..16).map(|_| pool.create(json!({})));
    let names: BTreeSet<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names, members,
        "every create claims a member, each a different one"
    );
    assert!(pool.members(None, "ready").await.is_empty());
}

#[tokio::test]
async fn stale_and_surplus_members_are_replaced_through_the_expiry_rule() {
    let pool = Pool::new().await;
    let client = pool.fx.client.clone();
    pool.reaper_once(&["--pool-size", "2", "--pool-max-age", "30m"]);
    let members = pool.members(None, "ready").await;
    assert_eq!(members.len(), 2);
    // A member's expiry is its max age.
    for member in &members {
        let expiry: i64 = member.labels()[EXPIRY].parse().unwrap();
        assert!((expiry - support::now() - 1800).abs() < 120, "expiry {expiry}");
    }
    // One goes stale (its max age passes): the next sweep deletes it and makes another.
    let stale = members[0].name_any();
    Api::<Namespace>::all(client.clone())
        .patch(
            &stale,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {EXPIRY: (support::now() - 1).to_string()}}})),
        )
        .await
        .unwrap();
    let out = pool.reaper_once(&["--pool-size", "2", "--pool-max-age", "30m"]);
    assert!(
        support::fixture::is_terminating(&client, &stale).await,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let now_ready = Pool::names(&pool.members(None, "ready").await);
    assert_eq!(now_ready.len(), 2, "{now_ready:?}");
    assert!(!now_ready.contains(&stale));

    // A smaller pool: the surplus is made due, and the sweep after deletes it.
    let out = pool.reaper_once(&["--pool-size", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("expired 1"), "{text}");
    assert_eq!(pool.members(None, "ready").await.len(), 1);
    pool.reaper_once(&["--pool-size", "1"]);
    let live: Vec<Namespace> = pool
        .fx
        .managed()
        .await
        .into_iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(live.len(), 1, "{:?}", Pool::names(&live));
}

#[tokio::test]
async fn watch_refills_the_pool_after_claims() {
    let pool = Pool::new().await;
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let lease = support::unique("np-pool-lease");
    let args: Vec<String> = [
        "--kubeconfig",
        &cluster().kubeconfig.display().to_string(),
        "--selector",
        &pool.fx.selector.to_string(),
        "--cluster-role",
        &pool.fx.set.cluster_role,
        "--max-ttl",
        "2h",
        "--watch",
        "--pool-size",
        "2",
        // Longer than the test: only the claims' watch events can trigger the refill.
        "--pool-refill-interval",
        "10m",
        "--lease-name",
        &lease,
        "--lease-namespace",
        "default",
        "--lease-duration",
        "3s",
        "--metrics-addr",
        &metrics,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut reaper = Process::spawn(
        "reaper --watch (pool)",
        env!("CARGO_BIN_EXE_reaper"),
        &args,
        &[("NP_LOG", "info".to_owned())],
    );
    support::wait_http_ok(&metrics, "/healthz", &mut reaper).await;
    let first = eventually(Duration::from_secs(60), "2 ready members", || async {
        let ready = Pool::names(&pool.members(None, "ready").await);
        (ready.len() == 2).then_some(ready)
    })
    .await;
    let (a, _) = pool.create(json!({})).await;
    let (b, _) = pool.create(json!({})).await;
    assert!(
        first.contains(&a) && first.contains(&b),
        "{a}, {b} not from {first:?}"
    );
    let refilled = eventually(Duration::from_secs(60), "the pool refilled", || async {
        let ready = Pool::names(&pool.members(None, "ready").await);
        (ready.len() == 2 && ready.is_disjoint(&first)).then_some(ready)
    })
    .await;
    assert_eq!(refilled.len(), 2);
    eventually(Duration::from_secs(30), "the pool gauge", || async {
        metric(
            &metrics,
            "namespace_provisioner_reaper_pool_ready{pool=\"(top-level)\"}",
        )
        .await
            == Some(2.0)
    })
    .await;
    assert!(
        metric(&metrics, "namespace_provisioner_reaper_pool_filled_total").await >= Some(4.0),
        "{}",
        reaper.log()
    );
    reaper.assert_running();
    let (status, log) = reaper.terminate().await;
    assert!(status.success(), "{log}");
}

#[tokio::test]
async fn a_parents_pool_members_carry_its_copies_and_a_child_create_claims_one() {
    let pool = Pool::new().await;
    let client = pool.fx.client.clone();
    let parent = pool.parent(2, 1).await;
    // A Role in the parent: Roles always propagate to its children.
    Api::<Role>::namespaced(client.clone(), &parent)
        .create(
            &PostParams::default(),
            &Role {
                metadata: ObjectMeta {
                    name: Some("team-reader".into()),
                    ..ObjectMeta::default()
                },
                rules: Some(vec![rule(&[""], &["configmaps"], &["get"])]),
            },
        )
        .await
        .unwrap();
    pool.reaper_once(&["--parent-pools"]);
    let members = pool.members(Some(&parent), "ready").await;
    assert_eq!(members.len(), 2, "{members:?}");
    for member in &members {
        let name = member.name_any();
        let copy = Api::<Role>::namespaced(client.clone(), &name)
            .get_opt("team-reader")
            .await
            .unwrap();
        let copy = copy.unwrap_or_else(|| panic!("{name} lacks the parent's Role"));
        assert_eq!(
            copy.labels().get("controller.observatorium.io/inherited-from"),
            Some(&parent)
        );
        assert_eq!(
            member
                .labels()
                .get(&format!("{name}.tree.controller.observatorium.io/depth"))
                .map(String::as_str),
            Some("0")
        );
        assert_eq!(
            member.annotations().get("controller.observatorium.io/parent-uid"),
            Api::<Namespace>::all(client.clone())
                .get(&parent)
                .await
                .unwrap()
                .uid()
                .as_ref()
        );
    }
    let (child, _) = pool.create(json!({"parent": parent, "ttl": "10m"})).await;
    assert!(
        Pool::names(&members).contains(&child),
        "{child} not claimed from {members:?}"
    );
    let claimed = Api::<Namespace>::all(client.clone()).get(&child).await.unwrap();
    assert_eq!(claimed.labels().get(TENANT).map(String::as_str), Some("alice"));
    assert_eq!(claimed.labels().get(PARENT), Some(&parent));
    // Unclaimed members are not children yet: `max-children` 1 let the claim through, and
    // counts the claimed child now, not the member still waiting.
    let second = pool
        .call(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({"parent": parent}).to_string()),
        )
        .await;
    assert_eq!(second.status, 409, "{}", second.body);
    assert!(
        second.body.contains("already has 1 live children"),
        "{}",
        second.body
    );
    assert_eq!(pool.members(Some(&parent), "ready").await.len(), 1);
}

#[tokio::test]
async fn no_pool_under_an_aggregate_budget_and_a_bad_size_says_what_to_write() {
    let pool = Pool::new().await;
    let client = pool.fx.client.clone();
    support::kubectl_ok(
        &cluster().kubeconfig,
        &["apply", "-f", "cronjob/base/crd-hierarchicalresourcequota.yaml"],
    );
    let budgets = Api::<HierarchicalResourceQuota>::all(client.clone());
    eventually(Duration::from_secs(30), "the HRQ CRD to be served", || {
        let budgets = budgets.clone();
        async move { budgets.list(&Default::default()).await.is_ok() }
    })
    .await;
    let budgeted = pool.parent(2, 10).await;
    let hrq: HierarchicalResourceQuota = serde_json::from_value(json!({
        "apiVersion": "controller.observatorium.io/v1alpha1",
        "kind": "HierarchicalResourceQuota",
        "metadata": {"name": "budget", "namespace": budgeted},
        "spec": {"hard": {"count/pods": "10"}},
    }))
    .unwrap();
    Api::<HierarchicalResourceQuota>::namespaced(client.clone(), &budgeted)
        .create(&PostParams::default(), &hrq)
        .await
        .unwrap();
    let bad = pool.parent(2, 10).await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &bad,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {POOL_SIZE: "lots"}}})),
        )
        .await
        .unwrap();
    let out = pool.reaper_once(&["--parent-pools"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("pool {budgeted}: wanted 0, ready 0, filled 0"))
            && text.contains(&format!(
                "parent namespace {budgeted} has a HierarchicalResourceQuota: pools are not kept under an aggregate budget"
            )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "annotation controller.observatorium.io/pool-size on parent namespace {bad} is \"lots\": it must be a whole number from 0 to 100"
        )),
        "{text}"
    );
    assert!(pool.members(Some(&budgeted), "ready").await.is_empty());
    assert!(pool.members(Some(&bad), "ready").await.is_empty());
}
