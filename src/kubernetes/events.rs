//! Kubernetes Events (`events.k8s.io/v1`) for the happenings operators act on: one per change,
//! repeats folded into the Event's series by kube's recorder, never one per retry.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::happenings::{Happening, Happenings, ObjectName};
use crate::kubernetes::client::Pod;

/// Kubernetes Events.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Kubernetes Events")]
pub(crate) struct EventArgs {
    /// Publish Kubernetes Events on state changes (credentials rejected, token about to expire,
    /// Secret write failing, recovery, leadership), about the pod (POD_NAME, POD_NAMESPACE,
    /// POD_UID), else the Secret concerned
    #[arg(long, env = "FISKIL_EVENTS")]
    pub events: bool,
}

/// The reporting controller named in every Event.
pub(crate) const CONTROLLER: &str = "fiskil-token-refresher";
/// Events waiting to be published; state changes are rare, so a full queue means the API
/// server is not taking them, and newer ones are dropped with a warning.
const QUEUE: usize = 64;
/// Time allowed for one Event to be published.
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The Event for a happening.
fn event(happening: &Happening) -> Event {
    let (type_, reason, action, note) = match happening {
            Happening::CredentialsRejected { error } => (
                EventType::Warning,
                "CredentialsRejected",
                "RequestToken",
                format!("the token endpoint rejected the client credentials; fix or rotate them: {error}"),
            ),
            Happening::TokenExpiringSoon { left, failures, error } => (
                EventType::Warning,
                "TokenExpiringSoon",
                "RequestToken",
                if left.is_zero() {
                    format!("{failures} token requests failed in a row and no valid token is held: {error}")
                } else {
                    format!(
                        "{failures} token requests failed in a row; the token held expires in {}s, under a quarter of its lifetime: {error}",
                        left.as_secs()
                    )
                },
            ),
            Happening::TokenRefreshed { failures } => (
                EventType::Normal,
                "TokenRefreshed",
                "RequestToken",
                format!("a token was obtained again after {failures} failed requests"),
            ),
            Happening::WriteFailed { output, object, error } => (
                EventType::Warning,
                if object.is_some() { "SecretWriteFailed" } else { "TokenFileWriteFailed" },
                "WriteToken",
                format!("cannot write the token to {output}: {error}"),
            ),
            Happening::WriteRecovered { output, object } => (
                EventType::Normal,
                if object.is_some() { "SecretWriteRecovered" } else { "TokenFileWriteRecovered" },
                "WriteToken",
                format!("{output} holds a current token again"),
            ),
            Happening::LeaderElected { lease, term } => (
                EventType::Normal,
                "LeaderElected",
                "Lead",
                format!("became the leader through Lease {lease} (term {term}); requesting a token and writing every target now"),
            ),
            Happening::LeadershipLost { lease, reason } => (
                EventType::Normal,
                "LeadershipLost",
                "Lead",
                format!("no longer the leader through Lease {lease}: {reason}"),
            ),
        };
    Event {
        type_,
        reason: reason.into(),
        // The API server refuses notes over 1 kB.
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// What Events are about: the pod, else the Secret concerned, else the first Secret target.
#[derive(Debug, Clone)]
pub(crate) struct Regarding {
    pub pod: Option<Pod>,
    /// The Secret for Events about no particular Secret when there is no pod.
    pub fallback: Option<ObjectName>,
}

impl Regarding {
    fn reference(&self, happening: &Happening) -> Option<ObjectReference> {
        match (&self.pod, happening.object()) {
            (Some(pod), _) => Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: pod.uid.clone(),
                ..ObjectReference::default()
            }),
            (None, Some(secret)) => Some(secret_reference(secret)),
            (None, None) => self.fallback.as_ref().map(secret_reference),
        }
    }
}

/// The reference Events use for a Secret an output writes.
fn secret_reference(secret: &ObjectName) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some(secret.name.clone()),
        namespace: Some(secret.namespace.clone()),
        ..ObjectReference::default()
    }
}

/// Publishes what the returned handle reports as Events, on `tasks`; the task ends once every
/// clone of the handle is dropped and the queue is empty.
pub(crate) fn start(
    client: kube::Client,
    instance: String,
    regarding: Regarding,
    tasks: &TaskTracker,
) -> (Happenings, JoinHandle<()>) {
    let (happenings, mut pending) = Happenings::channel(QUEUE);
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: CONTROLLER.into(),
            instance: Some(instance),
        },
    );
    let publisher = tasks.spawn(async move {
        while let Some(happening) = pending.recv().await {
            let mut event = event(&happening);
            let Some(reference) = regarding.reference(&happening) else {
                continue;
            };
            if regarding.pod.is_some() {
                event.secondary = happening.object().map(secret_reference);
            }
            let published =
                tokio::time::timeout(PUBLISH_TIMEOUT, recorder.publish(&event, &reference)).await;
            match published {
                Ok(Ok(())) => {
                    tracing::debug!(reason = %event.reason, "event published");
                }
                Ok(Err(e)) => {
                    tracing::warn!(reason = %event.reason, error = %e, "cannot publish a Kubernetes Event (needs create and patch on events.k8s.io events)");
                }
                Err(_) => {
                    tracing::warn!(reason = %event.reason, "the API server did not take a Kubernetes Event in time");
                }
            }
        }
    });
    (happenings, publisher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_about_the_pod_else_the_secret_concerned() {
        let secret = ObjectName {
            namespace: "team-a".into(),
            name: "token".into(),
        };
        let fallback = ObjectName {
            namespace: "ops".into(),
            name: "first".into(),
        };
        let failed = Happening::WriteFailed {
            output: "secret:team-a/token".into(),
            object: Some(secret.clone()),
            error: "forbidden".into(),
        };
        let rejected = Happening::CredentialsRejected {
            error: "HTTP 401".into(),
        };
        let without_pod = Regarding {
            pod: None,
            fallback: Some(fallback.clone()),
        };
        assert_eq!(
            without_pod.reference(&failed),
            Some(secret_reference(&secret))
        );
        assert_eq!(
            without_pod.reference(&rejected),
            Some(secret_reference(&fallback))
        );
        let with_pod = Regarding {
            pod: Some(Pod {
                name: "writer-0".into(),
                namespace: "ops".into(),
                uid: Some("u-1".into()),
            }),
            fallback: Some(fallback),
        };
        let pod = with_pod.reference(&failed).unwrap();
        assert_eq!(
            (pod.kind.as_deref(), pod.name.as_deref(), pod.uid.as_deref()),
            (Some("Pod"), Some("writer-0"), Some("u-1"))
        );
        assert_eq!(event(&failed).reason, "SecretWriteFailed");
        assert!(matches!(event(&rejected).type_, EventType::Warning));
    }

    #[test]
    fn notes_fit_the_api_limit() {
        let long = Happening::CredentialsRejected {
            error: "é".repeat(800),
        };
        assert!(event(&long).note.unwrap().len() <= 1000);
    }
}
