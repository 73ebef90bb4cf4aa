//! One FiskilToken's writer: puts each token of its credential into the FiskilToken's Secret
//! (created and owned by the FiskilToken; a Secret owned by anything else is left alone), and
//! keeps the FiskilToken's status and Events current.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::Api;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::exchange::{Supply, Trouble, CREDENTIALS_REJECTED, CREDENTIAL_INVALID};
use super::metrics::ControllerMetrics;
use super::resources::{FiskilToken, FiskilTokenStatus};
use super::Tally;
use crate::fiskil::Token;
use crate::kubernetes::events::{truncate, PUBLISH_TIMEOUT};
use crate::leadership::{Leadership, Role};
use crate::schedule::{Held, Timing};
use crate::sink::secret::{Ownership, SecretSink, FIELD_MANAGER};
use crate::sink::Output;

/// Ready reason: the Secret holds a token that has not expired.
pub(crate) const TOKEN_VALID: &str = "TokenValid";
/// Ready reason: no token yet (the first request is under way, or this replica does not lead).
const PENDING: &str = "Pending";
/// Ready reason: the Secret exists and the FiskilToken does not own it.
const SECRET_NOT_OWNED: &str = "SecretNotOwned";
/// Ready reason: the Secret cannot be written.
const SECRET_WRITE_FAILED: &str = "SecretWriteFailed";
/// How often a Secret owned by someone else is looked at again.
const NOT_OWNED_RECHECK: Duration = Duration::from_secs(60);

/// The FiskilToken a writer works for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: Option<i64>,
}

impl TokenRef {
    fn object_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(format!("{}/v1alpha1", super::resources::GROUP)),
            kind: Some("FiskilToken".into()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: Some(self.uid.clone()),
            ..ObjectReference::default()
        }
    }
}

/// What a FiskilToken's Ready condition says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Readiness {
    pub(crate) fn not_ready(reason: &'static str, message: String) -> Readiness {
        Readiness {
            ready: false,
            reason,
            message,
        }
    }
}

/// Publishes a FiskilToken's status (only what changed) and an Event when Ready changes.
pub(crate) struct Reporter {
    pub token: TokenRef,
    pub api: Api<FiskilToken>,
    pub recorder: Recorder,
    pub tally: Arc<Tally>,
    /// The status last published, or found on the object.
    pub last: Option<FiskilTokenStatus>,
}

impl Reporter {
    /// Patches the status when it differs from the last one; publishes an Event when Ready or
    /// its reason changes. Failures are logged: the next change tries again.
    pub(crate) async fn publish(&mut self, readiness: &Readiness, times: Times, timeout: Duration) {
        self.tally.set(&self.token, readiness.reason);
        let previous = self.last.as_ref().and_then(ready_condition);
        let transitioned = previous.is_none_or(|c| {
            (c.status == "True") != readiness.ready || c.reason != readiness.reason
        });
        let transition_time = match previous {
            Some(c) if (c.status == "True") == readiness.ready => c.last_transition_time.clone(),
            _ => Time(k8s_openapi::jiff::Timestamp::now()),
        };
        let status = FiskilTokenStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if readiness.ready { "True" } else { "False" }.into(),
                reason: readiness.reason.into(),
                message: truncate(readiness.message.clone(), 1000),
                observed_generation: self.token.generation,
                last_transition_time: transition_time,
            }],
            expires_at: times.expires_at.map(rfc3339),
            last_refresh_time: times.refreshed_at.map(rfc3339),
            next_refresh_time: times.next_refresh.map(rfc3339),
            observed_generation: self.token.generation,
        };
        if self.last.as_ref() == Some(&status) {
            return;
        }
        let patch = serde_json::json!({
            "apiVersion": format!("{}/v1alpha1", super::resources::GROUP),
            "kind": "FiskilToken",
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&patch);
        let apply = self.api.patch_status(&self.token.name, &params, &patch);
        match tokio::time::timeout(timeout, apply).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(fiskiltoken = %self.token.name, namespace = %self.token.namespace, error = %e, "cannot update the FiskilToken's status");
                return;
            }
            Err(_) => {
                tracing::warn!(fiskiltoken = %self.token.name, namespace = %self.token.namespace, "the API server did not take the FiskilToken's status in time");
                return;
            }
        }
        self.last = Some(status);
        if transitioned {
            self.event(readiness).await;
        }
    }

    async fn event(&self, readiness: &Readiness) {
        let event = Event {
            type_: if readiness.ready {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: readiness.reason.into(),
            note: Some(truncate(readiness.message.clone(), 1000)),
            action: "Refresh".into(),
            secondary: None,
        };
        let reference = self.token.object_reference();
        let publish = self.recorder.publish(&event, &reference);
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(reason = readiness.reason, error = %e, "cannot publish a Kubernetes Event (needs create and patch on events.k8s.io events)");
            }
            Err(_) => {
                tracing::warn!(
                    reason = readiness.reason,
                    "the API server did not take a Kubernetes Event in time"
                );
            }
        }
    }
}

fn ready_condition(status: &FiskilTokenStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == "Ready")
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The times a FiskilToken's status shows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Times {
    pub expires_at: Option<SystemTime>,
    pub refreshed_at: Option<SystemTime>,
    pub next_refresh: Option<SystemTime>,
}

/// Writes one FiskilToken's Secret.
pub(crate) struct Writer {
    pub sink: SecretSink,
    pub supply: Supply,
    pub reporter: Reporter,
    pub leadership: Arc<Leadership>,
    pub metrics: Arc<ControllerMetrics>,
    pub timing: Timing,
    /// Time allowed for one API call.
    pub timeout: Duration,
    /// Writers calling the API server at once: each call in flight holds a connection (and its
    /// TLS buffers), so 200 FiskilTokens refreshed together share a few.
    pub slots: Arc<Semaphore>,
}

/// How the last attempt to write went.
enum Attempt {
    /// The Secret holds the token that expires then, requested then.
    Written {
        expires_at: SystemTime,
        refreshed_at: SystemTime,
    },
    /// Someone else's Secret: look again at the time given.
    NotOwned(Instant),
    /// The write failed: retry at the time given.
    Failed { error: String, retry_at: Instant },
}

impl Writer {
    /// Until `stop`: writes each new token while this replica leads, and reports.
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut role = self.leadership.subscribe();
        let mut written: Option<(SystemTime, SystemTime)> = self.written_before();
        let mut failures = 0;
        let mut last: Option<Attempt> = None;
        loop {
            let leads = role.borrow_and_update().leads();
            if !leads {
                tokio::select! {
                    () = stop.cancelled() => return,
                    led = role.wait_for(Role::leads) => if led.is_err() { return },
                }
                last = None;
                continue;
            }
            let token = self.supply.tokens.borrow_and_update().clone();
            let trouble = self.supply.trouble.borrow_and_update().clone();
            let next_refresh = *self.supply.next_refresh.borrow_and_update();
            let due = match &last {
                Some(Attempt::NotOwned(at)) | Some(Attempt::Failed { retry_at: at, .. }) => {
                    Instant::now() >= *at
                }
                _ => true,
            };
            // Closed only when the controller stops.
            let Ok(slot) = self.slots.acquire().await else {
                return;
            };
            if let Some(token) = token.as_deref() {
                let fresh = written.is_none_or(|(expires, _)| expires != token.expires_at());
                if fresh && due {
                    let attempt = self.write(token, &mut failures, written).await;
                    if let Attempt::Written {
                        expires_at,
                        refreshed_at,
                    } = attempt
                    {
                        written = Some((expires_at, refreshed_at));
                    }
                    last = Some(attempt);
                }
            }
            let readiness = readiness(&last, written, trouble.as_ref(), SystemTime::now());
            let times = Times {
                expires_at: written.map(|(expires, _)| expires),
                refreshed_at: written.map(|(_, refreshed)| refreshed),
                next_refresh,
            };
            if self.leadership.permit().is_some() {
                self.reporter.publish(&readiness, times, self.timeout).await;
            }
            drop(slot);
            let wake = wake_at(&last, written);
            tokio::select! {
                () = stop.cancelled() => return,
                changed = self.supply.tokens.changed() => if changed.is_err() { stop.cancelled().await; return },
                changed = self.supply.trouble.changed() => if changed.is_err() { stop.cancelled().await; return },
                _ = self.supply.next_refresh.changed() => {}
                () = async { drop(role.wait_for(|role| !role.leads()).await) } => {}
                () = sleep_until(wake) => {}
            }
        }
    }

    /// What the FiskilToken's status says was written before (by this replica or another).
    fn written_before(&self) -> Option<(SystemTime, SystemTime)> {
        let status = self.reporter.last.as_ref()?;
        let parse = |text: &Option<String>| humantime::parse_rfc3339(text.as_deref()?).ok();
        Some((
            parse(&status.expires_at)?,
            parse(&status.last_refresh_time)?,
        ))
    }

    async fn write(
        &self,
        token: &Token,
        failures: &mut u32,
        written: Option<(SystemTime, SystemTime)>,
    ) -> Attempt {
        let target = self.sink.target();
        match self.sink.ownership().await {
            Ok(Ownership::Foreign) => {
                tracing::warn!(secret = %target.name, "the Secret exists and this FiskilToken does not own it; leaving it alone");
                return Attempt::NotOwned(Instant::now() + NOT_OWNED_RECHECK);
            }
            Ok(Ownership::Absent | Ownership::Owned) => {}
            Err(e) => return self.failed(e.to_string(), failures, written),
        }
        let Some(permit) = self.leadership.permit() else {
            return self.failed("this replica no longer leads".into(), failures, written);
        };
        let output = Output::Secret(Box::new(self.sink.clone()));
        let result = output.write(token, &permit).await;
        self.metrics.observe_write(result.is_ok());
        match result {
            Ok(()) => {
                *failures = 0;
                Attempt::Written {
                    expires_at: token.expires_at(),
                    refreshed_at: token.issued_at,
                }
            }
            Err(e) => self.failed(e.to_string(), failures, written),
        }
    }

    fn failed(
        &self,
        error: String,
        failures: &mut u32,
        written: Option<(SystemTime, SystemTime)>,
    ) -> Attempt {
        *failures += 1;
        let held = Held::at(written.map(|(expires, _)| expires), SystemTime::now());
        let delay = self.timing.backoff(*failures, held, rand::random());
        let target = self.sink.target();
        tracing::warn!(secret = %target.name, error = %error, retry_in = ?delay, "cannot write the FiskilToken's Secret");
        Attempt::Failed {
            error,
            retry_at: Instant::now() + delay,
        }
    }
}

/// The Ready condition: true while the Secret holds an unexpired token and the credential can
/// still be used; otherwise the most pressing reason.
fn readiness(
    last: &Option<Attempt>,
    written: Option<(SystemTime, SystemTime)>,
    trouble: Option<&Trouble>,
    now: SystemTime,
) -> Readiness {
    match last {
        Some(Attempt::NotOwned(_)) => {
            return Readiness::not_ready(
                SECRET_NOT_OWNED,
                "the Secret exists and is not owned by this FiskilToken; delete it or choose another secretName".into(),
            )
        }
        Some(Attempt::Failed { error, .. }) => {
            return Readiness::not_ready(SECRET_WRITE_FAILED, error.clone())
        }
        _ => {}
    }
    if let Some(trouble) = trouble {
        if matches!(trouble.reason, CREDENTIAL_INVALID | CREDENTIALS_REJECTED) {
            return Readiness::not_ready(trouble.reason, trouble.message.clone());
        }
    }
    match written {
        Some((expires_at, _)) if expires_at > now => Readiness {
            ready: true,
            reason: TOKEN_VALID,
            message: match trouble {
                Some(trouble) => format!(
                    "the Secret holds a token valid until {}; token requests are failing: {}",
                    rfc3339(expires_at),
                    trouble.message
                ),
                None => format!(
                    "the Secret holds a token valid until {}",
                    rfc3339(expires_at)
                ),
            },
        },
        _ => match trouble {
            Some(trouble) => Readiness::not_ready(trouble.reason, trouble.message.clone()),
            None if written.is_some() => Readiness::not_ready(
                super::exchange::ENDPOINT_UNAVAILABLE,
                "the token in the Secret has expired and no new one has arrived yet".into(),
            ),
            None => Readiness::not_ready(PENDING, "waiting for the first token".into()),
        },
    }
}

/// When the writer must look again without being told: a retry, or the expiry of the token
/// written (Ready turns false then).
fn wake_at(last: &Option<Attempt>, written: Option<(SystemTime, SystemTime)>) -> Option<Instant> {
    let retry = match last {
        Some(Attempt::NotOwned(at)) | Some(Attempt::Failed { retry_at: at, .. }) => Some(*at),
        _ => None,
    };
    let expiry = written.and_then(|(expires_at, _)| {
        let left = expires_at.duration_since(SystemTime::now()).ok()?;
        Some(Instant::now() + left + Duration::from_millis(10))
    });
    match (retry, expiry) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trouble(reason: &'static str) -> Trouble {
        Trouble {
            reason,
            message: "m".into(),
        }
    }

    #[test]
    fn ready_while_the_secret_holds_an_unexpired_token_and_the_credential_works() {
        let now = SystemTime::now();
        let valid = Some((now + Duration::from_secs(60), now));
        let expired = Some((now - Duration::from_secs(1), now - Duration::from_secs(900)));
        assert_eq!(readiness(&None, None, None, now).reason, PENDING);
        assert!(readiness(&None, valid, None, now).ready);
        let unavailable = trouble(super::super::exchange::ENDPOINT_UNAVAILABLE);
        let still = readiness(&None, valid, Some(&unavailable), now);
        assert!(still.ready, "a valid token while the endpoint fails");
        assert!(still.message.contains("failing"));
        let spent = readiness(&None, expired, Some(&unavailable), now);
        assert_eq!((spent.ready, spent.reason), (false, unavailable.reason));
        let rejected = readiness(&None, valid, Some(&trouble(CREDENTIALS_REJECTED)), now);
        assert_eq!(
            (rejected.ready, rejected.reason),
            (false, CREDENTIALS_REJECTED)
        );
        let failed = Some(Attempt::Failed {
            error: "forbidden".into(),
            retry_at: Instant::now(),
        });
        assert_eq!(
            readiness(&failed, valid, None, now).reason,
            SECRET_WRITE_FAILED
        );
        let foreign = Some(Attempt::NotOwned(Instant::now()));
        assert_eq!(
            readiness(&foreign, None, None, now).reason,
            SECRET_NOT_OWNED
        );
    }
}
