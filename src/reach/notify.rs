//! Notifications after each new token: a JSON `POST` to URLs, a signal to a pid-file process.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::header::CONTENT_TYPE;
use hyper::Uri;
use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::cli::is_loopback_url;
use crate::fiskil::HttpSettings;
use crate::fiskil::{ClientError, ExchangeError, Poster, Tokens};
use crate::metrics::Metrics;
use crate::small_file::{self, ReadError};
use crate::status::OutputStatus;

/// Time allowed for one notification request, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Waits before the retries of a failed notification request.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(4),
];

/// The most read of a pid file: a pid, a newline and some spaces.
const PID_FILE_MAX: u64 = 32;
/// The most read of `/proc/PID/status` to find the process the pid belongs to.
const PROC_STATUS_MAX: u64 = 4096;
/// Time allowed to read the pid file and signal (a file on an unresponsive volume).
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(1);

/// The notification flags.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct NotifyArgs {
    /// POST {"expires_at","issued_at","file"} (never the token) here after each new token;
    /// repeatable; http:// only to loopback
    #[arg(
        long,
        env = "FISKIL_NOTIFY_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub notify_url: Vec<String>,

    /// After each new token, send this signal (HUP, USR1, USR2, TERM, INT, QUIT, WINCH) to the
    /// process whose pid is in --notify-pid-file
    #[arg(long, env = "FISKIL_NOTIFY_SIGNAL", value_name = "NAME")]
    pub notify_signal: Option<String>,

    /// File holding the pid --notify-signal goes to (e.g. nginx's pid file on a shared volume)
    #[arg(long, env = "FISKIL_NOTIFY_PID_FILE", value_name = "PATH")]
    pub notify_pid_file: Option<PathBuf>,
}

/// A signal a notification can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SignalName(&'static str);

const SIGNALS: [(&str, Signal); 7] = [
    ("HUP", Signal::HUP),
    ("USR1", Signal::USR1),
    ("USR2", Signal::USR2),
    ("TERM", Signal::TERM),
    ("INT", Signal::INT),
    ("QUIT", Signal::QUIT),
    ("WINCH", Signal::WINCH),
];

impl SignalName {
    /// Reads `HUP`, `SIGHUP` or `sighup`.
    pub(crate) fn parse(raw: &str) -> Option<SignalName> {
        let upper = raw.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        SIGNALS
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|(name, _)| SignalName(name))
    }

    fn signal(self) -> Signal {
        SIGNALS
            .iter()
            .find(|(name, _)| *name == self.0)
            .map(|(_, signal)| *signal)
            .unwrap_or(Signal::HUP)
    }
}

impl std::fmt::Display for SignalName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIG{}", self.0)
    }
}

/// Where notifications go, validated.
#[derive(Debug, Clone)]
pub(crate) struct NotifyConfig {
    pub urls: Vec<Url>,
    pub signal: Option<(SignalName, PathBuf)>,
}

/// A mistake in the notification flags.
#[derive(Debug, thiserror::Error)]
pub enum NotifyConfigError {
    #[error("--notify-url {0:?} is not a valid URL: {1}")]
    BadUrl(String, url::ParseError),
    #[error("--notify-url {0} uses http:// to a host that is not loopback; use https://, or http://127.0.0.1:PORT for a container in the pod")]
    PlainHttp(String),
    #[error("--notify-url {0} has an unsupported scheme; use https:// or http:// to loopback")]
    BadScheme(String),
    #[error("--notify-signal {0:?} is not a supported signal; use HUP, USR1, USR2, TERM, INT, QUIT or WINCH")]
    BadSignal(String),
    #[error("--notify-signal needs --notify-pid-file, the file holding the pid to signal")]
    SignalWithoutPidFile,
    #[error("--notify-pid-file needs --notify-signal, the signal to send (e.g. HUP)")]
    PidFileWithoutSignal,
}

impl NotifyArgs {
    /// The notification targets, if any are configured.
    pub(crate) fn settings(self) -> Result<Option<NotifyConfig>, NotifyConfigError> {
        let urls = self
            .notify_url
            .iter()
            .filter(|raw| !raw.trim().is_empty())
            .map(|raw| check_url(raw))
            .collect::<Result<Vec<_>, _>>()?;
        let signal = match (self.notify_signal, self.notify_pid_file) {
            (None, None) => None,
            (Some(_), None) => return Err(NotifyConfigError::SignalWithoutPidFile),
            (None, Some(_)) => return Err(NotifyConfigError::PidFileWithoutSignal),
            (Some(raw), Some(path)) => Some((
                SignalName::parse(&raw).ok_or(NotifyConfigError::BadSignal(raw))?,
                path,
            )),
        };
        if urls.is_empty() && signal.is_none() {
            return Ok(None);
        }
        Ok(Some(NotifyConfig { urls, signal }))
    }
}

fn check_url(raw: &str) -> Result<Url, NotifyConfigError> {
    let url = Url::parse(raw).map_err(|e| NotifyConfigError::BadUrl(raw.to_owned(), e))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_url(&url) => Ok(url),
        "http" => Err(NotifyConfigError::PlainHttp(raw.to_owned())),
        _ => Err(NotifyConfigError::BadScheme(raw.to_owned())),
    }
}

/// What a notification says: the new token's times and the file holding it; never the token.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    expires_at: SystemTime,
    issued_at: SystemTime,
    file: Option<PathBuf>,
}

impl Event {
    fn json(&self) -> String {
        serde_json::json!({
            "expires_at": humantime::format_rfc3339_seconds(self.expires_at).to_string(),
            "issued_at": humantime::format_rfc3339_seconds(self.issued_at).to_string(),
            "file": self.file.as_ref().map(|p| p.display().to_string()),
        })
        .to_string()
    }
}

/// The notifier, built: after each new token (once the file holds it, when there is a file),
/// it signals the process and hands the event to one sender task per URL.
pub(crate) struct Notifier {
    client: Option<Poster>,
    urls: Vec<Url>,
    signal: Option<Signaller>,
    tokens: Tokens,
    file: Option<(Arc<OutputStatus>, PathBuf)>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Builds the HTTP client for the URLs, if there are any.
    pub(crate) fn new(
        config: NotifyConfig,
        http: &HttpSettings,
        tokens: Tokens,
        file: Option<(Arc<OutputStatus>, PathBuf)>,
        metrics: Arc<Metrics>,
    ) -> Result<Notifier, ClientError> {
        let client = if config.urls.is_empty() {
            None
        } else {
            let tls = http.trust.client_config()?;
            Some(Poster::new(tls, None, ATTEMPT_TIMEOUT, ATTEMPT_TIMEOUT)?)
        };
        Ok(Notifier {
            client,
            urls: config.urls,
            signal: config
                .signal
                .map(|(name, pid_file)| Signaller::new(name, pid_file)),
            tokens,
            file,
            metrics,
        })
    }

    /// Starts the sender tasks and the task that follows the tokens, on `tasks`, until
    /// `shutdown`.
    pub(crate) fn start(self, tasks: &TaskTracker, shutdown: &CancellationToken) {
        let mut senders = Vec::new();
        if let Some(client) = self.client {
            for url in self.urls {
                let (tx, rx) = watch::channel(None);
                senders.push(tx);
                tasks.spawn(post_each(
                    client.clone(),
                    url,
                    rx,
                    Arc::clone(&self.metrics),
                    shutdown.clone(),
                ));
            }
        }
        tasks.spawn(watch_tokens(
            self.tokens,
            self.file,
            self.signal,
            senders,
            self.metrics,
            shutdown.clone(),
        ));
    }
}

async fn watch_tokens(
    mut tokens: Tokens,
    file: Option<(Arc<OutputStatus>, PathBuf)>,
    mut signal: Option<Signaller>,
    senders: Vec<watch::Sender<Option<Event>>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut written = file.as_ref().map(|(status, _)| status.subscribe());
    let path = file.map(|(_, path)| path);
    let mut last: Option<SystemTime> = None;
    loop {
        let current = tokens.borrow_and_update().clone();
        let held = match &mut written {
            Some(written) => *written.borrow_and_update(),
            None => current.as_ref().map(|t| t.expires_at()),
        };
        // Notify once the output holds the newest token; an older one is about to be replaced.
        if let Some(token) = current.filter(|t| Some(t.expires_at()) == held && held != last) {
            last = held;
            let event = Event {
                expires_at: token.expires_at(),
                issued_at: token.issued_at,
                file: path.clone(),
            };
            if let Some(signal) = &mut signal {
                let ok = signal.send().await;
                metrics.observe_notify("signal", ok);
            }
            for sender in &senders {
                sender.send_replace(Some(event.clone()));
            }
        }
        let file_changed = async {
            match &mut written {
                Some(written) => written.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = tokens.changed() => if changed.is_err() { return },
            changed = file_changed => if changed.is_err() { return },
        }
    }
}

/// Posts each event to `url`, retrying with backoff; a newer event replaces one still pending.
async fn post_each(
    client: Poster,
    url: Url,
    mut events: watch::Receiver<Option<Event>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let shown = redacted(&url);
    'events: loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = events.changed() => if changed.is_err() { return },
        }
        let Some(event) = events.borrow_and_update().clone() else {
            continue;
        };
        let body = event.json();
        let Ok(target) = Uri::try_from(url.as_str()) else {
            tracing::warn!(url = %shown, "the notification URL cannot be sent to");
            return;
        };
        for attempt in 0..=RETRY_DELAYS.len() {
            let headers = [(CONTENT_TYPE, "application/json")];
            let result = client
                .post(&target, &headers, body.clone().into_bytes(), |response| {
                    std::future::ready(Ok(response.status()))
                })
                .await;
            let failure = match result {
                Ok(status) if status.is_success() => None,
                Ok(status) => Some(format!("HTTP {}", status.as_u16())),
                Err(ExchangeError::Transport(text)) => Some(text),
                Err(e) => Some(e.to_string()),
            };
            metrics.observe_notify("url", failure.is_none());
            let Some(failure) = failure else {
                tracing::debug!(url = %shown, "notified");
                continue 'events;
            };
            let Some(delay) = RETRY_DELAYS.get(attempt) else {
                tracing::warn!(url = %shown, error = %failure, attempts = attempt + 1, "notification failed; giving up until the next token");
                continue 'events;
            };
            tracing::warn!(url = %shown, error = %failure, retry_in = ?delay, "notification failed");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(*delay) => {}
                changed = events.changed() => {
                    if changed.is_err() { return }
                    // A newer token: its notification replaces this one.
                    events.mark_changed();
                    continue 'events;
                }
            }
        }
    }
}

/// The URL without user information or query, for logs.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.to_string()
}

/// The outcome of one signal, remembered so each failure is logged once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SignalState {
    Sent,
    Failed(String),
}

/// Sends the configured signal to the pid in the pid file.
struct Signaller {
    name: SignalName,
    pid_file: PathBuf,
    state: Option<SignalState>,
}

impl Signaller {
    fn new(name: SignalName, pid_file: PathBuf) -> Self {
        Signaller {
            name,
            pid_file,
            state: None,
        }
    }

    /// Sends the signal, reading the pid file off the async runtime and within
    /// [`SIGNAL_TIMEOUT`]; a failure is a warning when it differs from the previous outcome.
    async fn send(&mut self) -> bool {
        let (name, path) = (self.name, self.pid_file.clone());
        let result = match tokio::time::timeout(
            SIGNAL_TIMEOUT,
            tokio::task::spawn_blocking(move || signal_pid_file(name, &path)),
        )
        .await
        {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("reading the pid file failed".to_owned()),
            Err(_) => Err(format!(
                "reading the pid file took over {SIGNAL_TIMEOUT:?}; is its volume responsive?"
            )),
        };
        let state = match &result {
            Ok(_) => SignalState::Sent,
            Err(reason) => SignalState::Failed(reason.clone()),
        };
        let changed = self.state.as_ref() != Some(&state);
        match (&result, changed) {
            (Ok(pid), true) => {
                tracing::info!(signal = %self.name, pid, pid_file = %self.pid_file.display(), "signalled the process")
            }
            (Ok(pid), false) => {
                tracing::debug!(signal = %self.name, pid, "signalled the process")
            }
            (Err(reason), true) => {
                tracing::warn!(signal = %self.name, pid_file = %self.pid_file.display(), error = %reason, "cannot signal the process; will try again after the next token")
            }
            (Err(_), false) => {}
        }
        self.state = Some(state);
        result.is_ok()
    }
}

/// Reads the pid and signals it; the error says what to fix.
fn signal_pid_file(name: SignalName, path: &Path) -> Result<i32, String> {
    let pid = read_pid(path)?;
    check_target(pid, std::process::id())?;
    let target =
        Pid::from_raw(pid).ok_or_else(|| "the pid file does not hold a process id".to_owned())?;
    match rustix::process::kill_process(target, name.signal()) {
        Ok(()) => Ok(pid),
        Err(Errno::SRCH) => Err(format!(
            "no process {pid} (stale pid file, or the process namespace is not shared)"
        )),
        Err(Errno::PERM) => Err(format!(
            "not permitted to signal process {pid}; run as the same user or grant CAP_KILL"
        )),
        Err(e) => Err(format!("cannot signal process {pid}: {e}")),
    }
}

/// Reads the pid from a regular file of at most [`PID_FILE_MAX`] bytes (see
/// [`small_file::read_regular`]: a FIFO or a device is refused, never waited on or read).
fn read_pid(path: &Path) -> Result<i32, String> {
    let bytes = small_file::read_regular(path, PID_FILE_MAX).map_err(|e| match e {
        ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "the pid file does not exist (is the process running and the volume shared?)".to_owned()
        }
        ReadError::Io(e) => format!("cannot read the pid file: {e}"),
        ReadError::NotRegular(kind) => format!(
            "the pid file is not a regular file but {kind}; point --notify-pid-file at the file the process writes its pid to"
        ),
        ReadError::TooLarge => format!(
            "the pid file holds more than {PID_FILE_MAX} bytes; it should hold only a process id"
        ),
    })?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .ok_or_else(|| "the pid file does not hold a process id".to_owned())
}

/// Refuses pids the daemon must never signal: PID 1 (the pod's first process; with a shared
/// process namespace, the pause container, which ends the pod), and this daemon or any of its
/// threads (a thread id signals the whole process: every token would then ask for the next).
fn check_target(pid: i32, own: u32) -> Result<(), String> {
    if pid <= 1 {
        return Err(format!(
            "the pid file names process {pid}, the pod's first process; signalling it is refused"
        ));
    }
    if u32::try_from(pid).is_ok_and(|pid| pid == own) || thread_group(pid) == Some(own) {
        return Err("the pid file names this daemon itself".to_owned());
    }
    Ok(())
}

/// The process (thread group) that the thread `pid` belongs to, from `/proc/PID/status`.
fn thread_group(pid: i32) -> Option<u32> {
    let file = std::fs::File::open(format!("/proc/{pid}/status")).ok()?;
    let mut status = String::new();
    file.take(PROC_STATUS_MAX)
        .read_to_string(&mut status)
        .ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|tgid| tgid.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(urls: &[&str], signal: Option<&str>, pid_file: Option<&str>) -> NotifyArgs {
        NotifyArgs {
            notify_url: urls.iter().map(|s| s.to_string()).collect(),
            notify_signal: signal.map(str::to_owned),
            notify_pid_file: pid_file.map(PathBuf::from),
        }
    }

    #[test]
    fn urls_are_https_or_loopback_http() {
        assert!(args(&[], None, None).settings().unwrap().is_none());
        let config = args(
            &[
                "http://127.0.0.1:8080/reload",
                "https://hooks.example.com/x",
            ],
            None,
            None,
        )
        .settings()
        .unwrap()
        .unwrap();
        assert_eq!(config.urls.len(), 2);
        assert!(args(&["http://localhost/x"], None, None).settings().is_ok());
        assert!(matches!(
            args(&["http://10.0.0.1/x"], None, None).settings(),
            Err(NotifyConfigError::PlainHttp(_))
        ));
        assert!(matches!(
            args(&["ftp://127.0.0.1/x"], None, None).settings(),
            Err(NotifyConfigError::BadScheme(_))
        ));
        assert!(matches!(
            args(&["not a url"], None, None).settings(),
            Err(NotifyConfigError::BadUrl(..))
        ));
    }

    #[test]
    fn a_signal_needs_a_pid_file_and_a_known_name() {
        let config = args(&[], Some("sighup"), Some("/run/nginx.pid"))
            .settings()
            .unwrap()
            .unwrap();
        assert_eq!(config.signal.unwrap().0.to_string(), "SIGHUP");
        assert_eq!(SignalName::parse("USR1").unwrap().to_string(), "SIGUSR1");
        assert!(matches!(
            args(&[], Some("HUP"), None).settings(),
            Err(NotifyConfigError::SignalWithoutPidFile)
        ));
        assert!(matches!(
            args(&[], None, Some("/x")).settings(),
            Err(NotifyConfigError::PidFileWithoutSignal)
        ));
        assert!(matches!(
            args(&[], Some("KILL"), Some("/x")).settings(),
            Err(NotifyConfigError::BadSignal(_))
        ));
    }

    #[test]
    fn the_event_never_holds_the_token() {
        let event = Event {
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(900),
            issued_at: SystemTime::UNIX_EPOCH,
            file: Some(PathBuf::from("/var/run/fiskil/token")),
        };
        assert_eq!(
            event.json(),
            r#"{"expires_at":"1970-01-01T00:15:00Z","file":"/var/run/fiskil/token","issued_at":"1970-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn signal_failures_say_what_to_fix() {
        let dir = std::env::temp_dir().join(format!("fiskil-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = signal_pid_file(SignalName::parse("HUP").unwrap(), &dir.join("none.pid"));
        assert!(missing.unwrap_err().contains("does not exist"));
        let garbage = dir.join("garbage.pid");
        std::fs::write(&garbage, "nginx\n").unwrap();
        let err = signal_pid_file(SignalName::parse("HUP").unwrap(), &garbage).unwrap_err();
        assert!(err.contains("does not hold a process id"), "{err}");
        let own = dir.join("own.pid");
        std::fs::write(&own, format!("{}\n", std::process::id())).unwrap();
        let err = signal_pid_file(SignalName::parse("HUP").unwrap(), &own).unwrap_err();
        assert!(err.contains("itself"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pid_file_holds_only_a_pid_in_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("fiskil-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let zero = dir.join("zero.pid");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = read_pid(&zero).unwrap_err();
        assert!(err.contains("not a regular file but a device"), "{err}");
        let long = dir.join("long.pid");
        std::fs::write(&long, "1".repeat(33)).unwrap();
        assert!(read_pid(&long).unwrap_err().contains("more than 32 bytes"));
        let good = dir.join("good.pid");
        std::fs::write(&good, " 4242\n").unwrap();
        assert_eq!(read_pid(&good), Ok(4242));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pid_1_and_the_daemons_own_threads_are_refused() {
        let own = std::process::id();
        assert!(check_target(1, own).unwrap_err().contains("first process"));
        assert!(check_target(0, own).is_err());
        assert!(check_target(-5, own).is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let link = std::fs::read_link("/proc/thread-self").unwrap();
            let tid: i32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
            tx.send(tid).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(u32::try_from(tid).unwrap(), own);
        assert!(check_target(tid, own).unwrap_err().contains("itself"));
        drop(done_tx);
        thread.join().unwrap();
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let child_pid = i32::try_from(child.id()).unwrap();
        assert_eq!(check_target(child_pid, own), Ok(()));
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
