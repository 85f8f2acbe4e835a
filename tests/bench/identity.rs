//! Benchmark (not a test): create latency of the real provisioner binary
//! with static tenant tokens vs Kubernetes identities, with the TokenReview
//! cache cold (`--token-review-cache-ttl 0s`: a TokenReview on every request)
//! and warm (default cache, token seen before), plus Kubernetes API requests
//! per create. Every identity create also makes one SubjectAccessReview.
//!
//! `cargo bench --bench identity` (NP_BENCH_CREATES=1,8 picks concurrency levels).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::bench::{ms, pct};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

const TOKEN: &str = "bench-token-0123456789abcdef";
const SELECTOR_KEY: &str = "np-bench.example.com/identity";

async fn kube_requests(internal: &str) -> u64 {
    let text = support::http(internal, "GET", "/metrics", None, None).await.body;
    text.lines()
        .filter(|l| l.starts_with("namespace_provisioner_kubernetes_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn creates(addr: &str, token: &str, count: usize, concurrency: usize) -> Vec<Duration> {
    futures::stream::iter(0..count)
        .map(|_| async move {
            let t = Instant::now();
            let answer = support::http(
                addr,
                "POST",
                "/api/v1/namespaces",
                Some(token),
                Some(r#"{"ttl":"10m"}"#),
            )
            .await;
            assert_eq!(answer.status, 201, "{}", answer.body);
            t.elapsed()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

fn main() {
    support::bench::main("identity", run());
}

async fn run() {
    let levels = support::bench::env_list("NP_BENCH_CREATES", "1,8");
    let cluster = support::cluster();
    let admin = cluster.client().await;
    let out = support::kubectl(
        &cluster.kubeconfig,
        &["apply", "-f", "function/access-clusterroles.yaml"],
    );
    assert!(out.status.success(), "{}", support::text(&out));
    let grant = support::unique("np-bench-grant");
    support::create_cluster_role(&admin, &grant, Vec::new()).await;
    // The caller: a ServiceAccount allowed to create (cluster-wide).
    let callers = support::unique("bench-callers");
    support::create_namespace(&admin, &callers, &[]).await;
    Api::<ServiceAccount>::namespaced(admin.clone(), &callers)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("caller".into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let binding = support::unique("np-bench-creator");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(binding.clone()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: "namespace-provisioner:creator".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "caller".into(),
                    namespace: Some(callers.clone()),
                    api_group: None,
                }]),
            },
        )
        .await
        .unwrap();
    let kubeconfig = support::service_account_kubeconfig(&admin, &callers, "caller").await;
    let value: serde_json::Value = serde_yaml_ng::from_str(&kubeconfig).unwrap();
    let identity = value["users"][0]["user"]["token"].as_str().unwrap().to_owned();

    let value = support::unique("idb");
    let selector = format!("{SELECTOR_KEY}={value}");
    let start = |cache_ttl: &str| {
        let envs = vec![
            ("NP_TOKEN", TOKEN.to_owned()),
            ("NP_AUTH", "both".to_owned()),
            ("NP_TOKEN_REVIEW_CACHE_TTL", cache_ttl.to_owned()),
            ("NP_KUBECONFIG", cluster.kubeconfig.display().to_string()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_CLUSTER_ROLE", grant.clone()),
            ("NP_LOG", "warn".to_owned()),
        ];
        async move {
            support::process::start_provisioner("provisioner-bench-identity", &[], &envs, "/readyz").await
        }
    };
    let warm = start("10m").await;
    let cold = start("0s").await;
    // Warm connections and caches (the warm provisioner has now seen the token).
    for served in [&warm, &cold] {
        creates(&served.addr, TOKEN, 5, 1).await;
        creates(&served.addr, &identity, 5, 1).await;
    }

    println!(
        "\ncreate latency: static tenant token vs Kubernetes identity (TokenReview cache cold / warm)\n"
    );
    println!("| concurrency | creates | auth | p50 ms | p99 ms | p50 vs static | API requests/create |");
    println!("|---|---|---|---|---|---|---|");
    for concurrency in levels {
        let count = (concurrency * 20).clamp(60, 160);
        let mut static_p50 = Duration::ZERO;
        for (label, served, token) in [
            ("static", &warm, TOKEN),
            ("identity, warm cache", &warm, identity.as_str()),
            ("identity, cold (no cache)", &cold, identity.as_str()),
        ] {
            let before = kube_requests(&served.internal).await;
            let latencies = creates(&served.addr, token, count, concurrency).await;
            let calls = (kube_requests(&served.internal).await - before) as f64 / count as f64;
            let p50 = pct(&latencies, 0.5);
            if label == "static" {
                static_p50 = p50;
            }
            println!(
                "| {concurrency} | {count} | {label} | {} | {} | {:.2}x | {calls:.1} |",
                ms(p50),
                ms(pct(&latencies, 0.99)),
                p50.as_secs_f64() / static_p50.as_secs_f64(),
            );
        }
    }
    for served in [warm, cold] {
        let (status, _) = served.process.terminate().await;
        assert!(status.success());
    }
    support::bench::delete_all(&admin, &selector).await;
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(&binding, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(admin.clone())
        .delete(&grant, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(admin)
        .delete(&callers, &DeleteParams::background())
        .await;
}
