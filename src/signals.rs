//! Unix signals: SIGTERM/SIGINT start a graceful shutdown (a second one exits at once),
//! SIGHUP asks for a refresh now.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::refresher::RefreshRequests;

/// Installs the handlers; fails only if the runtime cannot register them.
pub fn install(shutdown: CancellationToken, requests: Arc<RefreshRequests>) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    requests.request();
                    continue;
                }
            };
            if shutdown.is_cancelled() {
                tracing::warn!(signal = name, "second stop signal; exiting now");
                std::process::exit(1);
            }
            shutdown.cancel();
            tracing::info!(signal = name, "stopping");
        }
    });
    Ok(())
}
