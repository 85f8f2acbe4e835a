//! Propagation benchmark against a fresh local control plane (not a timed test):
//! `NP_BENCH_SOURCES` (default 30) ConfigMaps in one parent × `NP_BENCH_CHILDREN` (default
//! `100`, comma-separated list) children:
//!
//! 1. first tree sweep (every copy created, every tree label set): time, API requests, writes;
//! 2. steady-state tree sweep (nothing to do) next to the bare LIST of the same objects
//!    (Namespaces + ConfigMaps, same page size): time and requests;
//! 3. peak RSS of this process (it holds what the sweep holds);
//! 4. watch mode: `NP_BENCH_EDITS` (default 20) source edits, one after another, each timed
//!    until every copy carries it (p50 and p99), next to the bare minimum (the same PUTs, one
//!    per copy, sent directly as many times, `NP_BENCH_WRITERS` at once as the watch, default
//!    16: the API server's own tail bounds the watch's p99); as many edits of one copy by a
//!    user, each timed until the copy is restored; and peak RSS after it (the watch holds every
//!    Namespace and propagated object in its stores, intact copies as compact records);
//! 5. the reaper binary in `--watch` over the same tree (`NP_BENCH_REAPER_BIN`, default this
//!    checkout's release build): its peak RSS once its first passes are over.
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
        "\n| sources × children | copies | first sweep | requests (writes) | steady sweep | requests | bare LIST | requests | peak RSS | watch: 1 edit → all copies, p50 / p99 | bare: the same PUTs directly, p50 / p99 | watch: edited copy restored, p50 / p99 | peak RSS with the watch's stores | reaper binary `--watch`: peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
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

    let edits = support::bench::env_list("NP_BENCH_EDITS", "20")[0];
    let writers = support::bench::env_list("NP_BENCH_WRITERS", "16")[0];
    let watched = watch_edits(&fx, &propagation, &parent, children, edits, writers).await;
    let watch_rss = reaper::peak_rss_kib().map_or("?".to_string(), |k| format!("{} MiB", k / 1024));
    let binary_rss = binary_watch_peak_rss_kib(&fx).await / 1024;
    let p = |samples: &[Duration], q| support::bench::pct(samples, q).as_secs_f64();
    format!(
        "| {sources} × {children} | {} | {:.2} s | {first_requests} ({first_writes}) | {:.2} s | {steady_requests} | {:.2} s | {bare_requests} | {rss} | {:.2} / {:.2} s ({edits} edits) | {:.2} / {:.2} s ({writers} at once) | {:.3} / {:.3} s ({edits} edits) | {watch_rss} | {binary_rss} MiB |",
        sources * children,
        first_time.as_secs_f64(),
        steady_time.as_secs_f64(),
        bare_time.as_secs_f64(),
        p(&watched.propagated, 0.5),
        p(&watched.propagated, 0.99),
        p(&watched.bare_writes, 0.5),
        p(&watched.bare_writes, 0.99),
        p(&watched.restored, 0.5),
        p(&watched.restored, 0.99),
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

/// Until the watch serving metrics at `addr` has counted passes and made no new one for 2 s.
async fn first_passes_over(addr: &str) {
    let (mut last, mut quiet) = (None, 0);
    while quiet < 4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = support::metric(addr, "namespace_provisioner_reaper_propagation_lag_seconds_count").await;
        quiet = if now.is_some_and(|n| n >= 1.0) && now == last {
            quiet + 1
        } else {
            0
        };
        last = now;
    }
}

/// The reaper binary in `--watch` over the same tree, its first passes over (they plan every
/// copy): its peak RSS in KiB, what a deployment holds. `NP_BENCH_REAPER_BIN` measures another
/// build of it, such as the static musl binary the images ship (`images/build.sh`); the
/// default is this checkout's, built with the bench.
async fn binary_watch_peak_rss_kib(fx: &support::Fixture) -> u64 {
    let config = support::temp_file(CONFIG);
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let binary =
        std::env::var("NP_BENCH_REAPER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_reaper").to_owned());
    let args = [
        "--kubeconfig",
        &support::cluster().kubeconfig.display().to_string(),
        "--selector",
        &fx.selector.to_string(),
        "--max-ttl",
        "1h",
        "--cluster-role",
        &fx.set.cluster_role,
        "--watch",
        "--lease-namespace",
        "default",
        "--lease-name",
        &support::unique("hb-bin"),
        "--propagation-config",
        &config.path().display().to_string(),
        "--metrics-addr",
        &metrics,
    ]
    .map(str::to_owned);
    let mut reaper = support::process::Process::spawn(
        "hierarchy-bench-reaper",
        &binary,
        &args,
        &[("NP_LOG", "warn".to_owned())],
    );
    first_passes_over(&metrics).await;
    reaper.assert_running();
    support::bench::status_kib(reaper.pid(), "VmHWM")
}

/// What watch mode took.
struct Watched {
    /// Per source edit: until all copies carry it.
    propagated: Vec<Duration>,
    /// Per edit of one copy by a user: until the copy is restored.
    restored: Vec<Duration>,
    /// The same PUTs as one source edit causes, sent directly, as many times as the edits.
    bare_writes: Vec<Duration>,
}

/// Watch mode in this process: `edits` source edits, each timed until all `children` copies
/// carry it; then `edits` user edits of a copy, each timed until the copy is restored; then,
/// the watch stopped, `edits` times the bare PUTs. The watch and the bare PUTs send `writers`
/// writes at once.
async fn watch_edits(
    fx: &support::Fixture,
    propagation: &Propagation,
    parent: &str,
    children: usize,
    edits: usize,
    writers: usize,
) -> Watched {
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
        concurrency: u16::try_from(writers).unwrap(),
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
        concurrency: writers,
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
    let value_of = |cm: &ConfigMap| cm.data.as_ref().and_then(|d| d.get("k")).cloned();
    let carrying = |value: &str| {
        let value = Some(value.to_owned());
        store.state().iter().filter(|cm| value_of(cm) == value).count()
    };
    // Let the watcher lead and finish its first pass (everything already in sync).
    support::eventually(Duration::from_secs(60), "the watcher's first pass", || async {
        carrying("v1") == children
    })
    .await;
    // ... and its first passes are over (at 100,000 copies they plan every copy for seconds).
    first_passes_over(&addr).await;
    let sources = Api::<ConfigMap>::namespaced(client.clone(), parent);
    let mut propagated = Vec::new();
    for edit in 0..edits {
        let value = format!("v{}", edit + 2);
        let started = Instant::now();
        sources
            .patch(
                "src-0",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {"k": value}})),
            )
            .await
            .unwrap();
        while carrying(&value) < children {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "watch did not propagate edit {value}"
            );
        }
        propagated.push(started.elapsed());
    }
    // A user edits one copy (a different child each time): until the watch restores it.
    let current = format!("v{}", edits + 1);
    let copies_now = store.state();
    let mut restored = Vec::new();
    for copy in copies_now.iter().take(edits) {
        let namespace = copy.namespace().unwrap();
        let started = Instant::now();
        let edited = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
            .patch(
                "src-0",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {"k": "edited by a user"}})),
            )
            .await
            .unwrap();
        // Restored: a later version than the user's (and than the one before it) with the
        // source's value; the store may still show the version before the edit.
        let seen = [copy.resource_version(), edited.resource_version()];
        loop {
            let now = store
                .state()
                .into_iter()
                .find(|cm| cm.namespace().as_deref() == Some(namespace.as_str()));
            if now.is_some_and(|cm| {
                !seen.contains(&cm.resource_version()) && value_of(&cm).as_deref() == Some(current.as_str())
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "watch did not restore the copy in {namespace}"
            );
        }
        restored.push(started.elapsed());
    }
    observing.abort();
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    let mut bare = Vec::new();
    for edit in 0..edits {
        let value = format!("bare-{edit}");
        bare.push(bare_writes(&client, &selector, children, writers, &value).await);
    }
    Watched {
        propagated,
        restored,
        bare_writes: bare,
    }
}

/// The physical limit of one edit reaching every copy: the same PUTs (one per copy, the
/// same concurrency as the watch's), sent directly with nothing planned or watched. Each
/// sample writes another `value`: the API server does not write an unchanged object.
async fn bare_writes(
    client: &kube::Client,
    selector: &str,
    children: usize,
    writers: usize,
    value: &str,
) -> Duration {
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
        copy.data = Some(BTreeMap::from([("k".to_string(), value.to_string())]));
        async move {
            api.replace("src-0", &PostParams::default(), &copy).await.unwrap();
        }
    }))
    .buffer_unordered(writers)
    .collect::<Vec<()>>()
    .await;
    started.elapsed()
}
