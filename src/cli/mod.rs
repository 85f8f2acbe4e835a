//! The command-line edge. This module: the flags both binaries share (one
//! definition, so the provisioner and the reaper agree on defaults), their
//! conversion into validated configuration, logging, the stop signal and the
//! generated CLI reference. [`provisioner`] and [`reaper`] hold each binary's
//! own flags and its `run`. The only module that knows about clap; reads
//! files, the environment and signals, never Kubernetes directly.

pub mod aws;
pub mod provisioner;
pub mod reaper;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use k8s_openapi::api::rbac::v1::PolicyRule;
use thiserror::Error;

use crate::k8s::{self, ClientError};
use crate::rules::desired::SetConfig;
use crate::rules::hierarchy::config::PropagationConfig;
use crate::rules::labels::DEFAULT_SELECTOR;
use crate::rules::params::{Selector, TtlPolicy, TtlPolicyError};

/// The flags both binaries take, flattened into each so they agree on
/// names, environment variables and defaults.
#[derive(Debug, Clone, Args)]
pub struct SharedArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,

    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub hierarchy: HierarchyArgs,
}

/// Namespace trees and propagation (issue 11), read the same way by both binaries.
#[derive(Debug, Clone, Args)]
pub struct HierarchyArgs {
    /// YAML file of propagation modes per kind and GitOps metadata to strip from copies
    /// (the `namespace-provisioner-propagation` ConfigMap). Without it: Roles and
    /// RoleBindings only, always Propagate.
    #[arg(long, env = "NP_PROPAGATION_CONFIG")]
    pub propagation_config: Option<PathBuf>,

    /// Deepest level a child may be created at (a root is at 0).
    #[arg(long, env = "NP_MAX_DEPTH", default_value_t = 3)]
    pub max_depth: usize,
}

impl HierarchyArgs {
    /// The propagation configuration: the file's, or the default (Roles and RoleBindings).
    pub fn propagation_config(&self) -> Result<PropagationConfig, ConfigError> {
        let Some(path) = &self.propagation_config else {
            return Ok(PropagationConfig::default());
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadPropagation {
            path: shown.clone(),
            source,
        })?;
        PropagationConfig::from_yaml(&text)
            .map_err(|source| ConfigError::ParsePropagation { path: shown, source })
    }
}

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

    /// Lifetime of a namespace when the caller asks for none (or for 0). The
    /// reaper creates nothing: there it only serves as the default of --max-ttl.
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
    #[error("--role-rules-file {path} is not a YAML/JSON list of PolicyRules")]
    ParseRules {
        path: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("--role-rules-file {path} holds no rules")]
    NoRules { path: String },
    #[error("read --propagation-config {path}")]
    ReadPropagation {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--propagation-config {path}")]
    ParsePropagation {
        path: String,
        #[source]
        source: crate::rules::hierarchy::config::ConfigError,
    },
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

#[derive(Debug, Error)]
pub enum RulesError {
    #[error("not a YAML/JSON list of PolicyRules")]
    Parse(#[source] serde_yaml_ng::Error),
    #[error("no rules")]
    Empty,
}

/// `--role-rules-file` as its reload reads it (the start-up read is [`PolicyArgs::set_config`]'s).
pub fn parse_rules(bytes: &[u8]) -> Result<Vec<PolicyRule>, RulesError> {
    let rules: Vec<PolicyRule> = serde_yaml_ng::from_slice(bytes).map_err(RulesError::Parse)?;
    if rules.is_empty() {
        return Err(RulesError::Empty);
    }
    Ok(rules)
}

/// `--role-rules-file` reloaded on change (both binaries): an unreadable or
/// invalid file keeps the last good rules.
pub fn role_rules_watched(path: &std::path::Path) -> crate::reload::Watched<Vec<PolicyRule>> {
    crate::reload::Watched {
        flag: "role-rules-file",
        path: path.to_path_buf(),
        also: None,
        parse: std::sync::Arc::new(|bytes: &[u8]| Ok(parse_rules(bytes)?)),
    }
}

fn read_rules(path: &std::path::Path) -> Result<Vec<PolicyRule>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadRules {
        path: shown.clone(),
        source,
    })?;
    let rules: Vec<PolicyRule> =
        serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::ParseRules {
            path: shown.clone(),
            source,
        })?;
    if rules.is_empty() {
        return Err(ConfigError::NoRules { path: shown });
    }
    Ok(rules)
}

impl KubeArgs {
    /// Client configuration from the flags, or inferred like kubectl does.
    pub async fn config(&self) -> Result<kube::Config, ClientError> {
        k8s::client_config(self.kubeconfig.as_deref(), self.context.as_deref()).await
    }

    /// A client from the flags, or inferred like kubectl does.
    pub async fn client(&self) -> Result<kube::Client, ClientError> {
        kube::Client::try_from(self.config().await?).map_err(ClientError::Build)
    }
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("--log {filter:?} is not a valid filter")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("install the log subscriber")]
    Install(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl LogArgs {
    /// Install the global tracing subscriber (stderr, text or JSON).
    pub fn init(&self) -> Result<(), LogError> {
        let filter =
            tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|source| LogError::Filter {
                filter: self.log.clone(),
                source,
            })?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let result = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        result.map_err(LogError::Install)
    }
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

/// Whether the generated reference at `path` (relative to the repository)
/// matches `command`'s help; with `NP_UPDATE_DOCS` set, rewrite it first.
/// Each binary's test calls this.
pub fn reference_is_current(command: clap::Command, path: &str) -> std::io::Result<bool> {
    let help = reference_help(command);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("NP_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &help)?;
    }
    Ok(std::fs::read_to_string(&path).unwrap_or_default() == help)
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

    #[test]
    fn a_bad_log_filter_is_named() {
        let args = LogArgs {
            log_format: LogFormat::Text,
            log: "=[".to_owned(),
        };
        assert!(matches!(args.init(), Err(LogError::Filter { .. })));
    }

    #[derive(Parser)]
    struct Both {
        #[command(flatten)]
        shared: SharedArgs,
    }

    #[test]
    fn defaults_match_the_design() {
        let args = Both::try_parse_from(["x"]).unwrap();
        assert_eq!(args.shared.policy.selector.to_string(), DEFAULT_SELECTOR);
        assert_eq!(args.shared.policy.cluster_role, "namespace-provisioner-grant");
        let policy = args.shared.policy.ttl_policy().unwrap();
        assert_eq!(policy.default_ttl(), Duration::from_secs(3600));
        assert_eq!(policy.max(), Duration::from_secs(3600));
        assert_eq!(args.shared.kube.page_size, 500);
        assert_eq!(args.shared.hierarchy.max_depth, 3);
        assert_eq!(
            args.shared.hierarchy.propagation_config().unwrap(),
            PropagationConfig::default()
        );
    }

    #[test]
    fn shipped_propagation_config_map_holds_the_default() {
        let manifest: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(include_str!("../../cronjob/base/propagation-config.yaml")).unwrap();
        let text = manifest["data"]["propagation.yaml"].as_str().unwrap();
        assert_eq!(
            PropagationConfig::from_yaml(text).unwrap(),
            PropagationConfig::default()
        );
    }

    #[test]
    fn propagation_config_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("propagation.yaml");
        std::fs::write(&good, "resources:\n- kind: ConfigMap\n  mode: Remove\n").unwrap();
        let args = Both::try_parse_from(["x", "--propagation-config", good.to_str().unwrap()]).unwrap();
        assert_ne!(
            args.shared.hierarchy.propagation_config().unwrap(),
            PropagationConfig::default()
        );
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "resources:\n- kind: ConfigMap\n  mode: Sometimes\n").unwrap();
        let args = Both::try_parse_from(["x", "--propagation-config", bad.to_str().unwrap()]).unwrap();
        let error = args.shared.hierarchy.propagation_config().unwrap_err();
        assert!(matches!(error, ConfigError::ParsePropagation { .. }), "{error}");
        let missing = dir.path().join("missing.yaml");
        let args = Both::try_parse_from(["x", "--propagation-config", missing.to_str().unwrap()]).unwrap();
        assert!(matches!(
            args.shared.hierarchy.propagation_config(),
            Err(ConfigError::ReadPropagation { .. })
        ));
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
        assert!(args.shared.policy.ttl_policy().is_err());
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
        let set = args.shared.policy.set_config().unwrap();
        assert_eq!(set.role_rules.unwrap()[0].verbs, vec!["get"]);
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "[]").unwrap();
        let args = Both::try_parse_from(["x", "--role-rules-file", empty.to_str().unwrap()]).unwrap();
        assert!(matches!(
            args.shared.policy.set_config(),
            Err(ConfigError::NoRules { .. })
        ));
    }
}
