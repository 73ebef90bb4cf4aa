//! The command line: each component's flag group flattened into one parser, assembled into a
//! [`Config`] with the checks that cross components.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::admin::AdminArgs;
use crate::controller::{ControllerArgs, ControllerConfig};
use crate::credentials::{CredentialArgs, CredentialSources, CredentialTwice};
use crate::explain::ExplainArgs;
use crate::fiskil::{HttpArgs, HttpArgsError, HttpSettings};
use crate::kubernetes::client::Downward;
use crate::kubernetes::events::EventArgs;
use crate::kubernetes::lease::{Election, LeaseArgs, LeaseArgsError};
use crate::reach::{Reach, ReachArgs, ReachConfigError};
use crate::refresher::OnceArgs;
use crate::schedule::{Timing, TimingArgs, TimingError};
use crate::sink::file::{FileArgs, FileOutput};
use crate::sink::secret::{SecretArgs, SecretArgsError, SecretOutput};
use crate::telemetry::{LogArgs, LogLevelError};

const AFTER_HELP: &str = "\
Credentials:
  FISKIL_CLIENT_ID, FISKIL_CLIENT_SECRET  The credential values themselves, for local runs.
                                          Each replaces its file option; giving both is an error.
                                          There are no flags for them: command lines are visible
                                          to every process on the host.

Logging:
  RUST_LOG  Overrides --log-level with a full filter (e.g. fiskil_token_refresher=debug).

Trust:
  SSL_CERT_FILE, SSL_CERT_DIR  Extra PEM bundles (a file; `:`-separated directories) trusted in
                               addition to the built-in roots and --ca-file.

Proxies:
  HTTPS_PROXY, ALL_PROXY, NO_PROXY  Honoured for an https:// token endpoint that is not loopback
                                    (lowercase names too). A loopback or http:// endpoint is
                                    always reached directly; HTTP_PROXY is never used. Notify
                                    URLs and the proxy's upstream never use a proxy.

Exit codes:
  0  success (--once) or clean shutdown on SIGTERM/SIGINT
  1  runtime failure (--once could not get and write a token in time, or credentials were rejected)
  2  configuration error (bad option, unreadable credentials, unusable output path)

Signals:
  SIGTERM, SIGINT  finish the current write and exit 0; a second signal exits 1 at once
  SIGHUP           refresh the token now";

/// What `--version` prints after the program name: the crate version, the git commit the binary
/// was built from ("unknown" when neither `FISKIL_GIT_COMMIT` nor a checkout said) and the build
/// profile, e.g. `0.1.0 (commit 0123abcd…, release build)`. Set by `build.rs`.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FISKIL_GIT_COMMIT"),
    ", ",
    env!("FISKIL_BUILD_PROFILE"),
    " build)"
);

/// Keeps a valid Fiskil API bearer token in a file and/or a Kubernetes Secret, refreshed before it
/// expires.
#[derive(Parser, Debug)]
#[command(name = "fiskil-token-refresher", version = VERSION, after_help = AFTER_HELP, max_term_width = 100,
          args_conflicts_with_subcommands = true, disable_help_subcommand = true)]
pub struct Args {
    /// A subcommand to run instead of the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    #[command(flatten)]
    pub(crate) credentials: CredentialArgs,
    #[command(flatten)]
    pub(crate) file: FileArgs,
    #[command(flatten)]
    pub(crate) secret: SecretArgs,
    #[command(flatten)]
    pub(crate) lease: LeaseArgs,
    #[command(flatten)]
    pub(crate) events: EventArgs,
    #[command(flatten)]
    pub(crate) timing: TimingArgs,
    #[command(flatten)]
    pub(crate) admin: AdminArgs,
    #[command(flatten)]
    pub(crate) once: OnceArgs,
    #[command(flatten)]
    pub(crate) reach: ReachArgs,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// What to do instead of running the daemon. The subcommands' options are defined only when one
/// is named on the command line, so starting the daemon does not build them.
#[derive(clap::Subcommand, Debug)]
#[command(defer = true)]
pub enum Command {
    /// Print what the timing options will do (refresh window, margin, retries, outage recovery,
    /// load for N pods) without sending any request
    Explain(ExplainArgs),
    /// Cluster mode: keep the Secrets of FiskilToken resources current, one token request per
    /// credential (FiskilCredential, ClusterFiskilCredential) however many FiskilTokens use it
    Controller(ControllerArgs),
}

/// A configuration mistake, reported as one line before anything is sent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad endpoint, timeout, trust or proxy option.
    #[error(transparent)]
    Http(#[from] HttpArgsError),
    /// A credential given twice (file and environment).
    #[error(transparent)]
    Credentials(#[from] CredentialTwice),
    /// A bad Secret output option.
    #[error(transparent)]
    Secret(#[from] SecretArgsError),
    /// A bad leader election option.
    #[error(transparent)]
    Lease(#[from] LeaseArgsError),
    /// A bad timing option.
    #[error(transparent)]
    Timing(#[from] TimingError),
    /// A bad log level.
    #[error(transparent)]
    Log(#[from] LogLevelError),
    /// A bad notification, token endpoint or proxy option.
    #[error(transparent)]
    Reach(#[from] ReachConfigError),
    /// Neither a file nor a Secret output.
    #[error("no output configured: give --token-file PATH and/or --secret-name NAME (or --secret NAMESPACE/NAME)")]
    NoOutput,
    /// Leader election without a Secret output, or with per-pod features.
    #[error("--leader-elect is for the Secret writer: give --secret-name or --secret, and drop --token-file, --once, --notify-*, --token-listen and --proxy-listen (a standby replica holds no token to hand out)")]
    LeaderWithoutSecret,
    /// Events with nothing to report about.
    #[error("--events needs an object to report about: set POD_NAME (and POD_NAMESPACE) from the downward API, or give a Secret output")]
    EventsWithoutObject,
    /// `--once` with features that need the daemon running.
    #[error("--once exits after one token; --notify-*, --token-listen and --proxy-listen need the daemon running, so drop them or --once")]
    OnceWithReach,
}

/// Everything the daemon needs, validated.
#[derive(Debug)]
pub struct Config {
    pub(crate) http: HttpSettings,
    pub(crate) credentials: CredentialSources,
    pub(crate) file: Option<FileOutput>,
    pub(crate) secret: Option<SecretOutput>,
    /// With `--leader-elect`.
    pub(crate) election: Option<Election>,
    /// `--events`.
    pub(crate) events: bool,
    pub(crate) timing: Timing,
    pub(crate) listen: SocketAddr,
    /// `Some(timeout)` with `--once`.
    pub(crate) once: Option<Duration>,
    /// How applications reach the token besides the outputs.
    pub(crate) reach: Reach,
    pub(crate) log: LogArgs,
    /// `RUST_LOG`, which overrides `--log-level`.
    pub(crate) rust_log: Option<String>,
    /// What the downward API says about the pod.
    pub(crate) downward: Downward,
}

impl Config {
    /// Validates each group, then what crosses groups. `env` is the only way to the process
    /// environment: credential values, proxies, trust bundles, `RUST_LOG` and the downward API.
    pub fn from_args(
        args: Args,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let timing = args.timing.settings()?;
        args.log.settings()?;
        let credentials = args.credentials.settings(&env)?;
        // The Kubernetes API calls share the token request's time limit.
        let secret = args.secret.settings(args.http.request_timeout)?;
        let http = args.http.settings(&env)?;
        let file = args.file.settings();
        if file.is_none() && secret.is_none() {
            return Err(ConfigError::NoOutput);
        }
        let reach = args.reach.settings(&http.token_url)?;
        if args.once.once && !reach.is_empty() {
            return Err(ConfigError::OnceWithReach);
        }
        let election = args.lease.settings()?;
        if election.is_some()
            && (secret.is_none() || file.is_some() || args.once.once || !reach.is_empty())
        {
            return Err(ConfigError::LeaderWithoutSecret);
        }
        let events = args.events.events;
        let downward = Downward::from_env(&env);
        if events && secret.is_none() && downward.name.is_none() {
            return Err(ConfigError::EventsWithoutObject);
        }
        Ok(Config {
            http,
            credentials,
            file,
            secret,
            election,
            events,
            timing,
            listen: args.admin.listen,
            once: args.once.settings(),
            reach,
            log: args.log,
            rust_log: env("RUST_LOG"),
            downward,
        })
    }
}

impl ControllerConfig {
    /// Validates cluster mode's groups; `env` gives trust bundles, proxies, `RUST_LOG` and the
    /// downward API.
    pub fn from_args(
        args: ControllerArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ControllerConfig, ConfigError> {
        let timing = args.timing.settings()?;
        args.log.settings()?;
        Ok(ControllerConfig {
            http: args.http.settings(&env)?,
            timing,
            election: args.lease.settings()?,
            listen: args.admin.listen,
            log: args.log,
            rust_log: env("RUST_LOG"),
            downward: Downward::from_env(&env),
        })
    }
}

impl Config {
    /// Installs the global log subscriber: `--log-level` and `--log-format`, or `RUST_LOG`.
    pub fn init_logging(&self) {
        crate::telemetry::init(&self.log, self.rust_log.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("fiskil-token-refresher").chain(argv.iter().copied());
        Config::from_args(Args::try_parse_from(argv).expect("arguments parse"), |_| {
            None
        })
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&["--token-file", "/tmp/token"]).unwrap();
        assert_eq!(config.file.unwrap().mode, 0o640);
        assert_eq!(config.listen.port(), 9847);
        assert!(config.once.is_none());
        assert!(config.secret.is_none());
    }

    #[test]
    fn an_output_is_required_and_either_will_do() {
        assert!(matches!(parse(&[]), Err(ConfigError::NoOutput)));
        let config = parse(&["--secret-name", "fiskil-token", "--request-timeout", "7s"]).unwrap();
        assert!(config.file.is_none());
        assert_eq!(config.secret.unwrap().timeout, Duration::from_secs(7));
    }

    #[test]
    fn each_group_is_checked() {
        let bad = |argv: &[&str]| {
            let mut all = vec!["--token-file", "/tmp/token"];
            all.extend_from_slice(argv);
            parse(&all).unwrap_err()
        };
        assert!(matches!(
            bad(&["--refresh-ratio", "2"]),
            ConfigError::Timing(_)
        ));
        assert!(matches!(bad(&["--log-level", "loud"]), ConfigError::Log(_)));
        assert!(matches!(
            bad(&["--token-url", "http://x/"]),
            ConfigError::Http(_)
        ));
        assert!(matches!(
            bad(&["--secret-name", "A"]),
            ConfigError::Secret(_)
        ));
    }

    #[test]
    fn reach_flags_are_checked_and_need_the_daemon_running() {
        let file = ["--token-file", "/tmp/token"];
        let config = parse(&[file[0], file[1], "--proxy-listen", "127.0.0.1:9849"]).unwrap();
        let proxy = config.reach.proxy.unwrap();
        assert_eq!(proxy.upstream.as_str(), "https://api.fiskil.com/");
        let err = parse(&[file[0], file[1], "--token-listen", "0.0.0.0:9848"]).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("--token-listen 0.0.0.0:9848 is not a loopback address"));
        let err = parse(&[
            file[0],
            file[1],
            "--once",
            "--token-listen",
            "127.0.0.1:9848",
        ]);
        assert!(matches!(err, Err(ConfigError::OnceWithReach)));
    }

    #[test]
    fn leader_election_is_for_the_secret_writer_only() {
        let secret = ["--leader-elect", "--secret", "ops/token"];
        let config = parse(&secret).unwrap();
        assert_eq!(config.election.unwrap().name, "fiskil-token-refresher");
        for extra in [
            &["--token-file", "/tmp/token"][..],
            &["--once"],
            &["--notify-url", "http://127.0.0.1:1/"],
        ] {
            let mut argv = secret.to_vec();
            argv.extend_from_slice(extra);
            assert!(
                matches!(parse(&argv), Err(ConfigError::LeaderWithoutSecret)),
                "{extra:?}"
            );
        }
        assert!(matches!(
            parse(&["--leader-elect", "--token-file", "/tmp/token"]),
            Err(ConfigError::LeaderWithoutSecret)
        ));
    }

    #[test]
    fn events_need_a_pod_or_a_secret_to_be_about() {
        assert!(
            parse(&["--events", "--secret-name", "token"])
                .unwrap()
                .events
        );
        assert!(matches!(
            parse(&["--events", "--token-file", "/tmp/token"]),
            Err(ConfigError::EventsWithoutObject)
        ));
        let argv = ["x", "--events", "--token-file", "/tmp/token"];
        let with_pod = Config::from_args(Args::try_parse_from(argv).unwrap(), |name| {
            (name == "POD_NAME").then(|| "app-0".to_owned())
        });
        assert!(with_pod.unwrap().events);
    }

    #[test]
    fn zero_durations_are_refused_by_the_parser() {
        for flag in [
            "--min-refresh-interval",
            "--connect-timeout",
            "--once-timeout",
            "--credentials-poll-interval",
        ] {
            let err = Args::try_parse_from(["x", flag, "0s"]).unwrap_err();
            assert!(
                err.to_string().contains("greater than zero"),
                "{flag}: {err}"
            );
        }
    }
}
