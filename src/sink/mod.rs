//! Outputs that hold the token, each written by its own task so one never delays another.

pub mod file;
pub mod secret;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fiskil::Token;
use crate::metrics::Metrics;
use crate::schedule::{Held, Timing};
use crate::status::OutputStatus;

/// A place the token is written to.
#[derive(Debug, Clone)]
pub enum Output {
    File(file::FileSink),
    Secret(Box<secret::SecretSink>),
}

/// A failed write to an output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    File(#[from] file::FileError),
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
}

impl Output {
    /// The `output` metric label and the name in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Output::File(_) => "file",
            Output::Secret(_) => "secret",
        }
    }

    /// Writes one token.
    pub async fn write(&self, token: &Token) -> Result<(), OutputError> {
        match self {
            Output::File(sink) => Ok(sink.write(token).await?),
            Output::Secret(sink) => Ok(sink.write(token).await?),
        }
    }
}

/// How a write-with-retries ended.
enum Written {
    Done,
    Superseded,
    Stopped,
}

/// Writes every new token to `output`, retrying failures with backoff until it succeeds, a
/// newer token replaces it, or shutdown. A write in progress always finishes.
pub async fn run(
    output: Output,
    mut tokens: watch::Receiver<Option<Arc<Token>>>,
    status: Arc<OutputStatus>,
    metrics: Arc<Metrics>,
    timing: Timing,
    shutdown: CancellationToken,
) {
    loop {
        let token = tokens.borrow_and_update().clone();
        if let Some(token) = token {
            match write_until_done(
                &output,
                &token,
                &mut tokens,
                &status,
                &metrics,
                timing,
                &shutdown,
            )
            .await
            {
                Written::Done => {}
                Written::Superseded => continue,
                Written::Stopped => return,
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = tokens.changed() => if changed.is_err() { return },
        }
    }
}

async fn write_until_done(
    output: &Output,
    token: &Token,
    tokens: &mut watch::Receiver<Option<Arc<Token>>>,
    status: &OutputStatus,
    metrics: &Metrics,
    timing: Timing,
    shutdown: &CancellationToken,
) -> Written {
    let mut failures = 0;
    loop {
        match output.write(token).await {
            Ok(()) => {
                metrics.observe_write(output.name(), true);
                metrics.set_output_expiry(output.name(), token.expires_at());
                status.set_expires_at(token.expires_at());
                return Written::Done;
            }
            Err(e) => {
                metrics.observe_write(output.name(), false);
                failures += 1;
                let held = Held::at(status.expires_at(), std::time::SystemTime::now());
                let delay = timing.backoff(failures, held, rand::random());
                tracing::warn!(output = output.name(), error = %e, retry_in = ?delay, "cannot write the token");
                tokio::select! {
                    () = shutdown.cancelled() => return Written::Stopped,
                    changed = tokens.changed() => return if changed.is_ok() { Written::Superseded } else { Written::Stopped },
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Writes one token to `output`, retrying until `deadline`; for `--once`.
pub async fn write_once(
    output: &Output,
    token: &Token,
    metrics: &Metrics,
    timing: Timing,
    deadline: tokio::time::Instant,
) -> Result<(), OutputError> {
    let mut failures = 0;
    loop {
        match output.write(token).await {
            Ok(()) => {
                metrics.observe_write(output.name(), true);
                return Ok(());
            }
            Err(e) => {
                metrics.observe_write(output.name(), false);
                failures += 1;
                let retry_at = tokio::time::Instant::now()
                    + timing.backoff(failures, Held::Expired, rand::random());
                if retry_at >= deadline {
                    return Err(e);
                }
                tracing::warn!(output = output.name(), error = %e, "cannot write the token; retrying");
                tokio::time::sleep_until(retry_at).await;
            }
        }
    }
}
