//! The reaper's command line: its flags, their validation into a
//! [`ReaperMode`], and [`run`]. Reads the environment and `/proc` for the
//! Lease defaults; Kubernetes I/O happens in [`crate::reaper`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use thiserror::Error;

use super::{ConfigError, SharedArgs, shutdown_signal};
use crate::k8s::preflight::{self, PreflightError};
use crate::k8s::{ClientError, ResolveKindsError};
use crate::propagate::Propagation;
use crate::reaper::brake::BrakeConfig;
use crate::reaper::hierarchy::{self, TreeSweepConfig};
use crate::reaper::notice::{NoticeError, NoticeMetrics, NoticeReport, Notifier};
use crate::reaper::plan::{MassDeletionGuard, PlanConfig};
use crate::reaper::pool::{self as warm_pool, PoolConfig, PoolWatch};
use crate::reaper::report::Notices;
use crate::reaper::tree_watch::TreeWatch;
use crate::reaper::watch::{
    self, ClockCheck, LeaseConfig, LeaseConfigError, WatchConfig, WatchError, WatchOptions,
};
use crate::reaper::webhook::{WebhookLoadError, WebhookMetrics, WebhookSender, Webhooks};
use crate::reaper::{self, ReaperError, Safety, SweepConfig};
use crate::rules::notice::{NoticeLead, NoticeLeadError};
use crate::rules::params::NamePrefix;
use crate::rules::permissions::{self, Identity, PermissionContext, PropagatedKind};

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

/// Default `--watch-max-deletions` (per the default 5-minute window): as
/// many as a default-capped sweep deletes, far above what TTLs of minutes to
/// hours expire in a normal cluster, far below "every namespace at once".
pub const DEFAULT_WATCH_MAX_DELETIONS: u32 = 500;

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
/// client, preflight, LIST), 3 when a safety guard refused the sweep's
/// deletions (mass deletion, clock skew; repairs were done).
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

    /// Watch mode's brake: most namespaces deleted per --watch-deletion-window;
    /// past it expired namespaces wait (oldest expiry first; repairs go on),
    /// with a metric, a Warning Event and a log line saying why.
    #[arg(long, env = "NP_WATCH_MAX_DELETIONS", default_value_t = DEFAULT_WATCH_MAX_DELETIONS)]
    pub watch_max_deletions: u32,

    /// The sliding window of --watch-max-deletions.
    #[arg(long, env = "NP_WATCH_DELETION_WINDOW", default_value = "5m", value_parser = humantime::parse_duration)]
    pub watch_deletion_window: Duration,

    /// Lift the deletion bounds: --max-deletions and the mass-deletion guard
    /// (sweep), --watch-max-deletions (watch). For an intended mass expiry.
    #[arg(long, env = "NP_ALLOW_MASS_DELETION")]
    pub allow_mass_deletion: bool,

    /// The sweep's mass-deletion guard: when more than this fraction of all
    /// managed namespaces (and more than --mass-deletion-min) are due, the
    /// sweep deletes none of them (repairs go on), says why and exits 3.
    /// A number in (0, 1].
    #[arg(long, env = "NP_MASS_DELETION_FRACTION", default_value_t = 0.5, value_parser = parse_fraction)]
    pub mass_deletion_fraction: f64,

    /// The mass-deletion guard ignores sweeps that delete at most this many namespaces.
    #[arg(long, env = "NP_MASS_DELETION_MIN", default_value_t = 10)]
    pub mass_deletion_min: u32,

    /// Most the local clock may differ from the API server's (its Date
    /// header, measured at each sweep and every 30s in watch mode). Beyond
    /// it nothing is deleted (repairs go on): a clock running ahead would
    /// delete namespaces before their time. A sweep then exits 3.
    #[arg(long, env = "NP_MAX_CLOCK_SKEW", default_value = "30s", value_parser = parse_skew_bound)]
    pub max_clock_skew: Duration,

    /// Do not check this identity's permissions (SelfSubjectAccessReview) at
    /// start-up. For identities whose rights are deliberately narrower than
    /// the shipped ClusterRole (e.g. a few namespaces only).
    #[arg(long, env = "NP_SKIP_PREFLIGHT")]
    pub skip_preflight: bool,

    /// Give each managed namespace an `ExpiringSoon` Event (in the namespace)
    /// this long before its expiry, once per expiry (an extend re-arms it;
    /// none for a namespace whose whole life is shorter). Off when not given.
    /// E.g. `10m`; whole seconds, 1s to 30days.
    #[arg(long, env = "NP_NOTIFY_BEFORE", value_parser = humantime::parse_duration)]
    pub notify_before: Option<Duration>,

    /// Also send notices as signed CloudEvents to webhooks: this
    /// administrator's YAML file maps tenants (and an optional default) to a
    /// URL and a secret file for the HMAC-SHA256 signature (see
    /// docs/notifications.md). Events: `expiring` (with --notify-before),
    /// `expired`, `deleted`. Read and checked at start; never blocks a sweep
    /// or a deletion (bounded queue, bounded retries).
    #[arg(long, env = "NP_NOTIFY_WEBHOOK_CONFIG")]
    pub notify_webhook_config: Option<PathBuf>,
    /// Warm pool (issue 16): top-level namespaces kept made and unclaimed, with
    /// ServiceAccount and RoleBinding in place, for a provisioner run with
    /// --claim-from-pool. 0 to 100; 0: no top-level pool. Both modes.
    #[arg(long, env = "NP_POOL_SIZE", default_value_t = 0, value_parser = parse_pool_size)]
    pub pool_size: u32,

    /// Also keep the pools parents ask for with their
    /// `controller.observatorium.io/pool-size` annotation (children with the
    /// parent's copies in place; never under a HierarchicalResourceQuota).
    #[arg(long, env = "NP_PARENT_POOLS")]
    pub parent_pools: bool,

    /// A pool member unclaimed this long is deleted (by the expiry rule, under
    /// its cap and guards) and replaced, so no member's copies are older. 1m to 24h.
    #[arg(long, env = "NP_POOL_MAX_AGE", default_value = "1h", value_parser = parse_pool_max_age)]
    pub pool_max_age: Duration,

    /// Name prefix of pool members (`<prefix>-<random>`): the provisioner's --prefix.
    #[arg(long, env = "NP_POOL_PREFIX", default_value = "np")]
    pub pool_prefix: NamePrefix,

    /// Watch mode: how often the pools are compared with their sizes and refilled
    /// besides the refill a change to a member (a claim) wakes. 1s to 10m.
    #[arg(long, env = "NP_POOL_REFILL_INTERVAL", default_value = "5s", value_parser = parse_refill_interval)]
    pub pool_refill_interval: Duration,

    #[command(flatten)]
    pub lease: LeaseArgs,

    #[command(flatten)]
    pub shared: SharedArgs,
}

/// `--pool-size`: a whole number from 0 to [`crate::rules::pool::MAX_POOL_SIZE`].
fn parse_pool_size(s: &str) -> Result<u32, String> {
    crate::rules::pool::parse_pool_size("--pool-size", s).map_err(|e| e.to_string())
}

/// A duration within `[min, max]`, named `flag` in the message.
fn duration_within(flag: &str, s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{flag} {s:?}: {e}"))?;
    if d < min || d > max {
        return Err(format!(
            "{flag} {s:?} must be from {} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// `--pool-max-age`: 1m to 24h (a member's copies are at most this old).
fn parse_pool_max_age(s: &str) -> Result<Duration, String> {
    duration_within(
        "--pool-max-age",
        s,
        Duration::from_secs(60),
        Duration::from_secs(24 * 3600),
    )
}

/// `--pool-refill-interval`: 1s to 10m.
fn parse_refill_interval(s: &str) -> Result<Duration, String> {
    duration_within(
        "--pool-refill-interval",
        s,
        Duration::from_secs(1),
        Duration::from_secs(600),
    )
}

/// `--mass-deletion-fraction`: a number in (0, 1].
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a fraction in (0, 1] (e.g. 0.5 for half of all managed namespaces)"
        )),
    }
}

/// `--max-clock-skew`: a duration of at least one second (the server's
/// clock is read to the second).
pub(crate) fn parse_skew_bound(s: &str) -> Result<Duration, String> {
    let bound = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if bound < Duration::from_secs(1) {
        return Err(format!(
            "{s:?} is below 1s: the API server's Date header has whole seconds"
        ));
    }
    Ok(bound)
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
    #[error(transparent)]
    NotifyBefore(#[from] NoticeLeadError),
}

/// Where the pod's ServiceAccount namespace is mounted.
const SERVICE_ACCOUNT_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl ReaperArgs {
    /// `--notify-before`, validated; `None` when notices are off.
    pub fn notice_lead(&self) -> Result<Option<NoticeLead>, ReaperArgsError> {
        Ok(self.notify_before.map(NoticeLead::new).transpose()?)
    }

    /// The guards that refuse a whole sweep's deletions.
    pub fn safety(&self) -> Safety {
        Safety {
            mass_deletion: (!self.allow_mass_deletion).then_some(MassDeletionGuard {
                fraction: self.mass_deletion_fraction,
                min: self.mass_deletion_min,
            }),
            max_clock_skew: Some(self.max_clock_skew),
        }
    }

    /// The warm pools to keep (`None`: no `--pool-size` and no `--parent-pools`).
    pub fn pool_config(&self) -> Result<Option<PoolConfig>, ReaperArgsError> {
        if self.pool_size == 0 && !self.parent_pools {
            return Ok(None);
        }
        Ok(Some(PoolConfig {
            set: self.shared.policy.set_config()?,
            top_level_size: self.pool_size,
            parent_pools: self.parent_pools,
            max_age: self.pool_max_age,
            prefix: self.pool_prefix.clone(),
            page_size: self.shared.kube.page_size,
            concurrency: usize::from(self.concurrency),
            dry_run: self.dry_run,
        }))
    }

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
                    brake: BrakeConfig {
                        max_deletions: self.watch_max_deletions,
                        window: self.watch_deletion_window,
                        allow_mass_deletion: self.allow_mass_deletion,
                    },
                },
                metrics_addr: self.lease.metrics_addr,
            });
        }
        Ok(ReaperMode::Sweep(SweepConfig {
            plan: PlanConfig {
                set,
                max_ttl,
                max_deletions: if self.allow_mass_deletion {
                    None
                } else {
                    self.max_deletions.0
                },
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
    /// A sweep; `failed` when some set failed (what was done stays done);
    /// `refused` when a safety guard refused its deletions.
    Swept { failed: bool, refused: bool },
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
    #[error(transparent)]
    Notice(#[from] NoticeError),
    #[error(transparent)]
    Webhook(#[from] WebhookLoadError),
    #[error("preflight")]
    Preflight(#[source] PreflightError),
    #[error("preflight: {summary}")]
    Forbidden { summary: String },
}

/// Validate the flags, build the client and sweep once (printing the report
/// on stdout) or watch until SIGTERM/SIGINT.
pub async fn run(args: &ReaperArgs) -> Result<Ran, RunError> {
    let mode = args.mode()?;
    let lead = args.notice_lead()?;
    let webhooks = load_webhooks(args, lead.is_some())?;
    let client = args.shared.kube.client().await?;
    let propagation_config = args
        .shared
        .hierarchy
        .propagation_config()
        .map_err(ReaperArgsError::from)?;
    // Discovery first: the configured kinds are rows of the preflight.
    let propagation = Propagation::discover(&client, propagation_config).await?;
    if !args.skip_preflight {
        check_permissions(&client, &mode, &propagated_kinds(&propagation)).await?;
    }
    match mode {
        ReaperMode::Sweep(config) => {
            let propagation = propagation.excluding_sets(config.plan.set.selector.clone());
            // The webhook counts go to the report (no /metrics in a sweep).
            let webhook = webhooks.map(|w| WebhookSender::start(w, WebhookMetrics::default()));
            let mut report = reaper::run_safely_notifying(
                &client,
                &config,
                &args.safety(),
                crate::clock::system_clock,
                webhook.as_ref(),
            )
            .await?;
            // Trees after expiry: children of a namespace this sweep deleted go in the same run.
            let deleted = report.entries.iter().filter(|e| e.action == "delete").count();
            // A refused run cascades nothing either.
            let cap = if report.refused() {
                Some(0)
            } else {
                config.plan.max_deletions
            };
            let trees = TreeSweepConfig {
                selector: config.plan.set.selector.clone(),
                page_size: config.page_size,
                concurrency: config.concurrency,
                dry_run: config.dry_run,
                deletions_left: cap
                    .map(|max| usize::try_from(max).unwrap_or(usize::MAX).saturating_sub(deleted)),
            };
            report.trees = Some(
                hierarchy::sweep_notifying(
                    &client,
                    &propagation,
                    &trees,
                    crate::clock::system_clock(),
                    webhook.as_ref(),
                )
                .await?,
            );
            let expiring_soon = match lead {
                Some(lead) => Some(notice_sweep(&client, &config, lead, webhook.clone()).await?),
                None => None,
            };
            let notices_failed = expiring_soon.is_some_and(|n| n.failed > 0);
            let webhook = match webhook {
                Some(webhook) => Some(drain_webhooks(&webhook).await),
                None => None,
            };
            if expiring_soon.is_some() || webhook.is_some() {
                report.notices = Some(Notices {
                    expiring_soon,
                    webhook,
                });
            }
            // Pools last: members the expiry rule just deleted are replaced in the same run.
            if let Some(pool) = args.pool_config()? {
                let now = crate::clock::system_clock();
                report.pool = Some(warm_pool::refill(&client, &propagation, &pool, now, None).await?);
            }
            let text = match args.output {
                OutputFormat::Text => report.to_text(),
                OutputFormat::Json => report.to_json().map_err(RunError::Report)? + "\n",
            };
            print!("{text}");
            // Webhook failures are counted and logged, not a failed run: the
            // namespaces were handled; a receiver being down is its own alert.
            Ok(Ran::Swept {
                failed: report.failed() || notices_failed,
                refused: report.refused(),
            })
        }
        ReaperMode::Watch { config, metrics_addr } => {
            let listener = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .map_err(|source| RunError::Listen {
                    addr: metrics_addr,
                    source,
                })?;
            let propagation =
                std::sync::Arc::new(propagation.excluding_sets(config.plan.set.selector.clone()));
            let pool = args.pool_config()?.map(|pool| PoolWatch {
                config: pool,
                propagation: propagation.clone(),
                interval: args.pool_refill_interval,
            });
            let trees = TreeWatch {
                propagation,
                selector: config.plan.set.selector.clone(),
                page_size: config.page_size,
                concurrency: usize::from(config.concurrency),
                instance: config.lease.identity.clone(),
            };
            let signals = shutdown_signal().map_err(RunError::Signals)?;
            let options = WatchOptions {
                trees: Some(trees),
                clock: Some(ClockCheck {
                    max_skew: args.max_clock_skew,
                    clock: crate::clock::system_clock,
                }),
                notify_before: lead,
                webhook: webhooks,
                pool,
                role_rules: args
                    .shared
                    .policy
                    .role_rules_file
                    .as_deref()
                    .map(super::role_rules_watched),
            };
            watch::watch_with(client, config, options, listener, signals).await?;
            Ok(Ran::Watched)
        }
    }
}

/// `--notify-webhook-config`, read and checked (secret files included).
fn load_webhooks(args: &ReaperArgs, notify_before: bool) -> Result<Option<Arc<Webhooks>>, RunError> {
    let Some(path) = &args.notify_webhook_config else {
        return Ok(None);
    };
    let webhooks = Webhooks::load(path)?;
    tracing::info!(
        config = %path.display(),
        endpoints = webhooks.endpoint_count(),
        expiring = notify_before,
        "webhook notices on (`expiring` needs --notify-before)"
    );
    Ok(Some(Arc::new(webhooks)))
}

/// `--once`: wait (bounded) for the queued webhook notices, then count them.
async fn drain_webhooks(webhook: &WebhookSender) -> crate::reaper::webhook::WebhookTally {
    let within = webhook.drain_timeout();
    if !webhook.drain(within).await {
        tracing::warn!(
            pending = webhook.tally().pending,
            drain_timeout = %humantime::format_duration(within),
            "webhook notices still queued when the run ends (delivery.drainTimeout); they are not sent"
        );
    }
    let tally = webhook.tally();
    tracing::info!(
        sent = tally.sent,
        failed = tally.failed,
        dropped = tally.dropped,
        pending = tally.pending,
        "webhook notices"
    );
    tally
}

/// `--once --notify-before`: the notice pass after the sweep (logged).
async fn notice_sweep(
    client: &kube::Client,
    config: &SweepConfig,
    lead: NoticeLead,
    webhook: Option<WebhookSender>,
) -> Result<NoticeReport, RunError> {
    let notifier =
        Notifier::new(client.clone(), &config.instance, lead, NoticeMetrics::default()).with_webhook(webhook);
    let report = notifier
        .sweep(
            &config.plan.set.selector,
            config.page_size,
            crate::clock::system_clock(),
            config.dry_run,
        )
        .await?;
    tracing::info!(
        sent = report.sent,
        failed = report.failed,
        deferred = report.deferred,
        lead = %humantime::format_duration(std::time::Duration::from_secs(lead.secs().unsigned_abs())),
        "ExpiringSoon notices"
    );
    Ok(report)
}

/// The kinds of the propagation configuration, as preflight rows need them.
pub fn propagated_kinds(propagation: &Propagation) -> Vec<PropagatedKind> {
    propagation
        .active_kinds()
        .map(|kind| PropagatedKind {
            group: kind.resource.group.clone(),
            plural: kind.resource.plural.clone(),
        })
        .collect()
}

/// Ask the API server about every permission this mode uses, before the
/// first LIST: name each missing one (with its manifest) and refuse to run.
async fn check_permissions(
    client: &kube::Client,
    mode: &ReaperMode,
    propagated: &[PropagatedKind],
) -> Result<(), RunError> {
    let (identity, set, lease_namespace) = match mode {
        ReaperMode::Sweep(config) => (Identity::Reaper { watch: false }, &config.plan.set, None),
        ReaperMode::Watch { config, .. } => (
            Identity::Reaper { watch: true },
            &config.plan.set,
            Some(config.lease.namespace.as_str()),
        ),
    };
    let context = PermissionContext::new(&set.cluster_role, lease_namespace).with_propagated(propagated);
    let wanted = permissions::required(identity, &context);
    let checked = preflight::preflight(client, &wanted)
        .await
        .map_err(RunError::Preflight)?;
    for missing in &checked.missing {
        tracing::error!(
            verb = missing.0.verb,
            resource = %missing.0.resource_text(),
            scope = %missing.0.scope,
            manifest = missing.0.manifest,
            "preflight: {missing}"
        );
    }
    if checked.passed() {
        tracing::info!(
            permissions = wanted.len(),
            "preflight: every permission this mode uses is granted"
        );
        return Ok(());
    }
    Err(RunError::Forbidden {
        summary: checked.summary(),
    })
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
        assert_eq!(
            config.brake,
            BrakeConfig {
                max_deletions: DEFAULT_WATCH_MAX_DELETIONS,
                window: Duration::from_secs(300),
                allow_mass_deletion: false,
            }
        );
        let short = ReaperArgs::try_parse_from(["reaper", "--watch", "--lease-duration", "1s"]).unwrap();
        assert!(matches!(short.mode(), Err(ReaperArgsError::Lease(_))));
    }

    #[test]
    fn allow_mass_deletion_lifts_both_bounds() {
        let args = ReaperArgs::try_parse_from(["reaper", "--allow-mass-deletion"]).unwrap();
        let ReaperMode::Sweep(config) = args.mode().unwrap() else {
            panic!()
        };
        assert_eq!(config.plan.max_deletions, None);
        let args = ReaperArgs::try_parse_from([
            "reaper",
            "--watch",
            "--allow-mass-deletion",
            "--watch-max-deletions",
            "3",
            "--watch-deletion-window",
            "1h",
        ])
        .unwrap();
        let ReaperMode::Watch { config, .. } = args.mode().unwrap() else {
            panic!()
        };
        assert!(config.brake.allow_mass_deletion);
        assert_eq!(config.brake.max_deletions, 3);
        assert_eq!(config.brake.window, Duration::from_secs(3600));
    }

    #[test]
    fn safety_guards_default_on_and_allow_mass_deletion_lifts_the_relative_one() {
        let args = ReaperArgs::try_parse_from(["reaper"]).unwrap();
        assert_eq!(
            args.safety(),
            Safety {
                mass_deletion: Some(MassDeletionGuard {
                    fraction: 0.5,
                    min: 10
                }),
                max_clock_skew: Some(Duration::from_secs(30)),
            }
        );
        let args = ReaperArgs::try_parse_from([
            "reaper",
            "--allow-mass-deletion",
            "--mass-deletion-fraction",
            "1",
            "--max-clock-skew",
            "2m",
        ])
        .unwrap();
        assert_eq!(args.safety().mass_deletion, None);
        assert_eq!(args.safety().max_clock_skew, Some(Duration::from_secs(120)));
        for bad in [
            vec!["reaper", "--mass-deletion-fraction", "0"],
            vec!["reaper", "--mass-deletion-fraction", "1.5"],
            vec!["reaper", "--mass-deletion-fraction", "half"],
            vec!["reaper", "--mass-deletion-min", "-1"],
            vec!["reaper", "--max-clock-skew", "500ms"],
            vec!["reaper", "--max-clock-skew", "soon"],
        ] {
            assert!(ReaperArgs::try_parse_from(&bad).is_err(), "{bad:?}");
        }
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
