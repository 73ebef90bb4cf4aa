//! Unix signals: SIGTERM/SIGINT start the drain and a second one aborts it; SIGHUP asks for a
//! refresh now.

use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::refresher::RefreshRequests;

/// The registered handlers.
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// What the signal task acts on.
pub(crate) struct Controls {
    /// Cancelled by the first SIGTERM or SIGINT: the drain begins.
    pub(crate) drain: CancellationToken,
    /// Cancelled by a second one: the drain is abandoned and the process exits 1.
    pub(crate) abort: CancellationToken,
    /// SIGHUP asks the refresh loop for a token now.
    pub(crate) requests: Arc<RefreshRequests>,
    /// Cancelled once the drain is over: the task ends.
    pub(crate) done: CancellationToken,
}

impl Signals {
    /// Registers the handlers; fails only if the runtime cannot register them.
    pub(crate) fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Acts on signals until the drain is over or aborted.
    pub(crate) async fn listen(mut self, controls: Controls) {
        loop {
            let name = tokio::select! {
                () = controls.done.cancelled() => return,
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
                _ = self.hup.recv() => {
                    controls.requests.request();
                    continue;
                }
            };
            if controls.drain.is_cancelled() {
                tracing::warn!(signal = name, "second stop signal; exiting now");
                controls.abort.cancel();
                return;
            }
            controls.drain.cancel();
            tracing::info!(signal = name, "stopping");
        }
    }
}
