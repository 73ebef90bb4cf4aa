//! Fuzzes the token response parser: it must never panic, and anything it accepts must be a
//! usable token with a sane lifetime.
#![no_main]

use fiskil_token_refresher::{parse_token_response, MAX_EXPIRES_IN};
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;

fuzz_target!(|body: &[u8]| {
    if let Ok((token, lifetime)) = parse_token_response(body) {
        let token = token.expose_secret();
        assert!(!token.is_empty());
        assert!(!token.chars().any(|c| c.is_whitespace() || c.is_control()));
        assert!((1..=MAX_EXPIRES_IN).contains(&lifetime.as_secs()));
    }
});
