//! Entry point: parse the command line, set up logging, run, and map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use fiskil_token_refresher::{App, Args, Command, Config, ExplainArgs};

fn main() -> ExitCode {
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("fiskil-token-refresher: error: a TLS crypto provider was already installed");
        return ExitCode::from(1);
    }
    let mut args = Args::parse();
    if let Some(Command::Explain(explain)) = args.command.take() {
        return explain_timing(&explain);
    }
    let config = match Config::from_args(args, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("fiskil-token-refresher: error: {e}");
            return ExitCode::from(2);
        }
    };
    config.init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async { App::build(config).await?.run().await });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `explain`: prints the report; a bad timing option is a configuration error, as for the daemon.
fn explain_timing(args: &ExplainArgs) -> ExitCode {
    match args.report() {
        Ok(report) => {
            print!("{}", args.render(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fiskil-token-refresher: error: {e}");
            ExitCode::from(2)
        }
    }
}
