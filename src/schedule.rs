//! When to refresh and when to retry: pure functions of their inputs, randomness passed in.

use std::time::{Duration, Instant, SystemTime};

use crate::cli::positive_duration;

/// Refresh and retry timing.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Refresh timing")]
pub struct TimingArgs {
    /// Refresh when this fraction of the token's lifetime has passed
    #[arg(
        long,
        env = "FISKIL_REFRESH_RATIO",
        value_name = "RATIO",
        default_value_t = 0.8
    )]
    pub refresh_ratio: f64,

    /// Refresh at a random point in [ratio - jitter, ratio] of the lifetime
    #[arg(
        long,
        env = "FISKIL_REFRESH_JITTER",
        value_name = "FRACTION",
        default_value_t = 0.05
    )]
    pub refresh_jitter: f64,

    /// Never send a token request sooner than this after the previous one: guards tiny
    /// lifetimes, and SIGHUP, rotated credentials and the proxy's 401s wait for it
    #[arg(long, env = "FISKIL_MIN_REFRESH_INTERVAL", value_name = "DURATION",
          default_value = "1s", value_parser = positive_duration)]
    pub min_refresh_interval: Duration,

    /// Retry delay ceiling after the first failure; doubles per failure (delays are jittered
    /// between half the ceiling and the ceiling)
    #[arg(long, env = "FISKIL_BACKOFF_INITIAL", value_name = "DURATION",
          default_value = "1s", value_parser = positive_duration)]
    pub backoff_initial: Duration,

    /// Largest retry delay ceiling; also caps Retry-After and paces retries of rejected
    /// credentials
    #[arg(long, env = "FISKIL_BACKOFF_MAX", value_name = "DURATION",
          default_value = "60s", value_parser = positive_duration)]
    pub backoff_max: Duration,

    /// Retry delay ceiling once no unexpired token is held, so a token is back within this long
    /// after the endpoint heals (never above --backoff-max; Retry-After still wins)
    #[arg(long, env = "FISKIL_BACKOFF_MAX_EXPIRED", value_name = "DURATION",
          default_value = "8s", value_parser = positive_duration)]
    pub backoff_max_expired: Duration,
}

/// Timing options that do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum TimingError {
    #[error("--refresh-ratio must be between 0 and 1 (exclusive), got {0}")]
    Ratio(f64),
    #[error(
        "--refresh-jitter must be at least 0 and less than --refresh-ratio ({ratio}), got {jitter}"
    )]
    Jitter { ratio: f64, jitter: f64 },
    #[error("--backoff-initial ({initial:?}) must not exceed --backoff-max ({max:?})")]
    Backoff { initial: Duration, max: Duration },
}

impl TimingArgs {
    /// Checks that the options fit together.
    pub fn settings(&self) -> Result<Timing, TimingError> {
        let ratio = self.refresh_ratio;
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(TimingError::Ratio(ratio));
        }
        let jitter = self.refresh_jitter;
        if !(jitter >= 0.0 && jitter < ratio) {
            return Err(TimingError::Jitter { ratio, jitter });
        }
        if self.backoff_initial > self.backoff_max {
            return Err(TimingError::Backoff {
                initial: self.backoff_initial,
                max: self.backoff_max,
            });
        }
        Ok(Timing {
            ratio,
            jitter,
            min_interval: self.min_refresh_interval,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            backoff_max_expired: self.backoff_max_expired.min(self.backoff_max),
        })
    }
}

/// Refresh and retry timing, validated by the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Fraction of the lifetime after which the token is refreshed.
    pub ratio: f64,
    /// Width of the random window below `ratio`.
    pub jitter: f64,
    /// Floor for the delay between two token requests.
    pub min_interval: Duration,
    /// First retry delay ceiling.
    pub backoff_initial: Duration,
    /// Largest retry delay ceiling.
    pub backoff_max: Duration,
    /// Retry delay ceiling while no unexpired token is held; at most `backoff_max`.
    pub backoff_max_expired: Duration,
}

/// The longest single sleep of the refresh loop: it wakes at least this often to compare the
/// wall clock with the schedule, so a machine that was suspended (when the monotonic clock
/// stands still) refreshes promptly after it resumes.
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(30);

/// When the next request is due, on both clocks: the monotonic clock drives the timer, the wall
/// clock catches the time a suspended machine did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub at: Instant,
    pub wall: SystemTime,
}

impl Due {
    /// Due `delay` after a request sent at `sent` (monotonic) and `sent_wall` (wall clock).
    pub(crate) fn after(sent: Instant, sent_wall: SystemTime, delay: Duration) -> Due {
        Due {
            at: sent + delay,
            wall: sent_wall + delay,
        }
    }

    /// Whether the request is due by either clock.
    pub(crate) fn reached(&self, now: Instant, wall_now: SystemTime) -> bool {
        now >= self.at || wall_now >= self.wall
    }

    /// When the loop should next wake: when due, or after [`MAX_SLEEP`], whichever is first.
    pub(crate) fn wake_at(&self, now: Instant) -> Instant {
        self.at.min(now + MAX_SLEEP)
    }
}

/// Whether the daemon still holds a token that has not expired, and for how long: after an
/// outage has outlasted the token, retries are paced for a quick recovery rather than for
/// sparing the endpoint, and no retry scheduled while the token was valid may run past its
/// expiry by more than the expired ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A token valid for `left` more.
    Valid {
        /// The time left.
        left: Duration,
    },
    /// No token, or an expired one.
    Expired,
}

impl Held {
    /// What is held at `now` when the token expires at `expires_at`.
    pub fn at(expires_at: Option<SystemTime>, now: SystemTime) -> Held {
        match expires_at.map(|at| at.duration_since(now)) {
            Some(Ok(left)) if !left.is_zero() => Held::Valid { left },
            _ => Held::Expired,
        }
    }
}

/// Why a token request failed, as far as timing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The endpoint refused the credentials: retrying soon will not help.
    Rejected,
    /// A passing fault; `retry_after` is what the endpoint asked for, if anything.
    Transient {
        /// The endpoint's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The endpoint answered with something unusable.
    InvalidResponse,
}

impl Timing {
    /// Delay from the moment a token request was sent until the next one, for a token living
    /// `lifetime`. `unit` is a uniform random number in `[0, 1]`: the refresh lands in
    /// `[ratio - jitter, ratio]` of the lifetime, but never sooner than `min_interval`.
    pub fn refresh_delay(&self, lifetime: Duration, unit: f64) -> Duration {
        let fraction = self.ratio - self.jitter * unit.clamp(0.0, 1.0);
        lifetime.mul_f64(fraction).max(self.min_interval)
    }

    /// The ceiling of the retry delay after `failures` consecutive failures:
    /// `min(backoff_max, backoff_initial * 2^(failures - 1))`, at most `backoff_max_expired`
    /// past the held token's expiry (so at most `backoff_max_expired` once it has expired).
    pub fn backoff_ceiling(&self, failures: u32, held: Held) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let ceiling = self
            .backoff_initial
            .saturating_mul(1 << doublings)
            .min(self.backoff_max);
        match held {
            Held::Valid { left } => ceiling.min(left.saturating_add(self.backoff_max_expired)),
            Held::Expired => ceiling.min(self.backoff_max_expired),
        }
    }

    /// Exponential backoff with equal jitter: a delay between half the ceiling and the ceiling,
    /// so no retry comes sooner than half its ceiling. `unit` is uniform in `[0, 1]`.
    pub fn backoff(&self, failures: u32, held: Held, unit: f64) -> Duration {
        let ceiling = self.backoff_ceiling(failures, held);
        ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// Delay before the next attempt after `failures` consecutive failures. `Retry-After` can
    /// lengthen the backoff (up to `backoff_max`), never shorten it.
    pub fn retry_delay(&self, failures: u32, failure: Failure, held: Held, unit: f64) -> Duration {
        let backoff = self.backoff(failures, held, unit);
        match failure {
            Failure::Rejected => self.backoff_max,
            Failure::Transient {
                retry_after: Some(wait),
            } => backoff.max(wait.min(self.backoff_max)),
            Failure::Transient { retry_after: None } | Failure::InvalidResponse => backoff,
        }
    }
}

impl Timing {
    /// How long after a request the next one may be sent when something asks for a refresh
    /// early (SIGHUP, rotated credentials, a 401 at the proxy): `min_interval`, or what the
    /// endpoint asked for with `Retry-After` (capped at `backoff_max`, as for retries).
    pub fn request_floor(&self, last: Option<Failure>) -> Duration {
        match last {
            Some(Failure::Transient {
                retry_after: Some(wait),
            }) => self.min_interval.max(wait.min(self.backoff_max)),
            _ => self.min_interval,
        }
    }
}

/// Parses a `Retry-After` header value: delay-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        ratio: 0.8,
        jitter: 0.05,
        min_interval: Duration::from_secs(1),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        backoff_max_expired: Duration::from_secs(8),
    };

    #[test]
    fn refresh_lands_in_the_jitter_window() {
        let lifetime = Duration::from_secs(900);
        assert_eq!(
            TIMING.refresh_delay(lifetime, 0.0),
            Duration::from_secs(720)
        );
        assert_eq!(
            TIMING.refresh_delay(lifetime, 1.0),
            Duration::from_secs(675)
        );
        for step in 0..=100 {
            let delay = TIMING.refresh_delay(lifetime, f64::from(step) / 100.0);
            assert!(delay >= Duration::from_secs(675) && delay <= Duration::from_secs(720));
        }
    }

    #[test]
    fn the_loop_wakes_often_and_trusts_either_clock() {
        let sent = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let due = Due::after(sent, wall, Duration::from_secs(720));
        assert_eq!(due.wake_at(sent), sent + MAX_SLEEP);
        assert_eq!(
            due.wake_at(sent + Duration::from_secs(700)),
            sent + Duration::from_secs(720)
        );
        assert!(!due.reached(
            sent + Duration::from_secs(30),
            wall + Duration::from_secs(30)
        ));
        assert!(
            due.reached(
                sent + Duration::from_secs(30),
                wall + Duration::from_secs(3600)
            ),
            "a resumed machine: the monotonic clock lags, the wall clock does not"
        );
        assert!(due.reached(sent + Duration::from_secs(720), wall));
        assert_eq!(Held::at(None, wall), Held::Expired);
        assert_eq!(Held::at(Some(wall), wall), Held::Expired);
        assert_eq!(
            Held::at(Some(wall + Duration::from_secs(1)), wall),
            Held::Valid {
                left: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn early_requests_wait_the_minimum_interval_and_retry_after() {
        assert_eq!(TIMING.request_floor(None), Duration::from_secs(1));
        assert_eq!(
            TIMING.request_floor(Some(Failure::Rejected)),
            Duration::from_secs(1)
        );
        let asked = |secs| Failure::Transient {
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            TIMING.request_floor(Some(asked(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            TIMING.request_floor(Some(asked(300))),
            Duration::from_secs(60),
            "Retry-After is capped at --backoff-max, as for retries"
        );
        assert_eq!(TIMING.request_floor(Some(asked(0))), Duration::from_secs(1));
    }

    #[test]
    fn tiny_lifetimes_respect_the_minimum_interval() {
        assert_eq!(
            TIMING.refresh_delay(Duration::from_millis(500), 0.5),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        const VALID: Held = Held::Valid {
            left: Duration::MAX,
        };
        assert_eq!(TIMING.backoff(1, VALID, 1.0), Duration::from_secs(1));
        assert_eq!(TIMING.backoff(2, VALID, 1.0), Duration::from_secs(2));
        assert_eq!(TIMING.backoff(4, VALID, 1.0), Duration::from_secs(8));
        assert_eq!(TIMING.backoff(7, VALID, 1.0), Duration::from_secs(60));
        assert_eq!(
            TIMING.backoff(u32::MAX, VALID, 1.0),
            Duration::from_secs(60)
        );
        assert_eq!(TIMING.backoff(5, VALID, 0.5), Duration::from_secs(12));
        assert_eq!(TIMING.backoff(5, VALID, 0.0), Duration::from_secs(8));
        assert_eq!(TIMING.backoff(1, VALID, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn no_retry_runs_far_past_the_expiry_of_the_token_held() {
        let soon = Held::Valid {
            left: Duration::from_secs(10),
        };
        assert_eq!(TIMING.backoff_ceiling(9, soon), Duration::from_secs(18));
        let later = Held::Valid {
            left: Duration::from_secs(600),
        };
        assert_eq!(TIMING.backoff_ceiling(9, later), Duration::from_secs(60));
    }

    #[test]
    fn an_expired_token_keeps_retries_short() {
        use Held::*;
        assert_eq!(TIMING.backoff(3, Expired, 1.0), Duration::from_secs(4));
        assert_eq!(TIMING.backoff(9, Expired, 1.0), Duration::from_secs(8));
        assert_eq!(TIMING.backoff(9, Expired, 0.0), Duration::from_secs(4));
        let asked = Failure::Transient {
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(
            TIMING.retry_delay(9, asked, Expired, 0.0),
            Duration::from_secs(30),
            "the endpoint's Retry-After still wins"
        );
    }

    #[test]
    fn retry_delay_follows_the_failure_class() {
        const VALID: Held = Held::Valid {
            left: Duration::MAX,
        };
        assert_eq!(
            TIMING.retry_delay(1, Failure::Rejected, VALID, 0.0),
            Duration::from_secs(60)
        );
        let asked = Failure::Transient {
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            TIMING.retry_delay(1, asked, VALID, 0.0),
            Duration::from_secs(7)
        );
        let greedy = Failure::Transient {
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            TIMING.retry_delay(1, greedy, VALID, 0.0),
            Duration::from_secs(60)
        );
        let now = Failure::Transient {
            retry_after: Some(Duration::ZERO),
        };
        assert_eq!(
            TIMING.retry_delay(6, now, VALID, 0.0),
            Duration::from_secs(16),
            "Retry-After: 0 never shortens the backoff"
        );
        assert_eq!(
            TIMING.retry_delay(3, Failure::InvalidResponse, VALID, 1.0),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn timing_options_are_checked() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            timing: TimingArgs,
        }
        let check = |argv: &[&str]| {
            let argv = std::iter::once("test").chain(argv.iter().copied());
            Cli::try_parse_from(argv).unwrap().timing.settings()
        };
        let defaults = check(&[]).unwrap();
        assert_eq!((defaults.ratio, defaults.jitter), (0.8, 0.05));
        assert_eq!(defaults.backoff_max, Duration::from_secs(60));
        for ratio in ["1", "0", "NaN"] {
            assert!(matches!(
                check(&["--refresh-ratio", ratio]),
                Err(TimingError::Ratio(_))
            ));
        }
        assert!(matches!(
            check(&["--refresh-jitter", "0.8"]),
            Err(TimingError::Jitter { .. })
        ));
        assert!(matches!(
            check(&["--refresh-jitter=-0.1"]),
            Err(TimingError::Jitter { .. })
        ));
        assert!(matches!(
            check(&["--backoff-initial", "2m"]),
            Err(TimingError::Backoff { .. })
        ));
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
