//! Test fixtures: a Kubernetes-style Secret volume, the daemon binary as a child process with
//! its logs captured, and small HTTP and polling helpers.

#![allow(dead_code)]

pub mod cluster_mode;
pub mod control_plane;
pub mod fake_api;
pub mod leader_election;
pub mod pods;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fiskil_stand_in::StandIn;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fiskil-it-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A credentials directory laid out the way kubelet mounts a Secret: `key -> ..data/key`,
/// `..data -> ..<version>`, updated by swapping the `..data` symlink.
pub struct SecretVolume {
    pub dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    pub fn new(dir: PathBuf, client_id: &str, client_secret: &str) -> SecretVolume {
        std::fs::create_dir_all(&dir).expect("volume dir");
        let mut volume = SecretVolume { dir, version: 0 };
        volume.rotate(client_id, client_secret);
        for key in ["client_id", "client_secret"] {
            std::os::unix::fs::symlink(format!("..data/{key}"), volume.dir.join(key))
                .expect("key symlink");
        }
        volume
    }

    /// Publishes new values the way kubelet does: a new version directory, a `..data_tmp`
    /// symlink to it renamed over `..data`, then the old version removed.
    pub fn rotate(&mut self, client_id: &str, client_secret: &str) {
        self.version += 1;
        let version = format!("..2026_11_28_{:02}", self.version);
        let new_dir = self.dir.join(&version);
        std::fs::create_dir(&new_dir).expect("version dir");
        std::fs::write(new_dir.join("client_id"), format!("{client_id}\n")).expect("write id");
        std::fs::write(new_dir.join("client_secret"), format!("{client_secret}\n"))
            .expect("write secret");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).expect("..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        if self.version > 1 {
            let old = self
                .dir
                .join(format!("..2026_11_28_{:02}", self.version - 1));
            std::fs::remove_dir_all(old).expect("remove old version");
        }
    }
}

/// Everything a daemon test needs: a stand-in endpoint, a credentials volume and an output
/// directory, with distinctive credentials so leaks are easy to find.
pub struct Fixture {
    pub stand_in: StandIn,
    pub volume: SecretVolume,
    pub out: PathBuf,
    pub ca: PathBuf,
    pub client_id: String,
    pub client_secret: String,
    pub secrets_seen: Vec<String>,
    pub dir: TempDir,
}

impl Fixture {
    pub fn new(name: &str, expires_in: i64) -> Fixture {
        let dir = TempDir::new(name);
        let client_id = format!("client-{name}");
        let client_secret = format!("sekrit-{name}-{:08x}", std::process::id());
        let stand_in = StandIn::start(&client_id, &client_secret, expires_in);
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, stand_in.ca_pem()).expect("write CA");
        let volume = SecretVolume::new(dir.path().join("credentials"), &client_id, &client_secret);
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("out dir");
        Fixture {
            stand_in,
            volume,
            out,
            ca,
            secrets_seen: vec![client_secret.clone()],
            client_id,
            client_secret,
            dir,
        }
    }

    pub fn token_file(&self) -> PathBuf {
        self.out.join("token")
    }

    /// The arguments every test run shares.
    pub fn base_args(&self) -> Vec<String> {
        [
            "--token-url",
            &self.stand_in.url(),
            "--ca-file",
            self.ca.to_str().unwrap(),
            "--client-id-file",
            self.volume.dir.join("client_id").to_str().unwrap(),
            "--client-secret-file",
            self.volume.dir.join("client_secret").to_str().unwrap(),
            "--token-file",
            self.token_file().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts the daemon with the shared arguments; a flag in `extra` that is already among
    /// them replaces its value.
    pub fn spawn(&self, extra: &[&str]) -> Daemon {
        Daemon::spawn(&self.args_with(extra), &[])
    }

    /// The shared arguments with `extra` added; a flag already among them replaces its value.
    pub fn args_with(&self, extra: &[&str]) -> Vec<String> {
        let mut args = self.base_args();
        let mut rest = extra.iter();
        while let Some(arg) = rest.next() {
            match args.iter().position(|a| a == arg && a.starts_with("--")) {
                Some(at) => args[at + 1] = rest.next().expect("a value").to_string(),
                None => args.push(arg.to_string()),
            }
        }
        args
    }

    /// Rotates the mounted credentials and tells the stand-in to accept only the new ones.
    pub fn rotate(&mut self, client_id: &str, client_secret: &str) {
        self.stand_in.accept(client_id, client_secret);
        self.secrets_seen.push(client_secret.to_owned());
        self.volume.rotate(client_id, client_secret);
    }

    /// Token requests the stand-in received.
    pub fn token_requests(&self) -> usize {
        self.stand_in
            .seen()
            .iter()
            .filter(|s| s.path == fiskil_stand_in::TOKEN_PATH)
            .count()
    }

    pub fn read_token(&self) -> Option<String> {
        std::fs::read_to_string(self.token_file()).ok()
    }

    /// Asserts no captured log line holds a client secret or any token the stand-in issued.
    pub fn assert_logs_clean(&self, daemon: &Daemon) {
        let logs = daemon.logs().join("\n");
        assert!(!logs.is_empty(), "no logs were captured");
        for secret in &self.secrets_seen {
            assert!(
                !logs.contains(secret.as_str()),
                "a client secret leaked into the logs"
            );
        }
        for token in self.stand_in.issued() {
            assert!(!logs.contains(&token), "a token leaked into the logs");
        }
    }

    /// Asserts every request kept the documented contract.
    pub fn assert_contract_kept(&self) {
        for seen in self.stand_in.seen() {
            assert!(
                seen.violations.is_empty(),
                "contract broken: {:?}",
                seen.violations
            );
        }
    }
}

/// The daemon binary running as a child process, its stderr captured line by line.
pub struct Daemon {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    /// Output streams read to their end: 2 once the process has exited and every line is in.
    streams_done: Arc<AtomicU32>,
    admin: Option<SocketAddr>,
    pub exit: Option<ExitStatus>,
}

impl Daemon {
    /// The binary under test: `FISKIL_TEST_BINARY` (e.g. the static release build the
    /// container image ships), else the one cargo built for these tests.
    pub fn binary() -> String {
        std::env::var("FISKIL_TEST_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fiskil-token-refresher").to_owned())
    }

    pub fn spawn(args: &[String], env: &[(&str, &str)]) -> Daemon {
        Self::spawn_wrapped(&[], args, env)
    }

    /// Starts the binary through `wrapper` (a command and its arguments, e.g. `setpriv ...`),
    /// which must end by running the binary with the arguments that follow it.
    pub fn spawn_wrapped(wrapper: &[&str], args: &[String], env: &[(&str, &str)]) -> Daemon {
        let binary = Self::binary();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the daemon");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let streams_done = Arc::new(AtomicU32::new(0));
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let sink = Arc::clone(&logs);
            let done = Arc::clone(&streams_done);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        Daemon {
            child,
            logs,
            streams_done,
            admin: None,
            exit: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Log lines parsed as JSON objects.
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.logs()
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"))
            })
            .collect()
    }

    pub fn logs_contain(&self, text: &str) -> bool {
        self.logs().iter().any(|line| line.contains(text))
    }

    /// Waits until a captured log line contains `text` (lines reach the test a little after
    /// the daemon writes them).
    pub fn wait_log(&self, text: &str) {
        eventually(
            &format!("a log line with {text:?}"),
            Duration::from_secs(10),
            || self.logs_contain(text),
        );
    }

    /// The health server's address, from the `started` log line.
    pub fn admin(&mut self) -> SocketAddr {
        if let Some(addr) = self.admin {
            return addr;
        }
        eventually("the daemon to start", Duration::from_secs(10), || {
            self.logs_contain("\"started\"")
        });
        let line = self
            .json_logs()
            .into_iter()
            .find(|l| l["message"] == "started")
            .unwrap();
        let addr = line["listen"].as_str().unwrap().parse().unwrap();
        self.admin = Some(addr);
        addr
    }

    pub fn get(&mut self, path: &str) -> (u16, String) {
        http_get(self.admin(), path)
    }

    /// The value of one sample of /metrics, e.g. `fiskil_token_refresher_refresh_total{result="success"}`.
    pub fn metric(&mut self, sample: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(sample)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map(|value| value.trim().parse().unwrap())
            .unwrap_or(0.0)
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("wait for the daemon") {
                self.exit = Some(status);
                // Every line it wrote is captured once both streams reached their end.
                eventually(
                    "the daemon's output to end",
                    Duration::from_secs(10),
                    || self.streams_done.load(Ordering::SeqCst) == 2,
                );
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one probe of [`eventually`] saw. `true`, `Some(value)` and `Ok(value)` end the wait
/// (with the value); `false`, `None` and `Err(observation)` go on polling, and the last
/// observation an `Err` carried is shown if the wait times out.
pub trait Probe {
    type Value;
    fn settled(self) -> Result<Self::Value, Option<String>>;
}

impl Probe for bool {
    type Value = ();
    fn settled(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn settled(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: std::fmt::Display> Probe for Result<T, E> {
    type Value = T;
    fn settled(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// How often [`eventually`] probes: cheap checks of files, logs, the stand-in or the daemon's
/// loopback endpoints.
pub const PROBE_EVERY: Duration = Duration::from_millis(10);
/// How often [`eventually_async`] probes: requests to a real API server.
pub const API_PROBE_EVERY: Duration = Duration::from_millis(100);

/// One wait: what is awaited, for how long, and what was last seen.
struct Waiting<'a> {
    what: &'a str,
    timeout: Duration,
    start: Instant,
    last_seen: Option<String>,
}

impl<'a> Waiting<'a> {
    fn new(what: &'a str, timeout: Duration) -> Waiting<'a> {
        Waiting {
            what,
            timeout,
            start: Instant::now(),
            last_seen: None,
        }
    }

    /// The value if the probe settled; fails the test if it did not and time is up.
    fn settled<P: Probe>(&mut self, probe: P) -> Option<P::Value> {
        match probe.settled() {
            Ok(value) => Some(value),
            Err(seen) => {
                if seen.is_some() {
                    self.last_seen = seen;
                }
                if self.start.elapsed() >= self.timeout {
                    match &self.last_seen {
                        Some(seen) => panic!(
                            "timed out after {:?} waiting for {}; last seen: {seen}",
                            self.timeout, self.what
                        ),
                        None => {
                            panic!(
                                "timed out after {:?} waiting for {}",
                                self.timeout, self.what
                            )
                        }
                    }
                }
                None
            }
        }
    }
}

/// Probes every [`PROBE_EVERY`] until `probe` settles (see [`Probe`]) and returns its value;
/// fails the test after `timeout`, naming `what` was awaited and the last observation.
pub fn eventually<P: Probe>(what: &str, timeout: Duration, probe: impl FnMut() -> P) -> P::Value {
    eventually_every(what, timeout, PROBE_EVERY, probe)
}

/// [`eventually`], probing every `every` (for probes that cost more, such as running kubectl).
pub fn eventually_every<P: Probe>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> P,
) -> P::Value {
    let mut waiting = Waiting::new(what, timeout);
    loop {
        if let Some(value) = waiting.settled(probe()) {
            return value;
        }
        std::thread::sleep(every);
    }
}

/// [`eventually`] for an async probe, every [`API_PROBE_EVERY`], without blocking the runtime.
pub async fn eventually_async<P, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> P::Value
where
    P: Probe,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = P>,
{
    let mut waiting = Waiting::new(what, timeout);
    loop {
        if let Some(value) = waiting.settled(probe().await) {
            return value;
        }
        tokio::time::sleep(API_PROBE_EVERY).await;
    }
}

/// A plain HTTP/1.0 GET; returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the health server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
