//! What the health endpoints report: the token each output holds and the refresh loop's state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::leadership::{Leadership, Role};

/// The expiry of the token an output last wrote.
#[derive(Debug)]
pub(crate) struct OutputStatus {
    pub name: String,
    expires_at: watch::Sender<Option<SystemTime>>,
}

impl OutputStatus {
    pub(crate) fn new(name: String) -> Self {
        OutputStatus {
            name,
            expires_at: watch::Sender::new(None),
        }
    }

    /// Records that the output now holds a token valid until `at`.
    pub(crate) fn set_expires_at(&self, at: SystemTime) {
        self.expires_at.send_replace(Some(at));
    }

    pub(crate) fn expires_at(&self) -> Option<SystemTime> {
        *self.expires_at.borrow()
    }

    /// Follows the expiry of what the output holds: a change means a new token was written.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<SystemTime>> {
        self.expires_at.subscribe()
    }
}

/// Shared state behind `/healthz` and `/readyz`.
#[derive(Debug)]
pub(crate) struct Status {
    pub outputs: Vec<Arc<OutputStatus>>,
    pub leadership: Arc<Leadership>,
    next_refresh_at: Mutex<Option<SystemTime>>,
    alive: AtomicBool,
    /// Cluster mode (no outputs): whether every watched resource has been listed once.
    synced: AtomicBool,
    /// Cancelled when shutdown begins: from then on the daemon is not ready.
    shutdown: CancellationToken,
}

/// A point-in-time view for `/readyz`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub ready: bool,
    /// The earliest expiry among the outputs, if every output holds a token.
    pub expires_at: Option<SystemTime>,
    pub next_refresh_at: Option<SystemTime>,
    pub role: Role,
    /// For a follower: the holder of the Lease it last saw.
    pub leader: Option<String>,
}

impl Status {
    pub(crate) fn new(
        outputs: Vec<Arc<OutputStatus>>,
        leadership: Arc<Leadership>,
        shutdown: CancellationToken,
    ) -> Self {
        Status {
            outputs,
            leadership,
            next_refresh_at: Mutex::new(None),
            alive: AtomicBool::new(true),
            synced: AtomicBool::new(false),
            shutdown,
        }
    }

    /// Cluster mode: ready once the watched resources are listed (leader), or while able to
    /// take over (follower).
    pub(crate) fn controller(leadership: Arc<Leadership>, shutdown: CancellationToken) -> Self {
        Status::new(Vec::new(), leadership, shutdown)
    }

    /// Cluster mode: every watched resource has been listed once.
    pub(crate) fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_next_refresh_at(&self, at: SystemTime) {
        *self
            .next_refresh_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Marks the refresh loop as stopped: `/healthz` fails from then on.
    pub(crate) fn set_dead(&self) {
        self.alive.store(false, Ordering::Relaxed);
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Until shutdown begins: a writer (the leader, or the only replica) is ready while every
    /// output holds a token that has not expired at `now` (in cluster mode, once synced); a
    /// follower while it can take over, having read the Lease within the lease duration
    /// (`now_monotonic`).
    pub(crate) fn readiness(
        &self,
        now: SystemTime,
        now_monotonic: tokio::time::Instant,
    ) -> Readiness {
        let expiries: Option<Vec<SystemTime>> =
            self.outputs.iter().map(|o| o.expires_at()).collect();
        let expires_at = expiries.and_then(|all| all.into_iter().min());
        let role = self.leadership.role();
        let (standby, leader) = self.leadership.standby(now_monotonic);
        let serving = match role {
            Role::Follower => standby,
            Role::Single | Role::Leader(_) if self.outputs.is_empty() => {
                self.synced.load(Ordering::Relaxed)
            }
            Role::Single | Role::Leader(_) => expires_at.is_some_and(|at| at > now),
        };
        Readiness {
            ready: !self.shutdown.is_cancelled() && serving,
            leader: (role == Role::Follower).then_some(leader).flatten(),
            role,
            expires_at,
            next_refresh_at: *self
                .next_refresh_at
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ready_only_while_every_output_holds_an_unexpired_token() {
        let shutdown = CancellationToken::new();
        let status = Status::new(
            vec![
                Arc::new(OutputStatus::new("file".into())),
                Arc::new(OutputStatus::new("secret:ns/token".into())),
            ],
            Leadership::single(),
            shutdown.clone(),
        );
        let now = SystemTime::now();
        let mono = tokio::time::Instant::now();
        assert!(!status.readiness(now, mono).ready);
        status.outputs[0].set_expires_at(now + Duration::from_secs(60));
        assert!(!status.readiness(now, mono).ready, "one output still empty");
        status.outputs[1].set_expires_at(now + Duration::from_secs(30));
        let readiness = status.readiness(now, mono);
        assert!(readiness.ready);
        assert_eq!(readiness.role, Role::Single);
        assert_eq!(readiness.expires_at, Some(now + Duration::from_secs(30)));
        assert!(!status.readiness(now + Duration::from_secs(31), mono).ready);
        shutdown.cancel();
        assert!(!status.readiness(now, mono).ready, "shutting down");
    }

    #[test]
    fn a_follower_that_never_read_the_lease_is_not_ready() {
        let status = Status::new(
            vec![Arc::new(OutputStatus::new("secret:ns/token".into()))],
            Leadership::elected(Duration::from_secs(15), Duration::from_secs(10)),
            CancellationToken::new(),
        );
        let readiness = status.readiness(SystemTime::now(), tokio::time::Instant::now());
        assert_eq!(readiness.role, Role::Follower);
        assert!(!readiness.ready);
    }
}
