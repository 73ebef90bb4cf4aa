//! The Secret writer for fleets against a real kube-apiserver and etcd with RBAC on: leader
//! election among writer processes (a steady minute, killed, stopped and paused leaders, a Lease
//! deleted mid-term, its holder or duration edited by hand), one token fanned out to several
//! namespaces, and Kubernetes Events. Writers run as a
//! ServiceAccount holding only the Roles the binary asks for: create and patch on each target
//! Secret; get, update and watch on the named Lease and create on Leases; create and patch on
//! Events. What the tests assert about order comes from watch streams, which the API server
//! orders by resourceVersion. Start the control plane first: `tests/cluster/up.sh DIR`, then
//! `FISKIL_CLUSTER_DIR=DIR cargo test --test leader_election -- --ignored --nocapture`.
//!
//! `FISKIL_FLEET_KILLS` (default 20) leaders are killed in the handover test, with a Lease of
//! `FISKIL_FLEET_LEASE_SECONDS` (default 4); `FISKIL_FLEET_STEADY_SECONDS` (default 60) is the
//! steady period and `FISKIL_FLEET_OUTAGE_SECONDS` (default 60) the endpoint outage.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use fiskil_stand_in::Behaviour;
use fiskil_token_refresher::TAKEOVER_MARGIN;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{ListParams, PostParams};
use kube::Api;
use support::control_plane::{Cluster, SECRET};
use support::leader_election::{
    check_secret_versions, lease_terms, lease_terms_with_edits, Fleet, Observed, Sampler, Watch,
    Writer,
};
use support::{eventually, eventually_async, Daemon, Fixture};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a whole number"))
        })
        .unwrap_or(default)
}

/// The Lease duration the tests run with, and client-go's retry period for it (2/15).
fn lease_timing() -> (Duration, Duration) {
    let lease = Duration::from_secs(env_u64("FISKIL_FLEET_LEASE_SECONDS", 4));
    (lease, lease * 2 / 15)
}

fn assert_clean(fixture: &Fixture, writers: &[&Writer]) {
    for writer in writers {
        fixture.assert_logs_clean(&writer.daemon);
    }
    fixture.assert_contract_kept();
}

/// Waits until `writer` reports itself a follower of `leader` on /readyz.
fn wait_following(writer: &mut Writer, leader: &str) {
    eventually(
        &format!("{} to follow {leader}", writer.identity),
        Duration::from_secs(30),
        || {
            let (_, ready) = writer.readyz();
            ready["role"] == "follower" && ready["leader"] == leader
        },
    );
}

/// Waits until the current Lease holder has written its term into every target and every other
/// writer follows it; returns the holder.
fn settle(lease: &Watch, secrets: &[Watch], writers: &mut [Writer]) -> String {
    let current = lease.events().last().cloned().expect("a Lease version");
    let (holder, term) = (current.holder().expect("a holder"), current.transitions());
    for (i, watch) in secrets.iter().enumerate() {
        watch.wait(
            Duration::from_secs(20),
            0,
            &format!("target {i} written by {holder} in term {term}"),
            |e| e.writer_term() == Some((holder.clone(), term)),
        );
    }
    for writer in writers.iter_mut().filter(|w| w.identity != holder) {
        wait_following(writer, &holder);
    }
    holder
}

#[tokio::test]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn only_the_leader_exchanges_over_a_steady_minute() {
    let cluster = Cluster::connect().await;
    let fixture = Fixture::new("fleet-steady", 20);
    let fleet = Fleet::create(&cluster, "fleet-steady", fixture.dir.path(), 2).await;
    fleet.grant(0).await;
    fleet.grant(1).await;
    let (secrets, lease) = fleet.watch(&cluster).await;
    let (duration, _) = lease_timing();
    let duration_flag = format!("{}s", duration.as_secs());
    let extra = ["--leader-elect", "--lease-duration", &duration_flag];
    let mut writers: Vec<Writer> = (0..3)
        .map(|i| fleet.spawn(&fixture, &format!("steady-{i}"), &extra))
        .collect();

    let leader = lease
        .wait(Duration::from_secs(30), 0, "a Lease holder", |e| {
            e.holder().is_some()
        })
        .holder()
        .unwrap();
    for (i, watch) in secrets.iter().enumerate() {
        watch.wait(
            Duration::from_secs(30),
            0,
            &format!("target {i}'s first token"),
            |e| e.data("token").is_some(),
        );
    }
    for writer in writers.iter_mut().filter(|w| w.identity != leader) {
        wait_following(writer, &leader);
    }

    let steady = Duration::from_secs(env_u64("FISKIL_FLEET_STEADY_SECONDS", 60));
    let before = fixture.token_requests();
    tokio::time::sleep(steady).await;
    let during = fixture.token_requests() - before;

    let (mut leaders, mut followers): (Vec<&mut Writer>, Vec<&mut Writer>) =
        writers.iter_mut().partition(|w| w.identity == leader);
    assert_eq!(
        leaders.len(),
        1,
        "the Lease holder {leader} is not one of the writers"
    );
    let chief = &mut leaders[0];
    for follower in &mut followers {
        assert_eq!(
            follower.requests(),
            0.0,
            "follower {} sent token requests",
            follower.identity
        );
        assert_eq!(follower.leader_gauge(), Some(0.0), "{}", follower.identity);
        let (code, ready) = follower.readyz();
        assert_eq!(code, 200, "a working standby is ready: {ready}");
        assert_eq!(ready["role"], "follower", "{ready}");
        assert_eq!(ready["leader"], leader.as_str(), "{ready}");
        assert!(follower.daemon.logs_contain("\"following\""));
    }
    assert_eq!(chief.leader_gauge(), Some(1.0));
    let (code, ready) = chief.readyz();
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["role"], "leader", "{ready}");
    for i in 0..2 {
        assert!(
            ready["outputs"][format!("secret:{}", fleet.target(i))].is_string(),
            "{ready}"
        );
    }
    // Followers never sent a request, so every request the stand-in saw is the leader's: its
    // own count reaches the stand-in's and never passes it.
    let seen = fixture.token_requests();
    eventually(
        "the leader's count to reach the stand-in's",
        Duration::from_secs(10),
        || chief.requests() >= seen as f64,
    );
    assert!(chief.requests() <= fixture.token_requests() as f64);
    // 20 s tokens refreshed at 75-80 % of their lifetime: one exchange every 15-16 s.
    let most = (steady.as_secs_f64() / 15.0).floor() as usize + 1;
    let least = ((steady.as_secs_f64() / 16.0).floor() as usize)
        .saturating_sub(1)
        .max(1);
    assert!(
        (least..=most).contains(&during),
        "{during} exchanges in {steady:?}: not one per token lifetime ({least} to {most})"
    );

    let lease_events = lease.events();
    assert!(
        lease_events
            .iter()
            .all(|e| e.holder().as_deref() == Some(leader.as_str())),
        "leadership moved during the steady period"
    );
    let terms = lease_terms(&lease_events);
    let issued = fixture.stand_in.issued();
    let end = SystemTime::now();
    for (i, watch) in secrets.iter().enumerate() {
        let versions = watch.events();
        check_secret_versions(&fleet.target(i), &versions, &issued, Some(&terms), end);
        assert!(
            versions.len() as f64 >= during as f64,
            "target {i} missed refreshes"
        );
    }
    eprintln!(
        "steady {steady:?}: {during} exchanges, all by {leader}; followers 0; {} Lease versions",
        lease_events.len()
    );
    assert_clean(&fixture, &writers.iter().collect::<Vec<_>>());
}

#[tokio::test]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn killed_and_stopped_leaders_hand_over_without_two_writers_or_an_expired_secret() {
    let cluster = Cluster::connect().await;
    // Tokens of at least 30 s and four lease durations, refreshed at half their lifetime: a
    // Secret keeps more validity than any takeover takes.
    let (duration, retry) = lease_timing();
    let lifetime = (duration.as_secs() as i64 * 4).max(30);
    let fixture = Fixture::new("fleet-kill", lifetime);
    let fleet = Fleet::create(&cluster, "fleet-kill", fixture.dir.path(), 3).await;
    for i in 0..3 {
        fleet.grant(i).await;
    }
    let (secrets, lease) = fleet.watch(&cluster).await;
    let duration_flag = format!("{}s", duration.as_secs());
    let extra = [
        "--leader-elect",
        "--lease-duration",
        &duration_flag,
        "--refresh-ratio",
        "0.5",
    ];
    let mut generation = 0;
    let mut spawn = |fleet: &Fleet| {
        generation += 1;
        fleet.spawn(&fixture, &format!("kill-{generation}"), &extra)
    };
    let mut writers: Vec<Writer> = (0..3).map(|_| spawn(&fleet)).collect();
    let mut retired: Vec<Writer> = Vec::new();
    lease.wait(Duration::from_secs(30), 0, "a Lease holder", |e| {
        e.holder().is_some()
    });
    let sampler = Sampler::start(&cluster, &fleet.targets, Duration::from_millis(200));

    let kills = env_u64("FISKIL_FLEET_KILLS", 20);
    // A follower takes over a lease duration plus the 2 s margin after it saw the last renewal,
    // which came before the kill, and tries every retry period (up to 1.2 of it, jittered); 1 s
    // for a busy machine.
    let bound = duration + TAKEOVER_MARGIN + retry * 2 + Duration::from_secs(1);
    let mut takeovers = Vec::new();
    for _ in 0..kills {
        let holder = settle(&lease, &secrets, &mut writers);
        // Kill at a random point of the renew cycle.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..1000))).await;
        let at = writers.iter().position(|w| w.identity == holder).unwrap();
        let seen = lease.len();
        let killed = Instant::now();
        writers[at].daemon.signal("KILL");
        let next = lease.wait(bound * 3, seen, "a new Lease holder", |e| {
            e.holder().is_some_and(|h| h != holder)
        });
        takeovers.push(next.at - killed);
        retired.push(writers.remove(at));
        writers.push(spawn(&fleet));
    }

    let mut handovers = Vec::new();
    for _ in 0..3 {
        let holder = settle(&lease, &secrets, &mut writers);
        let at = writers.iter().position(|w| w.identity == holder).unwrap();
        let seen = lease.len();
        let stopped = Instant::now();
        writers[at].daemon.signal("TERM");
        let next = lease.wait(Duration::from_secs(20), seen, "a new Lease holder", |e| {
            e.holder().is_some_and(|h| h != holder)
        });
        handovers.push(next.at - stopped);
        let mut old = writers.remove(at);
        let status = old
            .daemon
            .wait_exit(Duration::from_secs(20))
            .expect("the old leader exits");
        assert!(status.success(), "{status:?}");
        assert!(old.daemon.logs_contain("leadership released"));
        retired.push(old);
        writers.push(spawn(&fleet));
    }
    settle(&lease, &secrets, &mut writers);

    let end = SystemTime::now();
    let terms = lease_terms(&lease.events());
    let issued = fixture.stand_in.issued();
    let mut versions = 0;
    for (i, watch) in secrets.iter().enumerate() {
        versions += check_secret_versions(
            &fleet.target(i),
            &watch.events(),
            &issued,
            Some(&terms),
            end,
        );
    }
    let samples = sampler.check(&issued);
    assert!(
        terms.len() as u64 > kills + 3,
        "{} terms for {kills} kills and 3 stops",
        terms.len()
    );

    let stats = |label: &str, mut times: Vec<Duration>| {
        times.sort();
        eprintln!(
            "{label}: {} times, median {:.2} s, max {:.2} s",
            times.len(),
            times[times.len() / 2].as_secs_f64(),
            times.last().unwrap().as_secs_f64()
        );
        *times.last().unwrap()
    };
    eprintln!(
        "lease {duration:?}: {} terms, {versions} Secret versions over 3 targets, {samples} samples, {} exchanges",
        terms.len(),
        issued.len()
    );
    let worst_kill = stats("takeover after SIGKILL", takeovers);
    let worst_term = stats("handover after SIGTERM", handovers);
    assert!(
        worst_kill <= bound,
        "a takeover took {worst_kill:?}, over {bound:?}"
    );
    assert!(
        worst_term < Duration::from_secs(2),
        "a SIGTERM handover took {worst_term:?}"
    );
    let all: Vec<&Writer> = writers.iter().chain(&retired).collect();
    assert_clean(&fixture, &all);
}

#[tokio::test]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn fan_out_never_waits_for_a_forbidden_namespace_which_catches_up_when_granted() {
    let cluster = Cluster::connect().await;
    let fixture = Fixture::new("fleet-fanout", 20);
    let fleet = Fleet::create(&cluster, "fleet-fanout", fixture.dir.path(), 3).await;
    fleet.grant(0).await;
    fleet.grant(1).await;
    // Without POD_NAME the Events regard the Secret, in its own namespace.
    fleet.allow_events(2).await;
    let (secrets, _lease) = fleet.watch(&cluster).await;
    let mut args = Fleet::base_args(&fixture);
    for extra in [
        "--secret",
        &fleet.target(0),
        "--secret",
        &fleet.target(1),
        "--secret-name",
        SECRET,
        "--secret-namespace",
        &fleet.targets[2],
        "--events",
    ] {
        args.push(extra.to_owned());
    }
    let started = Instant::now();
    let mut writer = Writer {
        identity: "fan-out".into(),
        daemon: Daemon::spawn(&args, &[("KUBECONFIG", fleet.kubeconfig.to_str().unwrap())]),
    };

    for (i, watch) in secrets[..2].iter().enumerate() {
        let first = watch.wait(
            Duration::from_secs(30),
            0,
            &format!("target {i}'s first token"),
            |e| e.data("token").is_some(),
        );
        assert_eq!(
            first.data("token").as_ref(),
            fixture.stand_in.issued().first(),
            "target {i} did not get the first token"
        );
        eprintln!("target {i} written {:?} after start", first.at - started);
    }
    let forbidden = format!("secret:{}", fleet.target(2));
    let failures = format!(
        "fiskil_token_refresher_output_write_total{{output=\"{forbidden}\",result=\"error\"}}"
    );
    eventually(
        "two failed writes to the forbidden target",
        Duration::from_secs(30),
        || writer.sample(&failures).unwrap_or(0.0) >= 2.0,
    );
    assert!(
        secrets[2].events().is_empty(),
        "the forbidden target was written"
    );
    let (code, ready) = writer.readyz();
    assert_eq!(code, 503, "ready while a target holds no token: {ready}");
    assert_eq!(ready["role"], "single", "{ready}");
    for i in 0..2 {
        assert!(
            ready["outputs"][format!("secret:{}", fleet.target(i))].is_string(),
            "{ready}"
        );
    }
    assert!(ready["outputs"].get(&forbidden).is_some(), "{ready}");
    let events: Api<Event> = Api::namespaced(cluster.admin.clone(), &fleet.targets[2]);
    let list = || async { events.list(&ListParams::default()).await.unwrap().items };
    await_reason(&events, "SecretWriteFailed", 1).await;

    fleet.grant(2).await;
    let granted = Instant::now();
    let caught = secrets[2].wait(
        Duration::from_secs(40),
        0,
        "the forbidden target catching up",
        |e| e.data("token").is_some(),
    );
    eprintln!(
        "target 2 caught up {:?} after its Role appeared",
        caught.at - granted
    );
    eventually(
        "/readyz 200 with every target written",
        Duration::from_secs(20),
        || writer.readyz().0 == 200,
    );
    await_reason(&events, "SecretWriteRecovered", 1).await;
    for event in list().await {
        let regarding = event.regarding.clone().unwrap_or_default();
        assert_eq!(regarding.kind.as_deref(), Some("Secret"), "{event:?}");
        assert_eq!(regarding.name.as_deref(), Some(SECRET), "{event:?}");
        assert_eq!(
            regarding.namespace.as_deref(),
            Some(fleet.targets[2].as_str()),
            "{event:?}"
        );
    }

    // One exchange per token lifetime, fanned out: every token went to every target.
    let issued = fixture.stand_in.issued();
    let lifetimes = started.elapsed().as_secs_f64() / 15.0;
    assert!(
        (issued.len() as f64) <= lifetimes.ceil() + 1.0,
        "{} exchanges in {:?}",
        issued.len(),
        started.elapsed()
    );
    let end = SystemTime::now();
    for (i, watch) in secrets.iter().enumerate() {
        check_secret_versions(&fleet.target(i), &watch.events(), &issued, None, end);
    }
    assert!(writer.daemon.logs_contain(&fleet.targets[2]));
    assert_clean(&fixture, &[&writer]);
}

/// Occurrences of an Event: its series count, else its (deprecated) count, else 1.
fn occurrences(event: &Event) -> i32 {
    event
        .series
        .as_ref()
        .map(|s| s.count)
        .or(event.deprecated_count)
        .unwrap_or(1)
        .max(1)
}

#[tokio::test]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn events_mark_each_state_change_and_a_long_outage_makes_no_storm() {
    let cluster = Cluster::connect().await;
    let lifetime = 12;
    let fixture = Fixture::new("fleet-events", lifetime);
    let fleet = Fleet::create(&cluster, "fleet-events", fixture.dir.path(), 2).await;
    fleet.grant(0).await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin.clone(), &fleet.home);
    let pod = pods
        .create(
            &PostParams::default(),
            &Pod {
                metadata: ObjectMeta {
                    name: Some("writer-0".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(PodSpec {
                    service_account_name: Some(support::leader_election::WRITER_ACCOUNT.into()),
                    containers: vec![Container {
                        name: "refresher".into(),
                        image: Some("fiskil-token-refresher:never-pulled".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
                ..Pod::default()
            },
        )
        .await
        .expect("create the writer's Pod");
    let uid = pod.metadata.uid.clone().unwrap();
    let (duration, _) = lease_timing();
    let duration_flag = format!("{}s", duration.as_secs());
    let args = fleet.writer_args(
        &fixture,
        &[
            "--leader-elect",
            "--lease-duration",
            &duration_flag,
            "--events",
            "--backoff-max",
            "2s",
            "--backoff-max-expired",
            "2s",
        ],
    );
    let mut writer = fleet.spawn_args("writer-0", &args, &[("POD_UID", &uid)]);

    let events: Api<Event> = Api::namespaced(cluster.admin.clone(), &fleet.home);
    let list = || async { events.list(&ListParams::default()).await.unwrap().items };

    await_reason(&events, "LeaderElected", 1).await;
    await_reason(&events, "SecretWriteFailed", 1).await;
    fleet.grant(1).await;
    await_reason(&events, "SecretWriteRecovered", 1).await;

    fixture
        .stand_in
        .set_default(Behaviour::Fail { status: 401 });
    await_reason(&events, "CredentialsRejected", 1).await;
    fixture.stand_in.set_default(Behaviour::Issue {
        expires_in: lifetime,
    });
    await_reason(&events, "TokenRefreshed", 1).await;

    // A long outage: the daemon retries every 1-2 s, the Events record the state change once.
    let before = list().await;
    let requests_before = fixture.token_requests();
    fixture
        .stand_in
        .set_default(Behaviour::Fail { status: 503 });
    await_reason(&events, "TokenExpiringSoon", 1).await;
    let outage = Duration::from_secs(env_u64("FISKIL_FLEET_OUTAGE_SECONDS", 60));
    tokio::time::sleep(outage).await;
    let during = list().await;
    let retries = fixture.token_requests() - requests_before;
    fixture.stand_in.set_default(Behaviour::Issue {
        expires_in: lifetime,
    });
    await_reason(&events, "TokenRefreshed", 2).await;
    let new_objects = during.len() - before.len();
    let new_occurrences: i32 =
        during.iter().map(occurrences).sum::<i32>() - before.iter().map(occurrences).sum::<i32>();
    eprintln!(
        "outage of {outage:?}: {retries} failed token requests, {new_objects} new Event objects, {new_occurrences} new occurrences"
    );
    assert!(
        retries >= 15,
        "only {retries} retries: the outage proves nothing"
    );
    assert!(
        new_objects <= 2,
        "{new_objects} Event objects during one outage"
    );
    assert!(
        new_occurrences <= 2,
        "{new_occurrences} occurrences recorded during one outage"
    );

    // Someone else takes the Lease: the writer stops leading and says so.
    let leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), &fleet.home);
    let mut taken = leases.get(&fleet.lease).await.unwrap();
    let spec = taken.spec.as_mut().unwrap();
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(3600);
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    leases
        .replace(&fleet.lease, &PostParams::default(), &taken)
        .await
        .expect("take the Lease");
    await_reason(&events, "LeadershipLost", 1).await;
    eventually(
        "the writer to follow the intruder",
        Duration::from_secs(20),
        || {
            let (_, ready) = writer.readyz();
            ready["role"] == "follower" && ready["leader"] == "intruder"
        },
    );
    assert_eq!(writer.leader_gauge(), Some(0.0));

    let all = list().await;
    let mut table = BTreeMap::new();
    for event in &all {
        let reason = event.reason.clone().unwrap_or_default();
        let entry = table.entry(reason.clone()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += occurrences(event);
        let regarding = event.regarding.clone().unwrap_or_default();
        assert_eq!(regarding.kind.as_deref(), Some("Pod"), "{event:?}");
        assert_eq!(regarding.name.as_deref(), Some("writer-0"), "{event:?}");
        assert_eq!(regarding.uid.as_deref(), Some(uid.as_str()), "{event:?}");
        let warning = [
            "CredentialsRejected",
            "TokenExpiringSoon",
            "SecretWriteFailed",
        ]
        .contains(&reason.as_str());
        assert_eq!(
            event.type_.as_deref(),
            Some(if warning { "Warning" } else { "Normal" }),
            "{event:?}"
        );
        if reason.starts_with("SecretWrite") {
            let related = event.related.clone().unwrap_or_default();
            assert_eq!(related.kind.as_deref(), Some("Secret"), "{event:?}");
            assert_eq!(
                related.namespace.as_deref(),
                Some(fleet.targets[1].as_str()),
                "{event:?}"
            );
        }
        let text = serde_json::to_string(event).unwrap();
        for secret in fixture
            .stand_in
            .issued()
            .iter()
            .chain(&fixture.secrets_seen)
        {
            assert!(!text.contains(secret.as_str()), "an Event holds a secret");
        }
    }
    eprintln!("Events (reason: objects, occurrences): {table:?}");
    let reasons: BTreeSet<&str> = table.keys().map(String::as_str).collect();
    for reason in [
        "LeaderElected",
        "SecretWriteFailed",
        "SecretWriteRecovered",
        "CredentialsRejected",
        "TokenRefreshed",
        "TokenExpiringSoon",
        "LeadershipLost",
    ] {
        assert!(reasons.contains(reason), "no {reason} Event: {table:?}");
    }
    for (reason, (objects, _)) in &table {
        assert_eq!(
            *objects, 1,
            "{reason}: one series per state, not {objects} objects"
        );
    }
    assert_eq!(table["TokenRefreshed"].1, 2, "two recoveries: {table:?}");
    assert_clean(&fixture, &[&writer]);
}

#[tokio::test]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn a_paused_leader_resumed_after_a_takeover_writes_nothing_in_its_old_term() {
    let cluster = Cluster::connect().await;
    let fixture = Fixture::new("fleet-pause", 16);
    let fleet = Fleet::create(&cluster, "fleet-pause", fixture.dir.path(), 2).await;
    for i in 0..2 {
        fleet.grant(i).await;
    }
    let (secrets, lease) = fleet.watch(&cluster).await;
    let (duration, _) = lease_timing();
    let duration_flag = format!("{}s", duration.as_secs());
    let extra = [
        "--leader-elect",
        "--lease-duration",
        &duration_flag,
        "--refresh-ratio",
        "0.5",
    ];
    let mut writers: Vec<Writer> = (0..2)
        .map(|i| fleet.spawn(&fixture, &format!("pause-{i}"), &extra))
        .collect();
    lease.wait(Duration::from_secs(30), 0, "a Lease holder", |e| {
        e.holder().is_some()
    });
    for round in 0..3 {
        let holder = settle(&lease, &secrets, &mut writers);
        let at = writers.iter().position(|w| w.identity == holder).unwrap();
        let mut paused = writers.remove(at);
        let before = paused.requests();
        paused.daemon.signal("STOP");
        let seen = lease.len();
        lease.wait(Duration::from_secs(30), seen, "a new Lease holder", |e| {
            e.holder().is_some_and(|h| h != holder)
        });
        let successor = settle(&lease, &secrets, &mut writers);
        // Resumed with its refresh overdue (paused for longer than half a 16 s lifetime) and
        // another asked for (SIGHUP, queued while stopped): it must find its Lease gone before
        // it writes anything.
        tokio::time::sleep(Duration::from_secs(6)).await;
        paused.daemon.signal("HUP");
        paused.daemon.signal("CONT");
        wait_following(&mut paused, &successor);
        assert_eq!(
            paused.requests(),
            before,
            "round {round}: {holder} resumed after {successor} took over and requested a token"
        );
        writers.push(paused);
    }
    let terms = lease_terms(&lease.events());
    let issued = fixture.stand_in.issued();
    let end = SystemTime::now();
    for (i, watch) in secrets.iter().enumerate() {
        check_secret_versions(
            &fleet.target(i),
            &watch.events(),
            &issued,
            Some(&terms),
            end,
        );
    }
    assert_clean(&fixture, &writers.iter().collect::<Vec<_>>());
}

/// Changes the Lease as someone with `kubectl edit` would: reads it, applies `change`, and
/// replaces it, again on a conflict with its holder's renewals. Returns the edit's
/// resourceVersion.
async fn edit_lease(
    cluster: &Cluster,
    fleet: &Fleet,
    change: impl Fn(&mut k8s_openapi::api::coordination::v1::LeaseSpec),
) -> u64 {
    let leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), &fleet.home);
    loop {
        let mut lease = leases.get(&fleet.lease).await.expect("read the Lease");
        change(lease.spec.get_or_insert_with(Default::default));
        match leases
            .replace(&fleet.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                return written
                    .metadata
                    .resource_version
                    .and_then(|rv| rv.parse().ok())
                    .expect("a numeric resourceVersion")
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => panic!("edit the Lease: {e}"),
        }
    }
}

/// Three writers with leader election over two targets, settled: the fixture, the fleet, the
/// watches (targets, Lease), the writers and the holder's position among them.
async fn elected_fleet(
    cluster: &Cluster,
    name: &str,
    lease_seconds: u64,
) -> (Fixture, Fleet, Vec<Watch>, Watch, Vec<Writer>, usize) {
    // Tokens outlast a takeover several times over, refreshed at half their lifetime.
    let lifetime = (lease_seconds as i64 * 4).max(30);
    let fixture = Fixture::new(name, lifetime);
    let fleet = Fleet::create(cluster, name, fixture.dir.path(), 2).await;
    for i in 0..2 {
        fleet.grant(i).await;
    }
    let (secrets, lease) = fleet.watch(cluster).await;
    let duration_flag = format!("{lease_seconds}s");
    let extra = [
        "--leader-elect",
        "--lease-duration",
        &duration_flag,
        "--refresh-ratio",
        "0.5",
    ];
    let started = Instant::now();
    let mut writers: Vec<Writer> = (0..3)
        .map(|i| fleet.spawn(&fixture, &format!("{name}-{i}"), &extra))
        .collect();
    // A new Lease is created once the replicas have found it missing for the lease duration
    // plus the margin.
    let first = lease.wait(
        Duration::from_secs(lease_seconds * 2 + 30),
        0,
        "a Lease holder",
        |e| e.holder().is_some(),
    );
    eprintln!(
        "{name}: lease {lease_seconds} s, first leader {:.2} s after the writers started",
        (first.at - started).as_secs_f64()
    );
    let holder = settle(&lease, &secrets, &mut writers);
    let at = writers.iter().position(|w| w.identity == holder).unwrap();
    (fixture, fleet, secrets, lease, writers, at)
}

/// Checks every target's history against the Lease's, the test's own `edits` to the Lease
/// excepted.
fn check_history(
    fixture: &Fixture,
    fleet: &Fleet,
    secrets: &[Watch],
    lease: &Watch,
    edits: &[u64],
) {
    let end = SystemTime::now();
    let terms = lease_terms_with_edits(&lease.events(), edits);
    let issued = fixture.stand_in.issued();
    for (i, watch) in secrets.iter().enumerate() {
        check_secret_versions(
            &fleet.target(i),
            &watch.events(),
            &issued,
            Some(&terms),
            end,
        );
    }
    eprintln!("Lease terms: {terms:?}");
}

/// The reason a writer gave for its last loss of leadership.
fn lost_reason(writer: &Writer) -> Option<String> {
    writer
        .daemon
        .json_logs()
        .into_iter()
        .rfind(|l| l["message"] == "leadership lost")
        .map(|l| l["reason"].as_str().unwrap_or_default().to_owned())
}

/// Waits until `writer`, a former leader, reports that it stepped down; returns the reason.
fn stepped_down(writer: &Writer) -> String {
    let reason = eventually(
        &format!("{} to step down", writer.identity),
        Duration::from_secs(20),
        || lost_reason(writer),
    );
    eprintln!("{} stepped down: {reason}", writer.identity);
    reason
}

#[tokio::test]
#[ignore = "needs a control plane: tests/cluster/up.sh"]
async fn a_lease_deleted_mid_term_ends_that_term_and_comes_back_in_a_higher_one() {
    let cluster = Cluster::connect().await;
    let (duration, _) = lease_timing();
    let (fixture, fleet, secrets, lease, mut writers, at) =
        elected_fleet(&cluster, "fleet-deleted", duration.as_secs()).await;
    let holder = writers[at].identity.clone();
    let current = lease.events().last().cloned().unwrap();
    let seen = lease.len();
    let leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), &fleet.home);
    leases
        .delete(&fleet.lease, &Default::default())
        .await
        .expect("delete the Lease");
    // A token asked of the leader right away: it writes before its next renewal or not at all.
    writers[at].daemon.signal("HUP");
    let gone = lease.wait(Duration::from_secs(10), seen, "the deletion", |e| {
        e.kind == "DELETED"
    });
    let back = lease.wait(
        duration * 3 + Duration::from_secs(30),
        seen,
        "the Lease created again",
        |e| e.kind == "ADDED",
    );
    eprintln!(
        "term {} of {holder} deleted; the Lease came back {:.2} s later, held by {:?} in term {}",
        current.transitions(),
        (back.at - gone.at).as_secs_f64(),
        back.holder(),
        back.transitions()
    );
    assert!(
        back.transitions() > current.transitions(),
        "the Lease came back at term {} after term {} was deleted",
        back.transitions(),
        current.transitions()
    );
    // No replica creates it before the deleted term's leader must have stopped writing: its
    // renew deadline after its last renewal, which came before the deletion.
    assert!(
        back.at - gone.at >= duration * 2 / 3,
        "the Lease was created again {:?} after its deletion",
        back.at - gone.at
    );
    settle(&lease, &secrets, &mut writers);
    assert_eq!(stepped_down(&writers[at]), "the Lease was deleted");
    check_history(&fixture, &fleet, &secrets, &lease, &[]);
    assert_clean(&fixture, &writers.iter().collect::<Vec<_>>());
}

#[tokio::test]
#[ignore = "needs a control plane: tests/cluster/up.sh"]
async fn a_holder_named_by_hand_takes_the_lease_only_as_a_new_term_and_the_old_leader_steps_down() {
    let cluster = Cluster::connect().await;
    let (duration, _) = lease_timing();
    let (fixture, fleet, secrets, lease, mut writers, at) =
        elected_fleet(&cluster, "fleet-named", duration.as_secs()).await;
    let holder = writers[at].identity.clone();
    let named = writers
        .iter()
        .find(|w| w.identity != holder)
        .unwrap()
        .identity
        .clone();
    let term = lease.events().last().unwrap().transitions();
    let edit = edit_lease(&cluster, &fleet, |spec| {
        spec.holder_identity = Some(named.clone());
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    })
    .await;
    writers[at].daemon.signal("HUP");
    // Nobody renews the edited Lease: the next version is a takeover, in a new term.
    let next = lease.wait(
        duration * 3 + Duration::from_secs(30),
        0,
        "the Lease's next version after the edit",
        |e| e.resource_version() > edit,
    );
    eprintln!(
        "{holder}'s term {term} edited to name {named}; next, {:?} in term {}",
        next.holder(),
        next.transitions()
    );
    assert_eq!(
        next.transitions(),
        term + 1,
        "after the edit, {:?} wrote the Lease in term {}",
        next.holder(),
        next.transitions()
    );
    settle(&lease, &secrets, &mut writers);
    assert_eq!(
        stepped_down(&writers[at]),
        "another replica holds the Lease"
    );
    let named_writer = writers.iter().find(|w| w.identity == named).unwrap();
    assert!(named_writer
        .daemon
        .logs_contain("the Lease names this replica, which did not take it"));
    check_history(&fixture, &fleet, &secrets, &lease, &[edit]);
    assert_clean(&fixture, &writers.iter().collect::<Vec<_>>());
}

#[tokio::test]
#[ignore = "needs a control plane: tests/cluster/up.sh"]
async fn a_lease_duration_shortened_by_hand_hands_no_live_leaders_lease_to_another() {
    let cluster = Cluster::connect().await;
    // A 15 s Lease, renewed every 2 s: longer than the 1 s the edit leaves, so only a follower
    // that honoured the shortened duration could take the Lease before the leader renews.
    let seconds = 15;
    let (fixture, fleet, secrets, lease, mut writers, at) =
        elected_fleet(&cluster, "fleet-shortened", seconds).await;
    let holder = writers[at].identity.clone();
    let term = lease.events().last().unwrap().transitions();
    let edit = edit_lease(&cluster, &fleet, |spec| {
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    })
    .await;
    writers[at].daemon.signal("HUP");
    let next = lease.wait(
        Duration::from_secs(seconds * 2),
        0,
        "the Lease's next version after the edit",
        |e| e.resource_version() > edit,
    );
    assert_eq!(
        (next.holder(), next.transitions()),
        (Some(holder.clone()), term),
        "the Lease left its live leader after its duration was shortened to 1 s"
    );
    assert_eq!(
        next.object["spec"]["leaseDurationSeconds"], seconds,
        "the leader renews with its own duration"
    );
    // A refresh after the edit, by the same leader in the same term.
    let written = secrets[0].wait(
        Duration::from_secs(seconds * 2),
        0,
        "a write after the edit",
        |e| e.resource_version() > edit,
    );
    assert_eq!(written.writer_term(), Some((holder.clone(), term)));
    settle(&lease, &secrets, &mut writers);
    assert!(
        lease
            .events()
            .iter()
            .all(|e| e.holder().as_deref() == Some(holder.as_str())),
        "leadership moved"
    );
    check_history(&fixture, &fleet, &secrets, &lease, &[edit]);
    assert_clean(&fixture, &writers.iter().collect::<Vec<_>>());
}

/// Waits until the Events in `events` hold `times` occurrences (series counted) of `reason`.
async fn await_reason(events: &Api<Event>, reason: &str, times: i32) {
    eventually_async(
        &format!("{times} {reason} Event(s)"),
        Duration::from_secs(40),
        || async {
            let items = events.list(&ListParams::default()).await.unwrap().items;
            items
                .iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .map(occurrences)
                .sum::<i32>()
                >= times
        },
    )
    .await;
}

/// A Secret version as a watch delivers it.
fn secret_version(rv: u64, token: &str, expires_in: i64, writer: &str, term: u64) -> Observed {
    let wall = SystemTime::now();
    let expires = humantime::format_rfc3339_millis(if expires_in >= 0 {
        wall + Duration::from_secs(expires_in as u64)
    } else {
        wall - Duration::from_secs(expires_in.unsigned_abs())
    })
    .to_string();
    let b64 = support::leader_election::base64_encode;
    Observed {
        at: Instant::now(),
        wall,
        kind: "MODIFIED".into(),
        object: serde_json::json!({
            "metadata": {"resourceVersion": rv.to_string(), "annotations": {
                support::leader_election::WRITER_ANNOTATION: writer,
                support::leader_election::TERM_ANNOTATION: term.to_string(),
            }},
            "data": {"token": b64(token), "expires_at": b64(&expires)},
        }),
    }
}

/// A Lease version as a watch delivers it.
fn lease_version(rv: u64, holder: Option<&str>, transitions: u64) -> Observed {
    Observed {
        at: Instant::now(),
        wall: SystemTime::now(),
        kind: "MODIFIED".into(),
        object: serde_json::json!({
            "metadata": {"resourceVersion": rv.to_string()},
            "spec": {"holderIdentity": holder, "leaseTransitions": transitions},
        }),
    }
}

/// A Lease deletion as a watch delivers it.
fn deleted(rv: u64, holder: Option<&str>, transitions: u64) -> Observed {
    Observed {
        kind: "DELETED".into(),
        ..lease_version(rv, holder, transitions)
    }
}

/// The checks the cluster tests rely on fail on what they are meant to catch.
#[test]
fn the_history_checks_catch_two_writers_a_stale_term_and_an_expired_secret() {
    let lease = vec![
        lease_version(10, Some("a"), 0),
        lease_version(12, Some("a"), 0),
        lease_version(20, Some("b"), 1),
        lease_version(22, None, 1),
        lease_version(30, Some("c"), 2),
    ];
    let terms = lease_terms(&lease);
    assert_eq!(terms[&0].until, Some(20));
    assert_eq!(terms[&1].until, Some(22));
    let issued = vec!["t1".to_owned(), "t2".to_owned(), "t3".to_owned()];
    let end = SystemTime::now();
    let good = vec![
        secret_version(11, "t1", 60, "a", 0),
        secret_version(21, "t2", 60, "b", 1),
        secret_version(31, "t3", 60, "c", 2),
    ];
    assert_eq!(
        check_secret_versions("ns/s", &good, &issued, Some(&terms), end),
        3
    );
    // The checks' own panic messages are expected here; keep them out of the output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut caught = Vec::new();
    let fails = |versions: Vec<Observed>, history: Option<&[Observed]>| {
        let history = history.unwrap_or(&lease);
        std::panic::catch_unwind(|| {
            check_secret_versions("ns/s", &versions, &issued, Some(&lease_terms(history)), end)
        })
        .is_err()
    };
    caught.push((
        "another writer in the term",
        fails(vec![secret_version(11, "t1", 60, "b", 0)], None),
    ));
    caught.push((
        "a term going back",
        fails(
            vec![
                secret_version(21, "t2", 60, "b", 1),
                secret_version(25, "t1", 60, "a", 0),
            ],
            None,
        ),
    ));
    caught.push((
        "a write after the Lease was released",
        fails(vec![secret_version(23, "t2", 60, "b", 1)], None),
    ));
    caught.push((
        "a write after the next term began",
        fails(vec![secret_version(31, "t1", 60, "a", 0)], None),
    ));
    caught.push((
        "an expired token",
        fails(vec![secret_version(11, "t1", -1, "a", 0)], None),
    ));
    caught.push((
        "a token never issued",
        fails(vec![secret_version(11, "forged", 60, "a", 0)], None),
    ));
    let split = [
        lease_version(10, Some("a"), 0),
        lease_version(11, Some("b"), 0),
    ];
    caught.push(("two holders in one term", fails(good.clone(), Some(&split))));
    let back = [
        lease_version(10, Some("a"), 1),
        lease_version(11, Some("b"), 0),
    ];
    caught.push(("transitions going back", fails(good.clone(), Some(&back))));
    let recreated = [
        lease_version(10, Some("a"), 0),
        deleted(11, Some("a"), 0),
        lease_version(20, Some("a"), 0),
    ];
    caught.push((
        "a Lease created again in the deleted one's term",
        fails(vec![secret_version(21, "t1", 60, "a", 0)], Some(&recreated)),
    ));
    let named = [
        lease_version(10, Some("a"), 0),
        lease_version(12, Some("b"), 0),
        lease_version(14, Some("b"), 0),
    ];
    let edited = |history: &[Observed]| {
        std::panic::catch_unwind(|| lease_terms_with_edits(history, &[12])).is_err()
    };
    caught.push((
        "a holder named by hand going on in the old term",
        edited(&named),
    ));
    let renewed_away = [
        lease_version(10, Some("a"), 0),
        lease_version(12, Some("b"), 0),
        lease_version(14, Some("a"), 0),
    ];
    caught.push((
        "the old holder going on after an edit named another",
        edited(&renewed_away),
    ));
    std::panic::set_hook(hook);
    // An edit that keeps the holder and term, a holder named by hand followed by a new term, and
    // a deleted Lease created again above its term are all fine; the old holder's writes after
    // the edit or deletion count until the next term begins.
    let kept = [
        lease_version(10, Some("a"), 0),
        lease_version(12, Some("a"), 0),
        lease_version(14, Some("a"), 0),
    ];
    assert_eq!(lease_terms_with_edits(&kept, &[12])[&0].until, None);
    let moved = [
        lease_version(10, Some("a"), 0),
        lease_version(12, Some("b"), 0),
        lease_version(20, Some("c"), 1),
    ];
    let terms = lease_terms_with_edits(&moved, &[12]);
    assert_eq!(terms[&0].until, Some(20));
    assert_eq!(terms[&1].holder, "c");
    let writes = vec![
        secret_version(13, "t1", 60, "a", 0),
        secret_version(21, "t2", 60, "c", 1),
    ];
    check_secret_versions("ns/s", &writes, &issued, Some(&terms), end);
    let again = [
        lease_version(10, Some("a"), 0),
        deleted(11, Some("a"), 0),
        lease_version(20, Some("b"), 1),
    ];
    let terms = lease_terms(&again);
    let writes = vec![
        secret_version(12, "t1", 60, "a", 0),
        secret_version(21, "t2", 60, "b", 1),
    ];
    check_secret_versions("ns/s", &writes, &issued, Some(&terms), end);
    for (what, failed) in caught {
        assert!(failed, "the checks missed {what}");
    }
}

#[tokio::test]
#[ignore = "needs a cluster: tests/cluster/up.sh DIR, then FISKIL_CLUSTER_DIR=DIR"]
async fn the_writer_identity_can_touch_no_other_lease_secret_or_namespace() {
    let cluster = Cluster::connect().await;
    let work = support::TempDir::new("fleet-rbac");
    let fleet = Fleet::create(&cluster, "fleet-rbac", work.path(), 2).await;
    fleet.grant(0).await;
    let admin_leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), &fleet.home);
    let other_lease = Lease {
        metadata: ObjectMeta {
            name: Some("someone-elses".into()),
            ..ObjectMeta::default()
        },
        ..Lease::default()
    };
    admin_leases
        .create(&PostParams::default(), &other_lease)
        .await
        .unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&fleet.kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let code = |result: Result<(), kube::Error>| match result {
        Err(kube::Error::Api(status)) => status.code,
        Ok(()) => 200,
        Err(other) => panic!("unexpected error {other}"),
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &fleet.home);
    let mine = Lease {
        metadata: ObjectMeta {
            name: Some(fleet.lease.clone()),
            ..ObjectMeta::default()
        },
        ..Lease::default()
    };
    assert_eq!(
        code(leases.create(&PostParams::default(), &mine).await.map(drop)),
        200,
        "create its Lease"
    );
    assert_eq!(code(leases.get(&fleet.lease).await.map(drop)), 200);
    let current = leases.get(&fleet.lease).await.unwrap();
    assert_eq!(
        code(
            leases
                .replace(&fleet.lease, &PostParams::default(), &current)
                .await
                .map(drop)
        ),
        200,
        "update its Lease"
    );
    assert_eq!(code(leases.get("someone-elses").await.map(drop)), 403);
    let mut theirs = admin_leases.get("someone-elses").await.unwrap();
    theirs.metadata.managed_fields = None;
    assert_eq!(
        code(
            leases
                .replace("someone-elses", &PostParams::default(), &theirs)
                .await
                .map(drop)
        ),
        403
    );
    assert_eq!(
        code(
            leases
                .delete(&fleet.lease, &Default::default())
                .await
                .map(drop)
        ),
        403
    );
    assert_eq!(
        code(leases.list(&ListParams::default()).await.map(drop)),
        403
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &fleet.home);
    assert_eq!(
        code(secrets.list(&ListParams::default()).await.map(drop)),
        403
    );
    let ungranted: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &fleet.targets[1]);
    let apply = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "data": {"token": "eA=="}});
    let params = kube::api::PatchParams::apply("fiskil-token-refresher").force();
    assert_eq!(
        code(
            ungranted
                .patch(SECRET, &params, &kube::api::Patch::Apply(&apply))
                .await
                .map(drop)
        ),
        403,
        "a target namespace without its Role"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &fleet.targets[0]);
    assert_eq!(
        code(events.list(&ListParams::default()).await.map(drop)),
        403
    );
    let own_events: Api<Event> = Api::namespaced(client, &fleet.home);
    assert_eq!(
        code(own_events.list(&ListParams::default()).await.map(drop)),
        403,
        "Events are created and patched, never read"
    );
}
