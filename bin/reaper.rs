//! The reaper: `--once` (default, for a CronJob) or `--watch`. Parses flags,
//! sets up logging and the client, runs the library, maps the result to an
//! exit status (0 done, 1 some set failed, 2 could not run).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use namespace_provisioner::cli::{self, OutputFormat, ReaperArgs, ReaperMode};
use namespace_provisioner::reaper::{self, watch};
use tracing::error;

const SET_FAILED: u8 = 1;
const COULD_NOT_RUN: u8 = 2;

fn main() -> ExitCode {
    let args = ReaperArgs::parse();
    if let Err(e) = args.log.init() {
        eprintln!("reaper: {e}");
        return ExitCode::from(COULD_NOT_RUN);
    }
    // A sweep waits on the API server, one thread is plenty and keeps memory
    // in one allocator arena; watch mode serves HTTP beside the controller.
    let runtime = if args.watch {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reaper: start the async runtime: {e}");
            return ExitCode::from(COULD_NOT_RUN);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            error!(error = format!("{e:#}"), "reaper could not run");
            eprintln!("reaper: {e:#}");
            ExitCode::from(COULD_NOT_RUN)
        }
    }
}

async fn run(args: ReaperArgs) -> anyhow::Result<ExitCode> {
    let mode = args.mode()?;
    let (client, _) = args.kube.client().await?;
    match mode {
        ReaperMode::Sweep(config) => {
            let report = reaper::run(&client, &config).await?;
            let text = match args.output {
                OutputFormat::Text => report.to_text(),
                OutputFormat::Json => report.to_json()? + "\n",
            };
            print!("{text}");
            Ok(if report.failed() {
                ExitCode::from(SET_FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
        ReaperMode::Watch { config, metrics_addr } => {
            let listener = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("listen on --metrics-addr {metrics_addr}"))?;
            let signals = cli::shutdown_signal().context("install signal handlers")?;
            watch::watch(client, config, listener, signals).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use namespace_provisioner::cli::{self, ReaperArgs};

    /// docs/cli/reaper.txt is generated: `NP_UPDATE_DOCS=1 cargo test --bin reaper`.
    #[test]
    fn help_is_documented() {
        let help = cli::reference_help(ReaperArgs::command());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli/reaper.txt");
        if std::env::var_os("NP_UPDATE_DOCS").is_some() {
            std::fs::write(path, &help).unwrap();
        }
        let documented = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            documented == help,
            "docs/cli/reaper.txt is stale: NP_UPDATE_DOCS=1 cargo test --bin reaper"
        );
    }

    #[test]
    fn every_flag_has_an_env_var() {
        assert_eq!(
            cli::flags_without_env(&ReaperArgs::command()),
            Vec::<String>::new()
        );
    }
}
