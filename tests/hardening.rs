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
