//! provisioner: the stateless HTTP API that hands out short-lived namespaces.
//! Parses flags, sets up logging, runs the library, maps the result to an
//! exit status (0 stopped cleanly, 1 failed, 2 could not start logging).

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use namespace_provisioner::cli::provisioner::{self, ProvisionerArgs};
use namespace_provisioner::telemetry::chain;
use tracing::warn;

#[tokio::main]
async fn main() -> ExitCode {
    let matches = ProvisionerArgs::command().get_matches();
    let args = match ProvisionerArgs::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    if let Err(e) = args.shared.log.init() {
        eprintln!("provisioner: {}", chain(&e));
        return ExitCode::from(2);
    }
    if matches.value_source("token") == Some(ValueSource::CommandLine) {
        warn!("--token on the command line is visible in the process list; use NP_TOKEN or --token-file");
    }
    match provisioner::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            namespace_provisioner::log_error!(error, &e, "provisioner stopped");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use namespace_provisioner::cli::{self, provisioner::ProvisionerArgs};

    /// docs/cli/provisioner.txt is generated: `NP_UPDATE_DOCS=1 cargo test --bin provisioner`.
    #[test]
    fn help_is_documented() {
        let command = ProvisionerArgs::command();
        assert_eq!(cli::flags_without_env(&command), Vec::<String>::new());
        assert!(
            cli::reference_is_current(command, "docs/cli/provisioner.txt").unwrap(),
            "docs/cli/provisioner.txt is stale: NP_UPDATE_DOCS=1 cargo test --bin provisioner"
        );
    }
}
