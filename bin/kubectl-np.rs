//! kubectl-np: `kubectl np ...`, a client of the provisioner's HTTP API.
//! Parses flags and the environment into the library's plugin types, runs
//! one subcommand, and maps the outcome to the documented exit code.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use namespace_provisioner::params::Ttl;
use namespace_provisioner::plugin::client::Client;
use namespace_provisioner::plugin::commands::{self, Action, Invocation, KubeconfigTtl, Output, Terminal};
use namespace_provisioner::plugin::config::{self, Sources};
use namespace_provisioner::plugin::kube_auth::{self, KubeCredentials};
use namespace_provisioner::plugin::{CreateRequest, ExitStatus, PluginError};
use secrecy::SecretString;

const EXAMPLES: &str = "\
Examples:
  # Where the provisioner is, and the token (never a flag: it would show in the process list)
  export NP_URL=https://np.example.com NP_TOKEN_FILE=~/.config/kubectl-np/token

  # A namespace for 30 minutes; its kubeconfig to a file, then use it
  kubectl np create --ttl 30m --write-kubeconfig ./kc
  kubectl --kubeconfig ./kc get pods

  # The kubeconfig on stdout (the default), or the answer as JSON
  kubectl np create > kc
  kubectl np create -o json

  # Mine, one of them, more time, gone (waiting until it is)
  kubectl np list
  kubectl np get np-x7k2m
  kubectl np extend np-x7k2m --ttl 2h
  kubectl np delete np-x7k2m --wait

  # A fresh kubeconfig for a namespace, keeping its expiry
  kubectl np kubeconfig np-x7k2m --ttl remaining --write-kubeconfig ./kc

  # Shell completion
  source <(kubectl-np completion bash)

Exit status:
  0  done
  1  the provisioner refused or failed (problem+json detail shown), could not be reached,
     or a --wait ran out of --timeout
  2  usage: bad flags, environment or config file; nothing was sent
  3  not found: the name is not one of your namespaces (HTTP 404)";

/// Short-lived Kubernetes namespaces from the provisioner, as a kubectl plugin.
///
/// Talks to the provisioner's HTTP API (not to Kubernetes): creates
/// namespaces and hands out their kubeconfigs, lists, extends and deletes
/// them. The provisioner URL and token come from flags, the environment
/// variables shown, or the config file (~/.config/kubectl-np/config.yaml:
/// `server-url`, `token-file`, `ca-file`), in that order. The token is read
/// from NP_TOKEN or a file, never from a flag. Without one, the credentials
/// of the current kubeconfig context (or --context) are sent: its token,
/// token file or exec plugin, for a provisioner with Kubernetes-identity auth.
#[derive(Debug, Parser)]
#[command(name = "kubectl-np", bin_name = "kubectl np", version, after_long_help = EXAMPLES)]
struct Args {
    /// Base URL of the provisioner, e.g. https://np.example.com.
    #[arg(long, env = "NP_URL", global = true)]
    server_url: Option<String>,

    /// File holding the bearer token (the token alone). NP_TOKEN may hold the token itself.
    #[arg(long, env = "NP_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,

    /// PEM CA bundle to trust for an https provisioner, besides the system roots.
    #[arg(long, env = "NP_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,

    /// Config file (default: $XDG_CONFIG_HOME or ~/.config, then kubectl-np/config.yaml, if it exists).
    #[arg(long, env = "NP_CONFIG", global = true)]
    config: Option<PathBuf>,

    /// Output format. Default: a table (list, get, delete); the kubeconfig
    /// (create, extend, kubeconfig), or a summary line with --write-kubeconfig.
    #[arg(short = 'o', long, env = "NP_OUTPUT_FORMAT", value_enum, global = true)]
    output: Option<OutputArg>,

    /// Longest wait for one answer, and for a --wait.
    #[arg(long, env = "NP_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,

    /// Kubeconfig context whose credentials to send (token, token file or
    /// exec plugin), for a provisioner with Kubernetes-identity auth.
    /// Default: the current context, when no provisioner token is set.
    /// The kubeconfig is $KUBECONFIG or ~/.kube/config, as for kubectl.
    #[arg(long, env = "NP_CONTEXT", global = true)]
    context: Option<String>,

    /// When to send the kubeconfig context's credentials: `auto` (when no
    /// provisioner token is set and a kubeconfig exists, or --context is
    /// given), `always`, or `never`.
    #[arg(long, env = "NP_KUBE_AUTH", value_enum, default_value_t = KubeAuthArg::Auto, global = true)]
    kube_auth: KubeAuthArg,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KubeAuthArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputArg {
    Table,
    Json,
    Yaml,
    Name,
    Kubeconfig,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a namespace and print (or write) its kubeconfig.
    Create {
        /// Lifetime, e.g. 30m or 2h (default: the provisioner's; at most its maximum).
        #[arg(long, env = "NP_TTL", value_parser = parse_ttl)]
        ttl: Option<String>,
        /// Parent namespace: create a sub-namespace of it (its administrator must allow your tenant).
        #[arg(long, env = "NP_PARENT")]
        parent: Option<String>,
        /// With --parent: the allocation asked from the parent's quota budget,
        /// `resource=quantity,...` (e.g. count/pods=10,requests.cpu=2).
        #[arg(long, env = "NP_QUOTA", value_delimiter = ',', value_parser = parse_quota_item)]
        quota: Vec<(String, String)>,
        /// Write the kubeconfig to this file (mode 0600, replacing it) instead of stdout.
        #[arg(long, env = "NP_WRITE_KUBECONFIG")]
        write_kubeconfig: Option<PathBuf>,
        /// Return once the namespace is listed Active (bounded by --timeout).
        #[arg(long, env = "NP_WAIT")]
        wait: bool,
    },
    /// List your namespaces.
    #[command(alias = "ls")]
    List,
    /// Show one of your namespaces.
    Get {
        /// Namespace name.
        name: String,
    },
    /// Give a namespace a new expiry (now + ttl) and print (or write) a fresh kubeconfig.
    Extend {
        /// Namespace name.
        name: String,
        /// New lifetime from now (default: the provisioner's default).
        #[arg(long, env = "NP_TTL", value_parser = parse_ttl)]
        ttl: Option<String>,
        /// Write the kubeconfig to this file (mode 0600, replacing it) instead of stdout.
        #[arg(long, env = "NP_WRITE_KUBECONFIG")]
        write_kubeconfig: Option<PathBuf>,
    },
    /// Delete a namespace; with --wait, show Terminating until it is gone.
    #[command(alias = "rm")]
    Delete {
        /// Namespace name.
        name: String,
        /// Wait until the provisioner no longer knows the namespace (bounded by --timeout).
        #[arg(long, env = "NP_WAIT")]
        wait: bool,
    },
    /// Print (or write) a fresh kubeconfig for an existing namespace (needs --ttl).
    ///
    /// The provisioner hands out a kubeconfig only together with a new expiry
    /// (there is no call that returns one and leaves the expiry alone), so say
    /// which: `--ttl 30m` sets the expiry to now + 30m; `--ttl remaining` asks
    /// for the time the namespace has left, keeping its expiry (to the second).
    /// Without --ttl this is a usage error (exit 2) and nothing is sent.
    Kubeconfig {
        /// Namespace name.
        name: String,
        /// New lifetime from now, or `remaining` to keep the current expiry.
        #[arg(long, env = "NP_KUBECONFIG_TTL", value_parser = parse_kubeconfig_ttl)]
        ttl: Option<KubeconfigTtl>,
        /// Write the kubeconfig to this file (mode 0600, replacing it) instead of stdout.
        #[arg(long, env = "NP_WRITE_KUBECONFIG")]
        write_kubeconfig: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// Shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// A ttl the provisioner will parse (checked here so a typo is a usage error).
fn parse_ttl(s: &str) -> Result<String, String> {
    s.parse::<Ttl>()
        .map(|_| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

fn parse_kubeconfig_ttl(s: &str) -> Result<KubeconfigTtl, String> {
    if s.trim() == "remaining" {
        return Ok(KubeconfigTtl::Remaining);
    }
    parse_ttl(s).map(KubeconfigTtl::Lifetime)
}

fn parse_quota_item(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        }
        _ => Err(format!("{s:?} is not resource=quantity, e.g. pods=10")),
    }
}

fn quota_map(items: Vec<(String, String)>) -> Result<Option<BTreeMap<String, String>>, PluginError> {
    let mut map = BTreeMap::new();
    for (k, v) in items {
        if map.insert(k.clone(), v).is_some() {
            return Err(PluginError::Usage(format!("--quota names {k} twice")));
        }
    }
    Ok((!map.is_empty()).then_some(map))
}

fn output(arg: OutputArg) -> Output {
    match arg {
        OutputArg::Table => Output::Table,
        OutputArg::Json => Output::Json,
        OutputArg::Yaml => Output::Yaml,
        OutputArg::Name => Output::Name,
        OutputArg::Kubeconfig => Output::Kubeconfig,
    }
}

fn action(command: Command) -> Result<Action, PluginError> {
    Ok(match command {
        Command::Create {
            ttl,
            parent,
            quota,
            write_kubeconfig,
            wait,
        } => Action::Create {
            request: CreateRequest {
                ttl,
                parent,
                quota: quota_map(quota)?,
            },
            write_kubeconfig,
            wait,
        },
        Command::List => Action::List,
        Command::Get { name } => Action::Get { name },
        Command::Extend {
            name,
            ttl,
            write_kubeconfig,
        } => Action::Extend {
            name,
            ttl,
            write_kubeconfig,
        },
        Command::Delete { name, wait } => Action::Delete { name, wait },
        Command::Kubeconfig {
            name,
            ttl,
            write_kubeconfig,
        } => Action::Kubeconfig {
            name,
            ttl,
            write_kubeconfig,
        },
        Command::Completion { .. } => {
            return Err(PluginError::Usage(
                "completion is handled before any request".into(),
            ));
        }
    })
}

async fn run(args: Args) -> Result<(), PluginError> {
    let invocation = Invocation {
        action: action(args.command)?,
        output: args.output.map(output),
        timeout: args.timeout,
        poll_interval: Duration::from_millis(500),
    };
    // Refuse an impossible -o before reading files or sending anything.
    invocation.output()?;
    let env_path = |key| std::env::var_os(key).map(PathBuf::from);
    let settings = config::resolve(Sources {
        server_url: args.server_url,
        token_file: args.token_file,
        token: std::env::var("NP_TOKEN").ok().map(SecretString::from),
        ca_file: args.ca_file,
        config: args.config,
        default_config: config::default_config_path(env_path("XDG_CONFIG_HOME"), env_path("HOME")),
    })?;
    let kube = kube_credentials(args.kube_auth, args.context.as_deref(), settings.token.is_some()).await;
    let mut client = Client::new(settings, args.timeout)?;
    match kube {
        Ok(Some(kube)) => client = client.with_kube_credentials(&kube),
        Ok(None) => {}
        // `auto` and the current context has no bearer token (e.g. a client
        // certificate): nothing to send; the 401, if any, says why.
        Err(PluginError::NoBearer { context, why, .. })
            if args.kube_auth == KubeAuthArg::Auto && args.context.is_none() =>
        {
            client = client.with_kube_skipped(format!("kubeconfig context {context:?} {why}"));
        }
        Err(e) => return Err(e),
    }
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut term = Terminal {
        err_is_tty: stderr.is_terminal(),
        out: &mut stdout.lock(),
        err: &mut stderr.lock(),
    };
    commands::run(&client, invocation, &mut term).await
}

/// The kubeconfig credentials to send, if any (see `--kube-auth`).
async fn kube_credentials(
    mode: KubeAuthArg,
    context: Option<&str>,
    has_token: bool,
) -> Result<Option<KubeCredentials>, PluginError> {
    let required = match (mode, context, has_token) {
        (KubeAuthArg::Never, Some(_), _) => {
            return Err(PluginError::Usage(
                "--context names kubeconfig credentials, but --kube-auth is never".into(),
            ));
        }
        (KubeAuthArg::Never, None, _) | (KubeAuthArg::Auto, None, true) => return Ok(None),
        (_, _, true) => {
            return Err(PluginError::Usage(
                "both a provisioner token (NP_TOKEN, --token-file or token-file) and kubeconfig credentials \
                 (--context or --kube-auth always) are asked for; keep one"
                    .into(),
            ));
        }
        (KubeAuthArg::Auto, None, false) => false,
        (KubeAuthArg::Auto | KubeAuthArg::Always, _, false) => true,
    };
    kube_auth::load(None, context, required).await
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Completion { shell } = args.command {
        // Completion scripts name the executable, not `kubectl np`.
        let mut command = Args::command();
        clap_complete::generate(shell, &mut command, "kubectl-np", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(ExitStatus::Failure as u8);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        // `kubectl np list | head -1`: the reader left; nothing to say to it.
        Err(PluginError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(ExitStatus::Failure as u8)
        }
        Err(e) => {
            let status = e.exit_status();
            // One line: the error and its causes, as anyhow joins them.
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(status as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use namespace_provisioner::cli;

    #[test]
    fn flags_are_consistent() {
        Args::command().debug_assert();
    }

    /// Every flag of every subcommand can come from the environment.
    #[test]
    fn every_flag_has_an_env_var() {
        let command = Args::command();
        let mut missing = cli::flags_without_env(&command);
        for sub in command.get_subcommands() {
            missing.extend(
                cli::flags_without_env(sub)
                    .into_iter()
                    .filter(|id| {
                        // Positionals (NAME, SHELL) are operands, not flags.
                        sub.get_arguments()
                            .any(|a| a.get_id() == id.as_str() && !a.is_positional())
                    })
                    .map(|id| format!("{} {id}", sub.get_name())),
            );
        }
        assert_eq!(missing, Vec::<String>::new());
    }

    /// docs/cli/kubectl-np.txt is generated: `NP_UPDATE_DOCS=1 cargo test --bin kubectl-np`.
    #[test]
    fn help_is_documented() {
        let mut help = cli::reference_help(Args::command());
        for sub in Args::command().get_subcommands() {
            let name = sub.get_name().to_owned();
            if name == "help" {
                continue;
            }
            help.push_str(&format!("\n\n==== kubectl np {name} ====\n\n"));
            help.push_str(&cli::reference_help(
                sub.clone().bin_name(format!("kubectl np {name}")),
            ));
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli/kubectl-np.txt");
        if std::env::var_os("NP_UPDATE_DOCS").is_some() {
            std::fs::write(path, &help).unwrap();
        }
        let documented = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            documented == help,
            "docs/cli/kubectl-np.txt is stale: NP_UPDATE_DOCS=1 cargo test --bin kubectl-np"
        );
    }

    #[test]
    fn flags_parse_into_actions() {
        let args = Args::try_parse_from([
            "kubectl-np",
            "create",
            "--ttl",
            "30m",
            "--parent",
            "team",
            "--quota",
            "pods=10,requests.cpu=2",
            "-o",
            "json",
        ])
        .unwrap();
        assert!(matches!(args.output, Some(OutputArg::Json)));
        let Action::Create { request, .. } = action(args.command).unwrap() else {
            panic!("not create")
        };
        assert_eq!(request.ttl.as_deref(), Some("30m"));
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({"ttl": "30m", "parent": "team", "quota": {"pods": "10", "requests.cpu": "2"}})
        );
        // Global flags go after the subcommand too, as with kubectl.
        let args = Args::try_parse_from([
            "kubectl-np",
            "list",
            "--server-url",
            "http://x",
            "--timeout",
            "5s",
        ])
        .unwrap();
        assert_eq!(args.timeout, Duration::from_secs(5));
        let args = Args::try_parse_from(["kubectl-np", "kubeconfig", "np-a", "--ttl", "remaining"]).unwrap();
        assert!(matches!(
            action(args.command).unwrap(),
            Action::Kubeconfig {
                ttl: Some(KubeconfigTtl::Remaining),
                ..
            }
        ));
        let args = Args::try_parse_from(["kubectl-np", "create", "--quota", "pods=1,pods=2"]).unwrap();
        assert!(matches!(action(args.command), Err(PluginError::Usage(_))));
    }

    #[test]
    fn bad_flags_are_usage_errors_naming_the_flag() {
        for (argv, flag) in [
            (vec!["kubectl-np", "create", "--ttl", "soon"], "--ttl"),
            (vec!["kubectl-np", "create", "--quota", "pods"], "--quota"),
            (vec!["kubectl-np", "list", "-o", "wide"], "--output"),
            (vec!["kubectl-np", "get"], "<NAME>"),
            (vec!["kubectl-np", "list", "--token", "x"], "--token"),
            (vec!["kubectl-np", "kubeconfig", "a", "--ttl", "later"], "--ttl"),
        ] {
            let err = Args::try_parse_from(&argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
            assert!(err.to_string().contains(flag), "{argv:?}: {err}");
        }
    }
}
