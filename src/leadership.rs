//! The leadership gate: which replica may request tokens and write, until when, in which term.
//!
//! Nothing here knows how leaders are elected: an elector (the Kubernetes Lease, in
//! `kubernetes::lease`) reports renewals and losses, the refresh loop waits on the role, outputs
//! ask for a [`Permit`] before each write, and `/readyz` reports what it sees.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// One holder's tenure: who, and the term number it took leadership in. A replica only leads in
/// a term it started itself, and a new term is above every term it has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Term {
    pub(crate) identity: String,
    pub(crate) number: i32,
}

/// What this process is among the replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// No election: the only writer.
    Single,
    /// Elected, in this term.
    Leader(Term),
    /// Elected, and another replica leads (or none yet).
    Follower,
}

impl Role {
    /// Whether this process may request tokens and write (single, or leading).
    pub(crate) fn leads(&self) -> bool {
        !matches!(self, Role::Follower)
    }
}

/// Leave to write: until when, and in which term.
#[derive(Debug, Clone)]
pub(crate) struct Permit {
    /// Writes must be done by then: the leader's renew deadline, well before any follower may
    /// take over.
    pub(crate) deadline: Option<Instant>,
    /// The term the write is recorded with, when elected.
    pub(crate) term: Option<Term>,
}

impl Permit {
    /// Leave without a deadline or term: the only writer, or `--once`.
    pub(crate) fn unbounded() -> Permit {
        Permit {
            deadline: None,
            term: None,
        }
    }
}

#[derive(Debug, Default)]
struct Seen {
    /// When the last successful renewal was sent.
    renewed_at: Option<Instant>,
    /// When the elector last reached its record of leadership (read or written it).
    contact_at: Option<Instant>,
    /// The holder a follower last saw.
    holder: Option<String>,
}

/// The shared view of leadership: the refresh loop waits on it, outputs ask it for leave to
/// write, `/readyz` reports it, and an elector keeps it current.
#[derive(Debug)]
pub(crate) struct Leadership {
    role: watch::Sender<Role>,
    lease_duration: Duration,
    renew_deadline: Duration,
    seen: Mutex<Seen>,
}

impl Leadership {
    /// The only writer, without an election.
    pub(crate) fn single() -> Arc<Leadership> {
        Arc::new(Leadership {
            role: watch::Sender::new(Role::Single),
            lease_duration: Duration::ZERO,
            renew_deadline: Duration::ZERO,
            seen: Mutex::default(),
        })
    }

    /// A replica that starts as a follower. A leader may act for `renew_deadline` after its
    /// last renewal; a follower is a fit standby while it reached the record within
    /// `lease_duration`.
    pub(crate) fn elected(lease_duration: Duration, renew_deadline: Duration) -> Arc<Leadership> {
        Arc::new(Leadership {
            role: watch::Sender::new(Role::Follower),
            lease_duration,
            renew_deadline,
            seen: Mutex::default(),
        })
    }

    /// Follows the role.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// The role now.
    pub(crate) fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leave to write now, or `None` while following or once the renew deadline has passed
    /// since the last renewal (a leader that was paused, say, before it noticed).
    pub(crate) fn permit(&self) -> Option<Permit> {
        match self.role() {
            Role::Single => Some(Permit::unbounded()),
            Role::Leader(term) => {
                let deadline = self.seen().renewed_at? + self.renew_deadline;
                (Instant::now() < deadline).then_some(Permit {
                    deadline: Some(deadline),
                    term: Some(term),
                })
            }
            Role::Follower => None,
        }
    }

    /// For a follower: whether it reached the record within the lease duration, i.e. it can
    /// take over; and the holder it saw.
    pub(crate) fn standby(&self, now: Instant) -> (bool, Option<String>) {
        let seen = self.seen();
        let fresh = seen
            .contact_at
            .is_some_and(|at| now.duration_since(at) < self.lease_duration);
        (fresh, seen.holder.clone())
    }

    /// When the last successful renewal was sent, while leading.
    pub(crate) fn renewed_at(&self) -> Option<Instant> {
        self.seen().renewed_at
    }

    /// A renewal sent at `sent` succeeded in `term`: this process leads until `sent` plus the
    /// renew deadline. Returns whether it just became the leader in that term.
    pub(crate) fn renewed(&self, sent: Instant, term: Term) -> bool {
        {
            let mut seen = self.seen();
            seen.renewed_at = Some(sent);
            seen.contact_at = Some(Instant::now());
            seen.holder = Some(term.identity.clone());
        }
        let role = Role::Leader(term);
        self.role.send_if_modified(|current| {
            let changed = *current != role;
            if changed {
                *current = role;
            }
            changed
        })
    }

    /// The elector reached the record and saw `holder` (`None`: nobody). Returns the holder
    /// seen before, when it changed.
    pub(crate) fn saw_holder(&self, holder: Option<String>) -> Option<Option<String>> {
        let mut seen = self.seen();
        seen.contact_at = Some(Instant::now());
        (seen.holder != holder).then(|| std::mem::replace(&mut seen.holder, holder))
    }

    /// This process no longer leads; returns whether it did.
    pub(crate) fn step_down(&self) -> bool {
        self.role.send_replace(Role::Follower).leads()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_has_no_permit_and_a_leader_one_that_ends_at_its_renew_deadline() {
        assert!(Leadership::single().permit().unwrap().deadline.is_none());
        let leadership = Leadership::elected(Duration::from_secs(15), Duration::from_secs(10));
        assert!(leadership.permit().is_none());
        let sent = Instant::now();
        let term = Term {
            identity: "a".into(),
            number: 3,
        };
        assert!(leadership.renewed(sent, term.clone()));
        assert!(
            !leadership.renewed(sent, term.clone()),
            "the same term again"
        );
        let permit = leadership.permit().unwrap();
        assert_eq!(permit.deadline, Some(sent + Duration::from_secs(10)));
        assert_eq!(permit.term, Some(term.clone()));
        leadership.renewed(sent - Duration::from_secs(10), term);
        assert!(
            leadership.permit().is_none(),
            "past the renew deadline there is no leave, whatever the role says"
        );
        assert!(leadership.step_down());
        assert!(
            !leadership.step_down(),
            "a follower steps down from nothing"
        );
    }

    #[test]
    fn a_standby_is_fresh_only_within_the_lease_duration() {
        let leadership = Leadership::elected(Duration::from_secs(15), Duration::from_secs(10));
        let now = Instant::now();
        assert!(!leadership.standby(now).0, "never read the Lease");
        assert_eq!(leadership.saw_holder(Some("b".into())), Some(None));
        assert_eq!(leadership.saw_holder(Some("b".into())), None, "no change");
        let (fresh, holder) = leadership.standby(Instant::now() + Duration::from_secs(14));
        assert!(fresh);
        assert_eq!(holder.as_deref(), Some("b"));
        assert!(
            !leadership
                .standby(Instant::now() + Duration::from_secs(15))
                .0
        );
    }
}
