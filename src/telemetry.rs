//! Log setup: JSON or text lines on stderr, filtered by --log-level or RUST_LOG.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logging.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log line format
    #[arg(long, env = "FISKIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides)
    #[arg(
        long,
        env = "FISKIL_LOG_LEVEL",
        value_name = "LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// A log level that is not one.
#[derive(Debug, thiserror::Error)]
#[error("--log-level {0:?} is not a level; use error, warn, info, debug or trace")]
pub struct LogLevelError(String);

impl LogArgs {
    /// Checks the level.
    pub fn check(&self) -> Result<(), LogLevelError> {
        match self.log_level.parse::<tracing::Level>() {
            Ok(_) => Ok(()),
            Err(_) => Err(LogLevelError(self.log_level.clone())),
        }
    }
}

/// Installs the global log subscriber.
pub fn init(settings: &LogArgs) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},h2=warn,hyper=warn,rustls=warn",
            settings.log_level
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match settings.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
