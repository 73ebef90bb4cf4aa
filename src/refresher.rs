//! The refresh loop: one token request at a time, scheduled before expiry, retried on failure.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::positive_duration;
use crate::credentials::Credentials;
use crate::fiskil::{ExchangeError, Token, TokenClient};
use crate::happenings::{Happening, Happenings};
use crate::leadership::{Leadership, Role};
use crate::metrics::{Metrics, RefreshResult};
use crate::schedule::{Due, Failure, Held, Timing};
use crate::status::Status;

/// Where the loop reports its requests and its schedule: the daemon's metrics and health
/// status, or one credential's in cluster mode.
pub(crate) trait Observer: Send + Sync {
    /// One token request ended with `result` after `seconds`.
    fn requested(&self, result: RefreshResult, seconds: f64);
    /// A new token expires at `expires_at`.
    fn refreshed(&self, expires_at: SystemTime);
    /// The next request is due at `next`.
    fn scheduled(&self, next: SystemTime);
}

/// The daemon's observer: the metrics, and the next refresh `/readyz` reports.
pub(crate) struct DaemonObserver {
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
}

impl Observer for DaemonObserver {
    fn requested(&self, result: RefreshResult, seconds: f64) {
        self.metrics.observe_refresh(result, seconds);
    }

    fn refreshed(&self, expires_at: SystemTime) {
        self.metrics.set_token_expiry(expires_at);
    }

    fn scheduled(&self, next: SystemTime) {
        self.status.set_next_refresh_at(next);
        self.metrics.set_next_refresh(next);
    }
}

/// One token and exit, for init containers and scripts.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "One-shot")]
pub(crate) struct OnceArgs {
    /// Get one token, write every output, and exit 0 (1 if that fails within --once-timeout)
    #[arg(long, env = "FISKIL_ONCE")]
    pub once: bool,

    /// With --once: how long transient failures are retried before exiting 1
    #[arg(long, env = "FISKIL_ONCE_TIMEOUT", value_name = "DURATION",
          default_value = "60s", value_parser = positive_duration)]
    pub once_timeout: Duration,
}

impl OnceArgs {
    /// The time allowed for `--once`, or `None` to run as a daemon.
    pub(crate) fn settings(&self) -> Option<Duration> {
        self.once.then_some(self.once_timeout)
    }
}

/// Asks the refresh loop for a token ahead of its schedule (SIGHUP, a 401 at the proxy), and
/// tells askers when the loop answered without a new token: the request came sooner than
/// `--min-refresh-interval` or the endpoint's `Retry-After` allow, or the request failed.
#[derive(Debug)]
pub(crate) struct RefreshRequests {
    wake: Notify,
    declined: watch::Sender<u64>,
}

impl Default for RefreshRequests {
    fn default() -> Self {
        RefreshRequests {
            wake: Notify::new(),
            declined: watch::channel(0).0,
        }
    }
}

impl RefreshRequests {
    /// Asks for a refresh; requests made before the loop takes one fold into it.
    pub(crate) fn request(&self) {
        self.wake.notify_one();
    }

    /// Changes each time the loop answers a request without a new token.
    pub(crate) fn declined(&self) -> watch::Receiver<u64> {
        self.declined.subscribe()
    }

    fn decline(&self) {
        self.declined
            .send_modify(|count| *count = count.wrapping_add(1));
    }
}

/// What the loop needs from the rest of the daemon.
pub(crate) struct Refresher {
    pub client: TokenClient,
    pub credentials: watch::Receiver<Arc<Credentials>>,
    /// The timing, which may change between requests (cluster mode).
    pub timing: watch::Receiver<Timing>,
    pub tokens: watch::Sender<Option<Arc<Token>>>,
    pub observer: Arc<dyn Observer>,
    /// Early refresh requests: SIGHUP, a 401 at the proxy.
    pub requests: Arc<RefreshRequests>,
    /// Whether this replica may request tokens.
    pub leadership: Arc<Leadership>,
    pub happenings: Happenings,
}

/// A failing state worth an Event when it begins and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alarm {
    Rejected,
    ExpiringSoon,
}

/// The last token request: when it was sent, and how it failed, if it did.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: std::time::Instant,
    wall: SystemTime,
    failure: Option<Failure>,
}

/// The newest token's expiry and lifetime.
#[derive(Debug, Clone, Copy)]
struct Newest {
    expires_at: SystemTime,
    lifetime: Duration,
}

/// Why `--once` gave up.
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    #[error(transparent)]
    Rejected(ExchangeError),
    #[error("no token within --once-timeout; last error: {0}")]
    Timeout(ExchangeError),
    #[error("stopped by a signal before a token arrived")]
    Stopped,
}

impl Refresher {
    /// Runs until `shutdown`. While this replica leads: requests a token at once, then before
    /// each expiry, and at once again whenever the credentials change or SIGHUP arrives. A
    /// replica that loses the Lease drops its token and waits to lead again.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut role = self.leadership.subscribe();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                led = role.wait_for(Role::leads) => if led.is_err() { return },
            }
            self.lead(&mut role, &shutdown).await;
            // A Lease that ran out before the elector noticed ends in a step-down: wait for it.
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = role.wait_for(|role| !role.leads()) => {}
            }
            if shutdown.is_cancelled() {
                return;
            }
            self.tokens.send_replace(None);
        }
    }

    /// The refresh loop of a leader, until shutdown or the Lease is lost or has run out.
    async fn lead(&mut self, role: &mut watch::Receiver<Role>, shutdown: &CancellationToken) {
        let mut failures = 0;
        let mut due = Due::after(std::time::Instant::now(), SystemTime::now(), Duration::ZERO);
        let mut newest: Option<Newest> = None;
        let mut alarm: Option<Alarm> = None;
        let mut watching = true;
        let mut last: Option<Sent> = None;
        // Whether an early request was already folded into the next allowed one (logged once).
        let mut folded = false;
        loop {
            let wake = due.wake_at(std::time::Instant::now());
            // A request already due (the first one, say) goes out at once: even a zero-length
            // sleep waits for the timer's next 1 ms tick.
            let due_now = wake <= std::time::Instant::now()
                && due.reached(std::time::Instant::now(), SystemTime::now());
            if due_now && shutdown.is_cancelled() {
                return;
            }
            if !due_now {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = role.wait_for(|role| !role.leads()) => return,
                    () = tokio::time::sleep_until(Instant::from_std(wake)) => {
                        if !due.reached(std::time::Instant::now(), SystemTime::now()) {
                            continue;
                        }
                    }
                    changed = self.credentials.changed(), if watching => {
                        if changed.is_err() {
                            watching = false;
                            continue;
                        }
                        failures = 0;
                        if self.fold(&mut due, last, "the credentials changed", &mut folded) {
                            continue;
                        }
                    }
                    () = self.requests.wake.notified() => {
                        if self.fold(&mut due, last, "SIGHUP or a 401 at the proxy", &mut folded) {
                            continue;
                        }
                        tracing::info!("refresh requested (SIGHUP or a 401 at the proxy); refreshing the token now");
                    }
                }
            }
            // A leader paused past its Lease wakes with its timers due: it requests nothing.
            if self.leadership.permit().is_none() {
                return;
            }
            let credentials = Arc::clone(&self.credentials.borrow_and_update());
            let (sent, sent_wall) = (std::time::Instant::now(), SystemTime::now());
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.client.exchange(&credentials) => result,
            };
            self.observer
                .requested(result_label(&result), sent.elapsed().as_secs_f64());
            last = Some(Sent {
                at: sent,
                wall: sent_wall,
                failure: result.as_ref().err().map(ExchangeError::failure),
            });
            folded = false;
            let delay = match result {
                Ok(token) => {
                    if alarm.take().is_some() {
                        self.happenings
                            .report(Happening::TokenRefreshed { failures });
                    }
                    failures = 0;
                    let delay = self.timing().refresh_delay(token.lifetime, rand::random());
                    self.log_refreshed(&token, sent_wall + delay);
                    newest = Some(Newest {
                        expires_at: token.expires_at(),
                        lifetime: token.lifetime,
                    });
                    self.observer.refreshed(token.expires_at());
                    self.tokens.send_replace(Some(Arc::new(token)));
                    delay
                }
                Err(e) => {
                    failures += 1;
                    let now = SystemTime::now();
                    let held = Held::at(newest.map(|n| n.expires_at), now);
                    self.raise(&mut alarm, &e, failures, held, newest);
                    let delay =
                        self.timing()
                            .retry_delay(failures, e.failure(), held, rand::random());
                    log_failure(&e, failures, delay);
                    self.requests.decline();
                    sent.elapsed() + delay
                }
            };
            due = Due::after(sent, sent_wall, delay);
            self.observer.scheduled(due.wall);
        }
    }

    /// Folds a request for an early refresh into the next allowed one when the last request
    /// was too recent (`--min-refresh-interval`, or the endpoint's `Retry-After`): moves `due`
    /// no later than that, logs once per request, and returns true. Returns false when a
    /// request may be sent now.
    fn fold(&self, due: &mut Due, last: Option<Sent>, why: &str, folded: &mut bool) -> bool {
        let Some(last) = last else {
            return false;
        };
        let allowed = Due::after(
            last.at,
            last.wall,
            self.timing().request_floor(last.failure),
        );
        if allowed.reached(std::time::Instant::now(), SystemTime::now()) {
            return false;
        }
        if allowed.at < due.at {
            *due = allowed;
            self.observer.scheduled(due.wall);
        }
        if !*folded {
            *folded = true;
            tracing::info!(
                requested_by = why,
                next_refresh_at = %humantime::format_rfc3339_millis(due.wall),
                "refresh requested sooner than --min-refresh-interval or the endpoint's Retry-After allow; it waits for the next allowed request"
            );
        }
        self.requests.decline();
        true
    }

    /// Publishes an Event when a failure starts a new alarm: rejected credentials, or a token
    /// with under a quarter of its lifetime left (or none) while the endpoint keeps failing.
    fn raise(
        &self,
        alarm: &mut Option<Alarm>,
        error: &ExchangeError,
        failures: u32,
        held: Held,
        newest: Option<Newest>,
    ) {
        let (now_alarm, happening) = match (error.failure(), held) {
            (Failure::Rejected, _) => (
                Alarm::Rejected,
                Happening::CredentialsRejected {
                    error: error.to_string(),
                },
            ),
            (_, Held::Valid { left })
                if newest.is_some_and(|n| left.saturating_mul(4) >= n.lifetime) =>
            {
                return;
            }
            (_, held) => (
                Alarm::ExpiringSoon,
                Happening::TokenExpiringSoon {
                    left: match held {
                        Held::Valid { left } => left,
                        Held::Expired => Duration::ZERO,
                    },
                    failures,
                    error: error.to_string(),
                },
            ),
        };
        if *alarm != Some(now_alarm) {
            *alarm = Some(now_alarm);
            self.happenings.report(happening);
        }
    }

    fn log_refreshed(&self, token: &Token, next_at: SystemTime) {
        tracing::info!(
            expires_at = %humantime::format_rfc3339_millis(token.expires_at()),
            next_refresh_at = %humantime::format_rfc3339_millis(next_at),
            expires_in = token.lifetime.as_secs(),
            "token refreshed"
        );
        let min_interval = self.timing().min_interval;
        if token.lifetime <= min_interval {
            tracing::warn!(
                expires_in = token.lifetime.as_secs_f64(),
                min_refresh_interval = ?min_interval,
                "the token lives no longer than --min-refresh-interval, so it expires before the next refresh; lower --min-refresh-interval"
            );
        }
    }

    fn timing(&self) -> Timing {
        *self.timing.borrow()
    }

    /// Gets one token for `--once`: transient failures are retried until `deadline`, rejected
    /// credentials end at once.
    pub(crate) async fn once(
        &self,
        deadline: Instant,
        shutdown: &CancellationToken,
    ) -> Result<Token, OnceError> {
        let credentials = Arc::clone(&self.credentials.borrow());
        let mut failures = 0;
        loop {
            let sent = Instant::now();
            let result = tokio::select! {
                () = shutdown.cancelled() => return Err(OnceError::Stopped),
                result = tokio::time::timeout_at(deadline, self.client.exchange(&credentials)) => result,
            };
            let Ok(result) = result else {
                return Err(OnceError::Timeout(ExchangeError::Transport(
                    "the request was still running".to_owned(),
                )));
            };
            self.observer
                .requested(result_label(&result), sent.elapsed().as_secs_f64());
            let e = match result {
                Ok(token) => return Ok(token),
                Err(e) if e.failure() == Failure::Rejected => return Err(OnceError::Rejected(e)),
                Err(e) => e,
            };
            failures += 1;
            let delay =
                self.timing()
                    .retry_delay(failures, e.failure(), Held::Expired, rand::random());
            log_failure(&e, failures, delay);
            tokio::select! {
                () = shutdown.cancelled() => return Err(OnceError::Stopped),
                () = tokio::time::sleep_until(deadline.min(Instant::now() + delay)) => {}
            }
            if Instant::now() >= deadline {
                return Err(OnceError::Timeout(e));
            }
        }
    }
}

fn result_label(result: &Result<Token, ExchangeError>) -> RefreshResult {
    match result {
        Ok(_) => RefreshResult::Success,
        Err(e) => match e.failure() {
            Failure::Rejected => RefreshResult::Rejected,
            Failure::Transient { .. } => RefreshResult::Transient,
            Failure::InvalidResponse => RefreshResult::InvalidResponse,
        },
    }
}

fn log_failure(error: &ExchangeError, failures: u32, retry_in: Duration) {
    match error.failure() {
        Failure::Rejected => {
            tracing::error!(error = %error, failures, retry_in = ?retry_in, "token request rejected; retrying when the credentials change or after the retry delay");
        }
        Failure::Transient { .. } | Failure::InvalidResponse => {
            tracing::warn!(error = %error, failures, retry_in = ?retry_in, "token request failed; keeping the last good token");
        }
    }
}
