//! The real binary under the conditions that once broke it: a hot retry loop on
//! `Retry-After: 0`, outputs it cannot write, odd files, proxies, trust bundles, a stalled
//! Kubernetes API, and readiness while shutting down.

mod support;

use std::time::Duration;

use support::fake_api::{ApiMode, FakeApi};
use support::{eventually, Daemon, Fixture};

/// Starts the daemon with the fixture's arguments plus `extra`, and `env`.
fn spawn_with_env(fixture: &Fixture, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
    Daemon::spawn(&fixture.args_with(extra), env)
}

/// A daemon with a Secret output whose next apply never returns, so the drain after SIGTERM
/// waits in its writer phase; the API server and the fixture stay alive with it.
fn daemon_with_a_hanging_apply(name: &str) -> (Fixture, FakeApi, Daemon) {
    let fixture = Fixture::new(name, 900);
    let api = FakeApi::start(ApiMode::Ok);
    let kubeconfig = fixture.dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let mut daemon = spawn_with_env(
        &fixture,
        &["--secret-name", "token", "--secret-namespace", "team"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    eventually("ready", Duration::from_secs(20), || {
        daemon.get("/readyz").0 == 200
    });
    api.set_mode(ApiMode::Hang);
    let applies = api.requests();
    daemon.signal("HUP");
    eventually("the hanging apply", Duration::from_secs(20), || {
        api.requests() > applies
    });
    (fixture, api, daemon)
}

#[test]
fn readiness_fails_from_the_moment_shutdown_begins() {
    let (fixture, _api, mut daemon) = daemon_with_a_hanging_apply("shutdown-ready");
    assert_eq!(
        daemon.get("/readyz").0,
        200,
        "the Secret still holds a token"
    );
    daemon.signal("TERM");
    eventually("the stopping log line", Duration::from_secs(10), || {
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
fn a_second_stop_signal_abandons_the_drain_and_exits_one() {
    let (_fixture, _api, mut daemon) = daemon_with_a_hanging_apply("shutdown-abort");
    daemon.signal("TERM");
    eventually("the stopping log line", Duration::from_secs(10), || {
        daemon.logs_contain("\"stopping\"")
    });
    daemon.signal("TERM");
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("exits at the second signal");
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(daemon.logs_contain("second stop signal; exiting now"));
    assert!(daemon.logs_contain("exiting before the drain finished"));
    assert!(
        !daemon.logs_contain("\"stopped\""),
        "the drain did not run to its end"
    );
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
    eventually("the first token", Duration::from_secs(10), || {
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
    eventually("a token after healing", Duration::from_secs(30), || {
        fixture.stand_in.issued().len() > issued
    });
    let took = healed.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "a token came back {took:?} after the endpoint healed (--backoff-max-expired 2s)"
    );
    fixture.assert_logs_clean(&daemon);
}

/// Whether the tests run as root, which the ones that switch users or mount need.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"))
}

/// Runs the daemon through `wrapper` and expects exit 2 with one error line containing each
/// of `needles`, and no token request sent.
fn expect_config_error(fixture: &Fixture, wrapper: &[&str], extra: &[&str], needles: &[&str]) {
    let mut daemon = Daemon::spawn_wrapped(wrapper, &fixture.args_with(extra), &[]);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("exits instead of hanging or retrying");
    let logs = daemon.logs().join("\n");
    assert_eq!(status.code(), Some(2), "{logs}");
    for needle in needles {
        assert!(logs.contains(needle), "no {needle:?} in: {logs}");
    }
    assert!(
        fixture.stand_in.seen().is_empty(),
        "a token request was sent"
    );
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn an_unwritable_token_file_fails_at_start_and_says_why() {
    if !is_root() {
        eprintln!("skipped: switching users and mounting need root");
        return;
    }
    let fixture = Fixture::new("unwritable", 900);
    let out = fixture.out.to_str().unwrap().to_owned();
    let token = fixture.token_file().to_str().unwrap().to_owned();

    // Another user, a directory it may not write: the pod without the right fsGroup.
    expect_config_error(
        &fixture,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
        &[],
        &["cannot write --token-file", "as uid 65534", "fsGroup"],
    );

    // A read-only volume, mounted in a private mount namespace that vanishes with the process.
    let ro = format!("mount -t tmpfs -o ro fiskil-ro {out} && exec \"$@\"");
    expect_config_error(
        &fixture,
        &["unshare", "--mount", "--", "sh", "-c", &ro, "sh"],
        &[],
        &["read-only file system", "mount a writable volume"],
    );

    // A file bind-mounted on its own, as a subPath mount does: rename over it fails.
    std::fs::write(fixture.token_file(), "old").unwrap();
    let source = fixture.dir.path().join("bound");
    std::fs::write(&source, "old").unwrap();
    let bind = format!(
        "mount --bind {} {token} && exec \"$@\"",
        source.to_str().unwrap()
    );
    expect_config_error(
        &fixture,
        &["unshare", "--mount", "--", "sh", "-c", &bind, "sh"],
        &[],
        &["a mount point of its own (a subPath mount?)"],
    );
    std::fs::remove_file(fixture.token_file()).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&fixture.out).unwrap().collect();
    assert!(leftovers.is_empty(), "probe files left: {leftovers:?}");
}

#[test]
fn the_start_up_probe_keeps_an_existing_token_file_as_it_was() {
    let fixture = Fixture::new("probe-keeps", 900);
    fixture
        .stand_in
        .set_default(fiskil_stand_in::Behaviour::Hang);
    std::fs::write(fixture.token_file(), "tok-from-an-earlier-run").unwrap();
    let mut daemon = fixture.spawn(&[]);
    daemon.admin();
    assert_eq!(
        fixture.read_token().as_deref(),
        Some("tok-from-an-earlier-run")
    );
    let names: Vec<_> = std::fs::read_dir(&fixture.out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["token"], "probe files left behind");
}

#[test]
fn odd_files_are_refused_at_start_instead_of_hanging_or_being_replaced() {
    let fixture = Fixture::new("odd-files", 900);
    let fifo = fixture.dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let fifo = fifo.to_str().unwrap();
    expect_config_error(
        &fixture,
        &[],
        &["--client-secret-file", fifo],
        &["client_secret file", "is a FIFO, not a regular file"],
    );
    expect_config_error(
        &fixture,
        &[],
        &["--token-file", fifo],
        &[
            "is a FIFO, not a regular file",
            "point --token-file at a new path",
        ],
    );
    let kind = std::fs::symlink_metadata(fifo).unwrap().file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&kind),
        "the FIFO was replaced"
    );
    let big = fixture.dir.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    expect_config_error(
        &fixture,
        &[],
        &["--client-id-file", big.to_str().unwrap()],
        &["client_id file", "larger than 65536 bytes"],
    );
}

#[test]
fn a_token_that_outlives_nothing_names_the_minimum_interval() {
    let fixture = Fixture::new("short-lived", 1);
    let daemon = fixture.spawn(&["--min-refresh-interval", "2s"]);
    eventually("the warning", Duration::from_secs(10), || {
        daemon.logs_contain("--min-refresh-interval")
    });
    let warning = daemon
        .json_logs()
        .into_iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap_or("")
                .contains("--min-refresh-interval")
        })
        .unwrap();
    assert_eq!(warning["level"], "WARN");
    fixture.assert_logs_clean(&daemon);
}

/// A forward proxy on loopback: records every connection's first line and every byte it
/// relays, and tunnels `CONNECT host:port` to the stand-in's port on loopback.
struct Proxy {
    url: String,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Proxy {
    fn start(tunnel_to: u16) -> Proxy {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (l, b) = (lines.clone(), bytes.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let (l, b) = (l.clone(), b.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut first = String::new();
                    let _ = reader.read_line(&mut first);
                    l.lock().unwrap().push(first.trim().to_owned());
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                            break;
                        }
                    }
                    if !first.starts_with("CONNECT ") {
                        return;
                    }
                    let upstream = std::net::TcpStream::connect(("127.0.0.1", tunnel_to)).unwrap();
                    let mut client_w = client.try_clone().unwrap();
                    client_w
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .unwrap();
                    let relay =
                        |mut from: Box<dyn Read + Send>,
                         mut to: std::net::TcpStream,
                         seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>| {
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 8192];
                                while let Ok(n) = from.read(&mut buf) {
                                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                                }
                                let _ = to.shutdown(std::net::Shutdown::Write);
                            })
                        };
                    relay(Box::new(reader), upstream.try_clone().unwrap(), b.clone());
                    relay(Box::new(upstream), client_w, b).join().unwrap();
                });
            }
        });
        Proxy { url, lines, bytes }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn proxy_env(url: &str) -> Vec<(&'static str, String)> {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .map(|name| (name, url.to_owned()))
    .collect()
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn loopback_and_plain_http_endpoints_never_go_through_a_proxy() {
    let fixture = Fixture::new("no-proxy-loopback", 900);
    let proxy = Proxy::start(fixture.stand_in.addr().port());
    let env = proxy_env(&proxy.url);
    let https = Daemon::spawn(&fixture.args_with(&[]), &env_refs(&env));
    eventually("a token over loopback", Duration::from_secs(20), || {
        fixture.read_token().is_some()
    });
    // A plain-http loopback endpoint: a listener that only counts connections.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target_url = format!(
        "http://127.0.0.1:{}/v1/token",
        target.local_addr().unwrap().port()
    );
    target.set_nonblocking(true).unwrap();
    let other = Fixture::new("no-proxy-http", 900);
    let http = Daemon::spawn(
        &other.args_with(&["--token-url", &target_url, "--insecure-allow-http"]),
        &env_refs(&env),
    );
    eventually("the plain-http request", Duration::from_secs(20), || {
        target.accept().is_ok()
    });
    assert!(
        proxy.lines().is_empty(),
        "the proxy saw {:?}",
        proxy.lines()
    );
    fixture.assert_logs_clean(&https);
    other.assert_logs_clean(&http);
}

#[test]
fn a_remote_endpoint_goes_through_https_proxy_as_a_tunnel_and_no_proxy_is_honoured() {
    let fixture = Fixture::new("via-proxy", 900);
    let port = fixture.stand_in.addr().port();
    let proxy = Proxy::start(port);
    let remote = format!("https://fiskil.test:{port}/v1/token");
    for name in ["HTTPS_PROXY", "ALL_PROXY"] {
        let before = fixture.stand_in.issued().len();
        let env = [(name, proxy.url.as_str())];
        let daemon = Daemon::spawn(&fixture.args_with(&["--token-url", &remote]), &env);
        eventually("a token through the proxy", Duration::from_secs(20), || {
            fixture.stand_in.issued().len() > before
        });
        fixture.assert_logs_clean(&daemon);
    }
    let lines = proxy.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines
        .iter()
        .all(|l| l.starts_with(&format!("CONNECT fiskil.test:{port} "))));
    let relayed = proxy.bytes.lock().unwrap().clone();
    assert!(relayed.len() > 1000, "only {} bytes relayed", relayed.len());
    let secret = fixture.client_secret.as_bytes();
    assert!(
        !relayed.windows(secret.len()).any(|w| w == secret),
        "the proxy saw the client secret in clear text"
    );

    let env = [
        ("HTTPS_PROXY", proxy.url.as_str()),
        ("NO_PROXY", "example.org,fiskil.test"),
    ];
    let mut direct = Daemon::spawn(&fixture.args_with(&["--token-url", &remote]), &env);
    eventually("a direct attempt", Duration::from_secs(20), || {
        direct.metric(TRANSIENT) >= 1.0
    });
    assert_eq!(proxy.lines().len(), 2, "NO_PROXY was ignored");
}

const TRANSIENT: &str = "fiskil_token_refresher_refresh_total{result=\"transient\"}";

/// The fixture's arguments without `--ca-file`.
fn args_without_ca(fixture: &Fixture) -> Vec<String> {
    let mut args = fixture.args_with(&[]);
    let at = args.iter().position(|a| a == "--ca-file").unwrap();
    args.drain(at..at + 2);
    args
}

#[test]
fn trust_bundles_from_ssl_cert_file_and_ssl_cert_dir_are_trusted() {
    let fixture = Fixture::new("trust", 900);
    let args = args_without_ca(&fixture);
    let untrusted = Daemon::spawn(&args, &[]);
    eventually(
        "a certificate failure logged",
        Duration::from_secs(20),
        || untrusted.logs_contain("certificate"),
    );
    assert!(fixture.stand_in.issued().is_empty());
    drop(untrusted);

    let bundle_dir = fixture.dir.path().join("certs");
    std::fs::create_dir(&bundle_dir).unwrap();
    std::fs::write(bundle_dir.join("README"), "not a certificate").unwrap();
    std::fs::copy(&fixture.ca, bundle_dir.join("stand-in.pem")).unwrap();
    let ca = fixture.ca.to_str().unwrap().to_owned();
    for env in [
        [("SSL_CERT_FILE", ca.as_str())],
        [("SSL_CERT_DIR", bundle_dir.to_str().unwrap())],
    ] {
        let before = fixture.stand_in.issued().len();
        let daemon = Daemon::spawn(&args, &env);
        eventually(
            "a token trusted by the bundle",
            Duration::from_secs(20),
            || fixture.stand_in.issued().len() > before,
        );
        fixture.assert_logs_clean(&daemon);
    }

    let mut bad = Daemon::spawn(&args, &[("SSL_CERT_FILE", "/nonexistent/bundle.pem")]);
    let status = bad.wait_exit(Duration::from_secs(20)).unwrap();
    assert_eq!(status.code(), Some(2));
    bad.wait_log("cannot read SSL_CERT_FILE /nonexistent/bundle.pem");
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn the_health_server_is_dual_stack_and_bounded() {
    let fixture = Fixture::new("dual-stack", 900);
    let mut daemon = fixture.spawn(&["--listen", "[::]:0"]);
    let addr = daemon.admin();
    let port = addr.port();
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    if ipv6 {
        assert!(addr.is_ipv6(), "listening on {addr}");
        let (code, _) = support::http_get(format!("[::1]:{port}").parse().unwrap(), "/healthz");
        assert_eq!(code, 200, "over IPv6");
    } else {
        daemon.wait_log("listening on IPv4 only");
    }
    let (code, _) = support::http_get(format!("127.0.0.1:{port}").parse().unwrap(), "/healthz");
    assert_eq!(code, 200, "over IPv4");
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    // A client that never finishes its headers is cut off.
    use std::io::{Read, Write};
    let mut slow = std::net::TcpStream::connect(v4).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    assert!(
        read.is_ok(),
        "the half-sent request was still open after 30 s: {read:?}"
    );

    // Hundreds of idle connections: at most 64 are open at once (each newcomer closes the one
    // idle longest), and each is closed after the header-read timeout.
    let before = open_fds(daemon.pid());
    let idle: Vec<_> = (0..300)
        .map(|_| std::net::TcpStream::connect(v4).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = open_fds(daemon.pid());
    assert!(
        during <= before + 64,
        "{during} open descriptors with 300 idle clients (before: {before})"
    );
    drop(idle);
    eventually("served again", Duration::from_secs(60), || {
        support::http_get(v4, "/healthz").0 == 200
    });
    assert_eq!(daemon.get("/nope").0, 404);
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn secret_applies_are_bounded_never_retried_behind_the_outputs_back_and_follow_kubeconfig() {
    let fixture = Fixture::new("kube-client", 900);
    let api = FakeApi::start(ApiMode::Fail(503));
    let kubeconfig = fixture.dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    // In a pod the in-cluster variables are set; an explicit KUBECONFIG still wins.
    let env = [
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", "1"),
    ];
    let mut daemon = spawn_with_env(
        &fixture,
        &[
            "--secret-name",
            "token",
            "--secret-namespace",
            "team",
            "--backoff-initial",
            "200ms",
            "--request-timeout",
            "1s",
        ],
        &env,
    );
    eventually("three failed applies", Duration::from_secs(20), || {
        api.requests() >= 3
    });
    let errors =
        "fiskil_token_refresher_output_write_total{output=\"secret:team/token\",result=\"error\"}";
    // Each failed write is one request: kube's own retry layer would send several per write.
    eventually("the errors counted", Duration::from_secs(20), || {
        daemon.metric(errors) >= 3.0
    });
    // Requests counted first, failures after: every request counted then has failed by the
    // second reading or is the one still in flight.
    let sent = api.requests() as f64;
    let failed = daemon.metric(errors);
    assert!(
        sent <= failed + 1.0,
        "{sent} API requests for {failed} failed writes"
    );
    eventually("the 503 logged", Duration::from_secs(10), || {
        daemon.logs_contain("HTTP 503")
    });

    // A hanging API server: each apply gives up after --request-timeout.
    api.set_mode(ApiMode::Hang);
    eventually(
        "an apply cut off by the timeout",
        Duration::from_secs(30),
        || daemon.logs_contain("did not answer within --request-timeout"),
    );
    // The file output never waited for any of this.
    assert!(fixture.read_token().is_some());
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn a_storm_of_sighups_sends_one_token_request_per_min_refresh_interval() {
    let fixture = Fixture::new("sighup-storm", 900);
    let daemon = fixture.spawn(&["--min-refresh-interval", "30s"]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    for _ in 0..50 {
        daemon.signal("HUP");
    }
    std::thread::sleep(Duration::from_secs(3));
    let sent = fixture.token_requests();
    println!(
        "measured: {sent} token requests in all after 50 SIGHUPs within --min-refresh-interval"
    );
    assert!(
        sent <= 2,
        "{sent} token requests after 50 SIGHUPs within --min-refresh-interval 30s"
    );
    eventually("the folded request logged", Duration::from_secs(10), || {
        daemon.logs_contain("it waits for the next allowed request")
    });
    let folded = daemon
        .logs()
        .iter()
        .filter(|l| l.contains("it waits for the next allowed request"))
        .count();
    assert_eq!(folded, 1, "one log line for all the folded requests");
    fixture.assert_logs_clean(&daemon);
}

/// A thread of the daemon other than its main one, from /proc.
fn daemon_thread(daemon: &Daemon) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{}/task", daemon.pid()))
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .find(|tid| *tid != daemon.pid())
}

#[test]
fn a_pid_file_naming_a_thread_of_the_daemon_is_refused() {
    let fixture = Fixture::new("pid-own-thread", 900);
    let pid_file = fixture.dir.path().join("app.pid");
    let daemon = fixture.spawn(&[
        "--notify-signal",
        "HUP",
        "--notify-pid-file",
        pid_file.to_str().unwrap(),
    ]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    let thread = eventually(
        "a second thread in the daemon",
        Duration::from_secs(10),
        || daemon_thread(&daemon),
    );
    std::fs::write(&pid_file, format!("{thread}\n")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    daemon.signal("HUP");
    std::thread::sleep(Duration::from_secs(5));
    let sent = fixture.token_requests();
    println!("measured: {sent} token requests in all, 5 s after a SIGHUP with the pid file naming a daemon thread");
    assert!(
        sent <= 3,
        "{sent} token requests: the daemon signalled itself into a refresh loop"
    );
    eventually("the refusal", Duration::from_secs(10), || {
        daemon.logs_contain("the pid file names this daemon itself")
    });
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn a_fifo_as_the_pid_file_never_freezes_the_daemon() {
    let fixture = Fixture::new("pid-fifo", 900);
    let fifo = fixture.dir.path().join("app.pid");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let mut daemon = fixture.spawn(&[
        "--notify-signal",
        "HUP",
        "--notify-pid-file",
        fifo.to_str().unwrap(),
    ]);
    eventually("the first token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    std::thread::sleep(Duration::from_millis(500));
    let first = fixture.read_token();
    for _ in 0..8 {
        assert_eq!(daemon.get("/healthz").0, 200, "the daemon answers probes");
    }
    eventually("the refusal", Duration::from_secs(10), || {
        daemon.logs_contain("the pid file is not a regular file")
    });
    std::thread::sleep(Duration::from_millis(1500));
    daemon.signal("HUP");
    eventually("a refresh after SIGHUP", Duration::from_secs(10), || {
        fixture.read_token() != first
    });
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn a_kubeconfig_credential_plugin_is_refused_at_start_and_never_run() {
    let fixture = Fixture::new("kube-exec", 900);
    let api = FakeApi::start(ApiMode::Ok);
    let ran = fixture.dir.path().join("plugin-ran");
    let kubeconfig = fixture.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"http://{}\"}}}}]\n\
             users: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, \
             command: /bin/sh, args: [-c, \"touch {}\"], interactiveMode: Never}}}}}}]\n\
             contexts: [{{name: x, context: {{cluster: c, user: u, namespace: team}}}}]\ncurrent-context: x\n",
            api.addr,
            ran.display()
        ),
    )
    .unwrap();
    let mut daemon = spawn_with_env(
        &fixture,
        &["--secret-name", "token"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let status = daemon.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(2));
    daemon.wait_log(
        "authenticates with an exec credential plugin, which fiskil-token-refresher does not run",
    );
    assert!(daemon.logs().len() <= 3, "{:?}", daemon.logs());
    assert!(!ran.exists(), "the plugin ran");
    assert_eq!(api.requests(), 0);
}
