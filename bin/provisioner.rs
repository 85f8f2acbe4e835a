//! provisioner: the stateless HTTP API that hands out short-lived namespaces.
//! Parses flags, sets up logging and the client, and serves the library's
//! router in a container (`axum::serve`) or behind AWS Lambda (`lambda_http`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use namespace_provisioner::api::{self, AppState, Metrics};
use namespace_provisioner::auth::{DEFAULT_TENANT, Tokens};
use namespace_provisioner::cli::{self, KubeArgs, LogArgs, PolicyArgs};
use namespace_provisioner::k8s;
use namespace_provisioner::params::{NamePrefix, ServerUrl};
use namespace_provisioner::provision::{Provisioner, ProvisionerConfig};
use tracing::{info, warn};

/// Self-service, short-lived Kubernetes namespaces over HTTP.
///
/// POST /api/v1/namespace?ttl=30m answers with a kubeconfig that can act only
/// inside a new namespace, only while it lives. Every flag can be set by the
/// environment variable shown. Runs behind AWS Lambda when
/// AWS_LAMBDA_RUNTIME_API is set.
#[derive(Debug, Parser)]
#[command(name = "provisioner", version)]
struct Args {
    /// Address of the public API.
    #[arg(long, env = "NP_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Address of /healthz, /readyz and /metrics (keep it off the public network).
    #[arg(long, env = "NP_INTERNAL_LISTEN", default_value = "0.0.0.0:9090")]
    internal_listen: SocketAddr,

    /// File of tenant tokens: `tenant token` per line, or a YAML mapping `tenant: token`.
    #[arg(long, env = "NP_TOKEN_FILE")]
    token_file: Option<PathBuf>,

    /// A single token for tenant `default`. Prefer NP_TOKEN or --token-file:
    /// a command-line value shows in the process list.
    #[arg(long, env = "NP_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Serve without authentication (every caller is tenant `default`). Local testing only.
    #[arg(long, env = "NP_INSECURE_ALLOW_UNAUTHENTICATED")]
    insecure_allow_unauthenticated: bool,

    /// API server URL written into kubeconfigs when the caller sends no `server`
    /// (default: the URL this provisioner uses).
    #[arg(long, env = "NP_SERVER")]
    server: Option<ServerUrl>,

    /// PEM CA bundle written into kubeconfigs (default: the CA this provisioner trusts for the API server).
    #[arg(long, env = "NP_CERTIFICATE_AUTHORITY")]
    certificate_authority: Option<PathBuf>,

    /// Prefix of generated namespace names (`<prefix>-<random>`).
    #[arg(long, env = "NP_PREFIX", default_value = "np")]
    prefix: NamePrefix,

    /// Most live namespaces one tenant may hold; past it, creates get 429.
    #[arg(long, env = "NP_MAX_NAMESPACES_PER_TENANT", value_parser = clap::value_parser!(u32).range(1..))]
    max_namespaces_per_tenant: Option<u32>,

    /// Longest a request may take before it is answered 504 (a create in progress still finishes or rolls back).
    #[arg(long, env = "NP_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,

    /// How long to let in-flight requests finish after SIGTERM.
    #[arg(long, env = "NP_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,

    #[command(flatten)]
    policy: PolicyArgs,

    #[command(flatten)]
    kube: KubeArgs,

    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    if let Err(e) = args.log.init() {
        eprintln!("provisioner: {e}");
        return ExitCode::from(2);
    }
    if matches.value_source("token") == Some(ValueSource::CommandLine) {
        warn!("--token on the command line is visible in the process list; use NP_TOKEN or --token-file");
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "provisioner stopped");
            ExitCode::FAILURE
        }
    }
}

fn load_tokens(args: &Args) -> anyhow::Result<Option<Tokens>> {
    let mut tokens = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read --token-file {}", path.display()))?;
            Tokens::parse(&text).with_context(|| format!("--token-file {}", path.display()))?
        }
        None => Tokens::default(),
    };
    if let Some(token) = &args.token {
        tokens
            .add(DEFAULT_TENANT.parse()?, token.trim())
            .context("--token/NP_TOKEN")?;
    }
    match (tokens.is_empty(), args.insecure_allow_unauthenticated) {
        (false, insecure) => {
            if insecure {
                warn!("tokens are configured, so --insecure-allow-unauthenticated is ignored");
            }
            info!(tenants = tokens.len(), "bearer tokens loaded");
            Ok(Some(tokens))
        }
        (true, true) => {
            warn!("authentication is OFF: every caller is tenant `default`");
            Ok(None)
        }
        (true, false) => bail!(
            "no token configured: give --token-file or NP_TOKEN (or --insecure-allow-unauthenticated for local testing)"
        ),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Everything that can be checked without the API server is checked first.
    let tokens = load_tokens(&args)?;
    let set = args.policy.set_config()?;
    let ttl = args.policy.ttl_policy()?;
    let kube_config = args
        .kube
        .config()
        .await
        .context("load Kubernetes client configuration")?;
    let metrics = Arc::new(Metrics::default());
    let counter = metrics.clone();
    let client = k8s::counted_client(kube_config.clone(), move |method| {
        counter.count_kube_request(method)
    })
    .context("build Kubernetes client")?;
    let server = match &args.server {
        Some(server) => server.clone(),
        None => kube_config
            .cluster_url
            .to_string()
            .parse()
            .context("the API server URL of the kubeconfig cannot go into kubeconfigs; set --server")?,
    };
    let ca_pem = match &args.certificate_authority {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("read --certificate-authority {}", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                bail!(
                    "--certificate-authority {} holds no PEM certificate",
                    path.display()
                );
            }
            Some(pem)
        }
        None => k8s::trusted_ca_pem(&kube_config).context("read the CA trusted for the API server")?,
    };
    let config = ProvisionerConfig {
        set,
        ttl,
        prefix: args.prefix.clone(),
        server,
        ca_pem,
        max_namespaces_per_tenant: args.max_namespaces_per_tenant,
        page_size: args.kube.page_size,
    };
    let state = AppState::with_metrics(Provisioner::new(client, config), tokens, metrics)?;

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        info!("serving through the AWS Lambda runtime API");
        return lambda_http::run(api::function_router(state, args.request_timeout))
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"));
    }
    serve(args, state).await
}

async fn serve(args: Args, state: AppState) -> anyhow::Result<()> {
    let public = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let internal = tokio::net::TcpListener::bind(args.internal_listen)
        .await
        .with_context(|| format!("listen on {}", args.internal_listen))?;
    info!(api = %public.local_addr()?, internal = %internal.local_addr()?, "provisioner listening");

    let stop = cli::shutdown_signal().context("install signal handlers")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let public_server = axum::serve(public, api::router(state.clone(), args.request_timeout))
        .with_graceful_shutdown(stopped(stop_rx.clone()));
    let internal_server =
        axum::serve(internal, api::internal_router(state)).with_graceful_shutdown(stopped(stop_rx));
    let servers = async { tokio::try_join!(public_server.into_future(), internal_server.into_future()) };
    tokio::pin!(servers);

    tokio::select! {
        result = &mut servers => { result.context("serve HTTP")?; return Ok(()); }
        () = stop => info!("shutting down; finishing in-flight requests"),
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(args.shutdown_timeout, servers).await {
        Ok(result) => result.map(|_| ()).context("serve HTTP"),
        Err(_) => {
            warn!(timeout = ?args.shutdown_timeout, "in-flight requests did not finish in time");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_consistent() {
        Args::command().debug_assert();
    }

    /// docs/cli/provisioner.txt is generated: `NP_UPDATE_DOCS=1 cargo test --bin provisioner`.
    #[test]
    fn help_is_documented() {
        let help = cli::reference_help(Args::command());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli/provisioner.txt");
        if std::env::var_os("NP_UPDATE_DOCS").is_some() {
            std::fs::write(path, &help).unwrap();
        }
        let documented = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            documented == help,
            "docs/cli/provisioner.txt is stale: NP_UPDATE_DOCS=1 cargo test --bin provisioner"
        );
    }

    #[test]
    fn every_flag_has_an_env_var() {
        assert_eq!(cli::flags_without_env(&Args::command()), Vec::<String>::new());
    }
}
