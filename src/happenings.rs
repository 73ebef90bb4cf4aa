//! State changes operators act on (credentials rejected, a write failing, leadership), reported
//! by the refresh loop, the outputs and the elector to whatever publishes them.
//!
//! Reporting never waits: a [`Happenings`] handle queues each one, and a publisher (Kubernetes
//! Events, with `--events`) takes them from the queue. Without a publisher, reports go nowhere.

use std::time::Duration;

use tokio::sync::mpsc;

/// An object an output writes, by namespace and name (the Secret, for a Secret output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectName {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// A state change worth reporting once, when it happens (never once per retry).
#[derive(Debug, Clone)]
pub(crate) enum Happening {
    /// The token endpoint rejected the client credentials.
    CredentialsRejected { error: String },
    /// Requests keep failing and the token held is near its end (`left` zero: none held).
    TokenExpiringSoon {
        left: Duration,
        failures: u32,
        error: String,
    },
    /// A token was obtained again after `failures` failed requests.
    TokenRefreshed { failures: u32 },
    /// An output started failing; `object` is what it writes, if it writes an object.
    WriteFailed {
        output: String,
        object: Option<ObjectName>,
        error: String,
    },
    /// An output that was failing holds a current token again.
    WriteRecovered {
        output: String,
        object: Option<ObjectName>,
    },
    /// This replica became the leader through `lease`, in `term`.
    LeaderElected { lease: String, term: i32 },
    /// This replica stopped leading through `lease`.
    LeadershipLost { lease: String, reason: String },
}

impl Happening {
    /// The object the happening concerns, for a write.
    pub(crate) fn object(&self) -> Option<&ObjectName> {
        match self {
            Happening::WriteFailed { object, .. } | Happening::WriteRecovered { object, .. } => {
                object.as_ref()
            }
            _ => None,
        }
    }
}

/// Where components report happenings; does nothing unless a publisher is connected.
#[derive(Debug, Clone, Default)]
pub(crate) struct Happenings(Option<mpsc::Sender<Happening>>);

impl Happenings {
    /// A handle and the queue a publisher reads, holding at most `capacity` reports. The queue
    /// ends once every handle is dropped.
    pub(crate) fn channel(capacity: usize) -> (Happenings, mpsc::Receiver<Happening>) {
        let (queue, pending) = mpsc::channel(capacity);
        (Happenings(Some(queue)), pending)
    }

    /// Queues a report; never waits. Happenings are rare, so a full queue means the publisher
    /// is not keeping up, and newer reports are dropped with a warning.
    pub(crate) fn report(&self, happening: Happening) {
        if let Some(queue) = &self.0 {
            if queue.try_send(happening).is_err() {
                tracing::warn!("Events are not being published fast enough; dropping one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_reports_without_waiting() {
        let (happenings, mut pending) = Happenings::channel(1);
        happenings.report(Happening::TokenRefreshed { failures: 1 });
        happenings.report(Happening::TokenRefreshed { failures: 2 });
        assert!(matches!(
            pending.try_recv(),
            Ok(Happening::TokenRefreshed { failures: 1 })
        ));
        assert!(pending.try_recv().is_err(), "the second was dropped");
        Happenings::default().report(Happening::TokenRefreshed { failures: 3 });
    }
}
