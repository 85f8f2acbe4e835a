//! Reaper benchmarks against a fresh local control plane (not timed tests):
//!
//! 1. sweep cost at N managed sets (`NP_BENCH_SETS`, default `1000,10000`):
//!    wall time, API requests (counted by a tower layer on the kube client),
//!    peak RSS of the real binary, next to the bare LIST of the same objects
//!    (4 kinds, same page size) in the same run;
//! 2. watch mode: delay from each namespace's expiry instant to its DELETE
//!    request, over `NP_BENCH_WATCH` (default 100) namespaces;
//! 3. watch mode, burst expiry: `NP_BENCH_BURST` (default 1000) namespaces
//!    expiring at one instant, with the deletion brake configured to allow
//!    them (`--watch-max-deletions` = N per 5 min, not lifted): time until
//!    every DELETE is issued, and the delay distribution
//!    (`NP_BENCH_BURST_BRAKE=lifted` to compare with the brake lifted).
//!
//! Run: `cargo bench --bench reaper`. Prints a Markdown table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::desired::{SetConfig, desired_set};
use namespace_provisioner::k8s;
use namespace_provisioner::params::{Expiry, Selector, TenantName};
use namespace_provisioner::reaper::brake::BrakeConfig;
use namespace_provisioner::reaper::plan::PlanConfig;
use namespace_provisioner::reaper::watch::{LeaseConfig, WatchConfig};
use namespace_provisioner::reaper::{self, SweepConfig};
use support::bench::{CoresBusy, CpuMeter};

const PAGE_SIZE: u32 = 500;
/// One set in this many is expired, one is missing its RoleBinding.
const EVERY: usize = 50;

fn main() {
    support::bench::main("reaper", bench());
}

fn repeats() -> usize {
    support::bench::env_list("NP_BENCH_REPEATS", "5")
        .first()
        .copied()
        .unwrap_or(5)
        .max(1)
}

struct Row {
    n: usize,
    what: String,
    samples: Vec<Duration>,
    requests: String,
    rss_kib: Option<u64>,
    baseline: Option<Duration>,
}

fn median(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[s.len() / 2]
}

/// Nearest-rank percentile.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Per-round ratios, sorted, with their median first: "median 1.31x (1.12x 1.31x 1.60x)".
fn ratios_text(ratios: &[f64]) -> String {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let all: Vec<String> = sorted.iter().map(|r| format!("{r:.2}x")).collect();
    format!("median {:.2}x ({})", sorted[sorted.len() / 2], all.join(" "))
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| N sets | measurement | runs | median | p99 | API requests | peak RSS | vs bare LIST |");
    println!("|---:|---|---:|---:|---:|---|---:|---:|");
    for r in rows {
        let m = median(&r.samples);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.n,
            r.what,
            r.samples.len(),
            secs(m),
            secs(percentile(&r.samples, 99.0)),
            r.requests,
            r.rss_kib
                .map_or_else(|| "-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            r.baseline.map_or_else(
                || "-".to_owned(),
                |b| format!("{:.2}x", m.as_secs_f64() / b.as_secs_f64())
            ),
        );
    }
    println!();
}

async fn bench() {
    let sizes = support::bench::env_list("NP_BENCH_SETS", "1000,10000");
    let watch_n = support::bench::env_list("NP_BENCH_WATCH", "100")
        .first()
        .copied()
        .unwrap_or(100);
    let burst_n = support::bench::env_list("NP_BENCH_BURST", "1000")
        .first()
        .copied()
        .unwrap_or(1000);
    eprintln!("starting a fresh control plane for the benchmark");
    let cluster = support::Cluster::start();
    let (client, log) = support::counting_client_for(&cluster.kubeconfig).await;
    let mut rows = Vec::new();
    for n in sizes {
        let pid = cluster.pid().expect("the benchmark's own control plane");
        bench_sweep(&client, &log, &cluster.kubeconfig, pid, n, &mut rows).await;
        print_table(&rows);
    }
    if watch_n > 0 {
        // Throughput, not the brake, is measured here.
        let lifted = BrakeConfig {
            max_deletions: 0,
            window: Duration::from_secs(300),
            allow_mass_deletion: true,
        };
        bench_watch(&client, &log, watch_n, Spread::TenSeconds, lifted).await;
    }
    if burst_n > 0 {
        // The brake on, bounded just high enough for the burst
        // (`NP_BENCH_BURST_BRAKE=lifted`: --allow-mass-deletion, to compare).
        let lifted = std::env::var("NP_BENCH_BURST_BRAKE").is_ok_and(|v| v == "lifted");
        let allows = BrakeConfig {
            max_deletions: u32::try_from(burst_n).unwrap(),
            window: Duration::from_secs(300),
            allow_mass_deletion: lifted,
        };
        bench_watch(&client, &log, burst_n, Spread::OneInstant, allows).await;
    }
    print_table(&rows);
    cluster.stop();
}

fn set_config(selector: &Selector) -> SetConfig {
    SetConfig {
        selector: selector.clone(),
        cluster_role: "namespace-provisioner-grant".to_owned(),
        role_rules: None,
    }
}

/// `n` sets (Namespace, ServiceAccount, RoleBinding) made with direct API
/// calls, 64 at a time: one in `EVERY` expired, one missing its RoleBinding.
async fn create_sets(
    client: &Client,
    config: &SetConfig,
    prefix: &str,
    n: usize,
    expiry_of: impl Fn(usize) -> i64,
) {
    let tenant: TenantName = "bench".parse().unwrap();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let set = desired_set(
                &format!("{prefix}-{i:05}"),
                &tenant,
                Expiry::from_unix(expiry_of(i)),
                config,
            );
            let client = client.clone();
            async move {
                let ns = set.namespace.name_any();
                let pp = k8s::post_params();
                Api::<Namespace>::all(client.clone())
                    .create(&pp, &set.namespace)
                    .await
                    .unwrap();
                // A running watcher may complete the set first: same objects.
                let created = |r: Result<(), kube::Error>| match r {
                    Ok(()) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => panic!("create in {ns}: {e}"),
                };
                created(
                    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                        .create(&pp, &set.service_account)
                        .await
                        .map(drop),
                );
                if i % EVERY != 1 {
                    created(
                        Api::<RoleBinding>::namespaced(client, &ns)
                            .create(&pp, &set.role_binding)
                            .await
                            .map(drop),
                    );
                }
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    eprintln!("created {n} sets in {:.1}s", started.elapsed().as_secs_f64());
}

/// Damages the sets made by [`create_sets`] again, for another writing sweep: those of residue
/// `2 * round` (mod `EVERY`) expire a minute ago, those of `2 * round + 1` lose their
/// RoleBinding. Returns (expired, incomplete). Waits until the controller-manager is quiet.
async fn damage(client: &Client, config: &SetConfig, prefix: &str, n: usize, round: usize) -> (usize, usize) {
    let (expire, unbind) = (2 * round, 2 * round + 1);
    assert!(unbind < EVERY, "NP_BENCH_REPEATS is at most {}", EVERY / 2);
    let tenant: TenantName = "bench".parse().unwrap();
    let past = Expiry::from_unix(support::now() - 60);
    let damaged: Vec<usize> = (0..n)
        .filter(|i| [expire, unbind].contains(&(i % EVERY)))
        .collect();
    futures::stream::iter(&damaged)
        .map(|&i| {
            let set = desired_set(&format!("{prefix}-{i:05}"), &tenant, past, config);
            let client = client.clone();
            async move {
                let ns = set.namespace.name_any();
                if i % EVERY == expire {
                    let meta = &set.namespace.metadata;
                    let patch = serde_json::json!({
                        "metadata": { "labels": meta.labels, "annotations": meta.annotations }
                    });
                    Api::<Namespace>::all(client)
                        .patch(&ns, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .unwrap();
                } else {
                    Api::<RoleBinding>::namespaced(client, &ns)
                        .delete(&set.role_binding.name_any(), &Default::default())
                        .await
                        .unwrap();
                }
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    await_quiet(client).await;
    let expired = damaged.iter().filter(|&&i| i % EVERY == expire).count();
    (expired, damaged.len() - expired)
}

/// Objects of kind `K` named `name`, cluster-wide (metadata only, paginated).
async fn count_named<K>(client: &Client, name: &str) -> usize
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    let mut params = ListParams::default().limit(PAGE_SIZE);
    if !name.is_empty() {
        params = params.fields(&format!("metadata.name={name}"));
    }
    let mut count = 0;
    loop {
        let page = api.list_metadata(&params).await.unwrap();
        count += page.items.len();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return count,
        }
    }
}

/// Wait until the controller-manager has done its own work in every
/// namespace (a `default` ServiceAccount and the `kube-root-ca.crt`
/// ConfigMap), so it does not skew timings.
async fn await_quiet(client: &Client) {
    let started = Instant::now();
    loop {
        let namespaces = count_named::<Namespace>(client, "").await;
        let accounts = count_named::<ServiceAccount>(client, "default").await;
        let cas = count_named::<ConfigMap>(client, "kube-root-ca.crt").await;
        if accounts >= namespaces && cas >= namespaces {
            eprintln!(
                "controller-manager settled after {:.1}s ({namespaces} namespaces)",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "controller-manager did not settle: {namespaces} namespaces, {accounts} default accounts, {cas} CA maps"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn bare_list(client: &Client, selector: &str) -> usize {
    let namespaces = Api::<Namespace>::all(client.clone());
    let service_accounts = Api::<ServiceAccount>::all(client.clone());
    let roles = Api::<Role>::all(client.clone());
    let role_bindings = Api::<RoleBinding>::all(client.clone());
    let (a, b, c, d) = tokio::join!(
        k8s::list_all(&namespaces, selector, PAGE_SIZE),
        k8s::list_all(&service_accounts, selector, PAGE_SIZE),
        k8s::list_all(&roles, selector, PAGE_SIZE),
        k8s::list_all(&role_bindings, selector, PAGE_SIZE),
    );
    a.unwrap().len() + b.unwrap().len() + c.unwrap().len() + d.unwrap().len()
}

/// Run the real binary; its report carries its own peak RSS.
fn run_binary(kubeconfig: &Path, selector: &Selector, extra: &[&str]) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_reaper"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--selector",
            &selector.to_string(),
            "--output",
            "json",
            "--log",
            "warn",
            "--max-deletions",
            "unlimited",
        ])
        .args(extra)
        .output()
        .unwrap();
    let wall = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (wall, serde_json::from_slice(&out.stdout).unwrap())
}

async fn bench_sweep(
    client: &Client,
    log: &support::RequestLog,
    kubeconfig: &Path,
    control_plane: u32,
    n: usize,
    rows: &mut Vec<Row>,
) {
    let selector: Selector = format!("np-bench/reaper=n{n}").parse().unwrap();
    let label = selector.to_label_selector();
    let config = set_config(&selector);
    let now = support::now();
    create_sets(client, &config, &format!("bench{n}"), n, |i| {
        if i % EVERY == 0 { now - 60 } else { now + 86_400 }
    })
    .await;
    await_quiet(client).await;
    let expired = n.div_ceil(EVERY);
    let incomplete = (n + EVERY - 2) / EVERY;
    let objects = 3 * n - incomplete;

    let sweep_config = SweepConfig {
        plan: PlanConfig {
            set: config.clone(),
            max_ttl: Duration::from_secs(86_400),
            max_deletions: None,
        },
        page_size: PAGE_SIZE,
        concurrency: 16,
        dry_run: true,
        instance: "bench".to_owned(),
    };
    let writing = SweepConfig {
        dry_run: false,
        ..sweep_config.clone()
    };

    // Bare LIST of the same objects (4 kinds, same page size, concurrently as
    // the sweep does), interleaved with dry-run sweeps (list + plan) so both
    // see the same cluster.
    let mut bare = Vec::new();
    let mut dry = Vec::new();
    let mut pages = 0;
    let mut bare_busy = Vec::new();
    for _ in 0..repeats() {
        log.clear();
        let started = Instant::now();
        let meter = CpuMeter::start(control_plane);
        assert_eq!(bare_list(client, &label).await, objects);
        bare.push(started.elapsed());
        bare_busy.push(meter.stop());
        pages = log.len();
        let started = Instant::now();
        let report = reaper::sweep(client, &sweep_config, support::now())
            .await
            .unwrap();
        dry.push(started.elapsed());
        assert_eq!(report.summary.expired_deleted, expired);
    }

    // The real binary, dry run: the plan for the damaged dataset, and its memory.
    let (wall, json) = run_binary(kubeconfig, &selector, &["--dry-run"]);
    assert_eq!(json["summary"]["expiredDeleted"], expired);
    let dry_binary = Row {
        n,
        what: "reaper binary --dry-run (process wall time, incl. start-up)".to_owned(),
        samples: vec![wall],
        requests: format!("{pages} LIST pages"),
        rss_kib: json["summary"]["peakRssKib"].as_u64(),
        baseline: None,
    };

    // The sweep that does the work: deletes, repairs. Round 0 finds the damage the sets were
    // made with; each later round damages another residue class the same way first.
    let mut writing_runs = Vec::new();
    for round in 0..repeats() {
        let (expired, incomplete) = if round == 0 {
            (expired, incomplete)
        } else {
            damage(client, &config, &format!("bench{n}"), n, round).await
        };
        // A bare LIST of the very objects this round's sweep finds, just before it: this
        // machine's times drift by tens of percent within minutes, so each round is also
        // compared with its own bare LIST.
        let started = Instant::now();
        bare_list(client, &label).await;
        let paired = started.elapsed();
        log.clear();
        let started = Instant::now();
        let meter = CpuMeter::start(control_plane);
        let report = reaper::sweep(client, &writing, support::now()).await.unwrap();
        let wall = started.elapsed();
        let busy = meter.stop();
        let s = &report.summary;
        assert_eq!(
            (s.expired_deleted, s.repaired, s.failed),
            (expired, incomplete, 0),
            "{}",
            report.to_text()
        );
        let lists = log.count(&::http::Method::GET, |_| true);
        let events = s.expired_deleted;
        assert_eq!(
            log.len() - lists,
            s.writes + events,
            "requests other than LISTs = the sweep's writes + one Event per deletion"
        );
        writing_runs.push((wall, s.clone(), lists, busy, paired));
    }
    let ratios: Vec<f64> = writing_runs
        .iter()
        .map(|(wall, .., paired)| wall.as_secs_f64() / paired.as_secs_f64())
        .collect();
    let paired = median(&writing_runs.iter().map(|run| run.4).collect::<Vec<_>>());
    writing_runs.sort_by_key(|(wall, ..)| *wall);
    let (_, s, lists, busy, _) = &writing_runs[writing_runs.len() / 2];
    let with_writes = Row {
        n,
        what: format!(
            "sweep with writes: {} deleted, {} repaired (median run: list {} ms, plan {} ms, execute {} ms; {busy}; \
             each round against a bare LIST just before it: median {}, ratios {})",
            s.expired_deleted,
            s.repaired,
            s.list_ms,
            s.plan_ms,
            s.execute_ms,
            secs(paired),
            ratios_text(&ratios),
        ),
        samples: writing_runs.iter().map(|(wall, ..)| *wall).collect(),
        requests: format!(
            "{} = {lists} LISTs (pages, budgets) + {} writes + {} events",
            lists + s.writes + s.expired_deleted,
            s.writes,
            s.expired_deleted
        ),
        rss_kib: None,
        baseline: None,
    };

    // Steady state: everything live in sync, the expired ones terminating.
    let mut steady = Vec::new();
    let mut steady_requests = 0;
    for _ in 0..repeats() {
        let started = Instant::now();
        bare_list(client, &label).await;
        bare.push(started.elapsed());
        log.clear();
        let started = Instant::now();
        let report = reaper::sweep(client, &writing, support::now()).await.unwrap();
        steady.push(started.elapsed());
        assert_eq!(report.summary.writes, 0, "{}", report.to_text());
        steady_requests = log.len();
    }
    let (wall, json) = run_binary(kubeconfig, &selector, &[]);
    assert_eq!(json["summary"]["writes"], 0);
    let steady_binary = Row {
        n,
        what: "reaper binary, steady state (process wall time, incl. start-up)".to_owned(),
        samples: vec![wall],
        requests: format!("{steady_requests} LIST pages"),
        rss_kib: json["summary"]["peakRssKib"].as_u64(),
        baseline: None,
    };

    let direct = bare_writes(client, n, expired, incomplete).await;

    let baseline = median(&bare);
    let against = |mut row: Row| {
        row.baseline = Some(baseline);
        row
    };
    let mean = |of: fn(&CoresBusy) -> f64| bare_busy.iter().map(of).sum::<f64>() / bare_busy.len() as f64;
    let bare_busy = CoresBusy {
        control_plane: mean(|b| b.control_plane),
        client: mean(|b| b.client),
    };
    rows.push(against(Row {
        n,
        what: format!("bare LIST, 4 kinds, page 500 (baseline; mean {bare_busy})"),
        samples: bare,
        requests: format!("{pages} LIST pages"),
        rss_kib: None,
        baseline: None,
    }));
    rows.push(against(Row {
        n,
        what: "sweep --dry-run (list + plan)".to_owned(),
        samples: dry,
        requests: format!("{pages} LIST pages"),
        rss_kib: None,
        baseline: None,
    }));
    rows.push(against(with_writes));
    rows.push(against(Row {
        n,
        what: format!(
            "the same writes sent directly, 16 at a time: {expired} DELETE + {expired} Event + {incomplete} RoleBinding (no LIST, no plan)"
        ),
        samples: vec![direct],
        requests: format!("{}", 2 * expired + incomplete),
        rss_kib: None,
        baseline: None,
    }));
    rows.push(against(Row {
        n,
        what: "sweep, steady state (nothing to write)".to_owned(),
        samples: steady,
        requests: format!("{steady_requests} LIST pages + 0 writes"),
        rss_kib: None,
        baseline: None,
    }));
    rows.push(against(dry_binary));
    rows.push(against(steady_binary));
}

/// The physical limit of a sweep's writes: `deletions` namespaces deleted, each with an Event,
/// and `repairs` missing RoleBindings created, sent directly at the sweep's concurrency (16)
/// to sets made for it (apart from the sweep's, after the controller-manager has settled).
async fn bare_writes(client: &Client, n: usize, deletions: usize, repairs: usize) -> Duration {
    let config = set_config(&format!("np-bench/reaper=direct{n}").parse().unwrap());
    let tenant: TenantName = "bench".parse().unwrap();
    let expiry = Expiry::from_unix(support::now() + 86_400);
    let sets: Vec<_> = (0..deletions + repairs)
        .map(|i| desired_set(&format!("direct{n}-{i:05}"), &tenant, expiry, &config))
        .collect();
    let pp = k8s::post_params();
    futures::stream::iter(sets.iter().enumerate())
        .map(|(i, set)| {
            let client = client.clone();
            let pp = pp.clone();
            async move {
                let ns = set.namespace.name_any();
                Api::<Namespace>::all(client.clone())
                    .create(&pp, &set.namespace)
                    .await
                    .unwrap();
                Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                    .create(&pp, &set.service_account)
                    .await
                    .unwrap();
                if i < deletions {
                    bind(&client, set).await;
                }
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    await_quiet(client).await;
    let started = Instant::now();
    futures::stream::iter(sets.iter().enumerate())
        .map(|(i, set)| {
            let client = client.clone();
            let pp = pp.clone();
            async move {
                let ns = set.namespace.name_any();
                if i < deletions {
                    Api::<Namespace>::all(client.clone())
                        .delete(&ns, &Default::default())
                        .await
                        .unwrap();
                    let event = Event {
                        metadata: kube::api::ObjectMeta {
                            generate_name: Some(format!("{ns}.")),
                            ..Default::default()
                        },
                        involved_object: k8s_openapi::api::core::v1::ObjectReference {
                            kind: Some("Namespace".into()),
                            name: Some(ns.clone()),
                            api_version: Some("v1".into()),
                            ..Default::default()
                        },
                        reason: Some("Expired".into()),
                        message: Some("bench".into()),
                        type_: Some("Normal".into()),
                        ..Default::default()
                    };
                    Api::<Event>::namespaced(client, "default")
                        .create(&pp, &event)
                        .await
                        .unwrap();
                } else {
                    bind(&client, set).await;
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let took = started.elapsed();
    support::bench::delete_all(client, &config.selector.to_label_selector()).await;
    took
}

/// The set's grant RoleBinding, created.
async fn bind(client: &Client, set: &namespace_provisioner::desired::DesiredSet) {
    Api::<RoleBinding>::namespaced(client.clone(), &set.namespace.name_any())
        .create(&k8s::post_params(), &set.role_binding)
        .await
        .unwrap();
}

/// How the expiries of a watch benchmark are laid out.
#[derive(Clone, Copy, PartialEq)]
enum Spread {
    TenSeconds,
    OneInstant,
}

async fn bench_watch(
    client: &Client,
    log: &support::RequestLog,
    n: usize,
    spread: Spread,
    brake: BrakeConfig,
) {
    let (label, prefix) = match spread {
        Spread::TenSeconds => ("watch", "benchw"),
        Spread::OneInstant => ("burst", "benchb"),
    };
    let selector: Selector = format!("np-bench/reaper={label}").parse().unwrap();
    let config = set_config(&selector);
    let lease = support::unique("bench-lease");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let watcher = tokio::spawn(reaper::watch::watch(
        client.clone(),
        WatchConfig {
            plan: PlanConfig {
                set: config.clone(),
                max_ttl: Duration::from_secs(3600),
                max_deletions: None,
            },
            page_size: PAGE_SIZE,
            concurrency: 16,
            lease: LeaseConfig::new(
                lease.clone(),
                "default".to_owned(),
                "bench".to_owned(),
                Duration::from_secs(15),
            )
            .unwrap(),
            brake,
        },
        listener,
        stopped.map(drop),
    ));
    let leases = Api::<Lease>::namespaced(client.clone(), "default");
    support::eventually(Duration::from_secs(30), "the watcher to lead", || async {
        leases
            .get_opt(&lease)
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
            .is_some()
    })
    .await;

    // Expiries spread over 10 seconds (or all at one instant), starting
    // once all are created (about 20 sets a second on 2 cores).
    let start = support::now() + 15 + (n / 20) as i64;
    let expiry_of = |i: usize| match spread {
        Spread::TenSeconds => start + (i % 10) as i64,
        Spread::OneInstant => start,
    };
    create_sets(client, &config, prefix, n, expiry_of).await;
    assert!(
        support::now() < start,
        "creating {n} sets took too long; raise the head start"
    );
    let mut expiries = BTreeMap::new();
    for i in 0..n {
        expiries.insert(format!("{prefix}-{i:05}"), expiry_of(i));
    }
    log.clear();
    support::eventually(
        Duration::from_secs(60 + (n / 10) as u64),
        "every watched namespace deleted",
        || async { log.count(&http::Method::DELETE, |p| p.starts_with("/api/v1/namespaces/")) >= n },
    )
    .await;
    let mut delays = Vec::new();
    for (method, path, at) in log.entries() {
        if method != http::Method::DELETE {
            continue;
        }
        let name = path
            .split('?')
            .next()
            .unwrap()
            .trim_start_matches("/api/v1/namespaces/");
        let Some(expiry) = expiries.get(name) else {
            continue;
        };
        let at = at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let delay = at - *expiry as f64;
        assert!(delay >= 0.0, "{name} deleted {delay}s before its expiry");
        delays.push(Duration::from_secs_f64(delay));
    }
    assert_eq!(delays.len(), n);
    stop.send(()).unwrap();
    watcher.await.unwrap().unwrap();
    println!();
    println!("| watch mode | namespaces | p50 | p99 | max (all DELETEs issued) |");
    println!("|---|---:|---:|---:|---:|");
    let max = delays.iter().max().copied().unwrap_or_default();
    let what = match spread {
        Spread::TenSeconds => {
            "expiry instant -> DELETE request (expiries over 10 s, brake lifted)".to_owned()
        }
        Spread::OneInstant => format!(
            "burst: one expiry instant -> DELETE request (brake {}: {} per {:?})",
            if brake.allow_mass_deletion { "lifted" } else { "on" },
            brake.max_deletions,
            brake.window
        ),
    };
    println!(
        "| {what} | {n} | {} | {} | {} |",
        secs(percentile(&delays, 50.0)),
        secs(percentile(&delays, 99.0)),
        secs(max)
    );
    println!();
}
