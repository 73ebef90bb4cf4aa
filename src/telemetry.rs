//! Log setup: JSON or text lines on stderr, filtered by --log-level or RUST_LOG.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Logging.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Logging")]
pub(crate) struct LogArgs {
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
pub(crate) enum LogFormat {
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
    pub(crate) fn settings(&self) -> Result<(), LogLevelError> {
        match self.log_level.parse::<tracing::Level>() {
            Ok(_) => Ok(()),
            Err(_) => Err(LogLevelError(self.log_level.clone())),
        }
    }
}

/// The filter: `RUST_LOG` when it parses (`target=level` pairs and a default level, e.g.
/// `warn,fiskil_token_refresher=debug`), else `--log-level` for this program's own lines and
/// warnings from the libraries under it.
fn filter(level: &str, rust_log: Option<&str>) -> Targets {
    if let Some(targets) = rust_log.and_then(|spec| spec.parse().ok()) {
        return targets;
    }
    format!("warn,fiskil_token_refresher={level}")
        .parse()
        .unwrap_or_default()
}

/// Installs the global log subscriber; `rust_log`, when set, overrides `--log-level`.
pub(crate) fn init(settings: &LogArgs, rust_log: Option<&str>) {
    let filter = filter(&settings.log_level, rust_log);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    match settings.log_format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
        LogFormat::Text => registry.with(fmt).init(),
    }
    tracing::debug!("logging set up");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn the_level_applies_to_this_program_and_rust_log_overrides() {
        let own = "fiskil_token_refresher::refresher";
        let filter = filter("debug", None);
        assert!(filter.would_enable(own, &Level::DEBUG));
        assert!(!filter.would_enable("hyper::proto", &Level::INFO));
        assert!(filter.would_enable("hyper::proto", &Level::WARN));
        let filter = filter_from("error", "info,fiskil_token_refresher=trace");
        assert!(filter.would_enable(own, &Level::TRACE));
        assert!(filter.would_enable("hyper::proto", &Level::INFO));
    }

    fn filter_from(level: &str, rust_log: &str) -> Targets {
        filter(level, Some(rust_log))
    }
}
