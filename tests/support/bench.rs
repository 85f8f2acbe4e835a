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
