//! Outputs that hold the token, each written by its own task so one never delays another.

pub(crate) mod file;
pub(crate) mod secret;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::fiskil::{Token, Tokens};
use crate::happenings::{Happening, Happenings};
use crate::leadership::{Leadership, Permit};
use crate::metrics::Metrics;
use crate::schedule::{Held, Timing};
use crate::status::OutputStatus;

/// A place the token is written to.
#[derive(Debug, Clone)]
pub(crate) enum Output {
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
    #[error(
        "the write could not finish before the Lease might expire; the next leader writes instead"
    )]
    LeaseRanOut,
}

impl Output {
    /// The `output` metric label and the name in logs and `/readyz`: `file`, or
    /// `secret:NAMESPACE/NAME`.
    pub(crate) fn name(&self) -> &str {
        match self {
            Output::File(_) => "file",
            Output::Secret(sink) => sink.name(),
        }
    }

    /// Writes one token; a permit's term is recorded with it, and the write is abandoned if it
    /// cannot finish by the permit's deadline.
    pub(crate) async fn write(&self, token: &Token, permit: &Permit) -> Result<(), OutputError> {
        let write = async {
            match self {
                Output::File(sink) => Ok(sink.write(token).await?),
                Output::Secret(sink) => Ok(sink.write(token, permit.term.as_ref()).await?),
            }
        };
        match permit.deadline {
            // Checked before the request starts: a request once sent may still arrive.
            Some(deadline) if tokio::time::Instant::now() >= deadline => {
                Err(OutputError::LeaseRanOut)
            }
            Some(deadline) => tokio::time::timeout_at(deadline, write)
                .await
                .unwrap_or(Err(OutputError::LeaseRanOut)),
            None => write.await,
        }
    }

    /// The Event to publish when this output starts failing (`error`) or recovers (`None`).
    fn happening(&self, error: Option<&OutputError>) -> Happening {
        let output = self.name().to_owned();
        let object = match self {
            Output::File(_) => None,
            Output::Secret(sink) => Some(sink.target().clone()),
        };
        match error {
            Some(error) => Happening::WriteFailed {
                output,
                object,
                error: error.to_string(),
            },
            None => Happening::WriteRecovered { output, object },
        }
    }
}

/// What every output's task shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
    pub leadership: Arc<Leadership>,
    pub happenings: Happenings,
}

/// How a write-with-retries ended.
enum Written {
    Done,
    Superseded,
    Stopped,
}

/// Writes every new token to `output`, retrying failures with backoff until it succeeds, a
/// newer token replaces it, or shutdown. A write in progress always finishes; nothing is
/// written without leave from the leadership.
pub(crate) async fn run(
    output: Output,
    mut tokens: Tokens,
    status: Arc<OutputStatus>,
    shared: Shared,
    shutdown: CancellationToken,
) {
    // Whether the last write failed, so an Event marks each change and not each retry.
    let mut failing = false;
    loop {
        let token = tokens.borrow_and_update().clone();
        if let Some(token) = token {
            match write_until_done(
                &output,
                &token,
                &mut tokens,
                &status,
                &shared,
                &mut failing,
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
    tokens: &mut Tokens,
    status: &OutputStatus,
    shared: &Shared,
    failing: &mut bool,
    shutdown: &CancellationToken,
) -> Written {
    let mut failures = 0;
    loop {
        // A replica that lost the Lease holds no token to write: the refresh loop clears it.
        let Some(permit) = shared.leadership.permit() else {
            return Written::Done;
        };
        let result = output.write(token, &permit).await;
        shared.metrics.observe_write(output.name(), result.is_ok());
        match result {
            Ok(()) => {
                shared
                    .metrics
                    .set_output_expiry(output.name(), token.expires_at());
                status.set_expires_at(token.expires_at());
                if std::mem::take(failing) {
                    tracing::info!(
                        output = output.name(),
                        "the output holds a current token again"
                    );
                    shared.happenings.report(output.happening(None));
                }
                return Written::Done;
            }
            Err(e) => {
                failures += 1;
                let held = Held::at(status.expires_at(), std::time::SystemTime::now());
                let delay = shared.timing.backoff(failures, held, rand::random());
                tracing::warn!(output = output.name(), error = %e, retry_in = ?delay, "cannot write the token");
                if !std::mem::replace(failing, true) {
                    shared.happenings.report(output.happening(Some(&e)));
                }
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
pub(crate) async fn write_once(
    output: &Output,
    token: &Token,
    metrics: &Metrics,
    timing: Timing,
    deadline: tokio::time::Instant,
) -> Result<(), OutputError> {
    let mut failures = 0;
    let permit = Permit::unbounded();
    loop {
        match output.write(token, &permit).await {
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
