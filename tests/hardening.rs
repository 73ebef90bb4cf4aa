//! The real binary under the conditions that once broke it: a hot retry loop on
//! `Retry-After: 0`, outputs it cannot write, odd files, proxies, trust bundles, a stalled
//! Kubernetes API, and readiness while shutting down.

mod support;

use std::time::Duration;

use support::fake_api::{ApiMode, FakeApi};
use support::{wait_for, Daemon, Fixture};

/// Starts the daemon with the fixture's arguments plus `extra`, and `env`.
fn spawn_with_env(fixture: &Fixture, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
    let mut args = fixture.base_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    Daemon::spawn(&args, env)
}

#[test]
fn readiness_fails_from_the_moment_shutdown_begins() {
    let fixture = Fixture::new("shutdown-ready", 900);
    let api = FakeApi::start(ApiMode::Ok);
    let kubeconfig = fixture.dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let mut daemon = spawn_with_env(
        &fixture,
        &["--secret-name", "token", "--secret-namespace", "team"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    wait_for(Duration::from_secs(20), "ready", || {
        daemon.get("/readyz").0 == 200
    });
    // The next apply never returns, so the drain after SIGTERM takes a while.
    api.set_mode(ApiMode::Hang);
    let applies = api.requests();
    daemon.signal("HUP");
    wait_for(Duration::from_secs(20), "the hanging apply", || {
        api.requests() > applies
    });
    assert_eq!(
        daemon.get("/readyz").0,
        200,
        "the Secret still holds a token"
    );
    daemon.signal("TERM");
    wait_for(Duration::from_secs(10), "the stopping log line", || {
        daemon.logs_contain("\"stopping\"")
    });
    let (code, body) = daemon.get("/readyz");
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    let status = daemon
        .wait_exit(Duration::from_secs(30))
        .expect("exits after the drain");
    assert!(status.success(), "{status:?}");
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn retry_after_zero_or_in_the_past_never_becomes_a_hot_loop() {
    let zero = Fixture::new("retry-after-zero", 900);
    let past = Fixture::new("retry-after-past", 900);
    for (fixture, value) in [(&zero, "0"), (&past, "Sun, 06 Nov 1994 08:49:37 GMT")] {
        fixture
            .stand_in
            .set_default(fiskil_stand_in::Behaviour::RetryAfter {
                status: 429,
                value: value.to_owned(),
            });
    }
    let daemons = [zero.spawn(&[]), past.spawn(&[])];
    // Backoff ceilings 1, 2, 4 s: delays of at least 0.5, 1 and 2 s, so at most four requests
    // fit in 6 s however fast the machine is (a hot loop sent 132).
    std::thread::sleep(Duration::from_secs(6));
    for fixture in [&zero, &past] {
        let sent = fixture.stand_in.seen().len();
        assert!(
            (2..=4).contains(&sent),
            "{sent} requests in 6 s answered 429 with an expired Retry-After"
        );
    }
    drop(daemons);
}

#[test]
fn after_the_token_expires_retries_stay_short_and_recovery_is_quick() {
    let fixture = Fixture::new("outage", 3);
    let daemon = fixture.spawn(&["--backoff-max", "60s", "--backoff-max-expired", "2s"]);
    wait_for(Duration::from_secs(10), "the first token", || {
        fixture.read_token().is_some()
    });
    fixture
        .stand_in
        .set_default(fiskil_stand_in::Behaviour::Fail { status: 503 });
    let before = fixture.stand_in.seen().len();
    std::thread::sleep(Duration::from_secs(14));
    let during = fixture.stand_in.seen().len() - before;
    // The token expired 3 s in; from then on the ceiling is 2 s, so retries come every 1-2 s:
    // a failing endpoint sees a bounded trickle, never a flood.
    assert!(
        during <= 16,
        "{during} requests in 14 s of outage: more than --backoff-max-expired allows"
    );
    assert!(
        during >= 4,
        "only {during} requests in 14 s of outage: retries climbed towards --backoff-max"
    );
    let issued = fixture.stand_in.issued().len();
    fixture
        .stand_in
        .set_default(fiskil_stand_in::Behaviour::Issue { expires_in: 3 });
    let healed = std::time::Instant::now();
    wait_for(Duration::from_secs(30), "a token after healing", || {
        fixture.stand_in.issued().len() > issued
    });
    let took = healed.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "a token came back {took:?} after the endpoint healed (--backoff-max-expired 2s)"
    );
    fixture.assert_logs_clean(&daemon);
}
