//! Benchmark (not a test): the warm pool (issue 16). Create latency of the real provisioner
//! binary over HTTP at concurrency 1, 8 and 32, with 0, 10 and 100 propagated objects: a pool
//! hit (`--claim-from-pool`, the pool filled by `reaper --once --pool-size`) against a cold
//! create (another provisioner, no pool) and the bare three-round-trip minimum done directly
//! with kube-rs (Namespace -> ServiceAccount -> TokenRequest); then the time `reaper --watch`
//! takes to refill 50 claimed members.
//!
//! 0 objects: top-level creates. N objects: children of a parent holding N Roles (Roles always
//! propagate), from the parent's pool (`controller.observatorium.io/pool-size`,
//! `reaper --once --parent-pools`) against the same create under a parent without a pool.
//!
//! `cargo bench --bench pool` (NP_BENCH_POOL_LEVELS=1,8,32 to pick concurrency levels;
//! NP_BENCH_POOL_OBJECTS=0,10,100; NP_BENCH_REFILL=50).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::bench::ms;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

const TOKEN: &str = "bench-token-0123456789abcdef";
const SELECTOR_KEY: &str = "np-bench.example.com/pool";
const READY: &str = "controller.observatorium.io/pool=ready";
/// Labels the parents this benchmark makes (not managed: no selector).
const OWNER_KEY: &str = "np-bench.example.com/owner";

struct Sample {
    latencies: Vec<Duration>,
}

impl Sample {
    fn pct(&self, p: f64) -> Duration {
        support::bench::pct(&self.latencies, p)
    }
}

/// Run `op` `count` times, `concurrency` at a time: each latency.
async fn timed<F, Fut>(count: usize, concurrency: usize, op: F) -> Sample
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
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
    Sample { latencies }
}

/// Children of `parent`, `concurrency` at a time.
async fn child_creates(addr: &str, parent: &str, count: usize, concurrency: usize) -> Sample {
    let body = serde_json::json!({"parent": parent, "ttl": "10m"}).to_string();
    timed(count, concurrency, || {
        let body = body.clone();
        async move {
            let answer = support::http(addr, "POST", "/api/v1/namespaces", Some(TOKEN), Some(&body)).await;
            assert_eq!(answer.status, 201, "{}", answer.body);
        }
    })
    .await
}

/// A parent (owner-labelled, not managed) every tenant may use, holding `roles` Roles, with
/// a pool of `pool` children when non-zero.
async fn parent_with(client: &Client, owner: &str, roles: usize, pool: usize) -> String {
    let name = support::unique("np-bench-parent");
    let mut annotations = std::collections::BTreeMap::from([(
        "controller.observatorium.io/allowed-tenants".to_owned(),
        "*".to_owned(),
    )]);
    if pool > 0 {
        annotations.insert(
            "controller.observatorium.io/pool-size".to_owned(),
            pool.to_string(),
        );
    }
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([(OWNER_KEY.to_owned(), owner.to_owned())].into()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    let api = Api::<Role>::namespaced(client.clone(), &name);
    futures::stream::iter(0..roles)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &Role {
                        metadata: ObjectMeta {
                            name: Some(format!("role-{i:03}")),
                            ..ObjectMeta::default()
                        },
                        rules: Some(vec![support::rule(&[""], &["configmaps"], &["get"])]),
                    },
                )
                .await
                .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    name
}

async fn creates(addr: &str, count: usize, concurrency: usize) -> Sample {
    timed(count, concurrency, || async move {
        let answer = support::http(addr, "POST", "/api/v1/namespace?ttl=10m", Some(TOKEN), None).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
    })
    .await
}

/// The physical minimum of a cold create: the three dependent API calls, nothing else.
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
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name_any());
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

/// Ready, live members of the top-level pool of `selector`.
async fn ready(client: &Client, selector: &str) -> usize {
    Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{selector},{READY}")))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .count()
}

fn reaper_args(selector: &str, grant: &str) -> Vec<String> {
    [
        "--kubeconfig",
        &support::cluster().kubeconfig.display().to_string(),
        "--selector",
        selector,
        "--cluster-role",
        grant,
        "--skip-preflight",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `reaper --once --pool-size size`.
fn fill(selector: &str, grant: &str, size: usize) {
    fill_with(selector, grant, &["--pool-size", &size.to_string()]);
}

/// `reaper --once` keeping pools with `args`.
fn fill_with(selector: &str, grant: &str, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_reaper"))
        .args(reaper_args(selector, grant))
        .args(["--once", "--concurrency", "16"])
        .args(args)
        .env("NP_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Kubernetes API requests the provisioner has sent, by verb and resource, summed.
async fn kube_requests(internal: &str) -> u64 {
    let text = support::http(internal, "GET", "/metrics", None, None).await.body;
    text.lines()
        .filter(|l| l.starts_with("namespace_provisioner_kubernetes_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Creates answered from any pool (the counter is by pool), summed.
async fn claims(internal: &str) -> f64 {
    let text = support::http(internal, "GET", "/metrics", None, None).await.body;
    text.lines()
        .filter(|l| l.starts_with("namespace_provisioner_pool_claims_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    support::bench::main("pool", run());
}

async fn run() {
    let levels = support::bench::env_list("NP_BENCH_POOL_LEVELS", "1,8,32");
    let refill = support::bench::env_list("NP_BENCH_REFILL", "50")[0];
    let cluster = support::cluster();
    let admin = cluster.client().await;
    let grant = support::unique("np-bench-grant");
    support::create_cluster_role(&admin, &grant, Vec::new()).await;
    let pool_value = support::unique("pool");
    let cold_value = support::unique("cold");
    let bare_value = support::unique("bare");
    let pool_selector = format!("{SELECTOR_KEY}={pool_value}");
    let provisioner = |name: &'static str, selector: String, claim: bool| {
        let grant = grant.clone();
        async move {
            let mut env = vec![
                ("NP_TOKEN", TOKEN.to_owned()),
                (
                    "NP_KUBECONFIG",
                    support::cluster().kubeconfig.display().to_string(),
                ),
                ("NP_SELECTOR", selector),
                ("NP_CLUSTER_ROLE", grant),
                ("NP_LOG", "warn".to_owned()),
            ];
            if claim {
                env.push(("NP_CLAIM_FROM_POOL", "true".to_owned()));
            }
            support::process::start_provisioner(name, &[], &env, "/readyz").await
        }
    };
    let pooled = provisioner("provisioner (pool)", pool_selector.clone(), true).await;
    let cold = provisioner(
        "provisioner (cold)",
        format!("{SELECTOR_KEY}={cold_value}"),
        false,
    )
    .await;

    // Warm every path (connections, apiserver caches).
    fill(&pool_selector, &grant, 10);
    creates(&pooled.addr, 10, 4).await;
    creates(&cold.addr, 10, 4).await;
    bare(&admin, &bare_value, 10, 4).await;

    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let count = 100;
    let mut minimum = std::collections::BTreeMap::new();
    for &concurrency in &levels {
        minimum.insert(concurrency, bare(&admin, &bare_value, count, concurrency).await);
    }
    println!(
        "\nwarm pool: create latency, pool hit vs cold vs the bare 3-round-trip minimum ({build} build; \
         0 objects: top-level creates; N objects: children of a parent holding N Roles, all propagated)\n"
    );
    println!(
        "| propagated objects | concurrency | creates | pool hits | hit p50 ms | hit p99 ms | cold p50 ms | cold p99 ms | bare p50 ms | bare p99 ms | hit/bare p50 | hit/cold p50 | API requests/hit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let owner = support::unique("owner");
    for objects in support::bench::env_list("NP_BENCH_POOL_OBJECTS", "0,10,100") {
        // Children go under one parent with a pool and one without, both holding the Roles.
        let parents = if objects == 0 {
            None
        } else {
            Some((
                parent_with(&admin, &owner, objects, count).await,
                parent_with(&admin, &owner, objects, 0).await,
            ))
        };
        for &concurrency in &levels {
            let before = claims(&pooled.internal).await;
            let requests = kube_requests(&pooled.internal).await;
            let (hit, cold_sample) = match &parents {
                None => {
                    fill(&pool_selector, &grant, count);
                    let hit = creates(&pooled.addr, count, concurrency).await;
                    (hit, creates(&cold.addr, count, concurrency).await)
                }
                Some((pooled_parent, cold_parent)) => {
                    fill_with(&pool_selector, &grant, &["--parent-pools"]);
                    let hit = child_creates(&pooled.addr, pooled_parent, count, concurrency).await;
                    (
                        hit,
                        child_creates(&cold.addr, cold_parent, count, concurrency).await,
                    )
                }
            };
            let hits = claims(&pooled.internal).await - before;
            let per_hit = (kube_requests(&pooled.internal).await - requests) as f64 / count as f64;
            let base = &minimum[&concurrency];
            println!(
                "| {objects} | {concurrency} | {count} | {hits:.0} | {} | {} | {} | {} | {} | {} | {:.2}x | {:.2}x | {per_hit:.1} |",
                ms(hit.pct(0.5)),
                ms(hit.pct(0.99)),
                ms(cold_sample.pct(0.5)),
                ms(cold_sample.pct(0.99)),
                ms(base.pct(0.5)),
                ms(base.pct(0.99)),
                hit.pct(0.5).as_secs_f64() / base.pct(0.5).as_secs_f64(),
                hit.pct(0.5).as_secs_f64() / cold_sample.pct(0.5).as_secs_f64(),
            );
        }
    }

    // Refill in watch mode: a pool of `refill`, all claimed, then the time until it is full again.
    support::bench::delete_all(&admin, &pool_selector).await;
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let mut args = reaper_args(&pool_selector, &grant);
    args.extend(
        [
            "--watch",
            "--pool-size",
            &refill.to_string(),
            "--pool-refill-interval",
            "10m",
            "--lease-name",
            &support::unique("np-bench-pool"),
            "--lease-namespace",
            "default",
            "--metrics-addr",
            &metrics,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut watcher = support::Process::spawn(
        "reaper --watch (pool bench)",
        env!("CARGO_BIN_EXE_reaper"),
        &args,
        &[("NP_LOG", "warn".to_owned())],
    );
    support::wait_http_ok(&metrics, "/healthz", &mut watcher).await;
    let started = Instant::now();
    support::eventually(Duration::from_secs(300), "the first fill", || async {
        ready(&admin, &pool_selector).await >= refill
    })
    .await;
    let first_fill = started.elapsed();
    let before = claims(&pooled.internal).await;
    creates(&pooled.addr, refill, 8).await;
    let claimed = claims(&pooled.internal).await - before;
    let emptied = Instant::now();
    support::eventually(Duration::from_secs(300), "the refill", || async {
        ready(&admin, &pool_selector).await >= refill
    })
    .await;
    let refilled = emptied.elapsed();
    println!(
        "\nreaper --watch, --pool-size {refill}, --pool-refill-interval 10m (refills woken by the claims): first fill {:.1} s; \
         {claimed:.0} members claimed at concurrency 8, pool full again {:.1} s after the last claim\n",
        first_fill.as_secs_f64(),
        refilled.as_secs_f64()
    );
    let _ = watcher.terminate().await;
    let _ = pooled.process.terminate().await;
    let _ = cold.process.terminate().await;
    support::bench::delete_all(&admin, &format!("{OWNER_KEY}={owner}")).await;
    for value in [&pool_value, &cold_value, &bare_value] {
        support::bench::delete_all(&admin, &format!("{SELECTOR_KEY}={value}")).await;
    }
    let _ = Api::<ClusterRole>::all(admin)
        .delete(&grant, &DeleteParams::default())
        .await;
}
