//! Value parsers and checks shared by the flag groups: durations, file modes, loopback hosts.

use std::net::IpAddr;
use std::time::Duration;

use url::{Host, Url};

/// The longest duration accepted by any option, to catch unit mistakes.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses a human duration such as `500ms`, `30s` or `5m`: greater than zero, at most a day.
pub(crate) fn positive_duration(raw: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(raw)
        .map_err(|e| format!("{e}; write a duration such as 500ms, 30s or 5m"))?;
    if value.is_zero() {
        return Err("must be greater than zero; write a duration such as 500ms or 30s".to_owned());
    }
    if value > MAX_DURATION {
        return Err("longer than 24h; write a duration such as 30s or 5m".to_owned());
    }
    Ok(value)
}

/// Parses octal permissions such as `0640` or `0o640`.
pub(crate) fn file_mode(raw: &str) -> Result<u32, String> {
    let digits = raw.strip_prefix("0o").unwrap_or(raw);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err("expected octal permissions from 0000 to 0777, such as 0640".to_owned()),
    }
}

/// Whether the URL's host is `localhost` or a loopback address.
pub(crate) fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// A DNS label (`dots` false) or subdomain (`dots` true) of at most `max` characters.
pub(crate) fn dns_name(text: &str, dots: bool, max: usize) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    text.len() <= max
        && edge(text.chars().next())
        && edge(text.chars().last())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_modes_parse() {
        assert_eq!(positive_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(positive_duration("ten seconds").is_err());
        assert!(positive_duration("2d").is_err());
        assert!(positive_duration("0s")
            .unwrap_err()
            .contains("greater than zero"));
        assert_eq!(file_mode("0600").unwrap(), 0o600);
        assert_eq!(file_mode("0o644").unwrap(), 0o644);
        assert!(file_mode("0999").is_err());
        assert!(file_mode("1777").is_err());
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://localhost:1/",
            "http://127.0.0.2/",
            "http://[::1]:8/",
        ] {
            assert!(is_loopback_url(&Url::parse(url).unwrap()), "{url}");
        }
        for url in ["http://10.0.0.1/", "http://api.fiskil.com/", "http://[::]/"] {
            assert!(!is_loopback_url(&Url::parse(url).unwrap()), "{url}");
        }
    }
}
