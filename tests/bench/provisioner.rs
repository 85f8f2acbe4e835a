//! Benchmark (not a test): create latency and throughput of the real
//! provisioner binary over HTTP at concurrency 1, 8 and 32, against the bare
//! minimum for the same work done directly with kube-rs (create Namespace ->
//! ServiceAccount -> TokenRequest: three sequential API round trips), plus
//! Kubernetes API requests per create and the provisioner's RSS.
//!
//! `cargo bench --bench provisioner` (NP_BENCH_CREATES=1,8,32 to pick levels).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::bench::{ms, status_kib};

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

const TOKEN: &str = "bench-token-0123456789abcdef";
const SELECTOR_KEY: &str = "np-bench.example.com/provisioner";

struct Sample {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Sample {
    fn pct(&self, p: f64) -> Duration {
        support::bench::pct(&self.latencies, p)
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

async fn kube_requests(internal: &str) -> u64 {
    let text = support::http(internal, "GET", "/metrics", None, None).await.body;
    text.lines()
        .filter(|l| l.starts_with("namespace_provisioner_kubernetes_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Run `op` `count` times, `concurrency` at a time: each latency and the wall time.
async fn timed<F, Fut>(count: usize, concurrency: usize, op: F) -> Sample
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let latencies = futures::stream::iter(0..count)
        .map(|_| {
            let call = op();
            async move {
                let t = Instant::now();
                call.await;
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    Sample {
        latencies,
        wall: started.elapsed(),
    }
}

async fn via_provisioner(addr: &str, count: usize, concurrency: usize) -> Sample {
    timed(count, concurrency, || async move {
        let answer = support::http(addr, "POST", "/api/v1/namespace?ttl=10m", Some(TOKEN), None).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
    })
    .await
}

/// The physical minimum: the three dependent API calls, nothing else.
async fn bare(client: &Client, selector_value: &str, count: usize, concurrency: usize) -> Sample {
    timed(count, concurrency, || async move {
        let ns = Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        generate_name: Some("bare-".into()),
                        labels: Some([(SELECTOR_KEY.to_owned(), selector_value.to_owned())].into()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                },
            )
            .await
            .unwrap();
        let name = ns.name_any();
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), &name);
        sas.create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("namespace-provisioner".into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        sas.create_token_request("namespace-provisioner", &PostParams::default(), &request)
            .await
            .unwrap();
    })
    .await
}

fn main() {
    support::bench::main("provisioner", run());
}

async fn run() {
    let levels = support::bench::env_list("NP_BENCH_CREATES", "1,8,32");
    let cluster = support::cluster();
    let admin = cluster.client().await;
    let grant = support::unique("np-bench-grant");
    support::create_cluster_role(&admin, &grant, Vec::new()).await;
    let prov_value = support::unique("prov");
    let bare_value = support::unique("bare");
    let served = support::process::start_provisioner(
        "provisioner",
        &[],
        &[
            ("NP_TOKEN", TOKEN.to_owned()),
            ("NP_KUBECONFIG", cluster.kubeconfig.display().to_string()),
            ("NP_SELECTOR", format!("{SELECTOR_KEY}={prov_value}")),
            ("NP_CLUSTER_ROLE", grant.clone()),
            ("NP_LOG", "warn".to_owned()),
        ],
        "/readyz",
    )
    .await;
    let (addr, internal, process) = (served.addr, served.internal, served.process);
    let pid = process.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = status_kib(pid, "VmRSS");

    // Warm both paths (connections, apiserver caches).
    via_provisioner(&addr, 10, 4).await;
    bare(&admin, &bare_value, 10, 4).await;

    println!("\nprovisioner create vs bare minimum (Namespace -> ServiceAccount -> TokenRequest)\n");
    println!(
        "| concurrency | creates | provisioner p50 ms | p99 ms | creates/s | bare p50 ms | bare p99 ms | bare creates/s | p50 ratio | API requests/create |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for concurrency in levels {
        let count = (concurrency * 25).clamp(100, 400);
        let before = kube_requests(&internal).await;
        let prov = via_provisioner(&addr, count, concurrency).await;
        let calls = (kube_requests(&internal).await - before) as f64 / count as f64;
        let base = bare(&admin, &bare_value, count, concurrency).await;
        println!(
            "| {concurrency} | {count} | {} | {} | {:.0} | {} | {} | {:.0} | {:.2}x | {calls:.1} (bare: 3) |",
            ms(prov.pct(0.5)),
            ms(prov.pct(0.99)),
            prov.throughput(),
            ms(base.pct(0.5)),
            ms(base.pct(0.99)),
            base.throughput(),
            prov.pct(0.5).as_secs_f64() / base.pct(0.5).as_secs_f64(),
        );
    }
    let loaded_rss = status_kib(pid, "VmRSS");
    let peak_rss = status_kib(pid, "VmHWM");
    println!(
        "\nprovisioner RSS: idle {:.1} MiB, after load {:.1} MiB, peak {:.1} MiB\n",
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    let (status, _) = process.terminate().await;
    assert!(status.success());
    support::bench::delete_all(&admin, &format!("{SELECTOR_KEY}={prov_value}")).await;
    support::bench::delete_all(&admin, &format!("{SELECTOR_KEY}={bare_value}")).await;
    let _ = Api::<ClusterRole>::all(admin)
        .delete(&grant, &DeleteParams::default())
        .await;
}
