//! Leader election among replicas with a `coordination.k8s.io/v1` Lease, as client-go does it:
//! only the holder requests tokens and writes, and it stops before its Lease can have expired.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{PostParams, WatchEvent, WatchParams};
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::{dns_name, positive_duration};
use crate::fleet::events::{Events, Happening};
use crate::metrics::Metrics;

/// Leader election: which replica requests tokens and writes the Secrets.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Leader election")]
pub struct LeaseArgs {
    /// Replicas elect a leader with a Lease; only the leader requests tokens and writes the
    /// Secrets, the others stand by (identity: POD_NAME, else the hostname)
    #[arg(long, env = "FISKIL_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the Lease replicas compete for
    #[arg(
        long,
        env = "FISKIL_LEASE_NAME",
        value_name = "NAME",
        default_value = "fiskil-token-refresher"
    )]
    pub lease_name: String,

    /// Namespace of the Lease [default: the pod's namespace, else the kubeconfig context's]
    #[arg(long, env = "FISKIL_LEASE_NAMESPACE", value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a Lease lasts without renewal: a killed leader is replaced within it. The leader
    /// renews every 2/15 of it and stops writing once 2/3 of it pass without a renewal
    #[arg(long, env = "FISKIL_LEASE_DURATION", value_name = "DURATION",
          default_value = "15s", value_parser = positive_duration)]
    pub lease_duration: Duration,
}

/// Leader election options Kubernetes would refuse.
#[derive(Debug, thiserror::Error)]
pub enum LeaseArgsError {
    #[error(
        "--lease-name {0:?} is not a valid Lease name; use lowercase letters, digits, '-' and '.'"
    )]
    Name(String),
    #[error(
        "--lease-namespace {0:?} is not a valid namespace; use lowercase letters, digits and '-'"
    )]
    Namespace(String),
    #[error("--lease-duration {0:?} is not usable; give whole seconds, at least 3s (e.g. 15s)")]
    Duration(Duration),
}

/// The Lease and its timing, validated.
#[derive(Debug, Clone)]
pub struct Election {
    pub name: String,
    pub namespace: Option<String>,
    /// How long the Lease lasts without renewal.
    pub duration: Duration,
    /// The leader stops acting this long after its last renewal.
    pub renew_deadline: Duration,
    /// Time between renewals, and between a follower's attempts.
    pub retry_period: Duration,
}

impl LeaseArgs {
    /// The election, with `--leader-elect`; renew deadline and retry period keep client-go's
    /// proportions (15 s, 10 s, 2 s).
    pub fn election(self) -> Result<Option<Election>, LeaseArgsError> {
        if !self.leader_elect {
            return Ok(None);
        }
        if !dns_name(&self.lease_name, true, 253) {
            return Err(LeaseArgsError::Name(self.lease_name));
        }
        if let Some(namespace) = &self.lease_namespace {
            if !dns_name(namespace, false, 63) {
                return Err(LeaseArgsError::Namespace(namespace.clone()));
            }
        }
        let duration = self.lease_duration;
        if duration.subsec_nanos() != 0 || duration < Duration::from_secs(3) {
            return Err(LeaseArgsError::Duration(duration));
        }
        Ok(Some(Election {
            name: self.lease_name,
            namespace: self.lease_namespace,
            duration,
            renew_deadline: duration * 2 / 3,
            retry_period: duration * 2 / 15,
        }))
    }
}

/// One holder's tenure: the Lease's `leaseTransitions` when it took the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub identity: String,
    pub number: i32,
}

/// What this process is among the replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No election: the only writer.
    Single,
    Leader(Term),
    Follower,
}

impl Role {
    pub fn leads(&self) -> bool {
        !matches!(self, Role::Follower)
    }
}

/// Leave to write: until when, and in which term.
#[derive(Debug, Clone)]
pub struct Permit {
    /// Writes must be done by then: the Lease could expire for others afterwards.
    pub deadline: Option<Instant>,
    pub term: Option<Term>,
}

#[derive(Debug, Default)]
struct Seen {
    /// When the last successful renewal was sent.
    renewed_at: Option<Instant>,
    /// When the Lease was last read or written successfully.
    contact_at: Option<Instant>,
    /// The holder a follower last saw.
    holder: Option<String>,
}

/// The shared view of leadership: the refresh loop waits on it, outputs ask it for leave to
/// write, `/readyz` reports it.
#[derive(Debug)]
pub struct Leadership {
    role: watch::Sender<Role>,
    lease_duration: Duration,
    seen: Mutex<Seen>,
}

impl Leadership {
    /// The only writer, without an election.
    pub fn single() -> Arc<Leadership> {
        Arc::new(Leadership {
            role: watch::Sender::new(Role::Single),
            lease_duration: Duration::ZERO,
            seen: Mutex::default(),
        })
    }

    /// A replica that starts as a follower.
    pub fn elected(lease_duration: Duration) -> Arc<Leadership> {
        Arc::new(Leadership {
            role: watch::Sender::new(Role::Follower),
            lease_duration,
            seen: Mutex::default(),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leave to write now, or `None` while following or once the Lease could have expired
    /// for others (a leader that was paused, say, before it noticed).
    pub fn permit(&self) -> Option<Permit> {
        match self.role() {
            Role::Single => Some(Permit {
                deadline: None,
                term: None,
            }),
            Role::Leader(term) => {
                let deadline = self.seen().renewed_at? + self.lease_duration;
                (Instant::now() < deadline).then_some(Permit {
                    deadline: Some(deadline),
                    term: Some(term),
                })
            }
            Role::Follower => None,
        }
    }

    /// For a follower: whether it read the Lease within the lease duration, i.e. it can take
    /// over; and the holder it saw.
    pub fn standby(&self, now: Instant) -> (bool, Option<String>) {
        let seen = self.seen();
        let fresh = seen
            .contact_at
            .is_some_and(|at| now.duration_since(at) < self.lease_duration);
        (fresh, seen.holder.clone())
    }
}

/// Why one attempt on the Lease failed.
#[derive(Debug, thiserror::Error)]
enum LeaseError {
    #[error("another replica changed the Lease first")]
    Conflict,
    #[error("forbidden to use Lease {0} (verbs get, update, watch on that name, and create); bind this ServiceAccount to a Role allowing them")]
    Forbidden(String),
    #[error("the API server refused the Lease: {0}")]
    Api(#[source] kube::Error),
    #[error("the API server did not answer in time")]
    TimedOut,
}

impl LeaseError {
    fn from_kube(error: kube::Error, lease: &str) -> LeaseError {
        match &error {
            kube::Error::Api(status) if status.code == 409 => LeaseError::Conflict,
            kube::Error::Api(status) if status.code == 403 => {
                LeaseError::Forbidden(lease.to_owned())
            }
            _ => LeaseError::Api(error),
        }
    }
}

/// The Lease's version as this process last saw it, and when that changed: a holder that
/// stops renewing is judged expired by this process's own clock, not by the holder's.
struct Observed {
    version: Option<String>,
    changed_at: Instant,
}

impl Observed {
    fn saw(&mut self, lease: &Lease) {
        if lease.metadata.resource_version != self.version {
            self.version.clone_from(&lease.metadata.resource_version);
            self.changed_at = Instant::now();
        }
    }
}

/// How long the holder's Lease lasts without renewal.
fn held_for(lease: &Lease) -> Duration {
    let seconds = lease
        .spec
        .as_ref()
        .and_then(|spec| spec.lease_duration_seconds)
        .unwrap_or(0);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// How long after a Lease expires a follower tries to take it.
const EXPIRY_SLACK: Duration = Duration::from_millis(10);

/// What one attempt found.
enum Attempt {
    Lead(Term, Lease),
    Follow(Option<String>, Lease),
}

/// Competes for the Lease and keeps it while it can.
pub struct Elector {
    pub api: Api<Lease>,
    pub election: Election,
    pub identity: String,
    pub leadership: Arc<Leadership>,
    pub metrics: Arc<Metrics>,
    pub events: Events,
}

impl Elector {
    /// Runs until `stop`; stops competing once `shutdown` begins, and releases the Lease on
    /// `stop` if it holds it, so a follower takes over at once.
    pub async fn run(self, shutdown: CancellationToken, stop: CancellationToken) {
        let lease_ref = format!(
            "{}/{}",
            self.api.namespace().unwrap_or_default(),
            self.election.name
        );
        tracing::info!(identity = %self.identity, lease = %lease_ref, "competing for the Lease");
        // The last Lease object this process wrote or read, and when it last saw it change.
        let mut last: Option<Lease> = None;
        let mut observed = Observed {
            version: None,
            changed_at: Instant::now(),
        };
        loop {
            let leading = self.leadership.role().leads();
            if !leading && shutdown.is_cancelled() {
                break;
            }
            let started = Instant::now();
            // A leader must have renewed by its renew deadline; an attempt that cannot beat it
            // is abandoned, and the leader steps down.
            let renewed_at = self.leadership.seen().renewed_at.filter(|_| leading);
            let deadline = renewed_at.unwrap_or(started) + self.election.renew_deadline;
            let attempt = tokio::time::timeout_at(
                deadline,
                self.attempt(last.clone(), leading, &mut observed),
            )
            .await
            .unwrap_or(Err(LeaseError::TimedOut));
            match attempt {
                Ok(Attempt::Lead(term, lease)) => {
                    last = Some(lease);
                    self.renewed(started, term, &lease_ref);
                }
                Ok(Attempt::Follow(holder, lease)) => {
                    last = Some(lease);
                    self.following(holder, &lease_ref);
                }
                Err(e) => {
                    // Read the Lease afresh next time.
                    last = None;
                    self.failed(&e, &lease_ref);
                }
            }
            let wait = if self.leadership.role().leads() {
                self.election.retry_period
            } else {
                // Followers spread their attempts, as client-go's jitter does, and try again
                // as soon as the holder's Lease expires, so a killed leader is replaced
                // within the lease duration.
                let jittered = self
                    .election
                    .retry_period
                    .mul_f64(1.0 + rand::random::<f64>() * 0.2);
                let expires_in = last
                    .as_ref()
                    .map(|lease| {
                        (observed.changed_at + held_for(lease))
                            .saturating_duration_since(Instant::now())
                            + EXPIRY_SLACK
                    })
                    .unwrap_or(jittered);
                jittered.min(expires_in)
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wait_for_change(last.as_ref(), wait) => {}
            }
        }
        self.release(last, &lease_ref).await;
    }

    /// Reads the Lease (unless `known` is current), then takes it if it is free or expired,
    /// renews it if held, or reports the holder.
    async fn attempt(
        &self,
        known: Option<Lease>,
        leading: bool,
        observed: &mut Observed,
    ) -> Result<Attempt, LeaseError> {
        let now = MicroTime(Timestamp::now());
        let name = &self.election.name;
        let seconds = i32::try_from(self.election.duration.as_secs()).unwrap_or(i32::MAX);
        let lease = match known {
            // A leader renews the object it wrote last; a conflict sends it back to a read.
            Some(lease) if leading => lease,
            _ => match self
                .api
                .get_opt(name)
                .await
                .map_err(|e| LeaseError::from_kube(e, name))?
            {
                Some(lease) => lease,
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(self.identity.clone()),
                            lease_duration_seconds: Some(seconds),
                            acquire_time: Some(now.clone()),
                            renew_time: Some(now),
                            lease_transitions: Some(0),
                            ..LeaseSpec::default()
                        }),
                    };
                    let created = self
                        .api
                        .create(&PostParams::default(), &lease)
                        .await
                        .map_err(|e| LeaseError::from_kube(e, name))?;
                    return Ok(Attempt::Lead(self.term(0), created));
                }
            },
        };
        observed.saw(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let lasts = held_for(&lease);
        let ours = holder.as_deref() == Some(self.identity.as_str());
        // Expiry is judged by when this process saw the Lease change, not by the holder's
        // clock, as client-go does.
        if !ours && holder.is_some() && observed.changed_at.elapsed() < lasts {
            return Ok(Attempt::Follow(holder, lease));
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let (acquire_time, number) = if ours {
            (spec.acquire_time.clone().or(Some(now.clone())), transitions)
        } else {
            (Some(now.clone()), transitions.saturating_add(1))
        };
        let mut update = lease;
        update.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time,
            renew_time: Some(now),
            lease_transitions: Some(number),
            ..spec
        });
        let written = self
            .api
            .replace(name, &PostParams::default(), &update)
            .await
            .map_err(|e| LeaseError::from_kube(e, name))?;
        observed.saw(&written);
        Ok(Attempt::Lead(self.term(number), written))
    }

    fn term(&self, number: i32) -> Term {
        Term {
            identity: self.identity.clone(),
            number,
        }
    }

    fn renewed(&self, sent: Instant, term: Term, lease_ref: &str) {
        {
            let mut seen = self.leadership.seen();
            seen.renewed_at = Some(sent);
            seen.contact_at = Some(Instant::now());
            seen.holder = Some(self.identity.clone());
        }
        if self.leadership.role() != Role::Leader(term.clone()) {
            tracing::info!(identity = %self.identity, lease = %lease_ref, term = term.number, "leadership acquired");
            self.events.emit(Happening::LeaderElected {
                lease: lease_ref.to_owned(),
                term: term.number,
            });
            self.metrics.set_leader(true);
            self.leadership.role.send_replace(Role::Leader(term));
        }
    }

    fn following(&self, holder: Option<String>, lease_ref: &str) {
        {
            let mut seen = self.leadership.seen();
            seen.contact_at = Some(Instant::now());
            if seen.holder != holder {
                tracing::info!(holder = holder.as_deref().unwrap_or(""), lease = %lease_ref, "following");
            }
            seen.holder.clone_from(&holder);
        }
        if self.leadership.role().leads() {
            self.lose("another replica holds the Lease", lease_ref);
        }
    }

    fn failed(&self, error: &LeaseError, lease_ref: &str) {
        let role = self.leadership.role();
        if !role.leads() {
            // Another replica writing the Lease first is the normal race between followers.
            if matches!(error, LeaseError::Conflict) {
                tracing::debug!(lease = %lease_ref, "another replica took the Lease first");
            } else {
                tracing::warn!(error = %error, lease = %lease_ref, "cannot read or take the Lease; retrying");
            }
            return;
        }
        let renewed_at = self.leadership.seen().renewed_at;
        let overdue = renewed_at.is_none_or(|at| at.elapsed() >= self.election.renew_deadline);
        if overdue {
            self.lose(
                "the Lease was not renewed within the renew deadline",
                lease_ref,
            );
        } else {
            tracing::warn!(error = %error, lease = %lease_ref, "cannot renew the Lease; retrying");
        }
    }

    fn lose(&self, reason: &'static str, lease_ref: &str) {
        tracing::warn!(identity = %self.identity, lease = %lease_ref, reason, "leadership lost");
        self.events.emit(Happening::LeadershipLost {
            lease: lease_ref.to_owned(),
            reason: reason.to_owned(),
        });
        self.metrics.set_leader(false);
        self.leadership.role.send_replace(Role::Follower);
    }

    /// Sleeps `wait`, or less for a follower when the Lease changes (a release is then seen at
    /// once, not a retry period later).
    async fn wait_for_change(&self, last: Option<&Lease>, wait: Duration) {
        let version = last.and_then(|lease| lease.metadata.resource_version.clone());
        let (Some(version), false) = (version, self.leadership.role().leads()) else {
            tokio::time::sleep(wait).await;
            return;
        };
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.election.name))
            .timeout(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX));
        let deadline = Instant::now() + wait;
        let watched = tokio::time::timeout_at(deadline, async {
            let Ok(stream) = self.api.watch(&params, &version).await else {
                return false;
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Deleted(_)) =
                    event
                {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(watched, Ok(true)) {
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Gives the Lease up if this process holds it: the holder is cleared and the duration set
    /// to one second, so followers take it at once.
    async fn release(&self, last: Option<Lease>, lease_ref: &str) {
        let Role::Leader(term) = self.leadership.role() else {
            return;
        };
        self.metrics.set_leader(false);
        self.leadership.role.send_replace(Role::Follower);
        let Some(mut lease) = last else {
            tracing::warn!(lease = %lease_ref, "leadership ended without a current Lease to release; followers wait for it to expire");
            return;
        };
        let now = MicroTime(Timestamp::now());
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now.clone());
            spec.acquire_time = Some(now);
        }
        let released = tokio::time::timeout(
            self.election.retry_period,
            self.api
                .replace(&self.election.name, &PostParams::default(), &lease),
        )
        .await;
        match released {
            Ok(Ok(_)) => {
                tracing::info!(identity = %self.identity, lease = %lease_ref, term = term.number, "leadership released");
                self.events.emit(Happening::LeadershipLost {
                    lease: lease_ref.to_owned(),
                    reason: "released at shutdown".to_owned(),
                });
            }
            Ok(Err(e)) => {
                let error = LeaseError::from_kube(e, &self.election.name);
                tracing::warn!(error = %error, lease = %lease_ref, "cannot release the Lease; followers wait for it to expire");
            }
            Err(_) => {
                tracing::warn!(lease = %lease_ref, "cannot release the Lease in time; followers wait for it to expire");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Option<Election>, LeaseArgsError> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            lease: LeaseArgs,
        }
        let argv = std::iter::once("test").chain(argv.iter().copied());
        Cli::try_parse_from(argv).unwrap().lease.election()
    }

    #[test]
    fn timing_keeps_client_go_proportions() {
        assert!(parse(&[]).unwrap().is_none());
        let election = parse(&["--leader-elect"]).unwrap().unwrap();
        assert_eq!(election.name, "fiskil-token-refresher");
        assert_eq!(election.duration, Duration::from_secs(15));
        assert_eq!(election.renew_deadline, Duration::from_secs(10));
        assert_eq!(election.retry_period, Duration::from_secs(2));
        let short = parse(&["--leader-elect", "--lease-duration", "3s"])
            .unwrap()
            .unwrap();
        assert_eq!(short.renew_deadline, Duration::from_secs(2));
        assert_eq!(short.retry_period, Duration::from_millis(400));
    }

    #[test]
    fn bad_options_are_refused() {
        for duration in ["2s", "3500ms"] {
            assert!(matches!(
                parse(&["--leader-elect", "--lease-duration", duration]),
                Err(LeaseArgsError::Duration(_))
            ));
        }
        assert!(matches!(
            parse(&["--leader-elect", "--lease-name", "Bad_Name"]),
            Err(LeaseArgsError::Name(_))
        ));
        assert!(matches!(
            parse(&["--leader-elect", "--lease-namespace", "a.b"]),
            Err(LeaseArgsError::Namespace(_))
        ));
    }

    #[test]
    fn a_follower_has_no_permit_and_a_leader_one_bounded_by_its_lease() {
        assert!(Leadership::single().permit().unwrap().deadline.is_none());
        let leadership = Leadership::elected(Duration::from_secs(15));
        assert!(leadership.permit().is_none());
        let sent = Instant::now();
        leadership.seen().renewed_at = Some(sent);
        let term = Term {
            identity: "a".into(),
            number: 3,
        };
        leadership.role.send_replace(Role::Leader(term.clone()));
        let permit = leadership.permit().unwrap();
        assert_eq!(permit.deadline, Some(sent + Duration::from_secs(15)));
        assert_eq!(permit.term, Some(term));
        leadership.seen().renewed_at = Some(sent - Duration::from_secs(15));
        assert!(
            leadership.permit().is_none(),
            "a Lease that could have expired gives no leave, whatever the role says"
        );
    }

    #[test]
    fn a_standby_is_fresh_only_within_the_lease_duration() {
        let leadership = Leadership::elected(Duration::from_secs(15));
        let now = Instant::now();
        assert!(!leadership.standby(now).0, "never read the Lease");
        leadership.seen().contact_at = Some(now);
        assert!(leadership.standby(now + Duration::from_secs(14)).0);
        assert!(!leadership.standby(now + Duration::from_secs(15)).0);
    }
}
