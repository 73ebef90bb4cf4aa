//! Leader election through a Kubernetes Lease: one writer per term, and none once a takeover
//! could begin. It keeps the neutral [`Leadership`] gate current.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{PostParams, WatchEvent, WatchParams};
use kube::Api;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::{dns_name, positive_duration};
use crate::happenings::{Happening, Happenings};
use crate::leadership::{Leadership, Role, Term};
use crate::metrics::Metrics;

/// Leader election: which replica requests tokens and writes the Secrets.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Leader election")]
pub(crate) struct LeaseArgs {
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

    /// How long a Lease lasts without renewal. The leader renews every 2/15 of it and stops
    /// writing once 2/3 of it pass without a renewal; a follower takes over once it has seen the
    /// Lease unchanged (or missing) for this long, or the Lease's own duration if longer, plus
    /// 2 s: a killed leader is replaced within it plus 2 s
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
pub(crate) struct Election {
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
    pub(crate) fn settings(self) -> Result<Option<Election>, LeaseArgsError> {
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
            renew_deadline: renew_deadline(duration),
            retry_period: duration * 2 / 15,
        }))
    }
}

/// How long after its last renewal a leader may act: 2/3 of the lease duration, as client-go.
fn renew_deadline(lease_duration: Duration) -> Duration {
    lease_duration * 2 / 3
}

/// How long beyond a Lease's duration a follower waits, from when it saw the Lease change,
/// before it takes the Lease over. With the leader's renew deadline, a leader that stopped
/// renewing has stopped writing at least a third of the lease duration plus this much before a
/// follower takes over: slack for requests still on the wire and for clocks that run at slightly
/// different rates.
pub const TAKEOVER_MARGIN: Duration = Duration::from_secs(2);

/// How long a follower waits from when it saw the Lease change (or found it missing) before it
/// takes the Lease: the longer of its own lease duration and the Lease's, plus the margin. A
/// `leaseDurationSeconds` shortened by hand never brings a takeover forward; a lengthened one
/// delays it.
fn takeover_after(own: Duration, lease: Option<&Lease>) -> Duration {
    own.max(lease.map_or(Duration::ZERO, held_for)) + TAKEOVER_MARGIN
}

/// Why one attempt on the Lease failed.
#[derive(Debug, thiserror::Error)]
enum LeaseError {
    #[error("another replica changed the Lease first")]
    Conflict,
    #[error("the Lease {0} does not exist")]
    Missing(String),
    #[error("forbidden to use Lease {0} (verbs get, update, watch on that name, and create); bind this ServiceAccount to a Role allowing them")]
    Forbidden(String),
    #[error("cannot create the Lease {0}: its namespace does not exist; create it, or set --lease-namespace")]
    NoNamespace(String),
    #[error("the API server refused the Lease {lease} (HTTP {code} {reason}): {message}")]
    Refused {
        lease: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("cannot reach the API server: {0}")]
    Unreachable(#[source] kube::Error),
    #[error("the API server did not answer in time")]
    TimedOut,
}

impl LeaseError {
    fn from_kube(error: kube::Error, lease: &str) -> LeaseError {
        match error {
            kube::Error::Api(status) if status.code == 409 => LeaseError::Conflict,
            kube::Error::Api(status) if status.code == 403 => {
                LeaseError::Forbidden(lease.to_owned())
            }
            kube::Error::Api(status)
                if status.code == 404 && status.message.starts_with("namespaces ") =>
            {
                LeaseError::NoNamespace(lease.to_owned())
            }
            kube::Error::Api(status) if status.code == 404 => LeaseError::Missing(lease.to_owned()),
            kube::Error::Api(status) => LeaseError::Refused {
                lease: lease.to_owned(),
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            other => LeaseError::Unreachable(other),
        }
    }
}

/// What this process last saw of the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sighting {
    /// Nothing read yet.
    Nothing,
    /// One version of the Lease, by its resourceVersion.
    Version(Option<String>),
    /// No Lease: never created, or deleted.
    Missing,
}

/// The Lease as this process last saw it, when that changed, and the highest term it has seen.
/// A holder that stops renewing is judged expired by this process's own clock, from when it saw
/// the Lease change, not by the holder's; a Lease created again starts above every term seen.
#[derive(Debug)]
struct Observed {
    sighting: Sighting,
    changed_at: Instant,
    highest_term: Option<i32>,
}

impl Observed {
    fn new() -> Observed {
        Observed {
            sighting: Sighting::Nothing,
            changed_at: Instant::now(),
            highest_term: None,
        }
    }

    fn saw(&mut self, lease: &Lease) {
        self.change_to(Sighting::Version(lease.metadata.resource_version.clone()));
        let number = transitions(lease);
        self.highest_term = Some(self.highest_term.map_or(number, |h| h.max(number)));
    }

    fn missing(&mut self) {
        self.change_to(Sighting::Missing);
    }

    fn change_to(&mut self, sighting: Sighting) {
        if self.sighting != sighting {
            self.sighting = sighting;
            self.changed_at = Instant::now();
        }
    }

    /// The term of a Lease this process takes or creates: above every term it has seen.
    fn next_term(&self) -> i32 {
        self.highest_term.map_or(0, |h| h.saturating_add(1))
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

/// The Lease's holder, `None` when released.
fn holder_of(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.clone())
        .filter(|holder| !holder.is_empty())
}

/// The Lease's `leaseTransitions`, the term of its holder.
fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.lease_transitions)
        .unwrap_or(0)
}

/// Whether `lease` names `term`: its holder and its number.
fn holds(lease: &Lease, term: &Term) -> bool {
    holder_of(lease).as_deref() == Some(term.identity.as_str()) && transitions(lease) == term.number
}

/// What one attempt found.
enum Attempt {
    /// This process holds the Lease in this term.
    Lead(Term, Lease),
    /// The Lease has a holder (or is missing: `None`) and cannot be taken yet.
    Follow(Option<String>, Option<Lease>),
}

/// Competes for the Lease and keeps it while it can.
pub(crate) struct Elector {
    pub api: Api<Lease>,
    pub election: Election,
    pub identity: String,
    pub leadership: Arc<Leadership>,
    pub metrics: Arc<Metrics>,
    pub happenings: Happenings,
}

impl Elector {
    /// Runs until `stop`; stops competing once `shutdown` begins, and releases the Lease on
    /// `stop` if it holds it, so a follower takes over at once.
    pub(crate) async fn run(self, shutdown: CancellationToken, stop: CancellationToken) {
        let lease_ref = format!(
            "{}/{}",
            self.api.namespace().unwrap_or_default(),
            self.election.name
        );
        tracing::info!(identity = %self.identity, lease = %lease_ref, "competing for the Lease");
        // The last Lease object this process wrote or read.
        let mut last: Option<Lease> = None;
        let mut observed = Observed::new();
        // Failed attempts in a row: the first is a warning, repeats are debug lines.
        let mut failures = 0u32;
        loop {
            let term = match self.leadership.role() {
                Role::Leader(term) => Some(term),
                Role::Single | Role::Follower => None,
            };
            if term.is_none() && shutdown.is_cancelled() {
                break;
            }
            let started = Instant::now();
            // A leader must have renewed by its renew deadline; an attempt that cannot beat it
            // is abandoned, and the leader steps down.
            let renewed_at = self.leadership.renewed_at().filter(|_| term.is_some());
            let deadline = renewed_at.unwrap_or(started) + self.election.renew_deadline;
            let was_missing = observed.sighting == Sighting::Missing;
            let attempt = tokio::time::timeout_at(
                deadline,
                self.attempt(last.take(), term.as_ref(), &mut observed),
            )
            .await
            .unwrap_or(Err(LeaseError::TimedOut));
            if attempt.is_ok() && failures > 0 {
                tracing::info!(lease = %lease_ref, failures, "the Lease can be read and written again");
                failures = 0;
            }
            // When this process, following, may take the Lease over.
            let mut takeover_at = None;
            match attempt {
                Ok(Attempt::Lead(term, lease)) => {
                    last = Some(lease);
                    self.renewed(started, term, &lease_ref);
                }
                Ok(Attempt::Follow(holder, lease)) => {
                    let after = takeover_after(self.election.duration, lease.as_ref());
                    takeover_at = Some(observed.changed_at + after);
                    if lease.is_none() && !was_missing {
                        tracing::info!(lease = %lease_ref, create_in = ?after, "the Lease does not exist; it is created once it has stayed missing for the lease duration plus the takeover margin");
                    }
                    self.following(holder, lease.is_some(), &lease_ref);
                    last = lease;
                }
                Err(e) => {
                    if !matches!(e, LeaseError::Conflict) {
                        failures += 1;
                    }
                    self.failed(&e, &lease_ref, failures == 1);
                }
            }
            let wait = if self.leadership.role().leads() {
                self.election.retry_period
            } else {
                // Followers spread their attempts, as client-go's jitter does, and try again as
                // soon as the Lease may be taken over.
                let jittered = self
                    .election
                    .retry_period
                    .mul_f64(1.0 + rand::random::<f64>() * 0.2);
                takeover_at.map_or(jittered, |at| {
                    jittered.min(at.saturating_duration_since(Instant::now()))
                })
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wait_for_change(last.as_ref(), wait) => {}
            }
        }
        self.release(last, &lease_ref).await;
    }

    /// One attempt: a leader (`term`) renews, a follower reads the Lease and takes it if it can.
    async fn attempt(
        &self,
        known: Option<Lease>,
        term: Option<&Term>,
        observed: &mut Observed,
    ) -> Result<Attempt, LeaseError> {
        match term {
            Some(term) => self.renew(known, term, observed).await,
            None => self.compete(observed).await,
        }
    }

    /// A leader renews the Lease object it wrote last (or reads it, after a failure). When
    /// someone else changed it in between (a conflict) it reads it again and renews only if the
    /// Lease still names it in its term; a Lease naming another holder or term, or a missing one,
    /// ends its leadership.
    async fn renew(
        &self,
        known: Option<Lease>,
        term: &Term,
        observed: &mut Observed,
    ) -> Result<Attempt, LeaseError> {
        let mut lease = match known {
            Some(lease) => lease,
            None => match self.read(observed).await? {
                Some(lease) => lease,
                None => return Ok(Attempt::Follow(None, None)),
            },
        };
        let mut reread = false;
        loop {
            if !holds(&lease, term) {
                return Ok(Attempt::Follow(holder_of(&lease), Some(lease)));
            }
            let mut update = lease;
            let spec = update.spec.take().unwrap_or_default();
            update.spec = Some(LeaseSpec {
                lease_duration_seconds: Some(self.seconds()),
                acquire_time: spec
                    .acquire_time
                    .clone()
                    .or_else(|| Some(MicroTime(Timestamp::now()))),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..spec
            });
            match self.write(&update).await {
                Ok(written) => {
                    observed.saw(&written);
                    return Ok(Attempt::Lead(term.clone(), written));
                }
                Err(LeaseError::Conflict) if !reread => {
                    reread = true;
                    lease = match self.read(observed).await? {
                        Some(lease) => lease,
                        None => return Ok(Attempt::Follow(None, None)),
                    };
                }
                Err(LeaseError::Missing(_)) => {
                    observed.missing();
                    return Ok(Attempt::Follow(None, None));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A follower reads the Lease and takes it, as a new term, if it has no holder or once it
    /// has seen it unchanged for long enough; a missing Lease is created once it has been
    /// missing that long. A Lease naming this process is waited out like any other: this process
    /// did not take it (someone edited it, or an earlier run under the same identity held it).
    async fn compete(&self, observed: &mut Observed) -> Result<Attempt, LeaseError> {
        let Some(lease) = self.read(observed).await? else {
            if observed.changed_at.elapsed() < takeover_after(self.election.duration, None) {
                return Ok(Attempt::Follow(None, None));
            }
            let number = observed.next_term();
            let created = self.create(number).await?;
            observed.saw(&created);
            return Ok(Attempt::Lead(self.term(number), created));
        };
        let holder = holder_of(&lease);
        let after = takeover_after(self.election.duration, Some(&lease));
        if holder.is_some() && observed.changed_at.elapsed() < after {
            return Ok(Attempt::Follow(holder, Some(lease)));
        }
        let number = observed.next_term();
        let now = MicroTime(Timestamp::now());
        let mut update = lease;
        update.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.seconds()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(number),
            ..update.spec.take().unwrap_or_default()
        });
        match self.write(&update).await {
            Ok(written) => {
                observed.saw(&written);
                Ok(Attempt::Lead(self.term(number), written))
            }
            Err(LeaseError::Missing(_)) => {
                observed.missing();
                Ok(Attempt::Follow(None, None))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the Lease, `None` when it does not exist.
    async fn read(&self, observed: &mut Observed) -> Result<Option<Lease>, LeaseError> {
        let name = &self.election.name;
        let lease = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| LeaseError::from_kube(e, name))?;
        match &lease {
            Some(lease) => observed.saw(lease),
            None => observed.missing(),
        }
        Ok(lease)
    }

    /// Replaces the Lease, provided nobody changed it since `lease` was read.
    async fn write(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let name = &self.election.name;
        self.api
            .replace(name, &PostParams::default(), lease)
            .await
            .map_err(|e| LeaseError::from_kube(e, name))
    }

    /// Creates the Lease, held by this process in term `number`.
    async fn create(&self, number: i32) -> Result<Lease, LeaseError> {
        let name = &self.election.name;
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(number),
                ..LeaseSpec::default()
            }),
        };
        self.api
            .create(&PostParams::default(), &lease)
            .await
            .map_err(|e| LeaseError::from_kube(e, name))
    }

    /// The lease duration as the Lease records it.
    fn seconds(&self) -> i32 {
        i32::try_from(self.election.duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn term(&self, number: i32) -> Term {
        Term {
            identity: self.identity.clone(),
            number,
        }
    }

    fn renewed(&self, sent: Instant, term: Term, lease_ref: &str) {
        let number = term.number;
        if self.leadership.renewed(sent, term) {
            tracing::info!(identity = %self.identity, lease = %lease_ref, term = number, "leadership acquired");
            self.happenings.report(Happening::LeaderElected {
                lease: lease_ref.to_owned(),
                term: number,
            });
            self.metrics.set_leader(true);
        }
    }

    /// Records what a follower saw (`exists`: whether the Lease exists); a leader that finds
    /// the Lease missing or naming another holder or term steps down.
    fn following(&self, holder: Option<String>, exists: bool, lease_ref: &str) {
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if self.leadership.saw_holder(holder.clone()).is_some() {
            tracing::info!(holder = holder.as_deref().unwrap_or(""), lease = %lease_ref, "following");
            if ours {
                tracing::warn!(lease = %lease_ref, "the Lease names this replica, which did not take it (an edit, or an earlier run under the same identity); it takes the Lease as a new term once it expires");
            }
        }
        if self.leadership.role().leads() {
            let reason = match (exists, holder.is_some(), ours) {
                (false, _, _) => "the Lease was deleted",
                (true, _, true) => "the Lease names this replica in another term",
                (true, true, false) => "another replica holds the Lease",
                (true, false, false) => "the Lease was released by someone else",
            };
            self.lose(reason, lease_ref);
        }
    }

    /// Handles a failed attempt; `first` is true for the first failure of a streak.
    fn failed(&self, error: &LeaseError, lease_ref: &str, first: bool) {
        let role = self.leadership.role();
        if !role.leads() {
            // Another replica writing the Lease first is the normal race between followers.
            if matches!(error, LeaseError::Conflict) {
                tracing::debug!(lease = %lease_ref, "another replica took the Lease first");
            } else if first {
                tracing::warn!(error = %error, lease = %lease_ref, "cannot read or take the Lease; retrying every retry period (repeats are logged at debug level)");
            } else {
                tracing::debug!(error = %error, lease = %lease_ref, "cannot read or take the Lease; retrying");
            }
            return;
        }
        let renewed_at = self.leadership.renewed_at();
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
        self.happenings.report(Happening::LeadershipLost {
            lease: lease_ref.to_owned(),
            reason: reason.to_owned(),
        });
        self.metrics.set_leader(false);
        self.leadership.step_down();
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
        self.leadership.step_down();
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
                self.happenings.report(Happening::LeadershipLost {
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
        Cli::try_parse_from(argv).unwrap().lease.settings()
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

    fn lease(seconds: Option<i32>, transitions: i32, version: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("a".into()),
                lease_duration_seconds: seconds,
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_follower_takes_over_two_seconds_after_the_longer_of_both_durations() {
        let own = Duration::from_secs(15);
        assert_eq!(TAKEOVER_MARGIN, Duration::from_secs(2));
        assert_eq!(takeover_after(own, None), Duration::from_secs(17));
        let shortened = lease(Some(1), 0, "1");
        assert_eq!(
            takeover_after(own, Some(&shortened)),
            Duration::from_secs(17)
        );
        let lengthened = lease(Some(60), 0, "1");
        assert_eq!(
            takeover_after(own, Some(&lengthened)),
            Duration::from_secs(62)
        );
        assert_eq!(
            takeover_after(own, Some(&lease(None, 0, "1"))),
            Duration::from_secs(17)
        );
        // The leader stops writing a third of the lease duration, plus the margin, before the
        // earliest takeover: its renewal was sent before any follower saw it.
        let slack = takeover_after(own, None) - renew_deadline(own);
        assert_eq!(slack, Duration::from_secs(7));
        let shortest = Duration::from_secs(3);
        assert_eq!(
            takeover_after(shortest, None) - renew_deadline(shortest),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn the_takeover_clock_restarts_on_every_change_and_on_a_deletion() {
        let mut observed = Observed::new();
        assert_eq!(
            observed.next_term(),
            0,
            "nothing seen: a first Lease starts at 0"
        );
        let first = observed.changed_at;
        observed.saw(&lease(Some(15), 4, "10"));
        let seen = observed.changed_at;
        assert!(seen >= first);
        assert_eq!(observed.next_term(), 5);
        observed.saw(&lease(Some(15), 4, "10"));
        assert_eq!(observed.changed_at, seen, "the same version is no change");
        std::thread::sleep(Duration::from_millis(2));
        observed.missing();
        let deleted = observed.changed_at;
        assert!(deleted > seen, "a deletion is a change");
        observed.missing();
        assert_eq!(observed.changed_at, deleted);
        assert_eq!(
            observed.next_term(),
            5,
            "a Lease created again starts above the deleted one's term"
        );
        observed.saw(&lease(Some(15), 0, "20"));
        assert_eq!(observed.next_term(), 5, "terms never go back");
    }

    #[test]
    fn a_leader_holds_only_the_holder_and_term_it_wrote() {
        let term = Term {
            identity: "a".into(),
            number: 4,
        };
        assert!(holds(&lease(Some(15), 4, "1"), &term));
        assert!(!holds(&lease(Some(15), 5, "1"), &term), "another term");
        let mut other = lease(Some(15), 4, "1");
        other.spec.as_mut().unwrap().holder_identity = Some("b".into());
        assert!(!holds(&other, &term), "another holder");
        other.spec.as_mut().unwrap().holder_identity = None;
        assert!(!holds(&other, &term), "released");
    }
}

#[cfg(test)]
#[path = "lease_protocol_tests.rs"]
mod protocol_tests;
