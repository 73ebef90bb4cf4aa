//! The ways the token reaches applications, run with the real binary and real programs:
//! notifications (a local HTTP receiver and nginx reloading on SIGHUP from its pid file), the
//! loopback token endpoint, and the authenticating proxy driven by curl and Python's urllib
//! against the stand-in's API side, which accepts only tokens it issued and can revoke them.
//!
//! Tests that need nginx, curl or python3 print `SKIP` when one is missing, unless
//! `FISKIL_REQUIRE_TOOLS=1` (as CI sets) makes that a failure.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fiskil_stand_in::api::{fnv1a, pattern_byte, FNV_START};
use fiskil_stand_in::Behaviour;
use serde_json::Value;
use support::{eventually, Daemon, Fixture};

const TEN_MIB: usize = 10 * 1024 * 1024;

/// nginx lives in /usr/sbin, which is not on every user's PATH.
fn nginx() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// True if `program` runs; else prints SKIP, or fails when CI requires the tools.
fn have(program: &str, version_flag: &str) -> bool {
    let found = Command::new(program)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("FISKIL_REQUIRE_TOOLS").is_err(),
            "{program} is required (FISKIL_REQUIRE_TOOLS is set); install it, e.g. apt-get install {program}"
        );
        eprintln!("SKIP: {program} is not installed");
    }
    found
}

/// The address a feature listens on, from its `listening` log line.
fn listening(daemon: &Daemon, flag: &str) -> SocketAddr {
    eventually("the listener to start", Duration::from_secs(10), || {
        daemon
            .json_logs()
            .iter()
            .any(|l| l["message"] == "listening" && l["flag"] == flag)
    });
    daemon
        .json_logs()
        .into_iter()
        .find(|l| l["message"] == "listening" && l["flag"] == flag)
        .unwrap()["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// One HTTP/1.1 request on a fresh connection; returns status, lower-cased headers and body.
fn request(addr: SocketAddr, head: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "{head}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn token_endpoint_answers_the_current_token_on_loopback_only() {
    let fixture = Fixture::new("token-endpoint", 900);
    fixture
        .stand_in
        .set_default(Behaviour::Fail { status: 503 });
    let daemon = fixture.spawn(&[
        "--token-listen",
        "127.0.0.1:0",
        "--backoff-initial",
        "100ms",
        "--backoff-max",
        "200ms",
    ]);
    let addr = listening(&daemon, "--token-listen");

    let (status, headers, body) = request(addr, "GET /token HTTP/1.1\r\nHost: 127.0.0.1");
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(error["error"]
        .as_str()
        .unwrap()
        .contains("no unexpired token"));

    fixture
        .stand_in
        .set_default(Behaviour::Issue { expires_in: 900 });
    eventually("a token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    let issued = fixture.stand_in.issued()[0].clone();
    let (status, headers, body) = request(addr, "GET /token HTTP/1.1\r\nHost: 127.0.0.1");
    assert_eq!(status, 200);
    assert_eq!(body, issued, "text/plain, without a newline");
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/plain"));

    let (status, headers, body) = request(
        addr,
        "GET /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json",
    );
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["token"], issued);
    let expires_in = json["expires_in"].as_u64().unwrap();
    assert!((800..=900).contains(&expires_in), "{expires_in}");
    assert!(json["expires_at"].as_str().unwrap().ends_with('Z'));

    let (status, _, _) = request(addr, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1");
    assert_eq!(status, 404, "the token endpoint serves /token only");
    fixture.assert_logs_clean(&daemon);

    let mut busy = fixture.spawn(&["--token-listen", &addr.to_string()]);
    let exit = busy.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(exit.code(), Some(2));
    assert!(
        busy.logs_contain(&format!("cannot listen on --token-listen {addr}")),
        "{:?}",
        busy.logs()
    );

    for (flag, addr) in [
        ("--token-listen", "0.0.0.0:0"),
        ("--proxy-listen", "10.0.0.1:8080"),
    ] {
        let mut refused = fixture.spawn(&[flag, addr]);
        let exit = refused.wait_exit(Duration::from_secs(10)).expect("exit");
        assert_eq!(exit.code(), Some(2));
        let logs = refused.logs();
        assert_eq!(logs.len(), 1, "one line: {logs:?}");
        assert!(
            logs[0].contains(flag) && logs[0].contains("not a loopback address"),
            "{logs:?}"
        );
    }
}

/// Each notification body received, with the token file's content when it arrived.
type Received = Arc<Mutex<Vec<(Value, String)>>>;

/// A loopback HTTP server that records each POST body with the token file's content at
/// that moment, and answers with `status_line` (e.g. `204 No Content`).
fn notification_receiver(token_file: PathBuf, status_line: &'static str) -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let file = std::fs::read_to_string(&token_file).unwrap_or_default();
            if let Ok(json) = serde_json::from_slice(&body) {
                sink.lock().unwrap().push((json, file));
            }
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 {status_line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (addr, received)
}

#[test]
fn notify_url_is_posted_after_each_token_is_written() {
    let fixture = Fixture::new("notify-url", 3);
    let (addr, received) = notification_receiver(fixture.token_file(), "204 No Content");
    let (failing, attempts) =
        notification_receiver(fixture.token_file(), "503 Service Unavailable");
    let mut args = fixture.base_args();
    args.extend([
        "--notify-url".to_owned(),
        format!("http://{addr}/token-changed?src=fiskil"),
        "--notify-url".to_owned(),
        format!("http://{failing}/reload"),
    ]);
    let mut daemon = Daemon::spawn(&args, &[]);
    eventually("three notifications", Duration::from_secs(30), || {
        received.lock().unwrap().len() >= 3
    });
    let issued = fixture.stand_in.issued();
    let received = received.lock().unwrap().clone();
    let mut previous = String::new();
    for (json, file) in &received {
        assert!(issued.contains(file), "the file held an issued token");
        assert_ne!(file, &previous, "each notification follows a new token");
        previous = file.clone();
        assert_eq!(json["file"], fixture.token_file().to_str().unwrap());
        let expires_at = humantime::parse_rfc3339(json["expires_at"].as_str().unwrap()).unwrap();
        let issued_at = humantime::parse_rfc3339(json["issued_at"].as_str().unwrap()).unwrap();
        assert_eq!(
            expires_at.duration_since(issued_at).unwrap(),
            Duration::from_secs(3)
        );
        let text = json.to_string();
        assert!(!issued.iter().any(|t| text.contains(t.as_str())));
    }
    // The receiver records a body before it answers; the daemon counts the answer after.
    eventually("three successes counted", Duration::from_secs(10), || {
        daemon.metric("fiskil_token_refresher_notify_total{kind=\"url\",result=\"success\"}") >= 3.0
    });
    // The failing URL: retried (at most 4 attempts per token), and a newer token replaces the
    // notification being retried (tokens come every ~2.4 s; the 4th attempt would be at 5.25 s).
    eventually("attempts for three tokens", Duration::from_secs(30), || {
        let attempts = attempts.lock().unwrap();
        let mut tokens: Vec<String> = attempts
            .iter()
            .map(|(j, _)| j["expires_at"].to_string())
            .collect();
        tokens.dedup();
        tokens.len() >= 3
    });
    let order: Vec<String> = attempts
        .lock()
        .unwrap()
        .iter()
        .map(|(json, _)| json["expires_at"].as_str().unwrap().to_owned())
        .collect();
    let mut runs: Vec<(String, usize)> = Vec::new();
    for expires_at in order {
        match runs.last_mut() {
            Some((last, count)) if *last == expires_at => *count += 1,
            _ => {
                assert!(
                    runs.iter().all(|(seen, _)| *seen < expires_at),
                    "an older token's notification came after a newer one's"
                );
                runs.push((expires_at, 1));
            }
        }
    }
    assert!(runs.iter().all(|(_, count)| *count <= 4), "{runs:?}");
    assert!(
        runs[..runs.len() - 1].iter().any(|(_, count)| *count < 4),
        "a notification still being retried was replaced by the newer token's: {runs:?}"
    );
    eventually(
        "three failed notifications counted",
        Duration::from_secs(10),
        || {
            daemon.metric("fiskil_token_refresher_notify_total{kind=\"url\",result=\"error\"}")
                >= 3.0
        },
    );
    daemon.wait_log("notification failed");
    assert!(
        !daemon.logs_contain("src=fiskil"),
        "URLs are logged without their query"
    );
    fixture.assert_logs_clean(&daemon);
}

/// nginx as a server that reloads on SIGHUP: writes its pid file, logs each signal.
struct Nginx {
    prefix: PathBuf,
}

impl Nginx {
    fn start(prefix: &Path) -> Nginx {
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let conf = format!(
            "pid {pid};\nerror_log {log} notice;\nevents {{ worker_connections 16; }}\n\
             http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};\n\
             fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
             server {{ listen 127.0.0.1:{port}; return 200 \"ok\"; }} }}\n",
            pid = prefix.join("nginx.pid").display(),
            log = prefix.join("logs/error.log").display(),
            tmp = prefix.display(),
            port = free_port(),
        );
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        let nginx = Nginx {
            prefix: prefix.to_owned(),
        };
        nginx.run(&[]);
        eventually("nginx's pid file", Duration::from_secs(10), || {
            nginx.pid_file().exists()
        });
        nginx
    }

    fn run(&self, extra: &[&str]) {
        let status = Command::new(nginx())
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(self.prefix.join("nginx.conf"))
            .args(extra)
            .stderr(Stdio::null())
            .status()
            .expect("run nginx");
        assert!(status.success(), "nginx {extra:?} failed");
    }

    fn pid_file(&self) -> PathBuf {
        self.prefix.join("nginx.pid")
    }

    /// The pids that sent nginx a SIGHUP, in order.
    fn reloads_from(&self) -> Vec<u32> {
        std::fs::read_to_string(self.prefix.join("logs/error.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("signal 1 (SIGHUP) received"))
            .filter_map(|l| l.split("received from ").nth(1))
            .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }

    fn stop(&self) {
        if self.pid_file().exists() {
            self.run(&["-s", "quit"]);
            eventually("nginx to stop", Duration::from_secs(10), || {
                !self.pid_file().exists()
            });
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if self.pid_file().exists() {
            let _ = Command::new(nginx())
                .arg("-p")
                .arg(&self.prefix)
                .arg("-c")
                .arg(self.prefix.join("nginx.conf"))
                .args(["-s", "stop"])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[test]
fn without_a_token_file_each_new_token_notifies() {
    use support::fake_api::{ApiMode, FakeApi};
    let fixture = Fixture::new("notify-secret", 900);
    let api = FakeApi::start(ApiMode::Ok);
    let kubeconfig = fixture.dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let (addr, received) = notification_receiver(fixture.token_file(), "204 No Content");
    let mut args = fixture.base_args();
    let at = args.iter().position(|a| a == "--token-file").unwrap();
    args.drain(at..at + 2);
    args.extend(
        [
            "--secret-name",
            "token",
            "--secret-namespace",
            "team",
            "--notify-url",
            &format!("http://{addr}/token-changed"),
        ]
        .map(str::to_owned),
    );
    let daemon = Daemon::spawn(&args, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    eventually("the first notification", Duration::from_secs(30), || {
        !received.lock().unwrap().is_empty()
    });
    daemon.signal("HUP");
    eventually(
        "a notification for the second token",
        Duration::from_secs(30),
        || received.lock().unwrap().len() >= 2,
    );
    let issued = fixture.stand_in.issued();
    for (json, file) in received.lock().unwrap().iter() {
        assert!(json["file"].is_null(), "{json}");
        assert!(json["expires_at"].is_string(), "{json}");
        assert!(file.is_empty(), "no token file is written");
        let text = json.to_string();
        assert!(!issued.iter().any(|t| text.contains(t.as_str())));
    }
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn notify_signal_reloads_nginx_from_its_pid_file() {
    if !have(nginx(), "-v") {
        return;
    }
    let fixture = Fixture::new("notify-signal", 3);
    let prefix = fixture.dir.path().join("nginx");
    let pid_file = prefix.join("nginx.pid");
    let mut daemon = fixture.spawn(&[
        "--notify-signal",
        "SIGHUP",
        "--notify-pid-file",
        pid_file.to_str().unwrap(),
    ]);
    eventually("two tokens without nginx", Duration::from_secs(30), || {
        fixture.stand_in.issued().len() >= 2
    });
    let missing = |daemon: &Daemon| {
        daemon
            .logs()
            .iter()
            .filter(|l| l.contains("cannot signal the process") && l.contains("does not exist"))
            .count()
    };
    eventually(
        "the missing pid file warning",
        Duration::from_secs(10),
        || missing(&daemon) == 1,
    );
    assert_eq!(
        missing(&daemon),
        1,
        "one warning while the pid file is missing"
    );

    let nginx = Nginx::start(&prefix);
    eventually("two reloads of nginx", Duration::from_secs(30), || {
        nginx.reloads_from().len() >= 2
    });
    assert!(
        nginx.reloads_from().iter().all(|pid| *pid == daemon.pid()),
        "every SIGHUP came from the daemon: {:?}",
        nginx.reloads_from()
    );
    daemon.wait_log("signalled the process");
    eventually("two signals counted", Duration::from_secs(10), || {
        daemon.metric("fiskil_token_refresher_notify_total{kind=\"signal\",result=\"success\"}")
            >= 2.0
    });

    nginx.stop();
    let issued = fixture.stand_in.issued().len();
    eventually("two more tokens", Duration::from_secs(30), || {
        fixture.stand_in.issued().len() >= issued + 2
    });
    assert_eq!(
        missing(&daemon),
        2,
        "one more warning once nginx is gone, not one per token"
    );
    fixture.assert_logs_clean(&daemon);
}

/// The daemon with a proxy to the stand-in's API side.
fn proxy_daemon(fixture: &Fixture) -> (Daemon, SocketAddr) {
    fixture.stand_in.enable_api();
    let daemon = fixture.spawn(&[
        "--proxy-listen",
        "127.0.0.1:0",
        "--proxy-upstream",
        &fixture.stand_in.api_url(),
    ]);
    let addr = listening(&daemon, "--proxy-listen");
    (daemon, addr)
}

fn curl(args: &[&str]) -> (String, String) {
    let mut command = Command::new("curl");
    command.args(["--silent", "--show-error"]);
    if !args.contains(&"--proxy") {
        command.args(["--noproxy", "*"]);
    }
    let output = command.args(args).output().expect("run curl");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn fnv(data: &[u8]) -> String {
    format!("{:016x}", fnv1a(FNV_START, data))
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size as u64).map(pattern_byte).collect()
}

#[test]
fn proxy_forwards_curl_requests_with_the_token_and_refuses_forward_proxying() {
    if !have("curl", "--version") {
        return;
    }
    let fixture = Fixture::new("proxy-curl", 900);
    fixture
        .stand_in
        .set_default(Behaviour::Fail { status: 503 });
    let (daemon, addr) = proxy_daemon(&fixture);
    let base = format!("http://{addr}");

    let (out, _) = curl(&["-w", "\n%{http_code}", &format!("{base}/echo")]);
    assert!(out.ends_with("\n503"), "no token yet: {out}");
    assert!(out.contains("no unexpired token"), "{out}");
    assert!(
        fixture.stand_in.api_seen().is_empty(),
        "nothing sent without a token"
    );

    fixture
        .stand_in
        .set_default(Behaviour::Issue { expires_in: 900 });
    daemon.signal("HUP");
    eventually("a token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });

    // Headers and query strings; the client's Authorization and hop-by-hop headers stay here.
    let (out, err) = curl(&[
        "-H",
        "Authorization: Bearer from-the-application",
        "-H",
        "X-Request-Id: r-1",
        "-H",
        "Connection: keep-alive, X-Hop",
        "-H",
        "X-Hop: secret-hop",
        "-H",
        "Proxy-Authorization: Basic eDp5",
        &format!("{base}/echo/accounts?limit=5&cursor=a%20b"),
    ]);
    let echo: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out} {err}"));
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/echo/accounts");
    assert_eq!(echo["query"], "limit=5&cursor=a%20b");
    assert_eq!(echo["headers"]["x-request-id"], "r-1");
    for dropped in ["x-hop", "proxy-authorization", "connection"] {
        assert!(
            echo["headers"].get(dropped).is_none(),
            "{dropped} was forwarded"
        );
    }
    let seen = fixture.stand_in.api_seen();
    assert_eq!(
        seen.last().unwrap().token.as_deref(),
        fixture.read_token().as_deref()
    );

    // Response status and end-to-end headers come back; redirects are not followed.
    let (out, _) = curl(&["-D", "-", "-o", "/dev/null", &format!("{base}/redirect")]);
    let head = out.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 307"), "{out}");
    assert!(head.contains("location: /elsewhere"), "{out}");
    assert!(head.contains("x-stand-in: api"), "{out}");
    assert!(
        !fixture
            .stand_in
            .api_seen()
            .iter()
            .any(|s| s.path == "/elsewhere"),
        "the proxy followed a redirect"
    );

    // 10 MiB each way: an upload with a length, a chunked upload, a chunked download.
    let upload = fixture.dir.path().join("upload.bin");
    let data = pattern(TEN_MIB);
    std::fs::write(&upload, &data).unwrap();
    let at_upload = format!("@{}", upload.display());
    for extra in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let mut args = vec![
            "--data-binary",
            &at_upload,
            "-H",
            "Content-Type: application/octet-stream",
        ];
        args.extend_from_slice(extra);
        let url = format!("{base}/echo/upload");
        args.push(&url);
        let (out, err) = curl(&args);
        let echo: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out} {err}"));
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["body_bytes"], TEN_MIB as u64, "{extra:?}");
        assert_eq!(echo["body_fnv1a"], fnv(&data), "{extra:?}");
        if extra.is_empty() {
            assert_eq!(echo["headers"]["content-length"], TEN_MIB.to_string());
        } else {
            assert_eq!(echo["headers"]["transfer-encoding"], "chunked");
        }
    }
    for query in ["", "?chunked=1"] {
        let download = fixture.dir.path().join("download.bin");
        let (_, err) = curl(&[
            "-o",
            download.to_str().unwrap(),
            &format!("{base}/download/{TEN_MIB}{query}"),
        ]);
        let got = std::fs::read(&download).unwrap_or_default();
        assert_eq!(got.len(), TEN_MIB, "{query} {err}");
        assert!(got == data, "the download arrived intact ({query})");
    }

    let reached = fixture.stand_in.api_seen().len();
    // Not an open proxy: absolute-form for another host and CONNECT are refused.
    let (out, _) = curl(&[
        "-w",
        "\n%{http_code}",
        "--proxy",
        &base,
        "http://example.com/echo",
    ]);
    assert!(out.ends_with("\n400"), "{out}");
    let (_, err) = curl(&["--proxy", &base, "--proxytunnel", "https://example.com/"]);
    assert!(err.contains("405"), "CONNECT refused: {err}");
    let (status, _, _) = request(
        addr,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443",
    );
    assert_eq!(status, 405);
    assert_eq!(
        fixture.stand_in.api_seen().len(),
        reached,
        "refused requests never reached the upstream"
    );

    let logs = daemon.json_logs();
    let line = logs
        .iter()
        .find(|l| l["message"] == "proxied" && l["path"] == "/echo/accounts")
        .expect("a log line per request");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 200);
    assert!(line["duration_ms"].as_f64().is_some());
    assert!(
        !daemon.logs_contain("cursor"),
        "no query strings in the logs"
    );
    assert!(
        !daemon.logs_contain("from-the-application"),
        "no header values in the logs"
    );
    assert!(!daemon.logs_contain("secret-hop"));
    fixture.assert_logs_clean(&daemon);
}

const PYTHON_CLIENT: &str = r#"
import concurrent.futures, json, sys, urllib.request
base, mode = sys.argv[1], sys.argv[2]
def call(path, data=None, headers={}):
    req = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
if mode == "big":
    body = bytes(i % 251 for i in range(10 * 1024 * 1024))
    status, echo = call("/echo/python?x=1", body, {"Content-Type": "application/octet-stream"})
    status2, download = call("/download/%d?chunked=1" % len(body))
    print(json.dumps({"status": status, "echo": json.loads(echo), "download_ok": status2 == 200 and download == body}))
elif mode == "concurrent":
    n = int(sys.argv[3])
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda i: call("/echo/c%d" % i, b'{"n": %d}' % i, {"Content-Type": "application/json"}), range(n)))
    print(json.dumps([status for status, _ in results]))
elif mode == "one":
    status, body = call(sys.argv[3], sys.argv[4].encode() if len(sys.argv) > 4 else None)
    print(json.dumps({"status": status}))
"#;

fn python(base: &str, args: &[&str]) -> Value {
    let output = Command::new("python3")
        .args(["-c", PYTHON_CLIENT, base])
        .args(args)
        .env("NO_PROXY", "*")
        .output()
        .expect("run python3");
    let out = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&out)
        .unwrap_or_else(|_| panic!("{out} {}", String::from_utf8_lossy(&output.stderr)))
}

#[test]
fn proxy_refreshes_once_on_401_and_retries_python_clients() {
    if !have("python3", "--version") {
        return;
    }
    let fixture = Fixture::new("proxy-python", 900);
    let (mut daemon, addr) = proxy_daemon(&fixture);
    let base = format!("http://{addr}");
    eventually("a token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });

    let big = python(&base, &["big"]);
    assert_eq!(big["status"], 200, "{big}");
    assert_eq!(big["echo"]["body_bytes"], TEN_MIB as u64);
    assert_eq!(big["echo"]["body_fnv1a"], fnv(&pattern(TEN_MIB)));
    assert_eq!(big["echo"]["query"], "x=1");
    assert_eq!(big["download_ok"], true);

    // Revoked token, many concurrent small requests: one refresh, every request retried.
    let before = fixture.token_requests();
    fixture.stand_in.revoke_all();
    let statuses = python(&base, &["concurrent", "32"]);
    let statuses: Vec<u64> = serde_json::from_value(statuses).unwrap();
    assert_eq!(
        statuses,
        vec![200; 32],
        "every request retried with the new token"
    );
    assert_eq!(fixture.token_requests(), before + 1, "exactly one refresh");
    let unauthorized = fixture
        .stand_in
        .api_seen()
        .iter()
        .filter(|s| s.status == 401)
        .count();
    assert!((1..=32).contains(&unauthorized), "{unauthorized}");
    eventually(
        "the proxied requests counted",
        Duration::from_secs(10),
        || daemon.metric("fiskil_token_refresher_proxy_requests_total{code=\"200\"}") >= 33.0,
    );
    eventually(
        "the proxied durations counted",
        Duration::from_secs(10),
        || daemon.metric("fiskil_token_refresher_proxy_request_duration_seconds_count") >= 33.0,
    );

    // A body too large to keep is not retried: the 401 passes through (after the refresh
    // pause, so that a new refresh may be asked for).
    std::thread::sleep(Duration::from_secs(6));
    let before = fixture.token_requests();
    fixture.stand_in.revoke_all();
    let large = "x".repeat(100 * 1024);
    let answer = python(&base, &["one", "/echo/large", &large]);
    assert_eq!(answer["status"], 401, "{answer}");
    eventually(
        "the refresh the 401 asked for",
        Duration::from_secs(10),
        || fixture.token_requests() == before + 1,
    );
    eventually("the new token", Duration::from_secs(10), || {
        python(&base, &["one", "/echo/after"])["status"] == 200
    });
    assert_eq!(fixture.token_requests(), before + 1);
    daemon.wait_log("the upstream answered 401");
    fixture.assert_logs_clean(&daemon);
}

/// The time one request takes, with its status.
fn timed(addr: SocketAddr, head: &str) -> (u16, Duration) {
    let started = std::time::Instant::now();
    let (status, _, _) = request(addr, head);
    (status, started.elapsed())
}

#[test]
fn names_other_than_loopback_get_no_token_dns_rebinding() {
    let fixture = Fixture::new("rebinding", 900);
    fixture.stand_in.enable_api();
    let daemon = fixture.spawn(&[
        "--token-listen",
        "127.0.0.1:0",
        "--proxy-listen",
        "127.0.0.1:0",
        "--proxy-upstream",
        &fixture.stand_in.api_url(),
    ]);
    let token = listening(&daemon, "--token-listen");
    let proxy = listening(&daemon, "--proxy-listen");
    eventually("a token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    let issued = fixture.stand_in.issued()[0].clone();
    for host in [
        "evil.example",
        "evil.example:80",
        "127.0.0.1.nip.io",
        "10.0.0.1",
    ] {
        let (status, _, body) = request(token, &format!("GET /token HTTP/1.1\r\nHost: {host}"));
        assert_eq!(status, 403, "{host}: {body}");
        assert!(body.contains("DNS rebinding"), "{body}");
        assert!(!body.contains(&issued), "no token for {host}");
    }
    let (status, _, body) = request(
        token,
        "GET /token HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example",
    );
    assert_eq!(status, 403, "two Host headers: {body}");
    for host in [
        format!("localhost:{}", token.port()),
        format!("127.0.0.1:{}", token.port()),
    ] {
        let (status, _, body) = request(token, &format!("GET /token HTTP/1.1\r\nHost: {host}"));
        assert_eq!((status, body.as_str()), (200, issued.as_str()), "{host}");
    }

    let reached = fixture.stand_in.api_seen().len();
    let (status, _, body) = request(proxy, "GET /echo/x HTTP/1.1\r\nHost: evil.example");
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        fixture.stand_in.api_seen().len(),
        reached,
        "a request for another name never reaches the upstream with the token"
    );
    let (status, _, body) = request(
        proxy,
        &format!("GET /echo/x HTTP/1.1\r\nHost: localhost:{}", proxy.port()),
    );
    assert_eq!(status, 200, "{body}");
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn a_401_while_the_token_endpoint_is_limited_never_stalls_the_client() {
    let fixture = Fixture::new("proxy-401-stall", 900);
    let (daemon, addr) = proxy_daemon(&fixture);
    eventually("a token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    // --min-refresh-interval (1 s) has passed since the first token, so the 401 may ask.
    std::thread::sleep(Duration::from_millis(1500));
    fixture.stand_in.revoke_all();
    fixture.stand_in.set_default(Behaviour::RetryAfter {
        status: 429,
        value: "300".to_owned(),
    });
    let get = "GET /echo/a HTTP/1.1\r\nHost: 127.0.0.1";
    let (status, first) = timed(addr, get);
    assert_eq!(status, 401);
    eventually(
        "the refresh the 401 asked for",
        Duration::from_secs(10),
        || fixture.token_requests() == 2,
    );
    // The refresh failed with Retry-After: later requests on the same token do not wait.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let (status, took) = timed(addr, get);
        assert_eq!(status, 401);
        slowest = slowest.max(took);
    }
    println!("measured: first 401 back after {first:?}, later ones within {slowest:?}");
    assert!(
        first < Duration::from_secs(10),
        "the first 401 came back after {first:?}"
    );
    assert!(
        slowest < Duration::from_millis(2500),
        "a later 401 on the same token waited {slowest:?}; it should pass straight back"
    );
    assert_eq!(
        fixture.token_requests(),
        2,
        "Retry-After: 300 is obeyed: no further token request"
    );
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn an_upstream_that_always_answers_401_is_asked_for_new_tokens_ever_more_rarely() {
    let fixture = Fixture::new("proxy-401-always", 900);
    let (daemon, addr) = proxy_daemon(&fixture);
    eventually("a token", Duration::from_secs(10), || {
        fixture.read_token().is_some()
    });
    std::thread::sleep(Duration::from_millis(1500));
    fixture.stand_in.refuse_all_tokens();
    let before = fixture.token_requests();
    // 25 s of requests: new tokens may be asked for at 0, 5 and 15 s (backoff 5 s, doubling);
    // one every 5 s would be 6.
    let started = std::time::Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(25) {
        let (status, _, _) = request(
            addr,
            "POST /echo/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0",
        );
        assert_eq!(status, 401);
        answered += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let asked = fixture.token_requests() - before;
    println!("{asked} token requests for {answered} requests answered 401 in 25 s");
    assert!(
        (1..=4).contains(&asked),
        "{asked} token requests for {answered} requests answered 401 in 25 s"
    );
    fixture.assert_logs_clean(&daemon);
}
