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

use super::aws::{AwsArgs, AwsArgsError};
use super::{ConfigError, SharedArgs, role_rules_watched, shutdown_signal};
use crate::access::{AuthThrottle, ReviewConfig, ThrottleConfig, TokenReviewer};
use crate::api::serve::{self, ServeConfig, ServeError};
use crate::api::tls;
use crate::api::{AppState, Metrics, Readiness};
use crate::clock::system_clock;
use crate::k8s::preflight;
use crate::k8s::{self, ClientError};
use crate::propagate::Propagation;
use crate::provision::{Provisioner, ProvisionerConfig};
use crate::reload::{Live, Parse, ReloadError, Report, Watched};
use crate::rules::auth::{DEFAULT_TENANT, Tokens, TokensError};
use crate::rules::hierarchy::config::PropagationConfig;
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

    /// PEM certificate chain (leaf first): serve the public API over HTTPS.
    /// Use it whenever callers reach the provisioner across a network you do
    /// not fully trust: every create and extend sends back a kubeconfig with a
    /// live token, and every request carries the caller's bearer token.
    /// Reloaded on change with --tls-key-file (like --token-file); new
    /// connections get the new certificate. Ignored behind AWS Lambda, whose
    /// URL terminates TLS.
    #[arg(long, env = "NP_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert-file.
    #[arg(long, env = "NP_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

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

    /// Top-level creates first claim a ready member of the reaper's warm pool
    /// (`reaper --pool-size`): one LIST, one conditional write and the
    /// TokenRequest; an empty pool falls back to a cold create. A child's create
    /// tries its parent's pool whenever the parent has a pool-size annotation.
    #[arg(long, env = "NP_CLAIM_FROM_POOL")]
    pub claim_from_pool: bool,

    /// Most live namespaces one tenant may hold; past it, creates get 429.
    #[arg(long, env = "NP_MAX_NAMESPACES_PER_TENANT", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_namespaces_per_tenant: Option<u32>,

    /// Count live namespaces per tenant on every /metrics scrape
    /// (namespace_provisioner_live_namespaces). Costs one LIST of every managed
    /// namespace per scrape, so it is off by default.
    #[arg(long, env = "NP_COUNT_LIVE_NAMESPACES")]
    pub count_live_namespaces: bool,

    /// Do not serve the web page at /ui/ (sign in with a token, create,
    /// extend, delete, download kubeconfigs; see docs/ui.md).
    #[arg(long, env = "NP_NO_UI")]
    pub no_ui: bool,

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

    /// How often --token-file, --certificate-authority, --role-rules-file and
    /// --tls-cert-file/--tls-key-file are re-read, besides a watch of their directories that reloads them
    /// within moments of a change (a mounted Secret's symlink swap). A file
    /// that does not parse keeps the last good content.
    #[arg(long, env = "NP_RELOAD_INTERVAL", default_value = "30s", value_parser = at_least_a_second)]
    pub reload_interval: Duration,

    /// Failed authentications (a wrong or malformed token) one client address
    /// may make per --auth-failure-window; past it, its requests get 429 with
    /// Retry-After until the window ends. Other addresses are not affected
    /// (IPv6 counts per /64). `0` turns it off. The address is the
    /// connection's peer, or --client-ip-header; with neither (a function
    /// runtime without the header) nothing is counted.
    #[arg(long, env = "NP_AUTH_FAILURE_LIMIT", default_value_t = 20)]
    pub auth_failure_limit: u32,

    /// Length of the window of --auth-failure-limit, from an address's first failure.
    #[arg(long, env = "NP_AUTH_FAILURE_WINDOW", default_value = "1m", value_parser = at_least_a_second)]
    pub auth_failure_window: Duration,

    /// Most client addresses whose failures are remembered at once: the
    /// memory bound (measured: 10,000 take ~2 MiB); past it the least used
    /// are forgotten.
    #[arg(long, env = "NP_AUTH_FAILURE_ADDRESSES", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub auth_failure_addresses: u32,

    /// Header holding the client's address, set by a trusted proxy or load
    /// balancer in front (e.g. `x-forwarded-for`; its last entry is used).
    /// Only set it when every request passes that proxy: a client can write
    /// the header itself. Default: the connection's peer address.
    #[arg(long, env = "NP_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<axum::http::HeaderName>,

    /// Do not check this identity's permissions at start-up (ready without it).
    #[arg(long, env = "NP_SKIP_PREFLIGHT")]
    pub skip_preflight: bool,

    /// Most the local clock may differ from the API server's (its Date
    /// header, compared at start and every --preflight-interval): expiry
    /// stamps are written from the local clock, so beyond it /readyz answers
    /// 503 with the measured skew until the clock is back within it.
    #[arg(long, env = "NP_MAX_CLOCK_SKEW", default_value = "30s", value_parser = super::reaper::parse_skew_bound)]
    pub max_clock_skew: Duration,

    #[command(flatten)]
    pub shared: SharedArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

pub(super) fn at_least_a_second(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < Duration::from_secs(1) {
        return Err("use at least 1s".to_owned());
    }
    Ok(interval)
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
        "--auth kubernetes takes no static tokens (--token-file, --tokens-secret, --tokens-parameter, NP_TOKEN); use --auth both to accept both"
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
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error(transparent)]
    Aws(#[from] AwsArgsError),
    #[error("install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The token table from `--token-file` and `--token` (or `fetched`: from
/// --tokens-secret/--tokens-parameter, `--token` included), or `None` when
/// authentication is explicitly off.
fn load_tokens(args: &ProvisionerArgs, fetched: Option<Tokens>) -> Result<Option<Tokens>, RunError> {
    if args.auth == AuthMode::Kubernetes {
        if args.token_file.is_some() || args.token.is_some() || args.aws.tokens_source().is_some() {
            return Err(RunError::TokensWithKubernetesAuth);
        }
        if args.insecure_allow_unauthenticated {
            warn!(
                "--auth kubernetes authenticates every caller, so --insecure-allow-unauthenticated is ignored"
            );
        }
        return Ok(None);
    }
    let mut tokens = match (&args.token_file, fetched) {
        (_, Some(fetched)) => fetched,
        (Some(path), None) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| RunError::ReadTokens {
                path: shown.clone(),
                source,
            })?;
            Tokens::parse(&text).map_err(|source| RunError::ParseTokens { path: shown, source })?
        }
        (None, None) => Tokens::default(),
    };
    if let Some(token) = args.token.as_ref().filter(|_| args.aws.tokens_source().is_none()) {
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
    check_pem(pem)
        .map(Some)
        .map_err(|NotPem| RunError::NotPem { path: shown })
}

#[derive(Debug, Error)]
#[error("the file holds no PEM certificate")]
struct NotPem;

fn check_pem(pem: Vec<u8>) -> Result<Vec<u8>, NotPem> {
    if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        Ok(pem)
    } else {
        Err(NotPem)
    }
}

/// `--token-file` as its reload reads it: the file's tokens plus `--token`, never none
/// (an emptied or truncated file keeps the last good set instead of locking everyone out).
fn token_file_parser(token: Option<String>) -> Parse<Tokens> {
    Arc::new(move |bytes: &[u8]| {
        let text = std::str::from_utf8(bytes)?;
        let mut tokens = Tokens::parse(text)?;
        if let Some(token) = &token {
            tokens.add(DEFAULT_TENANT.parse()?, token.trim())?;
        }
        if tokens.is_empty() {
            return Err(Box::new(TokensError::Empty));
        }
        Ok(tokens)
    })
}

/// Start reloading the configuration files given: the live token set (when
/// tokens come from a file) and the provisioner following the CA and role rules.
fn watch_files(
    args: &ProvisionerArgs,
    static_tokens: bool,
    provisioner: Provisioner,
    report: &Report,
) -> Result<(Provisioner, Option<Live<Tokens>>), RunError> {
    let interval = args.reload_interval;
    let mut provisioner = provisioner;
    if let Some(path) = &args.certificate_authority {
        let ca = Watched {
            flag: "certificate-authority",
            path: path.clone(),
            also: None,
            parse: Arc::new(|bytes: &[u8]| Ok(check_pem(bytes.to_vec())?)),
        };
        provisioner = provisioner.with_live_ca(ca.start(interval, report.clone())?);
    }
    if let Some(path) = &args.shared.policy.role_rules_file {
        provisioner =
            provisioner.with_live_role_rules(role_rules_watched(path).start(interval, report.clone())?);
    }
    let tokens = match &args.token_file {
        Some(path) if static_tokens => {
            let tokens = Watched {
                flag: "token-file",
                path: path.clone(),
                also: None,
                parse: token_file_parser(args.token.clone()),
            };
            Some(tokens.start(interval, report.clone())?)
        }
        _ => None,
    };
    Ok((provisioner, tokens))
}

/// Check everything that can be checked without the API server, build the
/// client (counting its requests in the metrics) and serve until SIGTERM,
/// or through the Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set.
pub async fn run(args: ProvisionerArgs) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let reloads = metrics.clone();
    let report: Report = Arc::new(move |file, outcome| {
        reloads.observe_reload(file, outcome, system_clock());
    });
    let aws = args.aws.sdk_config().await;
    let fetched_tokens = args
        .aws
        .live_tokens(
            aws.as_ref(),
            token_file_parser(args.token.clone()),
            report.clone(),
        )
        .await?;
    let tokens = load_tokens(&args, fetched_tokens.as_ref().map(|live| (*live.get()).clone()))?;
    let set = args.shared.policy.set_config()?;
    let ttl = args.shared.policy.ttl_policy()?;
    let kube_config = args.aws.kube_config(&args.shared.kube).await?;
    let bearer = args.aws.eks_bearer(aws.as_ref(), report.clone()).await?;
    let counter = metrics.clone();
    let client = k8s::counted_client_with(
        kube_config.clone(),
        move |method| counter.count_kube_request(method),
        bearer,
    )?;
    let server = match &args.server {
        Some(server) => server.clone(),
        None => kube_config
            .cluster_url
            .to_string()
            .parse()
            .map_err(RunError::ServerUrl)?,
    };
    let client_for_preflight = client.clone();
    let client_for_clock = client.clone();
    let client_for_grant = client.clone();
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
    let (provisioner, live_tokens) = watch_files(
        &args,
        tokens.is_some(),
        Provisioner::new(client.clone(), config).with_pool_claims(args.claim_from_pool),
        &report,
    )?;
    let mut state = AppState::with_metrics(provisioner, tokens, metrics).map_err(RunError::DefaultTenant)?;
    if let Some(live) = live_tokens.or(fetched_tokens) {
        state = state.with_live_tokens(live);
    }
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
    state.ui = !args.no_ui;
    state.client_ip_header = args.client_ip_header.clone();
    if args.auth_failure_limit > 0 {
        state.auth.throttle = Some(AuthThrottle::new(ThrottleConfig {
            max_failures: args.auth_failure_limit,
            window: args.auth_failure_window,
            capacity: usize::try_from(args.auth_failure_addresses).unwrap_or(10_000),
        }));
    }
    if !args.skip_preflight {
        let grant = args.shared.policy.cluster_role.clone();
        let mut wanted = permissions::required(Identity::Provisioner, &PermissionContext::new(&grant, None));
        if args.auth != AuthMode::Static {
            wanted.extend(permissions::caller_reviews());
        }
        state
            .readiness
            .refuse("the permission preflight has not finished yet".to_owned());
        tokio::spawn(preflight_loop(
            client_for_preflight,
            Wanted {
                base: wanted,
                grant: grant.clone(),
                propagation: args.shared.hierarchy.propagation_config()?,
            },
            state.readiness.clone(),
            args.preflight_interval,
        ));
        state.readiness.refuse_for(
            GRANT_GATE,
            format!("the grant ClusterRole {grant} has not been looked up yet"),
        );
        tokio::spawn(grant_gate(
            client_for_grant,
            grant,
            state.readiness.clone(),
            args.preflight_interval,
        ));
    }

    state.readiness.refuse_for(
        CLOCK_GATE,
        "the clock has not been compared with the API server's yet".to_owned(),
    );
    tokio::spawn(clock_gate(
        client_for_clock,
        args.max_clock_skew,
        state.readiness.clone(),
        args.preflight_interval,
        crate::clock::system_clock,
    ));

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        if args.tls_cert_file.is_some() {
            warn!("--tls-cert-file is ignored behind AWS Lambda: its URL terminates TLS");
        }
        return Ok(serve::serve_function(state, args.request_timeout).await?);
    }
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let watched = Watched {
                flag: "tls-cert-file",
                path: cert.clone(),
                also: Some(key.clone()),
                parse: Arc::new(|pem: &[u8]| Ok(tls::server_config(pem)?)),
            };
            info!(cert = %cert.display(), "serving the API over HTTPS");
            Some(watched.start(args.reload_interval, report)?)
        }
        _ => None,
    };
    let stop = shutdown_signal().map_err(RunError::Signals)?;
    let config = ServeConfig {
        listen: args.listen,
        internal_listen: args.internal_listen,
        request_timeout: args.request_timeout,
        shutdown_timeout: args.shutdown_timeout,
    };
    Ok(serve::serve(state, config, tls, stop).await?)
}

/// The readiness gate of the clock check.
const CLOCK_GATE: &str = "clock";

/// The readiness gate of the grant ClusterRole's existence.
const GRANT_GATE: &str = "grant";

/// Look the grant ClusterRole up now and every `interval`: not ready while
/// it is missing (every create would hand out a kubeconfig without rights:
/// with `bind` on any ClusterRole the API server accepts a binding to a
/// missing one) or cannot be read (a 403 is the preflight's to report).
/// Logs on every change. Runs until dropped.
async fn grant_gate(client: kube::Client, name: String, readiness: Readiness, interval: Duration) {
    let mut last: Option<Option<String>> = None;
    loop {
        let refused = match preflight::cluster_role_exists(&client, &name).await {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "the grant ClusterRole {name} does not exist: create it: function/grant-clusterrole.yaml (or set --cluster-role to one that exists)"
            )),
            // Not allowed to look: the permission preflight names that row.
            Err(e) if e.is_forbidden() => None,
            Err(e) => Some(format!("cannot read the grant ClusterRole {name}: {}", chain(&e))),
        };
        match &refused {
            Some(reason) => readiness.refuse_for(GRANT_GATE, reason.clone()),
            None => readiness.admit_for(GRANT_GATE),
        }
        if last.as_ref() != Some(&refused) {
            match &refused {
                Some(reason) => error!(retry_in = ?interval, "not ready: {reason}"),
                None => info!(cluster_role = %name, "the grant ClusterRole exists"),
            }
        }
        last = Some(refused);
        tokio::time::sleep(interval).await;
    }
}

/// Compare `clock` with the API server's now and every `interval`: not
/// ready while the skew exceeds `bound` (expiry stamps would be off by it)
/// or cannot be measured. Logs on every change. Runs until dropped.
pub async fn clock_gate(
    client: kube::Client,
    bound: Duration,
    readiness: Readiness,
    interval: Duration,
    clock: crate::clock::Clock,
) {
    let mut last: Option<Option<String>> = None;
    loop {
        let (skew, refused) = match k8s::skew::measure(&client, clock).await {
            Ok(skew) if skew.exceeds(bound) => (Some(skew), Some(format!("clock: {}", skew.describe(bound)))),
            Ok(skew) => (Some(skew), None),
            Err(e) => (
                None,
                Some(format!(
                    "clock: the local clock could not be compared with the API server's ({})",
                    chain(&e)
                )),
            ),
        };
        match &refused {
            Some(reason) => readiness.refuse_for(CLOCK_GATE, reason.clone()),
            None => readiness.admit_for(CLOCK_GATE),
        }
        if last.as_ref() != Some(&refused) {
            let skew_secs = skew.map(|s| s.ahead_secs);
            match &refused {
                Some(reason) => error!(skew_secs, retry_in = ?interval, "not ready: {reason}"),
                None => info!(skew_secs, "clock within --max-clock-skew of the API server's"),
            }
        }
        last = Some(refused);
        tokio::time::sleep(interval).await;
    }
}

/// What the preflight asks about: the fixed rows, plus the configured
/// propagated kinds, resolved through discovery at each check (a CRD
/// installed later resolves without a restart).
struct Wanted {
    base: Vec<Permission>,
    grant: String,
    propagation: PropagationConfig,
}

impl Wanted {
    async fn resolve(&self, client: &kube::Client) -> Result<Vec<Permission>, String> {
        if self.propagation.listed().next().is_none() {
            return Ok(self.base.clone());
        }
        let propagation = Propagation::discover(client, self.propagation.clone())
            .await
            .map_err(|e| format!("preflight: {}", chain(&e)))?;
        let kinds = super::reaper::propagated_kinds(&propagation);
        let context = PermissionContext::new(&self.grant, None).with_propagated(&kinds);
        let mut wanted = self.base.clone();
        for row in permissions::required(Identity::Provisioner, &context) {
            if !wanted.contains(&row) {
                wanted.push(row);
            }
        }
        Ok(wanted)
    }
}

/// Check the permissions now and every `interval`: close the readiness gate
/// with the missing ones named while any is missing, open it when all are
/// granted, so fixed RBAC recovers without a restart. Logs on every change.
async fn preflight_loop(client: kube::Client, rows: Wanted, readiness: Readiness, interval: Duration) {
    let mut last: Option<Result<Vec<String>, String>> = None;
    loop {
        let wanted = rows.resolve(&client).await;
        let checked = match &wanted {
            Ok(wanted) => preflight::preflight(&client, wanted)
                .await
                .map_err(|e| format!("preflight: {}", chain(&e))),
            Err(e) => Err(e.clone()),
        };
        let count = wanted.as_ref().map_or(0, Vec::len);
        let now = match checked {
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
            Err(reason) => {
                readiness.refuse(reason.clone());
                Err(reason)
            }
        };
        if last.as_ref() != Some(&now) {
            match &now {
                Ok(missing) if missing.is_empty() => {
                    info!(
                        permissions = count,
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
        assert!(matches!(load_tokens(&args, None), Err(RunError::NoToken)));
        let args =
            ProvisionerArgs::try_parse_from(["provisioner", "--insecure-allow-unauthenticated"]).unwrap();
        assert!(load_tokens(&args, None).unwrap().is_none());
        let args = ProvisionerArgs::try_parse_from(["provisioner", "--token", "short"]).unwrap();
        assert!(matches!(load_tokens(&args, None), Err(RunError::Token(_))));
    }

    #[test]
    fn auth_modes_decide_which_tokens_are_needed() {
        let parse =
            |args: &[&str]| ProvisionerArgs::try_parse_from([&["provisioner"], args].concat()).unwrap();
        let args = parse(&["--auth", "kubernetes"]);
        assert!(load_tokens(&args, None).unwrap().is_none());
        assert!(matches!(
            load_tokens(
                &parse(&["--auth", "kubernetes", "--token", "0123456789abcdef"]),
                None
            ),
            Err(RunError::TokensWithKubernetesAuth)
        ));
        assert!(matches!(
            load_tokens(&parse(&["--auth", "kubernetes", "--tokens-secret", "s"]), None),
            Err(RunError::TokensWithKubernetesAuth)
        ));
        assert!(matches!(
            load_tokens(&parse(&["--auth", "both"]), None),
            Err(RunError::NoToken)
        ));
        assert!(matches!(
            load_tokens(
                &parse(&["--auth", "both", "--insecure-allow-unauthenticated"]),
                None
            ),
            Err(RunError::NoToken)
        ));
        assert!(
            load_tokens(&parse(&["--auth", "both", "--token", "0123456789abcdef"]), None)
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
    fn hardening_flags_have_safe_defaults_and_are_checked() {
        let parse = |args: &[&str]| ProvisionerArgs::try_parse_from([&["provisioner"], args].concat());
        let args = parse(&[]).unwrap();
        assert_eq!(args.reload_interval, Duration::from_secs(30));
        assert_eq!(args.auth_failure_limit, 20);
        assert_eq!(args.auth_failure_window, Duration::from_secs(60));
        assert!(args.client_ip_header.is_none() && args.tls_cert_file.is_none());
        // A certificate needs its key and the other way round.
        assert!(parse(&["--tls-cert-file", "c.pem"]).is_err());
        assert!(parse(&["--tls-key-file", "k.pem"]).is_err());
        assert!(parse(&["--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"]).is_ok());
        assert!(parse(&["--reload-interval", "100ms"]).is_err());
        assert!(parse(&["--auth-failure-window", "0s"]).is_err());
        assert!(parse(&["--client-ip-header", "not a header"]).is_err());
        let header = parse(&["--client-ip-header", "X-Forwarded-For"]).unwrap();
        assert_eq!(header.client_ip_header.unwrap(), "x-forwarded-for");
    }

    #[test]
    fn the_reloaded_token_file_keeps_the_single_token_and_is_never_empty() {
        let parse = token_file_parser(Some("default-token-0123456789".to_owned()));
        let tokens = parse(b"alice alice-token-0123456789\n").unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(
            tokens
                .authenticate("default-token-0123456789")
                .map(|t| t.as_str()),
            Some(DEFAULT_TENANT)
        );
        assert!(token_file_parser(None)(b"# nobody\n").is_err());
        assert!(token_file_parser(None)(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn live_namespace_counting_is_opt_in() {
        let args = ProvisionerArgs::try_parse_from(["provisioner"]).unwrap();
        assert!(!args.count_live_namespaces);
        assert!(!args.no_ui);
    }
}

/// Hostile role-rule files (issue 15): never a panic, refusals that say
/// something, and every written list of rules reads back the same.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::cli::parse_rules;
    use k8s_openapi::api::rbac::v1::PolicyRule;
    use proptest::prelude::*;

    fn rule() -> impl Strategy<Value = PolicyRule> {
        (
            proptest::collection::vec("[a-z.]{0,12}", 0..3),
            proptest::collection::vec("[a-z/]{1,12}", 1..4),
            proptest::collection::vec("[a-z*]{1,8}", 1..4),
        )
            .prop_map(|(groups, resources, verbs)| PolicyRule {
                api_groups: Some(groups),
                resources: Some(resources),
                verbs,
                ..PolicyRule::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_rules_file_parses_or_says_why(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            match parse_rules(&bytes) {
                Ok(rules) => prop_assert!(!rules.is_empty()),
                Err(e) => prop_assert!(!chain(&e).is_empty()),
            }
        }

        #[test]
        fn written_rules_read_back(rules in proptest::collection::vec(rule(), 1..4), yaml in any::<bool>()) {
            let written = if yaml {
                serde_yaml_ng::to_string(&rules).unwrap()
            } else {
                serde_json::to_string(&rules).unwrap()
            };
            prop_assert_eq!(parse_rules(written.as_bytes()).unwrap(), rules);
        }

        #[test]
        fn any_ca_file_is_a_certificate_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let pem = String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----");
            prop_assert_eq!(check_pem(bytes).is_ok(), pem);
        }
    }
}
