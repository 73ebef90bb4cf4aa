//! Entry point: parse the command line, set up logging, run, and map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use fiskil_token_refresher::{
    App, Args, Command, Config, Controller, ControllerArgs, ControllerConfig, ExplainArgs,
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
    match args.command.take() {
        Some(Command::Explain(explain)) => return explain_timing(&explain),
        Some(Command::Controller(controller)) => return cluster_mode(controller),
        None => {}
    }
    let config = match Config::from_args(args, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("fiskil-token-refresher: error: {e}");
            return ExitCode::from(2);
        }
    };
    config.init_logging();
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
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

/// `controller`: cluster mode, with the daemon's exit codes.
fn cluster_mode(args: ControllerArgs) -> ExitCode {
    let config = match ControllerConfig::from_args(args, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("fiskil-token-refresher: error: {e}");
            return ExitCode::from(2);
        }
    };
    config.init_logging();
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    let outcome = runtime.block_on(async { Controller::build(config).await?.run().await });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The single-threaded runtime every mode runs on; `None` (logged) if it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            None
        }
    }
}
