//! Load and soak (issue 15, item 8; not a test, not in CI): the real
//! provisioner and `reaper --watch` against the local control plane.
//!
//! 1. Burst: NP_BENCH_BURST (1,000) creates sent at once; every one must end
//!    as a distinct, complete set (Namespace, ServiceAccount, RoleBinding).
//!    A 503 or 504 is retried after its Retry-After, as a client would, and
//!    counted (a 504's create is rolled back when it finishes).
//!    The burst's sets are then deleted through the API, all at once.
//! 2. Soak: NP_SOAK_MINUTES (20) of mixed create / list / extend / delete at
//!    NP_SOAK_RATE operations per second (5), creates with a 1-minute ttl so
//!    the reaper deletes a steady stream by expiry. Every 30 s: RSS and open
//!    file descriptors of both binaries (the curve is printed). At the end
//!    nothing may be left: every namespace the soak made is gone.
//!
//! `cargo bench --bench soak` (a shorter run: NP_SOAK_MINUTES=2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::labels::OBJECT_NAME;
use support::bench::{env_list, ms, open_fds, pct, status_kib};

const TOKEN: &str = "soak-token-0123456789abcdef";
const SELECTOR_KEY: &str = "np-bench.example.com/soak";
const SAMPLE_EVERY: Duration = Duration::from_secs(30);

/// Outcomes of the soak's operations, by operation and status.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<(&'static str, u16), usize>,
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    unexpected: Vec<String>,
    live: Vec<(String, Instant)>,
}

impl Tally {
    fn record(&mut self, op: &'static str, status: u16, took: Duration, body: &str, expected: &[u16]) {
        *self.statuses.entry((op, status)).or_default() += 1;
        self.latencies.entry(op).or_default().push(took);
        if !expected.contains(&status) && self.unexpected.len() < 20 {
            self.unexpected.push(format!("{op} {status}: {body}"));
        }
    }
}

/// One create, retried after its Retry-After on 503 (not now) and 504 (past
/// --request-timeout: rolled back when it finishes); the name, and how many retries.
async fn create(addr: &str, ttl: &str) -> (String, usize) {
    let mut retries = 0;
    loop {
        let body = format!(r#"{{"ttl":"{ttl}"}}"#);
        let answer = support::http(addr, "POST", "/api/v1/namespaces", Some(TOKEN), Some(&body)).await;
        match answer.status {
            201 => return (answer.json()["name"].as_str().unwrap().to_owned(), retries),
            503 | 504 => {
                let wait: u64 = answer
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1);
                retries += 1;
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            status => panic!("create answered {status}: {}", answer.body),
        }
    }
}

/// Names of the namespaces in `names` that lack their ServiceAccount or RoleBinding.
async fn incomplete(client: &Client, names: &[String]) -> Vec<String> {
    let by_name = ListParams::default().fields(&format!("metadata.name={OBJECT_NAME}"));
    let accounts: std::collections::BTreeSet<String> = Api::<ServiceAccount>::all(client.clone())
        .list(&by_name)
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|sa| sa.namespace())
        .collect();
    let bindings: std::collections::BTreeSet<String> = Api::<RoleBinding>::all(client.clone())
        .list(&by_name)
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|rb| rb.namespace())
        .collect();
    names
        .iter()
        .filter(|n| !accounts.contains(*n) || !bindings.contains(*n))
        .cloned()
        .collect()
}

async fn burst(addr: &str, client: &Client, selector: &str, count: usize) {
    let started = Instant::now();
    let results: Vec<((String, usize), Duration)> = futures::stream::iter(0..count)
        .map(|_| async move {
            let t = Instant::now();
            (create(addr, "10m").await, t.elapsed())
        })
        .buffer_unordered(count)
        .collect()
        .await;
    let wall = started.elapsed();
    let names: Vec<String> = results.iter().map(|((n, _), _)| n.clone()).collect();
    let retries: usize = results.iter().map(|((_, r), _)| r).sum();
    let latencies: Vec<Duration> = results.iter().map(|(_, t)| *t).collect();
    let distinct: std::collections::BTreeSet<String> = names.iter().cloned().collect();
    // Exactly the answered sets live: a create answered 504 is rolled back
    // once it finishes, which may be a little after the retry's answer.
    let listed = support::eventually(Duration::from_secs(120), "exactly the answered sets", || async {
        let live: std::collections::BTreeSet<String> = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .map(|ns| ns.name_any())
            .collect();
        (live == distinct).then_some(live.len()).ok_or(format!(
            "{} live, {} answered",
            live.len(),
            distinct.len()
        ))
    })
    .await;
    let missing = incomplete(client, &names).await;
    println!("\nburst: {count} creates sent at once\n");
    println!(
        "| creates | answered 201 | distinct names | namespaces listed | incomplete sets | 503/504 retried | p50 ms | p99 ms | wall s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {count} | {} | {} | {listed} | {} | {retries} | {} | {} | {:.1} |",
        names.len(),
        distinct.len(),
        missing.len(),
        ms(pct(&latencies, 0.5)),
        ms(pct(&latencies, 0.99)),
        wall.as_secs_f64()
    );
    assert_eq!(distinct.len(), count, "two creates got the same namespace");
    assert_eq!(listed, count, "the cluster holds another number of sets");
    assert!(missing.is_empty(), "incomplete sets: {missing:?}");

    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(names)
        .map(|name| async move {
            support::http(
                addr,
                "DELETE",
                &format!("/api/v1/namespaces/{name}"),
                Some(TOKEN),
                None,
            )
            .await
            .status
        })
        .buffer_unordered(count)
        .collect()
        .await;
    let refused: Vec<&u16> = statuses.iter().filter(|s| !(200..300).contains(*s)).collect();
    println!(
        "\nburst deleted through the API, all at once: {} answers in {:.1} s, {} not 2xx\n",
        statuses.len(),
        started.elapsed().as_secs_f64(),
        refused.len()
    );
    assert!(refused.is_empty(), "deletes refused: {refused:?}");
}

/// One soak operation, chosen by `tick`: 4 creates, 3 lists, 2 extends, 1 delete in 10.
async fn operate(addr: String, tick: u64, tally: Arc<Mutex<Tally>>) {
    let op = match tick % 10 {
        0..=3 => "create",
        4..=6 => "list",
        7 | 8 => "extend",
        _ => "delete",
    };
    // Extends and deletes act on a namespace made in the last 30 s: well
    // before its 1-minute expiry, so the reaper is not racing them.
    let target = {
        let tally = tally.lock().unwrap();
        tally
            .live
            .iter()
            .rev()
            .find(|(_, at)| at.elapsed() < Duration::from_secs(30))
            .map(|(n, _)| n.clone())
    };
    let started = Instant::now();
    let (status, body) = match (op, target) {
        ("create", _) => {
            let a = support::http(
                &addr,
                "POST",
                "/api/v1/namespaces",
                Some(TOKEN),
                Some(r#"{"ttl":"1m"}"#),
            )
            .await;
            if a.status == 201 {
                let name = a.json()["name"].as_str().unwrap().to_owned();
                tally.lock().unwrap().live.push((name, Instant::now()));
            }
            (a.status, a.body)
        }
        ("list", _) => {
            let a = support::http(&addr, "GET", "/api/v1/namespaces", Some(TOKEN), None).await;
            (a.status, a.body)
        }
        ("extend", Some(name)) => {
            let path = format!("/api/v1/namespaces/{name}");
            let a = support::http(&addr, "PATCH", &path, Some(TOKEN), Some(r#"{"ttl":"1m"}"#)).await;
            (a.status, a.body)
        }
        ("delete", Some(name)) => {
            tally.lock().unwrap().live.retain(|(n, _)| *n != name);
            let a = support::http(
                &addr,
                "DELETE",
                &format!("/api/v1/namespaces/{name}"),
                Some(TOKEN),
                None,
            )
            .await;
            (a.status, a.body)
        }
        // Nothing young enough yet.
        _ => return,
    };
    let expected: &[u16] = match op {
        "create" => &[201],
        "delete" => &[200, 202, 204],
        _ => &[200],
    };
    tally
        .lock()
        .unwrap()
        .record(op, status, started.elapsed(), &body, expected);
}

struct Sample {
    at: Duration,
    provisioner: (u64, usize),
    reaper: (u64, usize),
    managed: usize,
}

async fn managed(client: &Client, selector: &str) -> usize {
    Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .len()
}

fn main() {
    support::bench::main("soak", run());
}

async fn run() {
    let burst_size = env_list("NP_BENCH_BURST", "1000")[0];
    let minutes = env_list("NP_SOAK_MINUTES", "20")[0];
    let rate = env_list("NP_SOAK_RATE", "5")[0].max(1);
    let cluster = support::cluster();
    let admin = cluster.client().await;
    let grant = support::unique("np-soak-grant");
    support::create_cluster_role(&admin, &grant, Vec::new()).await;
    let selector = format!("{SELECTOR_KEY}={}", support::unique("soak"));
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let served = support::process::start_provisioner(
        "provisioner (soak)",
        &[],
        &[
            ("NP_TOKEN", TOKEN.to_owned()),
            ("NP_KUBECONFIG", kubeconfig.clone()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_CLUSTER_ROLE", grant.clone()),
            ("NP_LOG", "warn".to_owned()),
        ],
        "/readyz",
    )
    .await;
    let addr = served.addr.clone();
    burst(&addr, &admin, &selector, burst_size).await;

    let metrics = format!("127.0.0.1:{}", support::free_port());
    let args: Vec<String> = [
        "--kubeconfig",
        &kubeconfig,
        "--selector",
        &selector,
        "--cluster-role",
        &grant,
        "--skip-preflight",
        "--watch",
        "--lease-name",
        &support::unique("np-soak"),
        "--lease-namespace",
        "default",
        "--metrics-addr",
        &metrics,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut reaper = support::Process::spawn(
        "reaper --watch (soak)",
        env!("CARGO_BIN_EXE_reaper"),
        &args,
        &[("NP_LOG", "warn".to_owned())],
    );
    support::wait_http_ok(&metrics, "/healthz", &mut reaper).await;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut samples = Vec::new();
    let started = Instant::now();
    let length = Duration::from_secs(60 * minutes as u64);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut tick = 0u64;
    while started.elapsed() < length {
        ticks.tick().await;
        in_flight.push(tokio::spawn(operate(addr.clone(), tick, tally.clone())));
        tick += 1;
        if started.elapsed() >= next_sample {
            reaper.assert_running();
            samples.push(Sample {
                at: started.elapsed(),
                provisioner: (
                    status_kib(served.process.pid(), "VmRSS"),
                    open_fds(served.process.pid()),
                ),
                reaper: (status_kib(reaper.pid(), "VmRSS"), open_fds(reaper.pid())),
                managed: managed(&admin, &selector).await,
            });
            next_sample += SAMPLE_EVERY;
        }
    }
    for task in in_flight {
        task.await.unwrap();
    }
    let ended = started.elapsed();

    // Everything the soak made expires within a minute of its last create
    // or extend; the reaper must take all of it.
    let drained = Instant::now();
    support::eventually(Duration::from_secs(300), "every soak namespace gone", || async {
        let left = managed(&admin, &selector).await;
        (left == 0).then_some(()).ok_or(format!("{left} left"))
    })
    .await;
    let drain = drained.elapsed();
    reaper.assert_running();

    println!(
        "\nsoak: {minutes} min at {rate} operations/s (4 create : 3 list : 2 extend : 1 delete), reaper --watch\n"
    );
    println!(
        "| t (s) | provisioner RSS MiB | provisioner fds | reaper RSS MiB | reaper fds | managed namespaces |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for s in &samples {
        println!(
            "| {:.0} | {:.1} | {} | {:.1} | {} | {} |",
            s.at.as_secs_f64(),
            s.provisioner.0 as f64 / 1024.0,
            s.provisioner.1,
            s.reaper.0 as f64 / 1024.0,
            s.reaper.1,
            s.managed
        );
    }
    let tally = tally.lock().unwrap();
    println!("\n| operation | requests | by status | p50 ms | p99 ms |");
    println!("|---|---:|---|---:|---:|");
    for (op, latencies) in &tally.latencies {
        let statuses: Vec<String> = tally
            .statuses
            .iter()
            .filter(|((o, _), _)| o == op)
            .map(|((_, s), n)| format!("{s}: {n}"))
            .collect();
        println!(
            "| {op} | {} | {} | {} | {} |",
            latencies.len(),
            statuses.join(", "),
            ms(pct(latencies, 0.5)),
            ms(pct(latencies, 0.99))
        );
    }
    println!(
        "\nran {:.0} s; all soak namespaces gone {:.1} s after the last operation; unexpected answers: {}",
        ended.as_secs_f64(),
        drain.as_secs_f64(),
        tally.unexpected.len()
    );
    for line in &tally.unexpected {
        println!("  {line}");
    }
    let (first, last) = (samples.first().unwrap(), samples.last().unwrap());
    println!(
        "RSS provisioner {:.1} -> {:.1} MiB (peak {:.1}), reaper {:.1} -> {:.1} MiB (peak {:.1}); fds provisioner {} -> {}, reaper {} -> {}",
        first.provisioner.0 as f64 / 1024.0,
        last.provisioner.0 as f64 / 1024.0,
        status_kib(served.process.pid(), "VmHWM") as f64 / 1024.0,
        first.reaper.0 as f64 / 1024.0,
        last.reaper.0 as f64 / 1024.0,
        status_kib(reaper.pid(), "VmHWM") as f64 / 1024.0,
        first.provisioner.1,
        last.provisioner.1,
        first.reaper.1,
        last.reaper.1
    );
    assert!(
        tally.unexpected.is_empty(),
        "unexpected answers: {:?}",
        tally.unexpected
    );
}
