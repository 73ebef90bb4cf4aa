//! `explain`: what a timing setting will do (window, margin, retries, load), computed offline.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cli::positive_duration;
use crate::schedule::{Failure, Held, Timing, TimingArgs, TimingError};

/// Longest `--expires-in` accepted: the daemon's own limit on `expires_in` (30 days).
const MAX_EXPIRES_IN: u64 = 30 * 24 * 3600;

/// Probability that the stated one-second peak is exceeded somewhere in the refresh window.
const PEAK_RISK: f64 = 0.01;

/// Points at which the refresh delay is sampled to find its mean and its densest second: at
/// least this many, and at least this many per second of the window.
const SAMPLES: u32 = 100_000;
const SAMPLES_PER_SECOND: u64 = 64;

/// The failure the retry figures assume: a passing fault without `Retry-After`.
const TRANSIENT: Failure = Failure::Transient { retry_after: None };

/// Options of `explain`: the daemon's timing flags plus what the token and the deployment
/// look like.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// Token lifetime the endpoint grants (its expires_in), in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..=MAX_EXPIRES_IN))]
    pub expires_in: u64,

    /// Refreshers asking the same endpoint, e.g. pods with a sidecar each
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub pods: u64,

    /// Applications read the token from a mounted Secret: count kubelet's propagation delay
    #[arg(long)]
    pub secret_consumers: bool,

    /// With --secret-consumers: how long kubelet may take to show a new Secret in pods (its
    /// 1m sync period, jittered up to 50 %)
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = positive_duration)]
    pub propagation_delay: Duration,

    /// `text` for people, `json` for scripts
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = ExplainFormat::Text)]
    pub output: ExplainFormat,

    /// The timing options to explain.
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainFormat {
    Text,
    Json,
}

impl ExplainArgs {
    /// Checks the timing flags (as the daemon does) and works out the report.
    pub fn report(&self) -> Result<Report, TimingError> {
        let timing = self.timing.settings()?;
        let consumers = self.secret_consumers.then_some(self.propagation_delay);
        Ok(Report::new(
            &timing,
            Duration::from_secs(self.expires_in),
            self.pods,
            consumers,
        ))
    }

    /// The report in the chosen format.
    pub fn render(&self, report: &Report) -> String {
        match self.output {
            ExplainFormat::Text => report.text(),
            ExplainFormat::Json => {
                let mut json = serde_json::to_string_pretty(report).expect("the report serialises");
                json.push('\n');
                json
            }
        }
    }
}

/// A closed range of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    pub min: f64,
    pub max: f64,
}

/// The retry after `failure` consecutive failures while the token is still valid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Retry {
    pub failure: u32,
    /// Delay from the failure to the retry.
    pub delay_s: Span,
    /// When the retry is sent, counted from the refresh request, request times not included.
    pub at_s: Span,
}

/// What a timing setting does, in seconds unless named otherwise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub expires_in_s: f64,
    /// When the next request is sent, after the previous one was sent.
    pub refresh_s: Span,
    pub refresh_mean_s: f64,
    /// Validity the held token has left when the refresh is sent.
    pub margin_s: Span,
    /// Retries after transient failures (no Retry-After), until the ceiling stops growing.
    pub retries: Vec<Retry>,
    /// Requests sent before the held token expires (the refresh and its retries): `min` with
    /// the smallest margin and the longest delays, `max` with the largest and shortest.
    pub attempts_in_margin: AttemptSpan,
    /// Retry-After lengthens a delay up to this; rejected credentials are retried this often.
    pub backoff_max_s: f64,
    pub outage: Outage,
    pub load: Load,
    pub secret_consumers: Option<Consumers>,
    pub warnings: Vec<String>,
}

/// A count of attempts, worst and best case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AttemptSpan {
    pub min: u64,
    pub max: u64,
}

/// The outage rule: retries once the held token has expired.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outage {
    /// Delay between retries once the token has expired.
    pub delay_s: Span,
    /// Requests a minute from each refresher while the endpoint keeps failing.
    pub requests_per_minute: Span,
    /// Worst case from the endpoint healing to a new token (request time not included): no retry
    /// runs more than `delay_s.max` past the token's expiry, and none is further apart after it.
    pub heal_to_token_s: f64,
}

/// The request rate at the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Load {
    pub requests_per_hour_per_pod: Span,
    pub requests_per_hour_per_pod_mean: f64,
    pub pods: u64,
    pub average_per_second: f64,
    /// With every pod started at once, the most requests any clock second of the refresh window
    /// sees, exceeded with a probability of at most `peak_risk`.
    pub peak_per_second: u64,
    pub peak_risk: f64,
    pub peak_model: &'static str,
}

/// Applications that read the token from a mounted Secret.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Consumers {
    pub propagation_delay_s: f64,
    /// Validity left when the last consumer sees the new token.
    pub margin_s: Span,
    /// Attempts that still reach the consumers before their token expires.
    pub attempts_in_margin: AttemptSpan,
}

const PEAK_MODEL: &str =
    "pods started together (a rollout, a restart of the node pool), each next \
refresh independent over the refresh window as the scheduler draws it; the count in each clock \
second is binomial, the peak is a union bound over the window's seconds";

impl Report {
    /// Works out the report with the scheduler's own functions.
    pub fn new(
        timing: &Timing,
        lifetime: Duration,
        pods: u64,
        propagation: Option<Duration>,
    ) -> Report {
        let earliest = timing.refresh_delay(lifetime, 1.0);
        let latest = timing.refresh_delay(lifetime, 0.0);
        let margin_min = lifetime.saturating_sub(latest);
        let margin_max = lifetime.saturating_sub(earliest);
        let delays = refresh_distribution(timing, lifetime);
        let attempts = AttemptSpan {
            min: attempts_within(timing, margin_min, 1.0),
            max: attempts_within(timing, margin_max, 0.0),
        };

        let outage_min = timing.backoff(u32::MAX, Held::Expired, 0.0);
        let outage_max = timing.backoff(u32::MAX, Held::Expired, 1.0);
        let outage = Outage {
            delay_s: span(outage_min, outage_max),
            requests_per_minute: Span {
                min: 60.0 / outage_max.as_secs_f64(),
                max: 60.0 / outage_min.as_secs_f64(),
            },
            heal_to_token_s: outage_max.as_secs_f64(),
        };

        let mean = delays.mean;
        let load = Load {
            requests_per_hour_per_pod: Span {
                min: 3600.0 / latest.as_secs_f64(),
                max: 3600.0 / earliest.as_secs_f64(),
            },
            requests_per_hour_per_pod_mean: 3600.0 / mean,
            pods,
            average_per_second: pods as f64 / mean,
            peak_per_second: peak(pods, delays.densest_second, delays.seconds, PEAK_RISK),
            peak_risk: PEAK_RISK,
            peak_model: PEAK_MODEL,
        };

        let secret_consumers = propagation.map(|delay| {
            let min = margin_min.saturating_sub(delay);
            let max = margin_max.saturating_sub(delay);
            Consumers {
                propagation_delay_s: delay.as_secs_f64(),
                margin_s: span(min, max),
                attempts_in_margin: AttemptSpan {
                    min: attempts_within(timing, min, 1.0),
                    max: attempts_within(timing, max, 0.0),
                },
            }
        });

        let mut warnings = Vec::new();
        if timing.min_interval >= lifetime {
            warnings.push(format!(
                "--min-refresh-interval ({} s) is not shorter than the token lifetime ({} s): every \
                 token expires before the next refresh; lower --min-refresh-interval",
                secs(timing.min_interval),
                lifetime.as_secs()
            ));
        }
        if margin_min < timing.backoff_max {
            warnings.push(format!(
                "the smallest margin ({} s) is shorter than --backoff-max ({} s): one Retry-After \
                 or rejected-credentials wait can outlast the token; lower --refresh-ratio or \
                 --backoff-max",
                secs(margin_min),
                secs(timing.backoff_max)
            ));
        }
        if let Some(delay) = propagation.filter(|delay| margin_min <= *delay) {
            warnings.push(format!(
                "the smallest margin ({} s) is not longer than the propagation delay ({} s): \
                 applications reading the Secret can hold an expired token; lower --refresh-ratio",
                secs(margin_min),
                secs(delay)
            ));
        }

        Report {
            expires_in_s: lifetime.as_secs_f64(),
            refresh_s: span(earliest, latest),
            refresh_mean_s: mean,
            margin_s: span(margin_min, margin_max),
            retries: retries(timing),
            attempts_in_margin: attempts,
            backoff_max_s: timing.backoff_max.as_secs_f64(),
            outage,
            load,
            secret_consumers,
            warnings,
        }
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let r = self;
        let w = &mut out;
        let _ = writeln!(w, "Token lifetime {} s", num(r.expires_in_s));
        let _ = writeln!(w, "\nRefresh");
        let _ = writeln!(
            w,
            "  next request {} s after the previous one was sent (mean {} s)",
            range(r.refresh_s),
            num(r.refresh_mean_s)
        );
        let _ = writeln!(
            w,
            "  validity left at refresh (margin): {} s",
            range(r.margin_s)
        );
        let _ = writeln!(
            w,
            "\nRetries after transient failures (no Retry-After), while the token is valid"
        );
        let _ = writeln!(
            w,
            "  failure  delay (s)    retry sent (s after the refresh)"
        );
        for retry in &r.retries {
            let _ = writeln!(
                w,
                "  {:<7}  {:<11}  {}",
                retry.failure,
                range(retry.delay_s),
                range(retry.at_s)
            );
        }
        if let Some(last) = r.retries.last() {
            let _ = writeln!(
                w,
                "  then every {} s; request times add to these",
                range(last.delay_s)
            );
        }
        let _ = writeln!(
            w,
            "  requests before the token expires: {} (smallest margin, longest delays) to {} \
             (largest margin, shortest delays)",
            r.attempts_in_margin.min, r.attempts_in_margin.max
        );
        let _ = writeln!(
            w,
            "  Retry-After lengthens a delay up to {} s; rejected credentials are retried every {} s",
            num(r.backoff_max_s),
            num(r.backoff_max_s)
        );
        let o = &r.outage;
        let _ = writeln!(w, "\nOutage rule (once the token has expired)");
        let _ = writeln!(
            w,
            "  retries every {} s: {} requests a minute from each refresher",
            range(o.delay_s),
            range(o.requests_per_minute)
        );
        let _ = writeln!(
            w,
            "  a new token within {} s of the endpoint healing once the token has expired; a heal \
             before the expiry gets one {} s after the expiry at the latest",
            num(o.heal_to_token_s),
            num(o.heal_to_token_s)
        );
        let l = &r.load;
        let _ = writeln!(w, "\nLoad on the token endpoint");
        let _ = writeln!(
            w,
            "  per pod: {} requests an hour (mean {})",
            range(l.requests_per_hour_per_pod),
            num(l.requests_per_hour_per_pod_mean)
        );
        let _ = writeln!(
            w,
            "  {} pod{}: {} requests a second on average; worst one-second peak {} (exceeded with \
             probability under {} %)",
            l.pods,
            if l.pods == 1 { "" } else { "s" },
            num(l.average_per_second),
            l.peak_per_second,
            num(l.peak_risk * 100.0)
        );
        let _ = writeln!(w, "  peak model: {}", l.peak_model);
        if let Some(c) = &r.secret_consumers {
            let _ = writeln!(
                w,
                "\nSecret consumers (kubelet propagation delay {} s)",
                num(c.propagation_delay_s)
            );
            let _ = writeln!(
                w,
                "  validity left when the last pod sees the new token: {} s",
                range(c.margin_s)
            );
            let _ = writeln!(
                w,
                "  requests that still reach the pods in time: {} to {}",
                c.attempts_in_margin.min, c.attempts_in_margin.max
            );
        }
        if !r.warnings.is_empty() {
            let _ = writeln!(w);
            for warning in &r.warnings {
                let _ = writeln!(w, "warning: {warning}");
            }
        }
        out
    }
}

/// The refresh delay as the scheduler draws it: its mean (to the millisecond), the largest share of it that
/// falls in one clock second, and how many seconds the window touches.
struct Distribution {
    mean: f64,
    densest_second: f64,
    seconds: u64,
}

fn refresh_distribution(timing: &Timing, lifetime: Duration) -> Distribution {
    let first = timing.refresh_delay(lifetime, 1.0).as_secs();
    let last = timing.refresh_delay(lifetime, 0.0).as_secs();
    let seconds = last - first + 1;
    let mut counts = vec![0u32; usize::try_from(seconds).expect("a window of at most 30 days")];
    let samples = u32::try_from(seconds * SAMPLES_PER_SECOND)
        .unwrap_or(u32::MAX)
        .max(SAMPLES);
    let mut sum = 0.0;
    for i in 0..samples {
        let unit = (f64::from(i) + 0.5) / f64::from(samples);
        let delay = timing.refresh_delay(lifetime, unit);
        sum += delay.as_secs_f64();
        counts[usize::try_from(delay.as_secs() - first).expect("in the window")] += 1;
    }
    let densest = counts.iter().copied().max().unwrap_or(0);
    Distribution {
        mean: (sum / f64::from(samples) * 1000.0).round() / 1000.0,
        densest_second: f64::from(densest) / f64::from(samples),
        seconds,
    }
}

/// The smallest `m` such that, with `pods` independent draws each landing in a given second
/// with probability at most `p`, some of `seconds` seconds gets more than `m` with probability
/// at most `risk` (a union bound over the seconds of binomial tails).
fn peak(pods: u64, p: f64, seconds: u64, risk: f64) -> u64 {
    if p >= 1.0 {
        return pods;
    }
    let per_second = risk / seconds as f64;
    let n = pods as f64;
    let mut log_pmf = Vec::with_capacity(usize::try_from(pods).unwrap_or(0) + 1);
    let odds = (p / (1.0 - p)).ln();
    let mut current = n * (1.0 - p).ln();
    log_pmf.push(current);
    for k in 0..pods {
        let k = k as f64;
        current += ((n - k) / (k + 1.0)).ln() + odds;
        log_pmf.push(current);
    }
    let mut tail = 0.0;
    for (k, log) in log_pmf.iter().enumerate().rev() {
        tail += log.exp();
        if tail > per_second {
            return k as u64;
        }
    }
    0
}

/// Requests sent within `window` of the first one while every attempt fails: the first at 0,
/// each next one a retry delay (drawn with `unit`) after the previous failure.
fn attempts_within(timing: &Timing, window: Duration, unit: f64) -> u64 {
    let mut at = Duration::ZERO;
    let mut failures: u32 = 0;
    let mut sent: u64 = 0;
    while at < window {
        sent += 1;
        failures = failures.saturating_add(1);
        let held = Held::Valid { left: window - at };
        let delay = timing
            .retry_delay(failures, TRANSIENT, held, unit)
            .max(Duration::from_nanos(1));
        at += delay;
        // Once the ceiling is --backoff-max every delay is the same, until the expiry comes close
        // enough to cap it: count those requests at once.
        if timing.backoff_ceiling(failures, PLENTY) == timing.backoff_max {
            let reach = timing.backoff_max + timing.backoff_max_expired;
            let free = window.saturating_sub(at).saturating_sub(reach);
            let skip = (free.as_secs_f64() / delay.as_secs_f64()).floor();
            if skip >= 1.0 {
                sent += skip as u64;
                at += delay.mul_f64(skip);
            }
        }
    }
    sent
}

/// A token that stays valid long past any retry: the plain backoff schedule.
const PLENTY: Held = Held::Valid {
    left: Duration::MAX,
};

/// The retry schedule until the ceiling reaches `--backoff-max`.
fn retries(timing: &Timing) -> Vec<Retry> {
    let mut list = Vec::new();
    let (mut at_min, mut at_max) = (Duration::ZERO, Duration::ZERO);
    for failure in 1..=64 {
        let min = timing.retry_delay(failure, TRANSIENT, PLENTY, 0.0);
        let max = timing.retry_delay(failure, TRANSIENT, PLENTY, 1.0);
        at_min += min;
        at_max += max;
        list.push(Retry {
            failure,
            delay_s: span(min, max),
            at_s: span(at_min, at_max),
        });
        if timing.backoff_ceiling(failure, PLENTY) == timing.backoff_max {
            break;
        }
    }
    list
}

fn span(min: Duration, max: Duration) -> Span {
    Span {
        min: min.as_secs_f64(),
        max: max.as_secs_f64(),
    }
}

/// A number with three decimals, or three significant digits below 1, trailing zeros dropped.
fn num(value: f64) -> String {
    let decimals = if value > 0.0 && value < 1.0 {
        (2 - value.log10().floor() as i32).clamp(3, 9) as usize
    } else {
        3
    };
    let text = format!("{value:.decimals$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

fn secs(value: Duration) -> String {
    num(value.as_secs_f64())
}

fn range(span: Span) -> String {
    if span.min == span.max {
        num(span.min)
    } else {
        format!("{}–{}", num(span.min), num(span.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed-seed generator of uniform units (splitmix64), so the simulations repeat exactly.
    struct Units(u64);

    impl Units {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn timing(argv: &[&str]) -> Timing {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            timing: TimingArgs,
        }
        let argv = std::iter::once("test").chain(argv.iter().copied());
        Cli::try_parse_from(argv)
            .unwrap()
            .timing
            .settings()
            .unwrap()
    }

    const SETTINGS: [&[&str]; 6] = [
        &[],
        &["--refresh-ratio", "0.5", "--refresh-jitter", "0.1"],
        &[
            "--refresh-ratio",
            "0.95",
            "--backoff-max",
            "2m",
            "--backoff-initial",
            "3s",
        ],
        &["--backoff-max-expired", "1m", "--backoff-initial", "250ms"],
        &["--min-refresh-interval", "700s"],
        &["--refresh-jitter", "0"],
    ];

    #[test]
    fn the_defaults_give_the_documented_figures() {
        let t = timing(&[]);
        let report = Report::new(
            &t,
            Duration::from_secs(900),
            1000,
            Some(Duration::from_secs(90)),
        );
        assert_eq!(
            report.refresh_s,
            Span {
                min: 675.0,
                max: 720.0
            }
        );
        assert_eq!(
            report.margin_s,
            Span {
                min: 180.0,
                max: 225.0
            }
        );
        assert!((report.refresh_mean_s - 697.5).abs() < 0.01);
        let delays: Vec<(f64, f64)> = report
            .retries
            .iter()
            .map(|r| (r.delay_s.min, r.delay_s.max))
            .collect();
        assert_eq!(
            delays,
            [
                (0.5, 1.0),
                (1.0, 2.0),
                (2.0, 4.0),
                (4.0, 8.0),
                (8.0, 16.0),
                (16.0, 32.0),
                (30.0, 60.0)
            ]
        );
        // Longest delays from a 180 s margin: sent at 0, 1, 3, 7, 15, 31, 63, 123 (183 is late);
        // shortest from 225 s: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, then every 30 s up to 211.5.
        assert_eq!(report.attempts_in_margin, AttemptSpan { min: 8, max: 14 });
        assert_eq!(report.outage.delay_s, Span { min: 4.0, max: 8.0 });
        assert_eq!(
            report.outage.requests_per_minute,
            Span {
                min: 7.5,
                max: 15.0
            }
        );
        assert_eq!(report.outage.heal_to_token_s, 8.0);
        let consumers = report.secret_consumers.unwrap();
        assert_eq!(
            consumers.margin_s,
            Span {
                min: 90.0,
                max: 135.0
            }
        );
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let load = &report.load;
        assert!((load.average_per_second - 1000.0 / 697.5).abs() < 1e-3);
        assert!(load.peak_per_second > 1000 / 46 && load.peak_per_second < 1000 / 10);
    }

    /// One pod whose endpoint fails from its first refresh until `heal` (never, with `None`):
    /// the requests it sends before its token expires, and how long after the heal it has a
    /// new token. Every delay comes from the scheduler, every random unit from `units`.
    fn simulate(
        t: &Timing,
        report: &Report,
        lifetime: Duration,
        heal: Option<Duration>,
        units: &mut dyn FnMut() -> f64,
    ) -> (u64, Option<Duration>) {
        let refresh = t.refresh_delay(lifetime, units());
        let s = refresh.as_secs_f64();
        assert!(
            s >= report.refresh_s.min && s <= report.refresh_s.max,
            "{s}"
        );
        let mut at = refresh;
        let mut failures = 0;
        let mut sent_in_time = 0;
        loop {
            if let Some(heal) = heal.filter(|heal| refresh + *heal <= at) {
                // The first request after the heal gets the token: once the token has expired
                // it comes within the outage figure of the heal, and a heal before the expiry
                // waits at most that long past the expiry.
                let healed = refresh + heal;
                let bound =
                    healed.max(lifetime) + Duration::from_secs_f64(report.outage.heal_to_token_s);
                assert!(at <= bound, "token at {at:?}, healed at {healed:?}");
                return (sent_in_time, Some(at - healed));
            }
            let held = match lifetime.checked_sub(at) {
                Some(left) if !left.is_zero() => Held::Valid { left },
                _ => Held::Expired,
            };
            let valid = held != Held::Expired;
            if valid {
                sent_in_time += 1;
            } else if heal.is_none() {
                return (sent_in_time, None);
            }
            failures += 1;
            let delay = t.retry_delay(failures, TRANSIENT, held, units());
            if valid {
                // At most the plain schedule's delay, and never further past the expiry than
                // the expired ceiling.
                let row = report.retries[(failures as usize).min(report.retries.len()) - 1];
                let d = delay.as_secs_f64();
                assert!(d <= row.delay_s.max, "{d} {row:?}");
                assert!(
                    at + delay <= lifetime + t.backoff_max_expired,
                    "a retry at {:?} runs past the expiry",
                    at + delay
                );
            } else {
                let d = delay.as_secs_f64();
                assert!(d <= report.outage.delay_s.max, "{d} {:?}", report.outage);
            }
            at += delay;
        }
    }

    #[test]
    fn a_simulated_run_stays_within_the_figures() {
        let lifetime = Duration::from_secs(900);
        for argv in SETTINGS {
            let t = timing(argv);
            let report = Report::new(&t, lifetime, 1, None);
            let margin = report.margin_s;
            let mut rng = Units(7);
            let mut seen = (u64::MAX, 0);
            for _ in 0..2000 {
                let (sent, _) = simulate(&t, &report, lifetime, None, &mut || rng.next());
                assert!(
                    sent >= report.attempts_in_margin.min && sent <= report.attempts_in_margin.max,
                    "{argv:?}: {sent} attempts, {:?}",
                    report.attempts_in_margin
                );
                seen = (seen.0.min(sent), seen.1.max(sent));
            }
            // The extremes are reached: the latest refresh with the longest delays, the earliest
            // with the shortest.
            let worst = [0.0].into_iter().chain(std::iter::repeat(1.0));
            let mut worst = worst;
            let (sent, _) = simulate(&t, &report, lifetime, None, &mut || worst.next().unwrap());
            assert_eq!(sent, report.attempts_in_margin.min, "{argv:?}");
            let mut best = [1.0].into_iter().chain(std::iter::repeat(0.0));
            let (sent, _) = simulate(&t, &report, lifetime, None, &mut || best.next().unwrap());
            assert_eq!(sent, report.attempts_in_margin.max, "{argv:?}");
            assert!(seen.0 <= seen.1);

            let mut rng = Units(11);
            for step in 0..3000u32 {
                // Heals spread from the refresh to well past the expiry.
                let heal = Duration::from_secs_f64(
                    f64::from(step) / 3000.0 * (margin.max + 3.0 * report.backoff_max_s),
                );
                let (_, back) = simulate(&t, &report, lifetime, Some(heal), &mut || rng.next());
                assert!(
                    back.is_some(),
                    "{argv:?}: no token after healing at {heal:?}"
                );
            }
        }
    }

    #[test]
    fn the_peak_bounds_a_simulated_fleet() {
        let lifetime = Duration::from_secs(900);
        for (argv, pods) in [
            (&[][..], 1000),
            (SETTINGS[1], 5000),
            (SETTINGS[4], 300),
            (SETTINGS[5], 50),
        ] {
            let t = timing(argv);
            let report = Report::new(&t, lifetime, pods, None);
            let bound = report.load.peak_per_second;
            let mut rng = Units(3);
            let mut exceeded = 0;
            let mut largest = 0;
            for _ in 0..200 {
                let mut counts = std::collections::HashMap::new();
                for _ in 0..pods {
                    let second = t.refresh_delay(lifetime, rng.next()).as_secs();
                    *counts.entry(second).or_insert(0u64) += 1;
                }
                let most = counts.values().copied().max().unwrap();
                largest = largest.max(most);
                exceeded += u32::from(most > bound);
            }
            // At most 1 % of fleets may beat the bound; three times that (6 of 200) would be far
            // beyond chance for a correct one.
            assert!(
                exceeded <= 6,
                "{argv:?}: {exceeded} of 200 fleets beat {bound}"
            );
            eprintln!("{argv:?}: {pods} pods, bound {bound}, largest {largest}, {exceeded} over");
            // Not a vacuous bound: fleets come close to it.
            assert!(
                largest * 3 >= bound * 2,
                "{argv:?}: largest {largest}, bound {bound}"
            );
        }
    }

    #[test]
    fn settings_that_cannot_work_are_warned_about() {
        let t = timing(&["--min-refresh-interval", "20m"]);
        let report = Report::new(&t, Duration::from_secs(900), 1, None);
        assert!(report.warnings[0].starts_with("--min-refresh-interval (1200 s) is not shorter"));
        let t = timing(&["--refresh-ratio", "0.97", "--refresh-jitter", "0"]);
        let report = Report::new(&t, Duration::from_secs(900), 1, None);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("shorter than --backoff-max (60 s)"));
        let t = timing(&[]);
        let report = Report::new(
            &t,
            Duration::from_secs(900),
            1,
            Some(Duration::from_secs(180)),
        );
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("propagation delay (180 s)"));
        assert_eq!(report.secret_consumers.unwrap().attempts_in_margin.min, 0);
    }

    #[test]
    fn the_peak_of_one_second_windows() {
        assert_eq!(peak(1000, 1.0, 1, 0.01), 1000);
        assert_eq!(peak(1, 0.5, 2, 0.01), 1);
        let one = peak(1_000_000, 1.0 / 45.0, 45, 0.01);
        let mean = 1_000_000 / 45;
        assert!(one > mean && one < mean + 1000, "{one}");
    }
}
