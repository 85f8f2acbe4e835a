//! The provisioner's command line: its flags, and [`run`]: load the tokens,
//! check the CA, resolve the server URL, build the counted client and serve
//! (container or AWS Lambda). Reads files and the environment; Kubernetes
//! I/O happens in [`crate::provision`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use thiserror::Error;
use tracing::{error, info, warn};

use super::{ConfigError, SharedArgs, shutdown_signal};
use crate::access::{ReviewConfig, TokenReviewer};
use crate::api::serve::{self, ServeConfig, ServeError};
use crate::api::{AppState, Metrics, Readiness};
use crate::k8s::preflight;
use crate::k8s::{self, ClientError};
use crate::provision::{Provisioner, ProvisionerConfig};
use crate::rules::auth::{DEFAULT_TENANT, Tokens, TokensError};
use crate::rules::params::{NamePrefix, ServerUrl, ServerUrlError, TenantNameError};
use crate::rules::permissions::{self, Identity, Permission, PermissionContext};
use crate::telemetry::chain;

/// Self-service, short-lived Kubernetes namespaces over HTTP.
///
/// POST /api/v1/namespace?ttl=30m answers with a kubeconfig that can act only
/// inside a new namespace, only while it lives. Every flag can be set by the
/// environment variable shown. Runs behind AWS Lambda when
/// AWS_LAMBDA_RUNTIME_API is set.
#[derive(Debug, Parser)]
#[command(name = "provisioner", version)]
pub struct ProvisionerArgs {
    /// Address of the public API.
    #[arg(long, env = "NP_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of /healthz, /readyz and /metrics (keep it off the public network).
    #[arg(long, env = "NP_INTERNAL_LISTEN", default_value = "0.0.0.0:9090")]
    pub internal_listen: SocketAddr,

    /// How callers authenticate: `static` tenant tokens (--token-file,
    /// NP_TOKEN), `kubernetes` bearer tokens of the caller's own identity
    /// (checked with the TokenReview API, authorized by RBAC with
    /// SubjectAccessReviews, see docs/identity.md), or `both` (static first).
    #[arg(long, env = "NP_AUTH", value_enum, default_value_t = AuthMode::Static)]
    pub auth: AuthMode,

    /// Audiences a Kubernetes token must be issued for (comma-separated;
    /// default: the API server's own).
    #[arg(long, env = "NP_TOKEN_REVIEW_AUDIENCES", value_delimiter = ',')]
    pub token_review_audiences: Vec<String>,

    /// How long an accepted Kubernetes token is trusted before it is reviewed
    /// again: a revoked token (deleted ServiceAccount) works at most this long
    /// more, plus the API server's own token cache (10s by default). Refusals
    /// are never cached. `0s` reviews every request.
    #[arg(long, env = "NP_TOKEN_REVIEW_CACHE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub token_review_cache_ttl: Duration,

    /// Most accepted Kubernetes tokens remembered at once (keyed by their
    /// SHA-256, never the token); the cache never grows past it.
    #[arg(long, env = "NP_TOKEN_REVIEW_CACHE_SIZE", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub token_review_cache_size: u32,

    /// File of tenant tokens: `tenant token` per line, or a YAML mapping `tenant: token`.
    #[arg(long, env = "NP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// A single token for tenant `default`. Prefer NP_TOKEN or --token-file:
    /// a command-line value shows in the process list.
    #[arg(long, env = "NP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Serve without authentication (every caller is tenant `default`). Local testing only.
    #[arg(long, env = "NP_INSECURE_ALLOW_UNAUTHENTICATED")]
    pub insecure_allow_unauthenticated: bool,

    /// API server URL written into kubeconfigs when the caller sends no `server`
    /// (default: the URL this provisioner uses).
    #[arg(long, env = "NP_SERVER")]
    pub server: Option<ServerUrl>,

    /// PEM CA bundle written into kubeconfigs (default: the CA this provisioner trusts for the API server).
    #[arg(long, env = "NP_CERTIFICATE_AUTHORITY")]
    pub certificate_authority: Option<PathBuf>,

    /// Prefix of generated namespace names (`<prefix>-<random>`).
    #[arg(long, env = "NP_PREFIX", default_value = "np")]
    pub prefix: NamePrefix,

    /// Most live namespaces one tenant may hold; past it, creates get 429.
    #[arg(long, env = "NP_MAX_NAMESPACES_PER_TENANT", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_namespaces_per_tenant: Option<u32>,

    /// Count live namespaces per tenant on every /metrics scrape
    /// (namespace_provisioner_live_namespaces). Costs one LIST of every managed
    /// namespace per scrape, so it is off by default.
    #[arg(long, env = "NP_COUNT_LIVE_NAMESPACES")]
    pub count_live_namespaces: bool,

    /// Longest a request may take before it is answered 504 (a create in progress still finishes or rolls back).
    #[arg(long, env = "NP_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// How long to let in-flight requests finish after SIGTERM.
    #[arg(long, env = "NP_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// How often the permission preflight (one SelfSubjectAccessReview per
    /// permission used) runs again while it fails, and after it passed; /readyz
    /// answers 503 naming the missing permissions until it passes.
    #[arg(long, env = "NP_PREFLIGHT_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub preflight_interval: Duration,

    /// Do not check this identity's permissions at start-up (ready without it).
    #[arg(long, env = "NP_SKIP_PREFLIGHT")]
    pub skip_preflight: bool,

    #[command(flatten)]
    pub shared: SharedArgs,
}

/// How callers authenticate (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Static tenant tokens only (the default, as before).
    Static,
    /// Kubernetes bearer tokens only (TokenReview + SubjectAccessReview).
    Kubernetes,
    /// Static tenant tokens first, then Kubernetes bearer tokens.
    Both,
}

#[derive(Debug, Error)]
pub enum RunError {
    #[error(
        "--auth kubernetes takes no static tokens (--token-file, NP_TOKEN); use --auth both to accept both"
    )]
    TokensWithKubernetesAuth,
    #[error("read --token-file {path}")]
    ReadTokens {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--token-file {path}")]
    ParseTokens {
        path: String,
        #[source]
        source: TokensError,
    },
    #[error("--token/NP_TOKEN")]
    Token(#[source] TokensError),
    #[error(
        "no token configured: give --token-file or NP_TOKEN (or --insecure-allow-unauthenticated for local testing)"
    )]
    NoToken,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the API server URL of the kubeconfig cannot go into kubeconfigs; set --server")]
    ServerUrl(#[source] ServerUrlError),
    #[error("read --certificate-authority {path}")]
    ReadCa {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--certificate-authority {path} holds no PEM certificate")]
    NotPem { path: String },
    #[error("read the CA trusted for the API server")]
    TrustedCa(#[source] std::io::Error),
    #[error("tenant {DEFAULT_TENANT}")]
    DefaultTenant(#[source] TenantNameError),
    #[error("install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The token table from `--token-file` and `--token`, or `None` when
/// authentication is explicitly off.
fn load_tokens(args: &ProvisionerArgs) -> Result<Option<Tokens>, RunError> {
    if args.auth == AuthMode::Kubernetes {
        if args.token_file.is_some() || args.token.is_some() {
            return Err(RunError::TokensWithKubernetesAuth);
        }
        if args.insecure_allow_unauthenticated {
            warn!(
                "--auth kubernetes authenticates every caller, so --insecure-allow-unauthenticated is ignored"
            );
        }
        return Ok(None);
    }
    let mut tokens = match &args.token_file {
        Some(path) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| RunError::ReadTokens {
                path: shown.clone(),
                source,
            })?;
            Tokens::parse(&text).map_err(|source| RunError::ParseTokens { path: shown, source })?
        }
        None => Tokens::default(),
    };
    if let Some(token) = &args.token {
        let tenant = DEFAULT_TENANT.parse().map_err(RunError::DefaultTenant)?;
        tokens.add(tenant, token.trim()).map_err(RunError::Token)?;
    }
    match (tokens.is_empty(), args.insecure_allow_unauthenticated) {
        (false, insecure) => {
            if insecure {
                warn!("tokens are configured, so --insecure-allow-unauthenticated is ignored");
            }
            info!(tenants = tokens.len(), "bearer tokens loaded");
            Ok(Some(tokens))
        }
        (true, true) if args.auth == AuthMode::Static => {
            warn!("authentication is OFF: every caller is tenant `default`");
            Ok(None)
        }
        (true, _) => Err(RunError::NoToken),
    }
}

/// The CA written into kubeconfigs: `--certificate-authority` (which must
/// hold a PEM certificate), else the one the client trusts.
fn ca_pem(path: Option<&Path>, kube_config: &kube::Config) -> Result<Option<Vec<u8>>, RunError> {
    let Some(path) = path else {
        return k8s::trusted_ca_pem(kube_config).map_err(RunError::TrustedCa);
    };
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| RunError::ReadCa {
        path: shown.clone(),
        source,
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(RunError::NotPem { path: shown });
    }
    Ok(Some(pem))
}

/// Check everything that can be checked without the API server, build the
/// client (counting its requests in the metrics) and serve until SIGTERM,
/// or through the Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set.
pub async fn run(args: ProvisionerArgs) -> Result<(), RunError> {
    let tokens = load_tokens(&args)?;
    let set = args.shared.policy.set_config()?;
    let ttl = args.shared.policy.ttl_policy()?;
    let kube_config = args.shared.kube.config().await?;
    let metrics = Arc::new(Metrics::default());
    let counter = metrics.clone();
    let client = k8s::counted_client(kube_config.clone(), move |method| {
        counter.count_kube_request(method)
    })?;
    let server = match &args.server {
        Some(server) => server.clone(),
        None => kube_config
            .cluster_url
            .to_string()
            .parse()
            .map_err(RunError::ServerUrl)?,
    };
    let config_set = set.clone();
    let client_for_preflight = client.clone();
    let config = ProvisionerConfig {
        set,
        ttl,
        prefix: args.prefix.clone(),
        server,
        ca_pem: ca_pem(args.certificate_authority.as_deref(), &kube_config)?,
        max_namespaces_per_tenant: args.max_namespaces_per_tenant,
        page_size: args.shared.kube.page_size,
        max_depth: args.shared.hierarchy.max_depth,
        propagation: args.shared.hierarchy.propagation_config()?,
    };
    let mut state = AppState::with_metrics(Provisioner::new(client.clone(), config), tokens, metrics)
        .map_err(RunError::DefaultTenant)?;
    if args.auth != AuthMode::Static {
        let review = ReviewConfig {
            audiences: args.token_review_audiences.clone(),
            cache_ttl: args.token_review_cache_ttl,
            cache_capacity: usize::try_from(args.token_review_cache_size).unwrap_or(1024),
        };
        info!(
            cache_ttl = %humantime::format_duration(review.cache_ttl),
            cache_size = review.cache_capacity,
            "Kubernetes bearer tokens accepted (TokenReview, SubjectAccessReview)"
        );
        state = state.with_token_review(TokenReviewer::new(client, review));
    }
    state.count_live_namespaces = args.count_live_namespaces;
    if !args.skip_preflight {
        let mut wanted = permissions::required(
            Identity::Provisioner,
            &PermissionContext::from_set(&config_set, None),
        );
        if args.auth != AuthMode::Static {
            wanted.extend(permissions::caller_reviews());
        }
        state
            .readiness
            .refuse("the permission preflight has not finished yet".to_owned());
        tokio::spawn(preflight_loop(
            client_for_preflight,
            wanted,
            state.readiness.clone(),
            args.preflight_interval,
        ));
    }

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return Ok(serve::serve_function(state, args.request_timeout).await?);
    }
    let stop = shutdown_signal().map_err(RunError::Signals)?;
    let config = ServeConfig {
        listen: args.listen,
        internal_listen: args.internal_listen,
        request_timeout: args.request_timeout,
        shutdown_timeout: args.shutdown_timeout,
    };
    Ok(serve::serve(state, config, stop).await?)
}

/// Check the permissions now and every `interval`: close the readiness gate
/// with the missing ones named while any is missing, open it when all are
/// granted, so fixed RBAC recovers without a restart. Logs on every change.
async fn preflight_loop(
    client: kube::Client,
    wanted: Vec<Permission>,
    readiness: Readiness,
    interval: Duration,
) {
    let mut last: Option<Result<Vec<String>, String>> = None;
    loop {
        let now = match preflight::preflight(&client, &wanted).await {
            Ok(checked) => {
                if checked.passed() {
                    readiness.admit();
                } else {
                    readiness.refuse(format!("preflight: {}", checked.summary()));
                }
                Ok(checked
                    .missing
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>())
            }
            Err(e) => {
                let reason = format!("preflight: {}", chain(&e));
                readiness.refuse(reason.clone());
                Err(reason)
            }
        };
        if last.as_ref() != Some(&now) {
            match &now {
                Ok(missing) if missing.is_empty() => {
                    info!(
                        permissions = wanted.len(),
                        "preflight: every permission the provisioner uses is granted; ready"
                    );
                }
                Ok(missing) => {
                    for line in missing {
                        error!(retry_in = ?interval, "preflight: {line}");
                    }
                    warn!(missing = missing.len(), retry_in = ?interval, "preflight failed: not ready until it passes");
                }
                Err(reason) => warn!(retry_in = ?interval, "{reason}"),
            }
        }
        last = Some(now);
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        ProvisionerArgs::command().debug_assert();
    }

    #[test]
    fn no_token_refuses_to_start_unless_insecure() {
        let args = ProvisionerArgs::try_parse_from(["provisioner"]).unwrap();
        assert!(matches!(load_tokens(&args), Err(RunError::NoToken)));
        let args =
            ProvisionerArgs::try_parse_from(["provisioner", "--insecure-allow-unauthenticated"]).unwrap();
        assert!(load_tokens(&args).unwrap().is_none());
        let args = ProvisionerArgs::try_parse_from(["provisioner", "--token", "short"]).unwrap();
        assert!(matches!(load_tokens(&args), Err(RunError::Token(_))));
    }

    #[test]
    fn auth_modes_decide_which_tokens_are_needed() {
        let parse =
            |args: &[&str]| ProvisionerArgs::try_parse_from([&["provisioner"], args].concat()).unwrap();
        let args = parse(&["--auth", "kubernetes"]);
        assert!(load_tokens(&args).unwrap().is_none());
        assert!(matches!(
            load_tokens(&parse(&["--auth", "kubernetes", "--token", "0123456789abcdef"])),
            Err(RunError::TokensWithKubernetesAuth)
        ));
        assert!(matches!(
            load_tokens(&parse(&["--auth", "both"])),
            Err(RunError::NoToken)
        ));
        assert!(matches!(
            load_tokens(&parse(&["--auth", "both", "--insecure-allow-unauthenticated"])),
            Err(RunError::NoToken)
        ));
        assert!(
            load_tokens(&parse(&["--auth", "both", "--token", "0123456789abcdef"]))
                .unwrap()
                .is_some()
        );
        let args = parse(&[
            "--token-review-audiences",
            "a,b",
            "--token-review-cache-ttl",
            "3s",
        ]);
        assert_eq!(args.auth, AuthMode::Static);
        assert_eq!(args.token_review_audiences, ["a", "b"]);
        assert_eq!(args.token_review_cache_ttl, Duration::from_secs(3));
        assert_eq!(args.token_review_cache_size, 1024);
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        assert!(matches!(
            ca_pem(Some(&path), &config),
            Err(RunError::NotPem { .. })
        ));
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert!(ca_pem(Some(&path), &config).unwrap().is_some());
        assert_eq!(ca_pem(None, &config).unwrap(), None);
    }

    #[test]
    fn live_namespace_counting_is_opt_in() {
        let args = ProvisionerArgs::try_parse_from(["provisioner"]).unwrap();
        assert!(!args.count_live_namespaces);
    }
}
