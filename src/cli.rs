//! Command-line flags shared by both binaries (one definition, so the
//! provisioner and the reaper agree on defaults), and their conversion into
//! validated configuration. The only module that knows about clap.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use k8s_openapi::api::rbac::v1::PolicyRule;
use thiserror::Error;

use crate::desired::SetConfig;
use crate::labels::DEFAULT_SELECTOR;
use crate::params::{Selector, TtlPolicy, TtlPolicyError};
use crate::reaper::SweepConfig;
use crate::reaper::plan::PlanConfig;
use crate::reaper::watch::{LeaseConfig, LeaseConfigError, WatchConfig};

/// What a managed set is and how long it may live.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Label (key=value) that marks every object we manage; the reaper touches nothing without it.
    #[arg(long, env = "NP_SELECTOR", default_value = DEFAULT_SELECTOR)]
    pub selector: Selector,

    /// ClusterRole bound (by a RoleBinding) inside every managed namespace.
    #[arg(long, env = "NP_CLUSTER_ROLE", default_value = "namespace-provisioner-grant")]
    pub cluster_role: String,

    /// YAML or JSON list of RBAC PolicyRules for an extra namespaced Role in every managed namespace.
    #[arg(long, env = "NP_ROLE_RULES_FILE")]
    pub role_rules_file: Option<PathBuf>,

    /// Lifetime of a namespace when the caller asks for none (or for 0).
    #[arg(long, env = "NP_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,

    /// Longest lifetime a caller may ask for (default: --ttl). The reaper gives
    /// managed namespaces without a valid expiry creationTimestamp + this.
    #[arg(long, env = "NP_MAX_TTL", value_parser = humantime::parse_duration)]
    pub max_ttl: Option<Duration>,
}

/// How to reach the Kubernetes API.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Kubeconfig file (default: in-cluster config, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "NP_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: its current context).
    #[arg(long, env = "NP_CONTEXT")]
    pub context: Option<String>,

    /// Objects per page when listing.
    #[arg(long, env = "NP_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "NP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `namespace_provisioner=debug,info`.
    #[arg(long, env = "NP_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(transparent)]
    Ttl(#[from] TtlPolicyError),
    #[error("--cluster-role must name a ClusterRole")]
    EmptyClusterRole,
    #[error("read --role-rules-file {path}")]
    ReadRules {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--role-rules-file {path} is not a YAML/JSON list of PolicyRules: {reason}")]
    ParseRules { path: String, reason: String },
    #[error("--role-rules-file {path} holds no rules")]
    NoRules { path: String },
}

impl PolicyArgs {
    pub fn ttl_policy(&self) -> Result<TtlPolicy, ConfigError> {
        Ok(TtlPolicy::new(self.ttl, self.max_ttl)?)
    }

    pub fn set_config(&self) -> Result<SetConfig, ConfigError> {
        if self.cluster_role.trim().is_empty() {
            return Err(ConfigError::EmptyClusterRole);
        }
        let role_rules = match &self.role_rules_file {
            None => None,
            Some(path) => Some(read_rules(path)?),
        };
        Ok(SetConfig {
            selector: self.selector.clone(),
            cluster_role: self.cluster_role.clone(),
            role_rules,
        })
    }
}

fn read_rules(path: &std::path::Path) -> Result<Vec<PolicyRule>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadRules {
        path: shown.clone(),
        source,
    })?;
    let rules: Vec<PolicyRule> = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::ParseRules {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if rules.is_empty() {
        return Err(ConfigError::NoRules { path: shown });
    }
    Ok(rules)
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("load Kubernetes client configuration")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("load kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("build Kubernetes client")]
    Build(#[source] kube::Error),
}

impl KubeArgs {
    /// A client from the flags, or inferred like kubectl does.
    pub async fn client(&self) -> Result<(kube::Client, kube::Config), ClientError> {
        let config = self.config().await?;
        let client = kube::Client::try_from(config.clone()).map_err(ClientError::Build)?;
        Ok((client, config))
    }

    /// Client configuration from the flags, or inferred like kubectl does.
    pub async fn config(&self) -> Result<kube::Config, ClientError> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match (&self.kubeconfig, &self.context) {
            (None, None) => kube::Config::infer().await.map_err(ClientError::Infer)?,
            (Some(path), _) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(ClientError::Kubeconfig)?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(ClientError::Kubeconfig)?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(ClientError::Kubeconfig)?,
        };
        Ok(config)
    }
}

impl LogArgs {
    /// Install the global tracing subscriber (stderr, text or JSON).
    pub fn init(&self) -> Result<(), String> {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| format!("--log {:?} is not a valid filter: {e}", self.log))?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let result = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        result.map_err(|e| e.to_string())
    }
}

// The reaper's command line (`bin/reaper.rs`).

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

impl FromStr for DeletionCap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(Self(None));
        }
        s.parse::<u32>()
            .map(|n| Self(Some(n)))
            .map_err(|_| format!("{s:?} is neither a number of namespaces nor `unlimited`"))
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
    pub policy: PolicyArgs,

    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub log: LogArgs,
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
        let set = self.policy.set_config()?;
        let max_ttl = self.policy.ttl_policy()?.max();
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
                    page_size: self.kube.page_size,
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
            page_size: self.kube.page_size,
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

/// Resolves on the first SIGTERM or SIGINT: how both binaries learn to stop.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// A binary's `--help` as the generated reference in `docs/cli/` holds it:
/// fixed width, env values hidden so it does not depend on the shell.
pub fn reference_help(command: clap::Command) -> String {
    command
        .term_width(100)
        .mut_args(|a| a.hide_env_values(true))
        .render_long_help()
        .to_string()
}

/// Flags that cannot be set from the environment (there should be none).
pub fn flags_without_env(command: &clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter(|a| !["help", "version"].contains(&a.get_id().as_str()) && a.get_env().is_none())
        .map(|a| a.get_id().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Both {
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn defaults_match_the_design() {
        let args = Both::try_parse_from(["x"]).unwrap();
        assert_eq!(args.policy.selector.to_string(), DEFAULT_SELECTOR);
        assert_eq!(args.policy.cluster_role, "namespace-provisioner-grant");
        let policy = args.policy.ttl_policy().unwrap();
        assert_eq!(policy.default_ttl(), Duration::from_secs(3600));
        assert_eq!(policy.max(), Duration::from_secs(3600));
        assert_eq!(args.kube.page_size, 500);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let err = Both::try_parse_from(["x", "--selector", "nope"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--selector"), "{err}");
        let err = Both::try_parse_from(["x", "--ttl", "soon"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--ttl"), "{err}");
        let err = Both::try_parse_from(["x", "--page-size", "0"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--page-size"), "{err}");
        let args = Both::try_parse_from(["x", "--ttl", "2h", "--max-ttl", "1h"]).unwrap();
        assert!(args.policy.ttl_policy().is_err());
    }

    #[test]
    fn role_rules_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("rules.yaml");
        std::fs::write(
            &good,
            "- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get]\n",
        )
        .unwrap();
        let args = Both::try_parse_from(["x", "--role-rules-file", good.to_str().unwrap()]).unwrap();
        let set = args.policy.set_config().unwrap();
        assert_eq!(set.role_rules.unwrap()[0].verbs, vec!["get"]);
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "[]").unwrap();
        let args = Both::try_parse_from(["x", "--role-rules-file", empty.to_str().unwrap()]).unwrap();
        assert!(matches!(
            args.policy.set_config(),
            Err(ConfigError::NoRules { .. })
        ));
    }

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
