//! Propagation benchmark against a fresh local control plane (not a timed test):
//! `NP_BENCH_SOURCES` (default 30) ConfigMaps in one parent × `NP_BENCH_CHILDREN` (default
//! `100`, comma-separated list) children:
//!
//! 1. first tree sweep (every copy created, every tree label set): time, API requests, writes;
//! 2. steady-state tree sweep (nothing to do) next to the bare LIST of the same objects
//!    (Namespaces + ConfigMaps, same page size): time and requests;
//! 3. peak RSS of this process (it holds what the sweep holds);
//! 4. watch mode: one source edit until every copy carries it, next to the bare minimum (the
//!    same PUTs, one per copy, sent directly at the same concurrency), and peak RSS after it
//!    (the watch holds every Namespace and propagated object in its reflector stores).
//!
//! Run: `cargo bench --bench hierarchy` (release), or `cargo test --bench hierarchy -- --bench`
//! (debug build, what a shared machine affords). Prints a Markdown table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use namespace_provisioner::propagate::Propagation;
use namespace_provisioner::reaper::brake::BrakeConfig;
use namespace_provisioner::reaper::hierarchy::{self, TreeSweepConfig};
use namespace_provisioner::reaper::tree_watch::TreeWatch;
use namespace_provisioner::reaper::watch::{LeaseConfig, WatchConfig, watch_with_trees};
use namespace_provisioner::reaper::{self, plan::PlanConfig};
use namespace_provisioner::rules::hierarchy::config::PropagationConfig;
use namespace_provisioner::rules::hierarchy::keys;

const PAGE_SIZE: u32 = 500;
const CONFIG: &str = "resources:\n- kind: ConfigMap\n  mode: Propagate\n";

fn main() {
    support::bench::main("hierarchy", bench());
}

fn writes(log: &support::RequestLog) -> usize {
    log.entries()
        .iter()
        .filter(|(method, _, _)| method != http::Method::GET)
        .count()
}

async fn bench() {
    let sources = support::bench::env_list("NP_BENCH_SOURCES", "30")[0];
    let mut rows = Vec::new();
    for children in support::bench::env_list("NP_BENCH_CHILDREN", "100") {
        rows.push(run(sources, children).await);
    }
    println!(
        "\n| sources × children | copies | first sweep | requests (writes) | steady sweep | requests | bare LIST | requests | peak RSS | watch: 1 edit → all copies | bare: the same PUTs directly | peak RSS with the watch's stores |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}

async fn run(sources: usize, children: usize) -> String {
    let fx = support::Fixture::new("np-bench/hierarchy").await;
    let client = fx.client.clone();
    let parent = fx.create_unmanaged("hb-p", BTreeMap::new()).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &parent);
    for i in 0..sources {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("src-{i}")),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("k".to_string(), "v1".to_string())])),
            ..ConfigMap::default()
        };
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let namespaces = Api::<Namespace>::all(client.clone());
    let names: Vec<String> = (0..children).map(|_| support::unique("hb-c")).collect();
    futures::stream::iter(names.iter().map(|name| {
        let namespaces = namespaces.clone();
        let labels = BTreeMap::from([
            (keys::PARENT_LABEL.to_string(), parent.clone()),
            (support::fixture::OWNER_KEY.to_string(), fx.value.clone()),
        ]);
        async move {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            namespaces.create(&PostParams::default(), &ns).await.unwrap();
        }
    }))
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;

    let (counting, log) = support::counting_client().await;
    let propagation = Propagation::discover(&counting, PropagationConfig::from_yaml(CONFIG).unwrap())
        .await
        .unwrap()
        .excluding_sets(fx.selector.clone());
    let config = TreeSweepConfig {
        selector: fx.selector.clone(),
        page_size: PAGE_SIZE,
        concurrency: 16,
        dry_run: false,
        deletions_left: None,
    };
    log.clear();
    let started = Instant::now();
    let first = hierarchy::sweep(&counting, &propagation, &config, support::now())
        .await
        .unwrap();
    let first_time = started.elapsed();
    let (first_requests, first_writes) = (log.len(), writes(&log));
    assert!(first.propagation.created >= sources * children, "{first:?}");
    assert!(!first.failed(), "{:?}", first.propagation.failures);

    log.clear();
    let started = Instant::now();
    let steady = hierarchy::sweep(&counting, &propagation, &config, support::now())
        .await
        .unwrap();
    let steady_time = started.elapsed();
    let steady_requests = log.len();
    assert_eq!(steady.writes(), 0, "steady state wrote");
    assert_eq!(writes(&log), 0);

    log.clear();
    let started = Instant::now();
    let all_ns = Api::<Namespace>::all(counting.clone());
    let all_cms = Api::<ConfigMap>::all(counting.clone());
    for_each_page(&all_ns).await;
    for_each_page(&all_cms).await;
    let bare_time = started.elapsed();
    let bare_requests = log.len();
    let rss = reaper::peak_rss_kib().map_or("?".to_string(), |k| format!("{} MiB", k / 1024));

    let (watch_time, bare_writes_time) = watch_one_edit(&fx, &propagation, &parent, children).await;
    let watch_rss = reaper::peak_rss_kib().map_or("?".to_string(), |k| format!("{} MiB", k / 1024));
    format!(
        "| {sources} × {children} | {} | {:.2} s | {first_requests} ({first_writes}) | {:.2} s | {steady_requests} | {:.2} s | {bare_requests} | {rss} | {:.2} s | {:.2} s | {watch_rss} |",
        sources * children,
        first_time.as_secs_f64(),
        steady_time.as_secs_f64(),
        bare_time.as_secs_f64(),
        watch_time.as_secs_f64(),
        bare_writes_time.as_secs_f64(),
    )
}

async fn for_each_page<K>(api: &Api<K>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = ListParams::default().limit(PAGE_SIZE);
    loop {
        let page = api.list(&params).await.unwrap();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return,
        }
    }
}

/// Watch mode in this process: time from one source edit until all `children` copies carry it.
async fn watch_one_edit(
    fx: &support::Fixture,
    propagation: &Propagation,
    parent: &str,
    children: usize,
) -> (Duration, Duration) {
    let client = fx.client.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let lease = support::unique("hb-lease");
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let watch_config = WatchConfig {
        plan: PlanConfig {
            set: fx.set.clone(),
            max_ttl: Duration::from_secs(3600),
            max_deletions: None,
        },
        page_size: PAGE_SIZE,
        concurrency: 16,
        lease: LeaseConfig::new(lease, "default".into(), "bench".into(), Duration::from_secs(5)).unwrap(),
        // The bench measures propagation, never the deletion brake.
        brake: BrakeConfig {
            max_deletions: 0,
            window: Duration::from_secs(60),
            allow_mass_deletion: true,
        },
    };
    let trees = TreeWatch {
        propagation: Arc::new(propagation.clone()),
        selector: fx.selector.clone(),
        page_size: PAGE_SIZE,
        concurrency: 16,
        instance: "bench".into(),
    };
    let task = tokio::spawn(watch_with_trees(
        client.clone(),
        watch_config,
        Some(trees),
        listener,
        stopped.map(drop),
    ));
    let copies = Api::<ConfigMap>::all(client.clone());
    let selector = format!("{}={parent}", keys::INHERITED_FROM_LABEL);
    // The copies as a watch of this process sees them: polling a LIST of every ConfigMap
    // would load the API server the measured watch writes through.
    let (store, writer) = kube::runtime::reflector::store::<ConfigMap>();
    let observed = kube::runtime::reflector(
        writer,
        kube::runtime::watcher(
            copies.clone(),
            kube::runtime::watcher::Config::default()
                .labels(&selector)
                .fields("metadata.name=src-0"),
        ),
    );
    let observing = tokio::spawn(observed.for_each(|_| async {}));
    store.wait_until_ready().await.unwrap();
    let carrying = |value: &'static str| {
        let store = store.clone();
        async move {
            store
                .state()
                .iter()
                .filter(|cm| cm.data.as_ref().and_then(|d| d.get("k")).map(String::as_str) == Some(value))
                .count()
        }
    };
    // Let the watcher lead and finish its first pass (everything already in sync).
    support::eventually(Duration::from_secs(60), "the watcher's first pass", || async {
        carrying("v1").await == children
    })
    .await;
    // ... and its first passes are over (at 100,000 copies they plan every copy for seconds):
    // passes counted, and no new one for 2 s.
    let passes = || {
        support::metric(
            &addr,
            "namespace_provisioner_reaper_propagation_lag_seconds_count",
        )
    };
    let (mut last, mut quiet) = (None, 0);
    while quiet < 4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = passes().await;
        quiet = if now.is_some_and(|n| n >= 1.0) && now == last {
            quiet + 1
        } else {
            0
        };
        last = now;
    }
    let started = Instant::now();
    Api::<ConfigMap>::namespaced(client.clone(), parent)
        .patch(
            "src-0",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "v2"}})),
        )
        .await
        .unwrap();
    loop {
        if carrying("v2").await == children {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "watch did not propagate"
        );
    }
    let took = started.elapsed();
    observing.abort();
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    (took, bare_writes(&client, &selector, children).await)
}

/// The physical limit of one edit reaching every copy: the same PUTs (one per copy, the
/// same concurrency as the watch's), sent directly with nothing planned or watched.
async fn bare_writes(client: &kube::Client, selector: &str, children: usize) -> Duration {
    let copies = Api::<ConfigMap>::all(client.clone())
        .list(
            &ListParams::default()
                .labels(selector)
                .fields("metadata.name=src-0"),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(copies.len(), children);
    let started = Instant::now();
    futures::stream::iter(copies.into_iter().map(|mut copy| {
        let api = Api::<ConfigMap>::namespaced(client.clone(), &copy.namespace().unwrap());
        copy.data = Some(BTreeMap::from([("k".to_string(), "v3".to_string())]));
        async move {
            api.replace("src-0", &PostParams::default(), &copy).await.unwrap();
        }
    }))
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;
    started.elapsed()
}
