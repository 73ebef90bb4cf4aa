//! Command-line options and environment variables, validated into a [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use secrecy::SecretString;
use url::{Host, Url};

use crate::credentials::{CredentialSources, Source};
use crate::reach::{Reach, ReachArgs, ReachConfigError};
use crate::schedule::Timing;

/// The documented token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://api.fiskil.com/v1/token";
/// Where the client_id is mounted from the credentials Secret by default.
pub const DEFAULT_CLIENT_ID_FILE: &str = "/var/run/secrets/fiskil/client_id";
/// Where the client_secret is mounted from the credentials Secret by default.
pub const DEFAULT_CLIENT_SECRET_FILE: &str = "/var/run/secrets/fiskil/client_secret";
/// The longest refresh interval accepted anywhere, to catch unit mistakes.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

const AFTER_HELP: &str = "\
Credentials:
  FISKIL_CLIENT_ID, FISKIL_CLIENT_SECRET  The credential values themselves, for local runs.
                                          Each replaces its file option; giving both is an error.
                                          There are no flags for them: command lines are visible
                                          to every process on the host.

Logging:
  RUST_LOG  Overrides --log-level with a full filter (e.g. fiskil_token_refresher=debug).

Proxies:
  HTTPS_PROXY, NO_PROXY  Honoured for the token request (not for --notify-url or --proxy-upstream).

Exit codes:
  0  success (--once) or clean shutdown on SIGTERM/SIGINT
  1  runtime failure (--once could not get and write a token in time, or credentials were rejected)
  2  configuration error (bad option, unreadable credentials, unusable output path)

Signals:
  SIGTERM, SIGINT  finish the current write and exit 0; a second signal exits 1 at once
  SIGHUP           refresh the token now";

/// Keeps a valid Fiskil API bearer token in a file and/or a Kubernetes Secret, refreshed before it
/// expires.
#[derive(Parser, Debug)]
#[command(name = "fiskil-token-refresher", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Args {
    /// Token endpoint; must be https:// (see --insecure-allow-http)
    #[arg(long, env = "FISKIL_TOKEN_URL", value_name = "URL", default_value = DEFAULT_TOKEN_URL)]
    pub token_url: String,

    /// Allow an http:// --token-url, for a loopback test endpoint only
    #[arg(long, env = "FISKIL_INSECURE_ALLOW_HTTP")]
    pub insecure_allow_http: bool,

    /// File holding the client_id (trimmed) [default: /var/run/secrets/fiskil/client_id]
    #[arg(long, env = "FISKIL_CLIENT_ID_FILE", value_name = "PATH")]
    pub client_id_file: Option<PathBuf>,

    /// File holding the client_secret (trimmed) [default: /var/run/secrets/fiskil/client_secret]
    #[arg(long, env = "FISKIL_CLIENT_SECRET_FILE", value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,

    /// How often the credential files are re-read in addition to watching them
    #[arg(long, env = "FISKIL_CREDENTIALS_POLL_INTERVAL", value_name = "DURATION",
          default_value = "10s", value_parser = parse_duration)]
    pub credentials_poll_interval: Duration,

    /// Write the token to this file, atomically (this and/or --secret-name is required)
    #[arg(long, env = "FISKIL_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Also write the token into this Kubernetes Secret (server-side apply); enables the output
    #[arg(long, env = "FISKIL_SECRET_NAME", value_name = "NAME")]
    pub secret_name: Option<String>,

    /// Namespace of --secret-name [default: the pod's namespace, else the kubeconfig context's]
    #[arg(long, env = "FISKIL_SECRET_NAMESPACE", value_name = "NAMESPACE")]
    pub secret_namespace: Option<String>,

    /// Key of --secret-name that holds the token (the key expires_at holds its expiry)
    #[arg(
        long,
        env = "FISKIL_SECRET_KEY",
        value_name = "KEY",
        default_value = "token"
    )]
    pub secret_key: String,

    /// raw: the token alone, no newline; json: {"token","expires_in","issued_at","expires_at"}
    #[arg(long, env = "FISKIL_TOKEN_FORMAT", value_enum, default_value_t = TokenFormat::Raw)]
    pub token_format: TokenFormat,

    /// Permissions of the token file, octal; set explicitly, not through the umask
    #[arg(long, env = "FISKIL_FILE_MODE", value_name = "MODE", default_value = "0640",
          value_parser = parse_mode)]
    pub file_mode: u32,

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

    /// Never refresh sooner than this after the previous request (guards tiny lifetimes)
    #[arg(long, env = "FISKIL_MIN_REFRESH_INTERVAL", value_name = "DURATION",
          default_value = "1s", value_parser = parse_duration)]
    pub min_refresh_interval: Duration,

    /// First retry delay after a failure; doubles per failure, with full jitter
    #[arg(long, env = "FISKIL_BACKOFF_INITIAL", value_name = "DURATION",
          default_value = "1s", value_parser = parse_duration)]
    pub backoff_initial: Duration,

    /// Longest retry delay; also caps Retry-After and paces retries of rejected credentials
    #[arg(long, env = "FISKIL_BACKOFF_MAX", value_name = "DURATION",
          default_value = "60s", value_parser = parse_duration)]
    pub backoff_max: Duration,

    /// Time allowed to open the TCP and TLS connection to the token endpoint
    #[arg(long, env = "FISKIL_CONNECT_TIMEOUT", value_name = "DURATION",
          default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time allowed for a whole token request, response included
    #[arg(long, env = "FISKIL_REQUEST_TIMEOUT", value_name = "DURATION",
          default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// PEM bundle of certificate authorities trusted in addition to the built-in roots
    #[arg(long, env = "FISKIL_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Address of the health and metrics server (/healthz, /readyz, /metrics); port 0 picks one
    #[arg(
        long,
        env = "FISKIL_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:9847"
    )]
    pub listen: SocketAddr,

    /// Get one token, write every output, and exit 0 (1 if that fails within --once-timeout)
    #[arg(long, env = "FISKIL_ONCE")]
    pub once: bool,

    /// With --once: how long transient failures are retried before exiting 1
    #[arg(long, env = "FISKIL_ONCE_TIMEOUT", value_name = "DURATION",
          default_value = "60s", value_parser = parse_duration)]
    pub once_timeout: Duration,

    /// Log line format
    #[arg(long, env = "FISKIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides)
    #[arg(
        long,
        env = "FISKIL_LOG_LEVEL",
        value_name = "LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    #[command(flatten)]
    pub reach: ReachArgs,
}

/// How the token file is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TokenFormat {
    /// The token alone, without a trailing newline.
    Raw,
    /// A JSON object with the token and its times.
    Json,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// A configuration mistake, reported as one line before anything is sent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--token-url {0:?} is not a valid URL: {1}")]
    BadUrl(String, url::ParseError),
    #[error("--token-url {0} uses http://; use https://, or add --insecure-allow-http for a loopback test endpoint")]
    PlainHttp(String),
    #[error("--insecure-allow-http only allows loopback hosts, but --token-url points at {0}")]
    HttpNotLoopback(String),
    #[error("--token-url {0} has an unsupported scheme; use https://")]
    BadScheme(String),
    #[error("{name} is given twice, as {env} and as {flag}; use one of them")]
    CredentialTwice {
        name: &'static str,
        env: &'static str,
        flag: &'static str,
    },
    #[error("no output configured: give --token-file PATH and/or --secret-name NAME")]
    NoOutput,
    #[error("--secret-name {0:?} is not a valid Secret name; use lowercase letters, digits, '-' and '.'")]
    SecretName(String),
    #[error(
        "--secret-namespace {0:?} is not a valid namespace; use lowercase letters, digits and '-'"
    )]
    SecretNamespace(String),
    #[error("--secret-key {0:?} is not usable; use letters, digits, '-', '_' and '.', and not expires_at")]
    SecretKey(String),
    #[error("--refresh-ratio must be between 0 and 1 (exclusive), got {0}")]
    Ratio(f64),
    #[error(
        "--refresh-jitter must be at least 0 and less than --refresh-ratio ({ratio}), got {jitter}"
    )]
    Jitter { ratio: f64, jitter: f64 },
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    #[error("--backoff-initial ({initial:?}) must not exceed --backoff-max ({max:?})")]
    Backoff { initial: Duration, max: Duration },
    #[error("--log-level {0:?} is not a level; use error, warn, info, debug or trace")]
    LogLevel(String),
    #[error(transparent)]
    Reach(#[from] ReachConfigError),
    #[error("--once exits after one token; --notify-*, --token-listen and --proxy-listen need the daemon running, so drop them or --once")]
    OnceWithReach,
}

/// Where the token goes.
#[derive(Debug, Clone)]
pub struct FileOutput {
    pub path: PathBuf,
    pub format: TokenFormat,
    pub mode: u32,
}

/// Where the token goes in Kubernetes.
#[derive(Debug, Clone)]
pub struct SecretOutput {
    pub name: String,
    pub namespace: Option<String>,
    pub key: String,
    /// Time allowed for one API server call.
    pub timeout: Duration,
}

/// Connection settings for the token endpoint.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub token_url: Url,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// Everything the daemon needs, validated.
#[derive(Debug)]
pub struct Config {
    pub http: HttpSettings,
    pub credentials: CredentialSources,
    pub credentials_poll_interval: Duration,
    pub file: Option<FileOutput>,
    pub secret: Option<SecretOutput>,
    pub timing: Timing,
    pub listen: SocketAddr,
    pub once: Option<Duration>,
    pub log: LogSettings,
    pub reach: Reach,
}

impl Config {
    /// Validates the arguments; `env` looks up the credential value variables.
    pub fn from_args(
        args: Args,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let token_url = check_url(&args.token_url, args.insecure_allow_http)?;
        let timing = check_timing(&args)?;
        let credentials = CredentialSources {
            client_id: credential_source(
                "client_id",
                "FISKIL_CLIENT_ID",
                "--client-id-file",
                env("FISKIL_CLIENT_ID"),
                args.client_id_file,
                DEFAULT_CLIENT_ID_FILE,
            )?,
            client_secret: credential_source(
                "client_secret",
                "FISKIL_CLIENT_SECRET",
                "--client-secret-file",
                env("FISKIL_CLIENT_SECRET"),
                args.client_secret_file,
                DEFAULT_CLIENT_SECRET_FILE,
            )?,
        };
        let file = args.token_file.map(|path| FileOutput {
            path,
            format: args.token_format,
            mode: args.file_mode,
        });
        let secret = match args.secret_name {
            Some(name) => Some(check_secret(
                name,
                args.secret_namespace,
                args.secret_key,
                args.request_timeout,
            )?),
            None => None,
        };
        if file.is_none() && secret.is_none() {
            return Err(ConfigError::NoOutput);
        }
        for (name, value) in [
            ("--connect-timeout", args.connect_timeout),
            ("--request-timeout", args.request_timeout),
            ("--once-timeout", args.once_timeout),
            (
                "--credentials-poll-interval",
                args.credentials_poll_interval,
            ),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if args.log_level.parse::<tracing::Level>().is_err() {
            return Err(ConfigError::LogLevel(args.log_level));
        }
        let reach = args.reach.validate(&token_url)?;
        if args.once && !reach.is_empty() {
            return Err(ConfigError::OnceWithReach);
        }
        Ok(Config {
            http: HttpSettings {
                token_url,
                connect_timeout: args.connect_timeout,
                request_timeout: args.request_timeout,
                ca_file: args.ca_file,
            },
            credentials,
            credentials_poll_interval: args.credentials_poll_interval,
            file,
            secret,
            timing,
            listen: args.listen,
            once: args.once.then_some(args.once_timeout),
            log: LogSettings {
                format: args.log_format,
                level: args.log_level,
            },
            reach,
        })
    }
}

fn check_url(raw: &str, allow_http: bool) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ConfigError::BadUrl(raw.to_owned(), e))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if !allow_http => Err(ConfigError::PlainHttp(raw.to_owned())),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(ConfigError::HttpNotLoopback(
            url.host_str().unwrap_or_default().to_owned(),
        )),
        _ => Err(ConfigError::BadScheme(raw.to_owned())),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn credential_source(
    name: &'static str,
    env: &'static str,
    flag: &'static str,
    value: Option<String>,
    file: Option<PathBuf>,
    default_file: &str,
) -> Result<Source, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::CredentialTwice { name, env, flag }),
        (Some(value), None) => Ok(Source::Value {
            name,
            env,
            value: SecretString::from(value),
        }),
        (None, path) => Ok(Source::File {
            name,
            path: path.unwrap_or_else(|| PathBuf::from(default_file)),
        }),
    }
}

fn check_secret(
    name: String,
    namespace: Option<String>,
    key: String,
    timeout: Duration,
) -> Result<SecretOutput, ConfigError> {
    let dns_name = |text: &str, dots: bool, max: usize| {
        let edge =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        text.len() <= max
            && edge(text.chars().next())
            && edge(text.chars().last())
            && text.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.')
            })
    };
    if !dns_name(&name, true, 253) {
        return Err(ConfigError::SecretName(name));
    }
    if let Some(namespace) = &namespace {
        if !dns_name(namespace, false, 63) {
            return Err(ConfigError::SecretNamespace(namespace.clone()));
        }
    }
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key != crate::sink::secret::EXPIRES_AT_KEY
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !key_ok {
        return Err(ConfigError::SecretKey(key));
    }
    Ok(SecretOutput {
        name,
        namespace,
        key,
        timeout,
    })
}

fn check_timing(args: &Args) -> Result<Timing, ConfigError> {
    let ratio = args.refresh_ratio;
    if !(ratio > 0.0 && ratio < 1.0) {
        return Err(ConfigError::Ratio(ratio));
    }
    let jitter = args.refresh_jitter;
    if !(jitter >= 0.0 && jitter < ratio) {
        return Err(ConfigError::Jitter { ratio, jitter });
    }
    for (name, value) in [
        ("--min-refresh-interval", args.min_refresh_interval),
        ("--backoff-initial", args.backoff_initial),
        ("--backoff-max", args.backoff_max),
    ] {
        if value.is_zero() {
            return Err(ConfigError::ZeroDuration(name));
        }
    }
    if args.backoff_initial > args.backoff_max {
        return Err(ConfigError::Backoff {
            initial: args.backoff_initial,
            max: args.backoff_max,
        });
    }
    Ok(Timing {
        ratio,
        jitter,
        min_interval: args.min_refresh_interval,
        backoff_initial: args.backoff_initial,
        backoff_max: args.backoff_max,
    })
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(raw)
        .map_err(|e| format!("{e}; write a duration such as 500ms, 30s or 5m"))?;
    if value > MAX_DURATION {
        return Err("longer than 24h; write a duration such as 30s or 5m".to_owned());
    }
    Ok(value)
}

fn parse_mode(raw: &str) -> Result<u32, String> {
    let digits = raw.strip_prefix("0o").unwrap_or(raw);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err("expected octal permissions from 0000 to 0777, such as 0640".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["fiskil-token-refresher", "--token-file", "/tmp/token"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("arguments parse")
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::from_args(args(&[]), no_env).unwrap();
        assert_eq!(config.http.token_url.as_str(), DEFAULT_TOKEN_URL);
        assert_eq!(config.timing.ratio, 0.8);
        assert_eq!(config.timing.jitter, 0.05);
        assert_eq!(config.timing.backoff_max, Duration::from_secs(60));
        assert_eq!(config.file.unwrap().mode, 0o640);
        assert_eq!(config.listen.port(), 9847);
        assert!(config.once.is_none());
        match config.credentials.client_secret {
            Source::File { path, .. } => {
                assert_eq!(path, PathBuf::from(DEFAULT_CLIENT_SECRET_FILE))
            }
            Source::Value { .. } => panic!("expected the default file"),
        }
    }

    #[test]
    fn plain_http_is_refused_unless_allowed_for_loopback() {
        let err = Config::from_args(args(&["--token-url", "http://127.0.0.1:1/t"]), no_env);
        assert!(matches!(err, Err(ConfigError::PlainHttp(_))));
        let ok = Config::from_args(
            args(&[
                "--token-url",
                "http://localhost:1/t",
                "--insecure-allow-http",
            ]),
            no_env,
        );
        assert!(ok.is_ok());
        let ok = Config::from_args(
            args(&["--token-url", "http://[::1]:1/t", "--insecure-allow-http"]),
            no_env,
        );
        assert!(ok.is_ok());
        let err = Config::from_args(
            args(&[
                "--token-url",
                "http://api.fiskil.com/t",
                "--insecure-allow-http",
            ]),
            no_env,
        );
        assert!(matches!(err, Err(ConfigError::HttpNotLoopback(h)) if h == "api.fiskil.com"));
        let err = Config::from_args(args(&["--token-url", "ftp://x/"]), no_env);
        assert!(matches!(err, Err(ConfigError::BadScheme(_))));
    }

    #[test]
    fn a_credential_from_env_and_file_is_an_error() {
        let env = |name: &str| (name == "FISKIL_CLIENT_SECRET").then(|| "s3cr3t".to_owned());
        let err = Config::from_args(args(&["--client-secret-file", "/x"]), env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "client_secret is given twice, as FISKIL_CLIENT_SECRET and as --client-secret-file; use one of them"
        );
        let config = Config::from_args(args(&[]), env).unwrap();
        assert!(matches!(
            config.credentials.client_secret,
            Source::Value { .. }
        ));
    }

    #[test]
    fn an_output_is_required() {
        let args = Args::try_parse_from(["fiskil-token-refresher"]).unwrap();
        assert!(matches!(
            Config::from_args(args, no_env),
            Err(ConfigError::NoOutput)
        ));
    }

    #[test]
    fn a_secret_alone_is_an_output_and_is_checked() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["fiskil-token-refresher"];
            argv.extend_from_slice(extra);
            Config::from_args(Args::try_parse_from(argv).unwrap(), no_env)
        };
        let config = parse(&["--secret-name", "fiskil-token"]).unwrap();
        assert!(config.file.is_none());
        let secret = config.secret.unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("fiskil-token", "token")
        );
        assert!(secret.namespace.is_none());
        assert!(matches!(
            parse(&["--secret-name", "Bad_Name"]),
            Err(ConfigError::SecretName(_))
        ));
        assert!(matches!(
            parse(&["--secret-name", "ok", "--secret-namespace", "a.b"]),
            Err(ConfigError::SecretNamespace(_))
        ));
        assert!(matches!(
            parse(&["--secret-name", "ok", "--secret-key", "expires_at"]),
            Err(ConfigError::SecretKey(_))
        ));
        assert!(matches!(
            parse(&["--secret-name", "ok", "--secret-key", "a/b"]),
            Err(ConfigError::SecretKey(_))
        ));
    }

    #[test]
    fn timing_is_checked() {
        let bad = |extra: &[&str]| Config::from_args(args(extra), no_env).unwrap_err();
        assert!(matches!(
            bad(&["--refresh-ratio", "1"]),
            ConfigError::Ratio(_)
        ));
        assert!(matches!(
            bad(&["--refresh-ratio", "0"]),
            ConfigError::Ratio(_)
        ));
        assert!(matches!(
            bad(&["--refresh-ratio", "NaN"]),
            ConfigError::Ratio(_)
        ));
        assert!(matches!(
            bad(&["--refresh-jitter", "0.8"]),
            ConfigError::Jitter { .. }
        ));
        assert!(matches!(
            bad(&["--refresh-jitter=-0.1"]),
            ConfigError::Jitter { .. }
        ));
        assert!(matches!(
            bad(&["--backoff-initial", "2m"]),
            ConfigError::Backoff { .. }
        ));
        assert!(matches!(
            bad(&["--min-refresh-interval", "0s"]),
            ConfigError::ZeroDuration("--min-refresh-interval")
        ));
        assert!(matches!(
            bad(&["--log-level", "loud"]),
            ConfigError::LogLevel(_)
        ));
    }

    #[test]
    fn reach_flags_are_checked_and_need_the_daemon_running() {
        let config =
            Config::from_args(args(&["--proxy-listen", "127.0.0.1:9849"]), no_env).unwrap();
        let proxy = config.reach.proxy.unwrap();
        assert_eq!(proxy.upstream.as_str(), "https://api.fiskil.com/");
        let err = Config::from_args(args(&["--token-listen", "0.0.0.0:9848"]), no_env).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("--token-listen 0.0.0.0:9848 is not a loopback address"));
        let err = Config::from_args(
            args(&["--once", "--token-listen", "127.0.0.1:9848"]),
            no_env,
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::OnceWithReach));
    }

    #[test]
    fn durations_and_modes_parse() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("ten seconds").is_err());
        assert!(parse_duration("2d").is_err());
        assert_eq!(parse_mode("0600").unwrap(), 0o600);
        assert_eq!(parse_mode("0o644").unwrap(), 0o644);
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("1777").is_err());
    }
}
