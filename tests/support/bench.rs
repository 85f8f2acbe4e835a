//! What the benchmarks (`tests/bench/*.rs`, `cargo bench --bench NAME`) share:
//! their runtime, numbers from the environment, and their clean-up.

use std::future::Future;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

/// Runs `bench` on a multi-threaded runtime when cargo bench started it
/// (`--bench`); otherwise (e.g. `cargo test --benches`) says how to run it.
pub fn main<F: Future<Output = ()>>(name: &str, bench: F) {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("run with: cargo bench --bench {name}");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench);
}

/// A comma-separated list of numbers from the environment variable `name`,
/// else from `default`.
pub fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: {s:?} is not a number"))
        })
        .collect()
}

/// Deletes (in the background) every Namespace `selector` selects.
pub async fn delete_all(client: &Client, selector: &str) {
    let api = Api::<Namespace>::all(client.clone());
    let items = api
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items;
    futures::stream::iter(items)
        .map(|ns| {
            let api = api.clone();
            async move {
                let _ = api.delete(&ns.name_any(), &DeleteParams::background()).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// The `p` quantile (0..=1) of `latencies`, nearest rank.
pub fn pct(latencies: &[std::time::Duration], p: f64) -> std::time::Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Milliseconds with one decimal, for the tables.
pub fn ms(d: std::time::Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// How many file descriptors process `pid` holds open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}
