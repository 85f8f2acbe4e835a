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

/// CPU seconds (user + system) process `pid` has used so far. `/proc/PID/stat` counts in
/// USER_HZ, which Linux fixes at 100 for user space.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis
    // start at field 3, so utime (14) and stime (15) are the 12th and 13th of them.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Measures how busy the machine's cores are over a stretch: the control plane's CPU time and
/// this process's, each divided by the wall time.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    control_plane_pid: u32,
    control_plane: f64,
    own: f64,
    at: std::time::Instant,
}

/// Cores kept busy on average by the control plane and by this process (the client).
#[derive(Debug, Clone, Copy)]
pub struct CoresBusy {
    pub control_plane: f64,
    pub client: f64,
}

impl CpuMeter {
    pub fn start(control_plane_pid: u32) -> Self {
        Self {
            control_plane_pid,
            control_plane: cpu_secs(control_plane_pid),
            own: cpu_secs(std::process::id()),
            at: std::time::Instant::now(),
        }
    }

    pub fn stop(&self) -> CoresBusy {
        let wall = self.at.elapsed().as_secs_f64();
        CoresBusy {
            control_plane: (cpu_secs(self.control_plane_pid) - self.control_plane) / wall,
            client: (cpu_secs(std::process::id()) - self.own) / wall,
        }
    }
}

impl std::fmt::Display for CoresBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cores busy: control plane {:.2} + bench {:.2} of {}",
            self.control_plane,
            self.client,
            std::thread::available_parallelism().map_or(0, usize::from)
        )
    }
}
