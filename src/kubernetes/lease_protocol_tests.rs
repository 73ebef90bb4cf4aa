//! The Lease protocol against an in-process API server on paused time: creation, renewal,
//! conflicts, takeover, refusals, a hanging server and the release at shutdown.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::kubernetes::mock_api::{Call, Fault, MockApi};

const ME: &str = "replica-a";
const NAME: &str = "fiskil-token-refresher";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/team/leases";
const LEASE_REF: &str = "team/fiskil-token-refresher";
/// Slack for the timer wheel's millisecond ticks; paused time makes everything else exact.
const TICK: Duration = Duration::from_millis(5);

fn path() -> String {
    format!("{LEASES}/{NAME}")
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds)
}

/// A Lease as another replica (or a person) would write it.
fn lease(holder: Option<&str>, term: i32, seconds: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": NAME, "namespace": "team" },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": seconds,
            "leaseTransitions": term,
        },
    })
}

fn term(number: i32) -> Role {
    Role::Leader(Term {
        identity: ME.to_owned(),
        number,
    })
}

/// Log lines, for what the elector reports through tracing.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Lines at `level` containing `text`.
    fn count(&self, level: &str, text: &str) -> usize {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains(level) && line.contains(text))
            .count()
    }
}

/// One replica running the elector against the mock server, with the time it started.
struct Replica {
    api: MockApi,
    leadership: Arc<Leadership>,
    metrics: Arc<Metrics>,
    happenings: mpsc::Receiver<Happening>,
    shutdown: CancellationToken,
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Every role change, with when it happened.
    roles: Arc<Mutex<Vec<(Duration, Role)>>>,
    start: Instant,
    logs: Logs,
    _log_guard: tracing::subscriber::DefaultGuard,
}

impl Replica {
    /// Starts the elector with the default timing (15 s, 10 s, 2 s) on Lease `team/NAME`, with
    /// the server holding `existing` (or no Lease).
    fn start(existing: Option<Value>) -> Replica {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .finish();
        // The runtime has one thread, so the elector's task logs here too.
        let log_guard = tracing::subscriber::set_default(subscriber);
        let (api, client) = MockApi::start("default");
        if let Some(existing) = existing {
            api.put(&path(), existing);
        }
        let election = LeaseArgs {
            leader_elect: true,
            lease_name: NAME.to_owned(),
            lease_namespace: Some("team".to_owned()),
            lease_duration: Duration::from_secs(15),
        }
        .settings()
        .unwrap()
        .unwrap();
        let leadership = Leadership::elected(election.duration, election.renew_deadline);
        let metrics = Arc::new(Metrics::new());
        let (happening, happenings) = Happenings::channel(64);
        let start = Instant::now();
        let roles = Arc::new(Mutex::new(Vec::new()));
        let mut changes = leadership.subscribe();
        let recorded = Arc::clone(&roles);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let role = changes.borrow_and_update().clone();
                recorded.lock().unwrap().push((start.elapsed(), role));
            }
        });
        let elector = Elector {
            api: kube::Api::namespaced(client, "team"),
            election,
            identity: ME.to_owned(),
            leadership: Arc::clone(&leadership),
            metrics: Arc::clone(&metrics),
            happenings: happening,
        };
        let shutdown = CancellationToken::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(elector.run(shutdown.clone(), stop.clone()));
        Replica {
            api,
            leadership,
            metrics,
            happenings,
            shutdown,
            stop,
            task,
            roles,
            start,
            logs,
            _log_guard: log_guard,
        }
    }

    /// Lets time run until `seconds` after the start.
    async fn at(&self, seconds: f64) {
        sleep_until(self.start + secs(seconds)).await;
    }

    /// When `call` arrived, from the start.
    fn when(&self, call: &Call) -> Duration {
        call.at - self.start
    }

    /// Requests on the Lease other than watches.
    fn calls(&self, method: Method) -> Vec<Call> {
        self.api
            .calls()
            .into_iter()
            .filter(|call| call.method == method && !call.is_watch())
            .collect()
    }

    fn roles(&self) -> Vec<(Duration, Role)> {
        self.roles.lock().unwrap().clone()
    }

    fn happened(&mut self) -> Vec<Happening> {
        std::iter::from_fn(|| self.happenings.try_recv().ok()).collect()
    }

    /// The `leader` gauge.
    fn leader_gauge(&self) -> bool {
        let text = self.metrics.encode();
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix("fiskil_token_refresher_leader "));
        match value {
            Some("1") => true,
            Some("0") => false,
            _ => panic!("no leader gauge in\n{text}"),
        }
    }
}

/// Asserts `at` is `expected` seconds, give or take a timer tick (never earlier).
fn assert_at(at: Duration, expected: f64, what: &str) {
    let expected = secs(expected);
    assert!(
        at >= expected && at < expected + TICK,
        "{what} at {at:?}, expected {expected:?}"
    );
}

fn spec(call: &Call) -> &Value {
    &call.body.as_ref().expect("a request body")["spec"]
}

fn elected(happening: &Happening, number: i32) -> bool {
    matches!(happening, Happening::LeaderElected { lease, term } if lease == LEASE_REF && *term == number)
}

fn lost(happening: &Happening, why: &str) -> bool {
    matches!(happening, Happening::LeadershipLost { lease, reason } if lease == LEASE_REF && reason == why)
}

/// A released Lease (no holder) in term 3 is taken at once, in term 4; returns the replica once
/// it leads.
async fn leading_in_term_4() -> Replica {
    let mut replica = Replica::start(Some(lease(None, 3, 1)));
    replica.at(0.5).await;
    assert_eq!(replica.leadership.role(), term(4));
    let puts = replica.calls(Method::PUT);
    assert_eq!(puts.len(), 1);
    assert_eq!(spec(&puts[0])["holderIdentity"], ME);
    assert_eq!(spec(&puts[0])["leaseTransitions"], 4);
    assert!(elected(&replica.happened()[0], 4));
    replica
}

#[tokio::test(start_paused = true)]
async fn a_missing_lease_is_created_after_the_lease_duration_plus_the_margin_in_term_0() {
    let mut replica = Replica::start(None);
    assert_eq!(takeover_after(Duration::from_secs(15), None), secs(17.0));
    replica.at(16.99).await;
    assert!(replica.calls(Method::POST).is_empty(), "created too early");
    assert!(
        replica.calls(Method::GET).len() >= 7,
        "a follower reads the Lease about every retry period"
    );
    assert_eq!(replica.leadership.role(), Role::Follower);
    assert!(replica.leadership.permit().is_none());
    assert!(!replica.leader_gauge());
    assert!(replica.happened().is_empty());

    replica.at(17.5).await;
    let posts = replica.calls(Method::POST);
    assert_eq!(posts.len(), 1, "{posts:?}");
    let create = &posts[0];
    assert_at(replica.when(create), 17.0, "the create");
    assert_eq!(create.path, LEASES);
    assert_eq!(create.status, Some(201));
    assert_eq!(spec(create)["holderIdentity"], ME);
    assert_eq!(spec(create)["leaseTransitions"], 0);
    assert_eq!(spec(create)["leaseDurationSeconds"], 15);
    assert_eq!(replica.leadership.role(), term(0));
    let permit = replica.leadership.permit().expect("the leader may write");
    assert_eq!(
        permit.term,
        Some(Term {
            identity: ME.to_owned(),
            number: 0
        })
    );
    assert_eq!(permit.deadline, Some(create.at + secs(10.0)));
    assert!(replica.leader_gauge());
    let happened = replica.happened();
    assert_eq!(happened.len(), 1, "{happened:?}");
    assert!(elected(&happened[0], 0), "{happened:?}");
    assert_eq!(replica.roles().len(), 1, "{:?}", replica.roles());
}

#[tokio::test(start_paused = true)]
async fn a_leader_renews_every_retry_period_and_keeps_leading() {
    let mut replica = leading_in_term_4().await;
    replica.at(11.0).await;
    let puts = replica.calls(Method::PUT);
    let times: Vec<Duration> = puts.iter().map(|call| replica.when(call)).collect();
    assert_eq!(
        puts.len(),
        6,
        "taken at 0, renewed at 2, 4, 6, 8, 10: {times:?}"
    );
    for (n, put) in puts.iter().enumerate() {
        assert_at(replica.when(put), 2.0 * n as f64, "a renewal");
        assert_eq!(put.status, Some(200));
        assert_eq!(spec(put)["holderIdentity"], ME);
        assert_eq!(spec(put)["leaseTransitions"], 4);
        assert_eq!(spec(put)["leaseDurationSeconds"], 15);
    }
    assert_eq!(
        replica.calls(Method::GET).len(),
        1,
        "a leader renews the Lease it wrote without reading it again"
    );
    let permit = replica.leadership.permit().expect("still leading");
    assert_eq!(permit.deadline, Some(puts[5].at + secs(10.0)));
    assert_eq!(replica.roles(), [(Duration::ZERO, term(4))]);
    assert!(replica.happened().is_empty());
    assert!(replica.leader_gauge());
}

#[tokio::test(start_paused = true)]
async fn a_conflict_showing_another_holder_makes_the_leader_a_follower() {
    let mut replica = leading_in_term_4().await;
    replica.at(3.0).await;
    replica.api.put(&path(), lease(Some("replica-b"), 5, 15));
    replica.at(4.5).await;
    let late: Vec<Call> = replica
        .api
        .calls()
        .into_iter()
        .filter(|call| replica.when(call) > secs(3.0))
        .collect();
    let seen: Vec<(Method, Option<u16>)> = late
        .iter()
        .map(|call| (call.method.clone(), call.status))
        .collect();
    assert_eq!(
        seen[..2],
        [(Method::PUT, Some(409)), (Method::GET, Some(200))],
        "the renewal conflicts, and the leader reads the Lease again"
    );
    assert_eq!(replica.leadership.role(), Role::Follower);
    assert!(replica.leadership.permit().is_none());
    let roles = replica.roles();
    assert_eq!(roles.len(), 2, "{roles:?}");
    assert_at(roles[1].0, 4.0, "the step down");
    assert_eq!(roles[1].1, Role::Follower);
    let happened = replica.happened();
    assert_eq!(happened.len(), 1, "{happened:?}");
    assert!(lost(&happened[0], "another replica holds the Lease"));
    assert!(!replica.leader_gauge());

    // The other holder's Lease is fresh: nothing is written until it could have expired, and a
    // follower stopped writes nothing.
    replica.at(20.0).await;
    assert_eq!(
        replica.calls(Method::PUT).len(),
        3,
        "taken, renewed, conflicted"
    );
    replica.stop.cancel();
    (&mut replica.task).await.unwrap();
    assert_eq!(
        replica.calls(Method::PUT).len(),
        3,
        "no release by a follower"
    );
    assert_eq!(
        replica.api.get(&path()).unwrap()["spec"]["holderIdentity"],
        "replica-b"
    );
}

#[tokio::test(start_paused = true)]
async fn a_conflict_that_leaves_the_lease_ours_renews_after_one_reread() {
    let mut replica = leading_in_term_4().await;
    replica.at(3.0).await;
    // Someone edits the Lease (a label, say) without changing its holder or term.
    let mut edited = lease(Some(ME), 4, 15);
    edited["metadata"]["labels"] = json!({ "edited": "yes" });
    replica.api.put(&path(), edited);
    replica.at(4.5).await;
    let puts = replica.calls(Method::PUT);
    let statuses: Vec<Option<u16>> = puts.iter().map(|call| call.status).collect();
    assert_eq!(statuses, [Some(200), Some(200), Some(409), Some(200)]);
    assert_at(
        replica.when(&puts[3]),
        4.0,
        "the renewal after the conflict",
    );
    assert_eq!(
        puts[3].body.as_ref().unwrap()["metadata"]["labels"]["edited"],
        "yes",
        "the renewal builds on the Lease read again"
    );
    assert_eq!(replica.leadership.role(), term(4));
    assert_eq!(
        replica.leadership.permit().unwrap().deadline,
        Some(puts[3].at + secs(10.0))
    );
    assert_eq!(replica.roles().len(), 1);
    assert!(replica.happened().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_in_a_term_above_every_term_seen() {
    let mut replica = Replica::start(Some(lease(Some("replica-b"), 7, 15)));
    replica.at(5.0).await;
    // The Lease is deleted and created again by another replica, in a lower term.
    replica.api.put(&path(), lease(Some("replica-c"), 2, 15));
    replica.at(40.0).await;
    let gets = replica.calls(Method::GET);
    let first_seen = gets
        .iter()
        .find(|call| call.answer.as_ref().unwrap()["spec"]["holderIdentity"] == "replica-c")
        .expect("the follower read the new Lease");
    let changed = replica.when(first_seen);
    assert!(changed > secs(5.0) && changed <= secs(7.4), "{changed:?}");
    let puts = replica.calls(Method::PUT);
    assert!(puts.len() >= 8, "taken over, then renewed: {puts:?}");
    assert!(puts.iter().all(|put| put.status == Some(200)
        && spec(put)["holderIdentity"] == ME
        && spec(put)["leaseTransitions"] == 8));
    let takeover = &puts[0];
    assert_at(
        replica.when(takeover),
        (changed + secs(17.0)).as_secs_f64(),
        "the takeover, the lease duration plus the margin after the change",
    );
    assert_eq!(takeover.status, Some(200));
    assert_eq!(spec(takeover)["holderIdentity"], ME);
    assert_eq!(
        spec(takeover)["leaseTransitions"],
        8,
        "above term 7, seen before the Lease was created again"
    );
    assert_eq!(replica.leadership.role(), term(8));
    assert!(replica.leadership.permit().is_some());
    let happened = replica.happened();
    assert_eq!(happened.len(), 1, "{happened:?}");
    assert!(elected(&happened[0], 8));
    assert!(replica.leader_gauge());
    assert!(
        replica.api.calls().iter().any(Call::is_watch),
        "a follower watches the Lease between reads"
    );
}

#[tokio::test(start_paused = true)]
async fn a_longer_lease_duration_on_the_lease_delays_the_takeover() {
    let replica = Replica::start(Some(lease(Some("replica-b"), 7, 60)));
    replica.at(61.9).await;
    assert!(
        replica.calls(Method::PUT).is_empty(),
        "taken over too early"
    );
    replica.at(62.5).await;
    let puts = replica.calls(Method::PUT);
    assert_eq!(puts.len(), 1);
    assert_at(replica.when(&puts[0]), 62.0, "the takeover");
    assert_eq!(replica.leadership.role(), term(8));
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_follower_stays_a_follower_and_says_so_once() {
    let mut replica = Replica::start(Some(lease(None, 3, 15)));
    replica.api.fail(Some(Fault::Refuse(403, "Forbidden")));
    replica.at(60.0).await;
    assert!(replica.calls(Method::GET).len() >= 25, "it keeps trying");
    assert!(replica.calls(Method::PUT).is_empty());
    assert!(replica.calls(Method::POST).is_empty());
    assert_eq!(replica.leadership.role(), Role::Follower);
    assert!(replica.roles().is_empty());
    assert!(replica.happened().is_empty());
    let forbidden = "forbidden to use Lease fiskil-token-refresher";
    assert_eq!(replica.logs.count("WARN", forbidden), 1);
    assert!(replica.logs.count("DEBUG", forbidden) >= 20);

    // Once allowed, it takes the released Lease at its next attempt.
    replica.api.fail(None);
    replica.at(63.0).await;
    assert_eq!(replica.leadership.role(), term(4));
    assert_eq!(
        replica
            .logs
            .count("INFO", "the Lease can be read and written again"),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_leader_steps_down_at_its_renew_deadline() {
    let mut replica = leading_in_term_4().await;
    replica.at(5.0).await;
    replica.api.fail(Some(Fault::Refuse(403, "Forbidden")));
    replica.at(13.9).await;
    let puts = replica.calls(Method::PUT);
    let last_renewal = puts.iter().rfind(|call| call.status == Some(200)).unwrap();
    assert_at(replica.when(last_renewal), 4.0, "the last renewal");
    assert!(puts.iter().any(|call| call.status == Some(403)));
    assert_eq!(
        replica.leadership.role(),
        term(4),
        "before the deadline a refused renewal is retried"
    );
    let permit = replica
        .leadership
        .permit()
        .expect("leave until the deadline");
    assert_eq!(permit.deadline, Some(last_renewal.at + secs(10.0)));
    assert!(
        replica
            .logs
            .count("WARN", "cannot renew the Lease; retrying")
            >= 3
    );
    assert!(replica.logs.count("WARN", "forbidden to use Lease") >= 3);

    replica.at(20.0).await;
    let roles = replica.roles();
    assert_eq!(roles.len(), 2, "{roles:?}");
    assert_at(roles[1].0, 14.0, "the step down");
    assert_eq!(roles[1].1, Role::Follower);
    assert!(replica.leadership.permit().is_none());
    let happened = replica.happened();
    assert_eq!(happened.len(), 1, "{happened:?}");
    assert!(lost(
        &happened[0],
        "the Lease was not renewed within the renew deadline"
    ));
    assert!(!replica.leader_gauge());
}

#[tokio::test(start_paused = true)]
async fn a_leader_facing_a_hanging_server_steps_down_by_its_renew_deadline() {
    let mut replica = leading_in_term_4().await;
    replica.at(5.0).await;
    replica.api.fail(Some(Fault::Hang));
    replica.at(13.99).await;
    let puts = replica.calls(Method::PUT);
    let last_renewal = puts.iter().rfind(|call| call.status == Some(200)).unwrap();
    assert_at(replica.when(last_renewal), 4.0, "the last renewal");
    let hanging = puts.last().unwrap();
    assert_at(replica.when(hanging), 6.0, "the renewal that hangs");
    assert_eq!(hanging.status, None);
    let deadline = last_renewal.at + secs(10.0);
    let permit = replica
        .leadership
        .permit()
        .expect("leave until the deadline");
    assert_eq!(
        permit.deadline,
        Some(deadline),
        "the permit ends at the last renewal plus the renew deadline, not the hanging one's"
    );
    assert_eq!(replica.leadership.role(), term(4));

    replica.at(30.0).await;
    let roles = replica.roles();
    assert_eq!(roles.len(), 2, "{roles:?}");
    assert_eq!(roles[1].1, Role::Follower);
    assert_at(roles[1].0, 14.0, "the step down");
    assert!(replica.start + roles[1].0 < deadline + TICK);
    assert!(replica.leadership.permit().is_none());
    let happened = replica.happened();
    assert_eq!(happened.len(), 1, "{happened:?}");
    assert!(
        lost(
            &happened[0],
            "the Lease was not renewed within the renew deadline"
        ),
        "{happened:?}"
    );
    assert!(!replica.leader_gauge());
    assert_eq!(
        replica.calls(Method::PUT).len(),
        puts.len(),
        "the hanging renewal was abandoned, not repeated as a leader"
    );
}

#[tokio::test(start_paused = true)]
async fn the_leader_releases_the_lease_at_stop_and_not_before() {
    let mut replica = leading_in_term_4().await;
    replica.at(3.0).await;
    // Draining: the leader keeps its Lease (and keeps renewing) until stop.
    replica.shutdown.cancel();
    replica.at(7.0).await;
    assert_eq!(
        replica.calls(Method::PUT).len(),
        4,
        "taken at 0, renewed at 2, 4, 6"
    );
    assert_eq!(replica.leadership.role(), term(4));
    replica.stop.cancel();
    (&mut replica.task).await.unwrap();
    let puts = replica.calls(Method::PUT);
    assert_eq!(puts.len(), 5);
    let release = &puts[4];
    assert_at(replica.when(release), 7.0, "the release");
    assert_eq!(release.status, Some(200));
    let spec = spec(release);
    assert!(
        spec.get("holderIdentity").is_none_or(Value::is_null),
        "{spec}"
    );
    assert_eq!(spec["leaseDurationSeconds"], 1);
    assert_eq!(spec["leaseTransitions"], 4);
    let stored = replica.api.get(&path()).unwrap();
    assert!(stored["spec"]
        .get("holderIdentity")
        .is_none_or(Value::is_null));
    assert_eq!(replica.leadership.role(), Role::Follower);
    assert!(replica.leadership.permit().is_none());
    let happened = replica.happened();
    assert_eq!(happened.len(), 1, "{happened:?}");
    assert!(lost(&happened[0], "released at shutdown"));
    assert!(!replica.leader_gauge());
}

#[tokio::test(start_paused = true)]
async fn a_deleted_lease_ends_leadership_and_is_created_again_in_a_higher_term() {
    let mut replica = leading_in_term_4().await;
    replica.at(3.0).await;
    replica.api.remove(&path());
    replica.at(4.5).await;
    let puts = replica.calls(Method::PUT);
    assert_eq!(puts.last().unwrap().status, Some(404));
    assert_eq!(replica.leadership.role(), Role::Follower);
    assert!(replica.leadership.permit().is_none());
    let happened = replica.happened();
    assert_eq!(happened.len(), 1, "{happened:?}");
    assert!(lost(&happened[0], "the Lease was deleted"));

    // Missing since the renewal at 4 s found it gone: created again at 21 s, above term 4.
    replica.at(20.99).await;
    assert!(replica.calls(Method::POST).is_empty(), "created too early");
    replica.at(21.5).await;
    let posts = replica.calls(Method::POST);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_at(replica.when(&posts[0]), 21.0, "the create");
    assert_eq!(spec(&posts[0])["leaseTransitions"], 5);
    assert_eq!(replica.leadership.role(), term(5));
    let happened = replica.happened();
    assert!(elected(&happened[0], 5), "{happened:?}");
}
