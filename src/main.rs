//! Entry point: parse the command line, set up logging, run, and map the outcome to an exit code.

use std::future::Future;
use std::process::ExitCode;

use clap::Parser;
use fiskil_token_refresher::{
    App, Args, Command, Config, ConfigError, Controller, ControllerConfig, Error, ExplainArgs,
};

fn main() -> ExitCode {
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("fiskil-token-refresher: error: a TLS crypto provider was already installed");
        return ExitCode::from(1);
    }
    let mut args = Args::parse();
    let env = |name: &str| std::env::var(name).ok();
    match args.command.take() {
        Some(Command::Explain(explain)) => explain_timing(&explain),
        // Cluster mode, with the daemon's logging and exit codes.
        Some(Command::Controller(controller)) => run(
            ControllerConfig::from_args(controller, env),
            ControllerConfig::init_logging,
            |config| async { Controller::build(config).await?.run().await },
        ),
        None => run(
            Config::from_args(args, env),
            Config::init_logging,
            |config| async { App::build(config).await?.run().await },
        ),
    }
}

/// A configuration error exits 2 before anything starts; otherwise logging is set up and `mode`
/// runs on a single-threaded runtime, its error mapped to its exit code.
fn run<C, F>(
    config: Result<C, ConfigError>,
    init_logging: fn(&C),
    mode: impl FnOnce(C) -> F,
) -> ExitCode
where
    F: Future<Output = Result<(), Error>>,
{
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("fiskil-token-refresher: error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
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
    match runtime.block_on(mode(config)) {
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
