//! reaper: deletes expired namespace sets and repairs incomplete ones,
//! `--once` (default, for a CronJob) or `--watch`. Parses flags, sets up
//! logging, runs the library, maps the result to an exit status (0 done,
//! 1 some set failed, 2 could not run, 3 deletions refused by a safety guard).

use std::process::ExitCode;

use clap::Parser;
use namespace_provisioner::cli::reaper::{self, Ran, ReaperArgs};
use namespace_provisioner::telemetry::chain;

const SET_FAILED: u8 = 1;
const COULD_NOT_RUN: u8 = 2;
const DELETIONS_REFUSED: u8 = 3;

fn main() -> ExitCode {
    let args = ReaperArgs::parse();
    if let Err(e) = args.shared.log.init() {
        eprintln!("reaper: {}", chain(&e));
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
    match runtime.block_on(reaper::run(&args)) {
        Ok(Ran::Swept { refused: true, .. }) => ExitCode::from(DELETIONS_REFUSED),
        Ok(Ran::Swept { failed: true, .. }) => ExitCode::from(SET_FAILED),
        Ok(Ran::Swept { failed: false, .. } | Ran::Watched) => ExitCode::SUCCESS,
        Err(e) => {
            namespace_provisioner::log_error!(error, &e, "reaper could not run");
            eprintln!("reaper: {}", chain(&e));
            ExitCode::from(COULD_NOT_RUN)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use namespace_provisioner::cli::{self, reaper::ReaperArgs};

    /// docs/cli/reaper.txt is generated: `NP_UPDATE_DOCS=1 cargo test --bin reaper`.
    #[test]
    fn help_is_documented() {
        let command = ReaperArgs::command();
        assert_eq!(cli::flags_without_env(&command), Vec::<String>::new());
        assert!(
            cli::reference_is_current(command, "docs/cli/reaper.txt").unwrap(),
            "docs/cli/reaper.txt is stale: NP_UPDATE_DOCS=1 cargo test --bin reaper"
        );
    }
}
