//! The reaper's command line: its flags, their validation into a
//! [`ReaperMode`], and [`run`]. Reads the environment and `/proc` for the
//! Lease defaults; Kubernetes I/O happens in [`crate::reaper`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use thiserror::Error;

use super::{ConfigError, SharedArgs, shutdown_signal};
use crate::k8s::{ClientError, ResolveKindsError};
use crate::propagate::Propagation;
use crate::reaper::hierarchy::{self, TreeSweepConfig};
use crate::reaper::plan::PlanConfig;
use crate::reaper::tree_watch::TreeWatch;
use crate::reaper::watch::{self, LeaseConfig, LeaseConfigError, WatchConfig, WatchError};
use crate::reaper::{self, ReaperError, SweepConfig};

/// Format of the reaper's report on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Default `--max-deletions`: bounds what one bad clock or one bad label
/// write can destroy in a run, while a CronJob every few minutes still
/// keeps up with thousands of namespaces an hour.
pub const DEFAULT_MAX_DELETIONS: &str = "500";

/// Most namespaces one sweep deletes: a number (0 = repair only), or `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletionCap(pub Option<u32>);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{input:?} is neither a number of namespaces nor `unlimited`")]
pub struct DeletionCapError {
    input: String,
}

impl FromStr for DeletionCap {
    type Err = DeletionCapError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(Self(None));
        }
        s.parse::<u32>()
            .map(|n| Self(Some(n)))
            .map_err(|_| DeletionCapError { input: s.to_owned() })
    }
}

impl fmt::Display for DeletionCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("unlimited"),
        }
    }
}

/// Deletes expired namespace sets and repairs incomplete ones.
///
/// Finds every Namespace, ServiceAccount, Role and RoleBinding carrying
/// --selector, groups them by namespace and, for each: deletes it when its
/// expiry label is past (with uid and resourceVersion preconditions, and an
/// Event); skips it when already terminating; repairs missing or drifted
/// objects by server-side apply of the one desired set; gives a managed
/// namespace without a valid expiry creationTimestamp + --max-ttl; reports
/// selector-labelled objects in namespaces that are not managed and never
/// touches those namespaces. Nothing without the selector label is touched.
///
/// Exit status: 0 when everything planned was done (a deletion cap being
/// reached is not a failure: the report says so), 1 when some set failed
/// (what was done stays done), 2 when the run could not happen (flags,
/// client, LIST).
#[derive(Debug, Clone, Parser)]
#[command(name = "reaper", version)]
pub struct ReaperArgs {
    /// Sweep once and exit: the default, for a CronJob.
    #[arg(long, env = "NP_ONCE", conflicts_with = "watch")]
    pub once: bool,

    /// Run continuously: a controller requeueing each namespace at its expiry,
    /// repairing on every change, under a leader Lease; serves /healthz and /metrics.
    #[arg(long, env = "NP_WATCH")]
    pub watch: bool,

    /// Print the plan and write nothing (sweep only).
    #[arg(long, env = "NP_DRY_RUN", conflicts_with = "watch")]
    pub dry_run: bool,

    /// Most namespaces deleted by one sweep (oldest expiry first); the rest
    /// wait for the next run. A number (0: repair only) or `unlimited`. Sweep only.
    #[arg(long, env = "NP_MAX_DELETIONS", default_value = DEFAULT_MAX_DELETIONS, conflicts_with = "watch")]
    pub max_deletions: DeletionCap,

    /// Format of the report printed on stdout (logs go to stderr).
    #[arg(long, env = "NP_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Namespace sets written (sweep) or reconciled (watch) at the same time.
    #[arg(long, env = "NP_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    #[command(flatten)]
    pub lease: LeaseArgs,

    #[command(flatten)]
    pub shared: SharedArgs,
}

/// Leader election and the internal listener, for --watch.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Lease (coordination.k8s.io) electing the one replica that acts (--watch).
    #[arg(long, env = "NP_LEASE_NAME", default_value = "namespace-provisioner-reaper")]
    pub lease_name: String,

    /// Namespace of the Lease (default: $POD_NAMESPACE, then the pod's
    /// ServiceAccount namespace, then `default`).
    #[arg(long, env = "NP_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease and in Events (default: $POD_NAME
    /// or the hostname, plus a random suffix).
    #[arg(long, env = "NP_LEASE_IDENTITY")]
    pub lease_identity: Option<String>,

    /// How long the Lease holds without renewal: a replica that stops without
    /// releasing it is replaced after at most this long. Whole seconds, >= 2s.
    #[arg(long, env = "NP_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// Internal listener for /healthz and /metrics (--watch).
    #[arg(long, env = "NP_METRICS_ADDR", default_value = "0.0.0.0:9091")]
    pub metrics_addr: SocketAddr,
}

/// What the reaper binary is asked to do, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum ReaperMode {
    Sweep(SweepConfig),
    Watch {
        config: WatchConfig,
        metrics_addr: SocketAddr,
    },
}

#[derive(Debug, Error)]
pub enum ReaperArgsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Lease(#[from] LeaseConfigError),
}

/// Where the pod's ServiceAccount namespace is mounted.
const SERVICE_ACCOUNT_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl ReaperArgs {
    pub fn mode(&self) -> Result<ReaperMode, ReaperArgsError> {
        let set = self.shared.policy.set_config()?;
        let max_ttl = self.shared.policy.ttl_policy()?.max();
        let identity = self.lease.lease_identity.clone().unwrap_or_else(|| {
            default_identity(
                std::env::var("POD_NAME")
                    .ok()
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok()),
                &random_suffix(),
            )
        });
        if self.watch {
            let namespace = self.lease.lease_namespace.clone().unwrap_or_else(|| {
                default_lease_namespace(
                    std::env::var("POD_NAMESPACE").ok(),
                    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE).ok(),
                )
            });
            let lease = LeaseConfig::new(
                self.lease.lease_name.clone(),
                namespace,
                identity,
                self.lease.lease_duration,
            )?;
            return Ok(ReaperMode::Watch {
                config: WatchConfig {
                    plan: PlanConfig {
                        set,
                        max_ttl,
                        max_deletions: None,
                    },
                    page_size: self.shared.kube.page_size,
                    concurrency: self.concurrency,
                    lease,
                },
                metrics_addr: self.lease.metrics_addr,
            });
        }
        Ok(ReaperMode::Sweep(SweepConfig {
            plan: PlanConfig {
                set,
                max_ttl,
                max_deletions: self.max_deletions.0,
            },
            page_size: self.shared.kube.page_size,
            concurrency: usize::from(self.concurrency),
            dry_run: self.dry_run,
            instance: identity,
        }))
    }
}

/// `<pod or host name>-<suffix>`, or `reaper-<suffix>` without a usable name.
pub fn default_identity(name: Option<String>, suffix: &str) -> String {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    format!("{}-{suffix}", name.as_deref().unwrap_or("reaper"))
}

/// `$POD_NAMESPACE`, else the mounted ServiceAccount namespace, else `default`.
pub fn default_lease_namespace(pod_namespace: Option<String>, mounted: Option<String>) -> String {
    [pod_namespace, mounted]
        .into_iter()
        .flatten()
        .map(|n| n.trim().to_owned())
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// What a run came to, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// A sweep; `failed` when some set failed (what was done stays done).
    Swept { failed: bool },
    /// Watch mode stopped on a signal.
    Watched,
}

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Args(#[from] ReaperArgsError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Sweep(#[from] ReaperError),
    #[error(transparent)]
    Discover(#[from] ResolveKindsError),
    #[error("encode the report as JSON")]
    Report(#[source] serde_json::Error),
    #[error("listen on --metrics-addr {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Watch(#[from] WatchError),
}

/// Validate the flags, build the client and sweep once (printing the report
/// on stdout) or watch until SIGTERM/SIGINT.
pub async fn run(args: &ReaperArgs) -> Result<Ran, RunError> {
    let mode = args.mode()?;
    let client = args.shared.kube.client().await?;
    match mode {
        ReaperMode::Sweep(config) => {
            let propagation_config = args
                .shared
                .hierarchy
                .propagation_config()
                .map_err(ReaperArgsError::from)?;
            let mut report = reaper::run(&client, &config).await?;
            // Trees after expiry: children of a namespace this sweep deleted go in the same run.
            let propagation = Propagation::discover(&client, propagation_config)
                .await?
                .excluding_sets(config.plan.set.selector.clone());
            let deleted = report.entries.iter().filter(|e| e.action == "delete").count();
            let trees = TreeSweepConfig {
                selector: config.plan.set.selector.clone(),
                page_size: config.page_size,
                concurrency: config.concurrency,
                dry_run: config.dry_run,
                deletions_left: config
                    .plan
                    .max_deletions
                    .map(|max| usize::try_from(max).unwrap_or(usize::MAX).saturating_sub(deleted)),
            };
            report.trees =
                Some(hierarchy::sweep(&client, &propagation, &trees, crate::clock::system_clock()).await?);
            let text = match args.output {
                OutputFormat::Text => report.to_text(),
                OutputFormat::Json => report.to_json().map_err(RunError::Report)? + "\n",
            };
            print!("{text}");
            Ok(Ran::Swept {
                failed: report.failed(),
            })
        }
        ReaperMode::Watch { config, metrics_addr } => {
            let listener = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .map_err(|source| RunError::Listen {
                    addr: metrics_addr,
                    source,
                })?;
            let propagation_config = args
                .shared
                .hierarchy
                .propagation_config()
                .map_err(ReaperArgsError::from)?;
            let propagation = Propagation::discover(&client, propagation_config)
                .await?
                .excluding_sets(config.plan.set.selector.clone());
            let trees = TreeWatch {
                propagation: std::sync::Arc::new(propagation),
                selector: config.plan.set.selector.clone(),
                page_size: config.page_size,
                concurrency: usize::from(config.concurrency),
                instance: config.lease.identity.clone(),
            };
            let signals = shutdown_signal().map_err(RunError::Signals)?;
            watch::watch_with_trees(client, config, Some(trees), listener, signals).await?;
            Ok(Ran::Watched)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::labels::DEFAULT_SELECTOR;

    #[test]
    fn reaper_args_are_consistent() {
        use clap::CommandFactory;
        ReaperArgs::command().debug_assert();
    }

    #[test]
    fn reaper_defaults_to_a_capped_sweep() {
        let args = ReaperArgs::try_parse_from(["reaper"]).unwrap();
        let ReaperMode::Sweep(config) = args.mode().unwrap() else {
            panic!("not a sweep")
        };
        assert_eq!(config.plan.max_deletions, Some(500));
        assert_eq!(config.page_size, 500);
        assert_eq!(config.concurrency, 16);
        assert!(!config.dry_run);
        assert_eq!(config.plan.max_ttl, Duration::from_secs(3600));
        assert_eq!(config.plan.set.selector.to_string(), DEFAULT_SELECTOR);
        assert_eq!(args.output, OutputFormat::Text);
        assert_eq!(args.lease.lease_name, "namespace-provisioner-reaper");
        assert_eq!(args.lease.metrics_addr.to_string(), "0.0.0.0:9091");
    }

    #[test]
    fn reaper_flags_parse_and_conflict() {
        let args = ReaperArgs::try_parse_from([
            "reaper",
            "--once",
            "--dry-run",
            "--max-deletions",
            "unlimited",
            "--max-ttl",
            "2h",
            "--output",
            "json",
        ])
        .unwrap();
        let ReaperMode::Sweep(config) = args.mode().unwrap() else {
            panic!()
        };
        assert_eq!(config.plan.max_deletions, None);
        assert_eq!(config.plan.max_ttl, Duration::from_secs(7200));
        assert!(config.dry_run);
        assert_eq!(
            ReaperArgs::try_parse_from(["reaper", "--max-deletions", "0"])
                .unwrap()
                .max_deletions,
            DeletionCap(Some(0))
        );
        for bad in [
            vec!["reaper", "--once", "--watch"],
            vec!["reaper", "--watch", "--dry-run"],
            vec!["reaper", "--watch", "--max-deletions", "3"],
            vec!["reaper", "--max-deletions", "-1"],
            vec!["reaper", "--output", "yaml"],
        ] {
            assert!(ReaperArgs::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reaper_watch_mode_builds_a_lease() {
        let args = ReaperArgs::try_parse_from([
            "reaper",
            "--watch",
            "--lease-namespace",
            "ops",
            "--lease-identity",
            "me",
            "--lease-duration",
            "3s",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .unwrap();
        let ReaperMode::Watch { config, metrics_addr } = args.mode().unwrap() else {
            panic!()
        };
        assert_eq!(config.lease.namespace, "ops");
        assert_eq!(config.lease.identity, "me");
        assert_eq!(config.lease.duration(), Duration::from_secs(3));
        assert_eq!(config.plan.max_deletions, None);
        assert_eq!(metrics_addr.port(), 0);
        let short = ReaperArgs::try_parse_from(["reaper", "--watch", "--lease-duration", "1s"]).unwrap();
        assert!(matches!(short.mode(), Err(ReaperArgsError::Lease(_))));
    }

    #[test]
    fn identities_and_lease_namespaces_have_fallbacks() {
        assert_eq!(default_identity(Some("pod-1\n".into()), "abc"), "pod-1-abc");
        assert_eq!(default_identity(Some(" ".into()), "abc"), "reaper-abc");
        assert_eq!(default_identity(None, "abc"), "reaper-abc");
        assert_eq!(default_lease_namespace(Some("a".into()), Some("b".into())), "a");
        assert_eq!(default_lease_namespace(None, Some("b\n".into())), "b");
        assert_eq!(default_lease_namespace(Some(String::new()), None), "default");
    }
}
