//! The real binary against the HTTPS stand-in: schedule, atomic writes, rotation, failure
//! classes, `--once`, signals, readiness, and that no secret or token reaches the logs.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fiskil_stand_in::{Behaviour, ELSEWHERE_PATH};
use support::{eventually, Daemon, Fixture};

const SUCCESS: &str = "fiskil_token_refresher_refresh_total{result=\"success\"}";
const TRANSIENT: &str = "fiskil_token_refresher_refresh_total{result=\"transient\"}";
const REJECTED: &str = "fiskil_token_refresher_refresh_total{result=\"rejected\"}";
const INVALID: &str = "fiskil_token_refresher_refresh_total{result=\"invalid_response\"}";

/// Milliseconds since the Unix epoch of an RFC 3339 time the daemon logged.
fn logged_ms(line: &serde_json::Value, field: &str) -> u128 {
    let text = line[field].as_str().expect("a logged time");
    humantime::parse_rfc3339(text)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn refreshes_inside_the_jitter_window_and_reports_it() {
    let fixture = Fixture::new("window", 6);
    let mut daemon = fixture.spawn(&[]);
    eventually("three token requests", Duration::from_secs(30), || {
        fixture.stand_in.seen().len() >= 3
    });
    // Each refresh is scheduled at 75-80% of the lifetime from its request; the logged times
    // say so exactly, whatever the load on the machine.
    let refreshed: Vec<_> = daemon
        .json_logs()
        .into_iter()
        .filter(|line| line["message"] == "token refreshed")
        .collect();
    assert!(refreshed.len() >= 2);
    for line in &refreshed {
        let expires = logged_ms(line, "expires_at");
        let next = logged_ms(line, "next_refresh_at");
        let issued = expires - 6000;
        let fraction = (next - issued) as f64 / 6000.0;
        assert!(
            (0.74..=0.81).contains(&fraction),
            "next refresh at {fraction:.3} of the lifetime: {line}"
        );
    }
    // And the requests really came before each token expired, and not much earlier.
    let seen = fixture.stand_in.seen();
    for pair in seen.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at).as_secs_f64();
        assert!(
            (4.0..6.0).contains(&gap),
            "refresh after {gap:.3} s for a 6 s token"
        );
    }
    fixture.assert_contract_kept();
    eventually(
        "the newest token in the file",
        Duration::from_secs(5),
        || fixture.read_token() == fixture.stand_in.issued().last().cloned(),
    );

    let (code, body) = daemon.get("/readyz");
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert!(ready["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(ready["next_refresh_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ready["outputs"]["file"], ready["expires_at"]);
    assert_eq!(daemon.get("/healthz").0, 200);

    // One scrape: a file write always follows its token request, so the write count can lag
    // the request count but never lead it; the file's expiry gauge is the file's token's.
    let (_, text) = daemon.get("/metrics");
    let sample = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .unwrap_or(0.0)
    };
    let requests = sample(SUCCESS);
    let writes =
        sample("fiskil_token_refresher_output_write_total{output=\"file\",result=\"success\"}");
    assert!(requests >= 3.0, "{text}");
    assert!(
        writes >= 2.0 && writes <= requests,
        "{writes} writes, {requests} requests"
    );
    let newest = sample("fiskil_token_refresher_token_expiry_timestamp_seconds");
    let held =
        sample("fiskil_token_refresher_output_token_expiry_timestamp_seconds{output=\"file\"}");
    assert!(
        held > 0.0 && held <= newest,
        "file holds {held}, newest {newest}"
    );
    let ready_at = humantime::parse_rfc3339(ready["outputs"]["file"].as_str().unwrap())
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        held >= ready_at - 0.001,
        "gauge {held} older than /readyz {ready_at}"
    );
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn a_concurrent_reader_never_sees_a_partial_or_missing_token() {
    let fixture = Fixture::new("reader", 900);
    let daemon = fixture.spawn(&["--min-refresh-interval", "10ms"]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let path = fixture.token_file();
    let reader = {
        let (stop, reads) = (Arc::clone(&stop), Arc::clone(&reads));
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            let mut values = HashSet::new();
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read_to_string(&path) {
                    Ok(value) if value.len() == 25 && value.starts_with("tok-") => {
                        values.insert(value);
                    }
                    Ok(value) => bad.push(format!("read {} bytes", value.len())),
                    Err(e) => bad.push(e.to_string()),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            (bad, values)
        })
    };
    let start = Instant::now();
    while fixture.stand_in.issued().len() < 150 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "refreshes too slow"
        );
        daemon.signal("HUP");
        std::thread::sleep(Duration::from_millis(15));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (bad, values) = reader.join().unwrap();
    let reads = reads.load(Ordering::Relaxed);
    assert!(
        bad.is_empty(),
        "{} bad reads of {reads}: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(reads > 2000, "only {reads} reads");
    let issued: HashSet<String> = fixture.stand_in.issued().into_iter().collect();
    assert!(
        values.is_subset(&issued),
        "the reader saw a token that was never issued"
    );
    assert!(
        values.len() > 50,
        "the reader saw only {} distinct tokens",
        values.len()
    );
    // A refresh asked for last may still be writing (its temporary file exists until the
    // rename); once the refreshes are done, the token file must be all that is left.
    eventually("no temporary file left", Duration::from_secs(30), || {
        let leftovers: Vec<_> = std::fs::read_dir(&fixture.out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        (leftovers == vec![std::ffi::OsString::from("token")])
            .then_some(())
            .ok_or(format!("{leftovers:?}"))
    });
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn rotation_through_a_data_swap_is_used_within_two_seconds() {
    let mut fixture = Fixture::new("rotate", 900);
    let mut daemon = fixture.spawn(&[]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    let first = fixture.read_token();

    let new_secret = format!("sekrit-rotated-{:08x}", std::process::id());
    fixture.rotate("client-rotated", &new_secret);
    let swapped = Instant::now();
    eventually(
        "a token for the rotated credentials",
        Duration::from_secs(2),
        || fixture.stand_in.issued().len() == 2,
    );
    let latency = swapped.elapsed();
    let last = fixture.stand_in.seen().pop().unwrap();
    assert_eq!(last.client_id.as_deref(), Some("client-rotated"));
    eventually("the new token in the file", Duration::from_secs(1), || {
        fixture.read_token() != first
    });
    assert_eq!(
        daemon.metric("fiskil_token_refresher_credential_reloads_total"),
        1.0
    );
    eprintln!("rotation picked up after {latency:?}");
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn plain_rewrites_and_rename_over_are_picked_up() {
    let fixture = Fixture::new("rewrite", 900);
    let dir = fixture.dir.path().join("plain");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("client_id"), &fixture.client_id).unwrap();
    std::fs::write(dir.join("client_secret"), &fixture.client_secret).unwrap();
    let mut args = fixture.base_args();
    for (flag, file) in [
        ("--client-id-file", "client_id"),
        ("--client-secret-file", "client_secret"),
    ] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = dir.join(file).to_str().unwrap().to_owned();
    }
    let daemon = Daemon::spawn(&args, &[]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.stand_in.issued().len() == 1
    });

    fixture
        .stand_in
        .accept(&fixture.client_id, "sekrit-renamed");
    std::fs::write(dir.join(".next"), "sekrit-renamed\n").unwrap();
    std::fs::rename(dir.join(".next"), dir.join("client_secret")).unwrap();
    eventually(
        "the renamed-over secret in use",
        Duration::from_secs(2),
        || fixture.stand_in.issued().len() == 2,
    );

    fixture
        .stand_in
        .accept(&fixture.client_id, "sekrit-rewritten");
    std::fs::write(dir.join("client_secret"), "sekrit-rewritten").unwrap();
    eventually(
        "the rewritten secret in use",
        Duration::from_secs(2),
        || fixture.stand_in.issued().len() == 3,
    );

    std::fs::remove_file(dir.join("client_secret")).unwrap();
    eventually(
        "a warning about the missing file",
        Duration::from_secs(2),
        || daemon.logs_contain("keeping the previous credentials"),
    );
    daemon.signal("HUP");
    eventually(
        "a refresh with the kept credentials",
        Duration::from_secs(2),
        || fixture.stand_in.issued().len() == 4,
    );
    let logs = daemon.logs().join("\n");
    for secret in ["sekrit-renamed", "sekrit-rewritten"] {
        assert!(!logs.contains(secret));
    }
    fixture.assert_logs_clean(&daemon);
}

/// Sets a failure as the stand-in's answer, forces a refresh and waits for it to be counted
/// under `metric`; the file must still hold the last good token.
fn fail_once(fixture: &Fixture, daemon: &mut Daemon, behaviour: Behaviour, metric: &str) {
    let good = fixture
        .read_token()
        .expect("a good token before the failure");
    let before = daemon.metric(metric);
    fixture.stand_in.set_default(behaviour.clone());
    daemon.signal("HUP");
    eventually(
        &format!("{behaviour:?} counted as {metric}"),
        Duration::from_secs(5),
        || daemon.metric(metric) > before,
    );
    assert_eq!(
        fixture.read_token().as_ref(),
        Some(&good),
        "{behaviour:?} replaced the good token"
    );
    let issued = fixture.stand_in.issued().len();
    fixture
        .stand_in
        .set_default(Behaviour::Issue { expires_in: 900 });
    daemon.signal("HUP");
    eventually("recovery after the failure", Duration::from_secs(5), || {
        fixture.stand_in.issued().len() > issued
            && fixture.read_token() == fixture.stand_in.issued().last().cloned()
    });
}

#[test]
fn unusable_answers_are_invalid_responses_and_never_written() {
    let fixture = Fixture::new("invalid", 900);
    let mut daemon = fixture.spawn(&["--backoff-initial", "100ms", "--backoff-max", "2s"]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    for body in [
        "not json",
        r#"{"expires_in":900}"#,
        r#"{"token":"","expires_in":900}"#,
        r#"{"token":"two words","expires_in":900}"#,
        r#"{"token":"t"}"#,
        r#"{"token":"t","expires_in":0}"#,
        r#"{"token":"t","expires_in":-5}"#,
        r#"{"token":"t","expires_in":99999999}"#,
    ] {
        fail_once(
            &fixture,
            &mut daemon,
            Behaviour::Body(body.to_owned()),
            INVALID,
        );
    }
    fail_once(
        &fixture,
        &mut daemon,
        Behaviour::Oversized(200_000),
        INVALID,
    );
    fail_once(
        &fixture,
        &mut daemon,
        Behaviour::Redirect(ELSEWHERE_PATH.to_owned()),
        INVALID,
    );
    fail_once(
        &fixture,
        &mut daemon,
        Behaviour::Fail { status: 404 },
        INVALID,
    );
    assert!(
        fixture
            .stand_in
            .seen()
            .iter()
            .all(|s| s.path != ELSEWHERE_PATH),
        "a redirect was followed"
    );
    daemon.wait_log("which is not followed");
    daemon.wait_log("the token contains whitespace or control characters");
    fixture.assert_contract_kept();
    fixture.assert_logs_clean(&daemon);
}

/// Seconds between the stand-in's requests number `first` and `first + 1`.
fn gap_after(fixture: &Fixture, first: usize) -> f64 {
    let seen = fixture.stand_in.seen();
    seen[first + 1]
        .at
        .duration_since(seen[first].at)
        .as_secs_f64()
}

#[test]
fn transient_failures_back_off_and_keep_the_last_good_token() {
    let fixture = Fixture::new("transient", 900);
    let mut daemon = fixture.spawn(&[
        "--backoff-initial",
        "100ms",
        "--backoff-max",
        "3s",
        "--request-timeout",
        "1s",
    ]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    fail_once(
        &fixture,
        &mut daemon,
        Behaviour::Fail { status: 500 },
        TRANSIENT,
    );
    fail_once(
        &fixture,
        &mut daemon,
        Behaviour::Fail { status: 503 },
        TRANSIENT,
    );
    fail_once(&fixture, &mut daemon, Behaviour::Hang, TRANSIENT);
    // Fiskil's error id is logged.
    daemon.wait_log("err_stand_in_500");

    let before = fixture.stand_in.seen().len();
    fixture.stand_in.set_default(Behaviour::RetryAfter {
        status: 429,
        value: "2".to_owned(),
    });
    daemon.signal("HUP");
    eventually("two throttled requests", Duration::from_secs(8), || {
        fixture.stand_in.seen().len() >= before + 2
    });
    // The lower bound is the promise; the upper one only catches a retry that waited for
    // something else, with room for a busy machine.
    let gap = gap_after(&fixture, before);
    assert!(
        (1.95..4.5).contains(&gap),
        "Retry-After: 2 was followed by a retry after {gap:.3} s"
    );
    fixture
        .stand_in
        .set_default(Behaviour::Issue { expires_in: 900 });
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn rejected_credentials_retry_slowly_and_at_once_on_rotation() {
    let mut fixture = Fixture::new("rejected", 900);
    let mut daemon = fixture.spawn(&["--backoff-initial", "100ms", "--backoff-max", "2s"]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    let good = fixture.read_token();
    fixture.stand_in.accept("someone-else", "not-ours");
    let before = fixture.stand_in.seen().len();
    daemon.signal("HUP");
    eventually("two rejected requests", Duration::from_secs(6), || {
        fixture.stand_in.seen().len() >= before + 2
    });
    let gap = gap_after(&fixture, before);
    assert!(
        (1.95..4.5).contains(&gap),
        "rejected credentials retried after {gap:.3} s, not --backoff-max"
    );
    // The stand-in sees a request before the daemon has counted its answer.
    eventually("two rejections counted", Duration::from_secs(10), || {
        daemon.metric(REJECTED) >= 2.0
    });
    assert_eq!(fixture.read_token(), good);
    daemon.wait_log("err_stand_in_401");
    daemon.wait_log("rejected the credentials");

    // Rejected credentials are retried after --backoff-max (2 s) at the earliest; the rotation
    // is used at once, before that retry would come.
    fixture.rotate("client-fixed", "sekrit-fixed-credentials");
    let rejected_so_far = fixture.stand_in.seen().len();
    eventually(
        "a token after the rotation",
        Duration::from_secs(10),
        || fixture.stand_in.issued().len() == 2,
    );
    let seen = fixture.stand_in.seen();
    let first_new = seen
        .iter()
        .position(|s| s.client_id.as_deref() == Some("client-fixed"))
        .unwrap();
    // A retry already under way when the files changed may still go out; a second one would
    // mean the rotation waited for the retry schedule.
    assert!(
        first_new <= rejected_so_far + 1,
        "the rotated credentials waited for the retry schedule"
    );
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn readiness_turns_false_after_expiry_and_the_file_stays() {
    let fixture = Fixture::new("expiry", 2);
    let mut daemon = fixture.spawn(&["--backoff-initial", "100ms", "--backoff-max", "500ms"]);
    eventually("ready", Duration::from_secs(10), || {
        daemon.get("/readyz").0 == 200
    });
    fixture
        .stand_in
        .set_default(Behaviour::Fail { status: 500 });
    let failing = Instant::now();
    eventually("not ready after expiry", Duration::from_secs(4), || {
        daemon.get("/readyz").0 == 503
    });
    assert!(
        failing.elapsed() > Duration::from_millis(500),
        "unready before the token expired"
    );
    let (_, body) = daemon.get("/readyz");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert!(ready["expires_at"].is_string());
    assert_eq!(
        daemon.get("/healthz").0,
        200,
        "the loop is alive while failing"
    );
    assert_eq!(
        fixture.read_token(),
        fixture.stand_in.issued().last().cloned()
    );
    fixture
        .stand_in
        .set_default(Behaviour::Issue { expires_in: 2 });
    eventually("ready again", Duration::from_secs(3), || {
        daemon.get("/readyz").0 == 200
    });
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn not_ready_before_the_first_token() {
    let fixture = Fixture::new("unready", 900);
    fixture.stand_in.set_default(Behaviour::Hang);
    let mut daemon = fixture.spawn(&[]);
    let (code, body) = daemon.get("/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("\"ready\":false"), "{body}");
    assert_eq!(daemon.get("/healthz").0, 200);
    assert!(fixture.read_token().is_none());
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn sigterm_exits_zero_promptly_without_temp_files() {
    let fixture = Fixture::new("sigterm", 900);
    let mut daemon = fixture.spawn(&[]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    fixture.stand_in.set_default(Behaviour::Hang);
    daemon.signal("HUP");
    eventually("a hanging request", Duration::from_secs(5), || {
        fixture.stand_in.seen().len() == 2
    });
    let asked = Instant::now();
    daemon.signal("TERM");
    let status = daemon
        .wait_exit(Duration::from_secs(5))
        .expect("exit within 5 s");
    assert_eq!(status.code(), Some(0));
    eprintln!("stopped {:?} after SIGTERM", asked.elapsed());
    let files: Vec<_> = std::fs::read_dir(&fixture.out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, vec![std::ffi::OsString::from("token")]);
    assert_eq!(
        fixture.read_token(),
        fixture.stand_in.issued().first().cloned()
    );
    daemon.wait_log("\"signal\":\"SIGTERM\"");
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn once_exit_codes() {
    let fixture = Fixture::new("once", 900);
    let mut ok = fixture.spawn(&["--once", "--token-format", "json"]);
    assert_eq!(
        ok.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    let written: serde_json::Value = serde_json::from_str(&fixture.read_token().unwrap()).unwrap();
    assert_eq!(written["token"], fixture.stand_in.issued()[0]);
    assert_eq!(written["expires_in"], 900);
    fixture.assert_logs_clean(&ok);

    fixture
        .stand_in
        .set_default(Behaviour::IssueAccessToken { expires_in: 60 });
    let mut ok = fixture.spawn(&["--once"]);
    assert_eq!(
        ok.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    assert_eq!(
        fixture.read_token(),
        fixture.stand_in.issued().last().cloned()
    );

    fixture
        .stand_in
        .set_default(Behaviour::Fail { status: 401 });
    let requests = fixture.stand_in.seen().len();
    let mut rejected = fixture.spawn(&["--once"]);
    assert_eq!(
        rejected.wait_exit(Duration::from_secs(20)).unwrap().code(),
        Some(1)
    );
    assert_eq!(
        fixture.stand_in.seen().len(),
        requests + 1,
        "rejected credentials were retried"
    );

    fixture
        .stand_in
        .set_default(Behaviour::Fail { status: 500 });
    let started = Instant::now();
    let mut transient = fixture.spawn(&[
        "--once",
        "--once-timeout",
        "2s",
        "--backoff-initial",
        "100ms",
    ]);
    assert_eq!(
        transient.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(1)
    );
    let took = started.elapsed();
    assert!(
        took > Duration::from_millis(1200) && took < Duration::from_secs(10),
        "gave up after {took:?}"
    );
    transient.wait_log("no token within --once-timeout");
    fixture.assert_logs_clean(&transient);
}

#[test]
fn configuration_errors_exit_two_and_send_nothing() {
    let fixture = Fixture::new("config", 900);
    let http_url = format!(
        "http://localhost:{}/v1/token",
        fixture.stand_in.addr().port()
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--token-url", &http_url], "uses http://"),
        (
            vec![
                "--token-url",
                "http://example.com/t",
                "--insecure-allow-http",
            ],
            "only allows loopback",
        ),
        (
            vec!["--refresh-ratio", "1.5"],
            "--refresh-ratio must be between 0 and 1",
        ),
        (
            vec!["--client-secret-file", "/nonexistent/client_secret"],
            "/nonexistent/client_secret",
        ),
        (
            vec!["--token-file", "/nonexistent/dir/token"],
            "does not exist",
        ),
        (
            vec!["--ca-file", "/nonexistent/ca.pem"],
            "--ca-file /nonexistent/ca.pem",
        ),
        (vec!["--backoff-max", "soon"], "backoff-max"),
    ];
    for (extra, message) in cases {
        let mut daemon = fixture.spawn(&extra);
        let status = daemon.wait_exit(Duration::from_secs(10)).expect("exits");
        assert_eq!(status.code(), Some(2), "{extra:?}");
        assert!(
            daemon.logs_contain(message),
            "{extra:?}: {:?}",
            daemon.logs()
        );
        let lines = daemon.logs();
        assert!(
            lines.len() <= 3,
            "{extra:?} printed more than a short error: {lines:?}"
        );
    }
    let empty = fixture.dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let mut daemon = fixture.spawn(&["--client-id-file", empty.to_str().unwrap()]);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(2)
    );
    daemon.wait_log("is empty");

    let mut args = fixture.base_args();
    args.retain(|a| !a.contains("client_secret"));
    let at = args
        .iter()
        .position(|a| a == "--client-secret-file")
        .unwrap();
    args.remove(at);
    let mut twice = Daemon::spawn(
        &[args, vec!["--client-secret-file".into(), "/x".into()]].concat(),
        &[("FISKIL_CLIENT_SECRET", "sekrit-env")],
    );
    assert_eq!(
        twice.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(2)
    );
    twice.wait_log("given twice");
    assert!(!twice.logs_contain("sekrit-env"));
    assert!(
        fixture.stand_in.seen().is_empty(),
        "a request was sent despite a configuration error"
    );
}

#[test]
fn credentials_from_the_environment_work() {
    let fixture = Fixture::new("envcreds", 900);
    let mut args = fixture.base_args();
    for flag in ["--client-id-file", "--client-secret-file"] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args.drain(at..at + 2);
    }
    args.push("--once".into());
    let mut daemon = Daemon::spawn(
        &args,
        &[
            ("FISKIL_CLIENT_ID", &fixture.client_id),
            ("FISKIL_CLIENT_SECRET", &fixture.client_secret),
        ],
    );
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    assert_eq!(
        fixture.read_token(),
        fixture.stand_in.issued().first().cloned()
    );
    fixture.assert_logs_clean(&daemon);
}

/// Read syscalls the process has made so far.
fn read_syscalls(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("syscr: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn an_idle_daemon_watching_credential_files_stays_idle() {
    let fixture = Fixture::new("idle", 900);
    let dir = fixture.dir.path().join("plain");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("client_id"), &fixture.client_id).unwrap();
    std::fs::write(dir.join("client_secret"), &fixture.client_secret).unwrap();
    let (id_file, secret_file) = (dir.join("client_id"), dir.join("client_secret"));
    let daemon = fixture.spawn(&[
        "--credentials-poll-interval",
        "1s",
        "--client-id-file",
        id_file.to_str().unwrap(),
        "--client-secret-file",
        secret_file.to_str().unwrap(),
    ]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    std::thread::sleep(Duration::from_millis(2500));
    let before = read_syscalls(daemon.pid());
    std::thread::sleep(Duration::from_secs(3));
    let reads = read_syscalls(daemon.pid()) - before;
    eprintln!("{reads} read syscalls in 3 idle seconds");
    assert!(
        reads <= 30,
        "{reads} read syscalls in 3 idle seconds: the credential watch is busy"
    );
    assert_eq!(fixture.stand_in.issued().len(), 1);
    fixture.assert_logs_clean(&daemon);
}
