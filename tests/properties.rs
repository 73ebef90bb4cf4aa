//! Property tests: the refresh and backoff math, the response parser and `Retry-After`
//! parsing hold their promises for any input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fiskil_token_refresher::{parse_retry_after, Failure, Held, Timing};
use fiskil_token_refresher::{parse_token_response, MAX_BODY_BYTES, MAX_EXPIRES_IN};
use proptest::prelude::*;
use secrecy::ExposeSecret;

/// Any timing the configuration accepts.
fn timing() -> impl Strategy<Value = Timing> {
    (
        0.01f64..0.99,
        0.0f64..1.0,
        1u64..5_000,
        1u64..10_000,
        1u64..600_000,
        1u64..120_000,
    )
        .prop_map(
            |(ratio, jitter_share, min_ms, initial_ms, extra_ms, expired_ms)| Timing {
                ratio,
                jitter: ratio * jitter_share * 0.999,
                min_interval: Duration::from_millis(min_ms),
                backoff_initial: Duration::from_millis(initial_ms),
                backoff_max: Duration::from_millis(initial_ms + extra_ms),
                backoff_max_expired: Duration::from_millis(expired_ms)
                    .min(Duration::from_millis(initial_ms + extra_ms)),
            },
        )
}

fn held() -> impl Strategy<Value = Held> {
    prop_oneof![
        Just(Held::Expired),
        (0u64..10_000_000).prop_map(|ms| Held::Valid {
            left: Duration::from_millis(ms)
        }),
        Just(Held::Valid {
            left: Duration::MAX
        }),
    ]
}

proptest! {
    #[test]
    fn refresh_lands_in_the_window_and_before_expiry(
        timing in timing(),
        lifetime_s in 1u64..=MAX_EXPIRES_IN,
        unit in 0.0f64..=1.0,
    ) {
        let lifetime = Duration::from_secs(lifetime_s);
        let delay = timing.refresh_delay(lifetime, unit);
        let low = lifetime.mul_f64(timing.ratio - timing.jitter);
        let high = lifetime.mul_f64(timing.ratio);
        if timing.min_interval < low {
            prop_assert!(delay >= low && delay <= high, "{delay:?} outside [{low:?}, {high:?}]");
            prop_assert!(delay < lifetime);
        } else {
            prop_assert!(delay >= timing.min_interval);
            prop_assert!(delay <= high.max(timing.min_interval));
        }
    }

    #[test]
    fn refresh_delay_is_monotonic_in_the_lifetime(
        timing in timing(),
        a in 1u64..=MAX_EXPIRES_IN,
        b in 1u64..=MAX_EXPIRES_IN,
        unit in 0.0f64..=1.0,
    ) {
        let (short, long) = (a.min(b), a.max(b));
        prop_assert!(
            timing.refresh_delay(Duration::from_secs(short), unit)
                <= timing.refresh_delay(Duration::from_secs(long), unit)
        );
    }

    #[test]
    fn backoff_is_bounded_and_its_ceiling_grows(
        timing in timing(),
        failures in 1u32..200,
        held in held(),
        unit in 0.0f64..=1.0,
    ) {
        let delay = timing.backoff(failures, held, unit);
        let ceiling = timing.backoff_ceiling(failures, held);
        prop_assert!(delay <= ceiling && ceiling <= timing.backoff_max);
        prop_assert!(ceiling <= timing.backoff_ceiling(failures + 1, held));
        match held {
            Held::Expired => prop_assert!(ceiling <= timing.backoff_max_expired),
            Held::Valid { left } => {
                prop_assert!(ceiling <= left.saturating_add(timing.backoff_max_expired))
            }
        }
    }

    #[test]
    fn no_retry_comes_sooner_than_half_its_backoff_ceiling(
        timing in timing(),
        failures in 1u32..200,
        held in held(),
        unit in 0.0f64..=1.0,
        retry_after in proptest::option::of(0u64..10_000_000),
    ) {
        let floor = timing.backoff_ceiling(failures, held) / 2;
        let transient = Failure::Transient { retry_after: retry_after.map(Duration::from_secs) };
        for failure in [Failure::Rejected, Failure::InvalidResponse, transient] {
            let delay = timing.retry_delay(failures, failure, held, unit);
            // One nanosecond of slack for the float rounding of the jitter.
            prop_assert!(delay + Duration::from_nanos(1) >= floor, "{delay:?} < {floor:?}");
            prop_assert!(delay > Duration::ZERO);
        }
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens(
        timing in timing(),
        failures in 1u32..200,
        held in held(),
        unit in 0.0f64..=1.0,
        retry_after in 0u64..10_000_000,
    ) {
        let asked = Duration::from_millis(retry_after);
        let plain = timing.retry_delay(failures, Failure::Transient { retry_after: None }, held, unit);
        let with = timing.retry_delay(failures, Failure::Transient { retry_after: Some(asked) }, held, unit);
        prop_assert!(with >= plain);
        prop_assert!(with >= asked.min(timing.backoff_max));
        prop_assert!(with <= timing.backoff_max);
    }

    #[test]
    fn retry_delays_never_exceed_the_maximum(
        timing in timing(),
        failures in 1u32..200,
        held in held(),
        unit in 0.0f64..=1.0,
        retry_after in proptest::option::of(0u64..10_000_000),
    ) {
        let transient = Failure::Transient { retry_after: retry_after.map(Duration::from_secs) };
        for failure in [Failure::Rejected, Failure::InvalidResponse, transient] {
            prop_assert!(timing.retry_delay(failures, failure, held, unit) <= timing.backoff_max);
        }
        prop_assert_eq!(timing.retry_delay(failures, Failure::Rejected, held, unit), timing.backoff_max);
    }

    #[test]
    fn the_parser_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_token_response(&body);
    }

    #[test]
    fn an_accepted_token_is_always_usable(
        token in proptest::option::of(".{0,40}"),
        field in prop_oneof![Just("token"), Just("access_token")],
        expires_in in prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,5}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ],
    ) {
        let mut body = serde_json::Map::new();
        if let Some(token) = &token {
            body.insert(field.to_owned(), serde_json::Value::from(token.clone()));
        }
        body.insert("expires_in".to_owned(), expires_in);
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Ok((value, lifetime)) = parse_token_response(&bytes) {
            let value = value.expose_secret();
            prop_assert!(!value.is_empty());
            prop_assert!(!value.chars().any(|c| c.is_whitespace() || c.is_control()));
            prop_assert!(lifetime.as_secs() >= 1 && lifetime.as_secs() <= MAX_EXPIRES_IN);
            prop_assert!(bytes.len() <= MAX_BODY_BYTES);
        }
    }

    #[test]
    fn well_formed_responses_are_accepted(
        token in "[A-Za-z0-9._~+/=-]{1,200}",
        expires_in in 1u64..=MAX_EXPIRES_IN,
    ) {
        let body = serde_json::json!({"token": token, "expires_in": expires_in}).to_string();
        let (value, lifetime) = parse_token_response(body.as_bytes()).unwrap();
        prop_assert_eq!(value.expose_secret(), token.as_str());
        prop_assert_eq!(lifetime, Duration::from_secs(expires_in));
    }

    #[test]
    fn retry_after_seconds_round_trip(seconds in 0u64..u64::MAX / 2) {
        prop_assert_eq!(parse_retry_after(&seconds.to_string(), SystemTime::now()), Some(Duration::from_secs(seconds)));
    }

    #[test]
    fn retry_after_dates_are_relative_to_now(now_s in 1_000_000_000u64..4_000_000_000, ahead in 0u64..1_000_000) {
        let now = UNIX_EPOCH + Duration::from_secs(now_s);
        let header = httpdate::fmt_http_date(now + Duration::from_secs(ahead));
        prop_assert_eq!(parse_retry_after(&header, now), Some(Duration::from_secs(ahead)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(ahead));
        prop_assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_never_panics(text in ".{0,64}") {
        let _ = parse_retry_after(&text, SystemTime::now());
    }
}
