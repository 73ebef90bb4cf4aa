//! The client credentials: read from mounted files (or values), and watched for rotation.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use inotify::{EventStream, Inotify, WatchMask};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::positive_duration;
use crate::metrics::Metrics;
use crate::small_file::{self, ReadError};

/// Where the client_id is mounted from the credentials Secret by default.
pub(crate) const DEFAULT_CLIENT_ID_FILE: &str = "/var/run/secrets/fiskil/client_id";
/// Where the client_secret is mounted from the credentials Secret by default.
pub(crate) const DEFAULT_CLIENT_SECRET_FILE: &str = "/var/run/secrets/fiskil/client_secret";
/// The environment variables that carry the credential values themselves.
pub(crate) const CLIENT_ID_ENV: &str = "FISKIL_CLIENT_ID";
pub(crate) const CLIENT_SECRET_ENV: &str = "FISKIL_CLIENT_SECRET";

/// Where the credentials come from. The values themselves have no flags (command lines are
/// visible to every process): only the environment variables above.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Credentials")]
pub(crate) struct CredentialArgs {
    /// File holding the client_id (trimmed) [default: /var/run/secrets/fiskil/client_id]
    #[arg(long, env = "FISKIL_CLIENT_ID_FILE", value_name = "PATH")]
    pub client_id_file: Option<PathBuf>,

    /// File holding the client_secret (trimmed) [default: /var/run/secrets/fiskil/client_secret]
    #[arg(long, env = "FISKIL_CLIENT_SECRET_FILE", value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,

    /// How often the credential files are re-read in addition to watching them
    #[arg(long, env = "FISKIL_CREDENTIALS_POLL_INTERVAL", value_name = "DURATION",
          default_value = "10s", value_parser = positive_duration)]
    pub credentials_poll_interval: Duration,
}

/// A credential given two ways.
#[derive(Debug, thiserror::Error)]
#[error("{name} is given twice, as {env} and as {flag}; use one of them")]
pub struct CredentialTwice {
    pub name: &'static str,
    pub env: &'static str,
    pub flag: &'static str,
}

impl CredentialArgs {
    /// Settles each credential's source; `env` looks up the value variables.
    pub(crate) fn settings(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<CredentialSources, CredentialTwice> {
        Ok(CredentialSources {
            client_id: Source::new(
                "client_id",
                CLIENT_ID_ENV,
                "--client-id-file",
                env(CLIENT_ID_ENV),
                self.client_id_file,
                DEFAULT_CLIENT_ID_FILE,
            )?,
            client_secret: Source::new(
                "client_secret",
                CLIENT_SECRET_ENV,
                "--client-secret-file",
                env(CLIENT_SECRET_ENV),
                self.client_secret_file,
                DEFAULT_CLIENT_SECRET_FILE,
            )?,
            poll_interval: self.credentials_poll_interval,
        })
    }
}

/// The largest credential file read; a credential is a short string.
pub(crate) const MAX_CREDENTIAL_BYTES: u64 = 64 * 1024;
/// How often a read that failed in the middle of a Secret volume update is retried.
const READ_ATTEMPTS: u32 = 5;
const READ_RETRY_DELAY: Duration = Duration::from_millis(50);
/// Quiet time after a file event before re-reading, so one volume update is read once.
const SETTLE: Duration = Duration::from_millis(50);

/// Where one credential comes from.
#[derive(Debug)]
pub enum Source {
    /// A file, usually a key of a mounted Secret.
    File {
        /// The credential's name in errors (`client_id`, `client_secret`).
        name: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A value from the environment.
    Value {
        /// The credential's name in errors.
        name: &'static str,
        /// The variable it came from.
        env: &'static str,
        /// The value.
        value: SecretString,
    },
}

/// Where both credentials come from, and how often the files are re-read.
#[derive(Debug)]
pub struct CredentialSources {
    /// Where the client ID comes from.
    pub client_id: Source,
    /// Where the client secret comes from.
    pub client_secret: Source,
    /// How often the files are re-read, besides the watch.
    pub poll_interval: Duration,
}

/// The client credentials. `Debug` shows neither value.
pub struct Credentials {
    pub client_id: SecretString,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([REDACTED])")
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.client_id.expose_secret() == other.client_id.expose_secret()
            && self.client_secret.expose_secret() == other.client_secret.expose_secret()
    }
}

/// A credential that cannot be used; names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the {name} file {path}: {source}; mount the credentials Secret there or set --{name_flag}-file", name_flag = flag_name(name))]
    Read {
        name: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the {name} file {path} is {kind}, not a regular file; mount the credentials Secret there or set --{name_flag}-file", name_flag = flag_name(name))]
    NotRegular {
        name: &'static str,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("the {name} file {path} is larger than {MAX_CREDENTIAL_BYTES} bytes; it should hold only the {name} from the Fiskil console")]
    TooLarge { name: &'static str, path: PathBuf },
    #[error("the credential files kept changing while being read; retrying later")]
    Unsettled,
    #[error("the {name} file {path} is empty; put the {name} from the Fiskil console in it")]
    EmptyFile { name: &'static str, path: PathBuf },
    #[error("{env} is set but empty; set it to the {name} or unset it to use the file")]
    EmptyValue {
        name: &'static str,
        env: &'static str,
    },
}

fn flag_name(name: &str) -> String {
    name.replace('_', "-")
}

impl Source {
    fn new(
        name: &'static str,
        env: &'static str,
        flag: &'static str,
        value: Option<String>,
        file: Option<PathBuf>,
        default_file: &str,
    ) -> Result<Source, CredentialTwice> {
        match (value, file) {
            (Some(_), Some(_)) => Err(CredentialTwice { name, env, flag }),
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

    fn read(&self) -> Result<SecretString, CredentialsError> {
        match self {
            Source::Value { name, env, value } => {
                let trimmed = value.expose_secret().trim();
                if trimmed.is_empty() {
                    return Err(CredentialsError::EmptyValue { name, env });
                }
                Ok(SecretString::from(trimmed))
            }
            Source::File { name, path } => {
                let raw = read_with_retry(path).map_err(|e| match e {
                    ReadError::NotRegular(kind) => CredentialsError::NotRegular {
                        name,
                        path: path.clone(),
                        kind,
                    },
                    ReadError::TooLarge => CredentialsError::TooLarge {
                        name,
                        path: path.clone(),
                    },
                    ReadError::Io(source) => CredentialsError::Read {
                        name,
                        path: path.clone(),
                        source,
                    },
                })?;
                let raw = SecretString::from(raw);
                let trimmed = raw.expose_secret().trim();
                if trimmed.is_empty() {
                    return Err(CredentialsError::EmptyFile {
                        name,
                        path: path.clone(),
                    });
                }
                Ok(SecretString::from(trimmed))
            }
        }
    }

    /// The file's path with every symlink resolved: the `..data` generation it is read from.
    fn resolved(&self) -> Option<PathBuf> {
        match self {
            Source::File { path, .. } => std::fs::canonicalize(path).ok(),
            Source::Value { .. } => None,
        }
    }

    fn directory(&self) -> Option<PathBuf> {
        match self {
            Source::File { path, .. } => Some(match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            }),
            Source::Value { .. } => None,
        }
    }
}

/// Reads a file, retrying briefly when it vanishes in the middle of a Secret volume update.
fn read_with_retry(path: &Path) -> Result<String, ReadError> {
    let mut attempt = 1;
    loop {
        match read_regular(path) {
            Err(ReadError::Io(e))
                if e.kind() == io::ErrorKind::NotFound && attempt < READ_ATTEMPTS =>
            {
                attempt += 1;
                std::thread::sleep(READ_RETRY_DELAY);
            }
            other => return other,
        }
    }
}

/// Reads a credential file: regular, at most [`MAX_CREDENTIAL_BYTES`], UTF-8.
fn read_regular(path: &Path) -> Result<String, ReadError> {
    let bytes = small_file::read_regular(path, MAX_CREDENTIAL_BYTES)?;
    String::from_utf8(bytes)
        .map_err(|_| ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text")))
}

impl CredentialSources {
    /// Reads both credentials, trimmed of surrounding whitespace, from one generation of the
    /// mounted Secret: when kubelet swaps `..data` between the two reads, both are read again,
    /// so an old client_id is never paired with a new client_secret.
    pub fn load(&self) -> Result<Credentials, CredentialsError> {
        let mut attempt = 1;
        loop {
            let before = (self.client_id.resolved(), self.client_secret.resolved());
            let credentials = Credentials {
                client_id: self.client_id.read()?,
                client_secret: self.client_secret.read()?,
            };
            let after = (self.client_id.resolved(), self.client_secret.resolved());
            if before == after {
                return Ok(credentials);
            }
            if attempt == READ_ATTEMPTS {
                return Err(CredentialsError::Unsettled);
            }
            attempt += 1;
            std::thread::sleep(READ_RETRY_DELAY);
        }
    }

    /// The directories holding credential files, to watch for changes.
    fn directories(&self) -> BTreeSet<PathBuf> {
        [&self.client_id, &self.client_secret]
            .into_iter()
            .filter_map(Source::directory)
            .collect()
    }

    fn has_files(&self) -> bool {
        !self.directories().is_empty()
    }
}

/// Watches the credential files and publishes each change. Kubernetes updates a Secret volume
/// by swapping a `..data` symlink in the mount directory, so the directory is watched rather
/// than the files, and a periodic re-read backs the watch up where events do not arrive.
pub(crate) fn watch(
    sources: CredentialSources,
    initial: Credentials,
    metrics: Arc<Metrics>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> watch::Receiver<Arc<Credentials>> {
    let (tx, rx) = watch::channel(Arc::new(initial));
    if sources.has_files() {
        tasks.spawn(run_watcher(sources, tx, metrics, shutdown));
    }
    rx
}

async fn run_watcher(
    sources: CredentialSources,
    tx: watch::Sender<Arc<Credentials>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut changes = watch_directories(&sources.directories());
    let mut poll = tokio::time::interval(sources.poll_interval);
    let sources = Arc::new(sources);
    poll.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = poll.tick() => {}
            () = next_change(&mut changes) => {
                tokio::time::sleep(SETTLE).await;
                if let Some(events) = changes.as_mut() {
                    while events.next().now_or_never().is_some() {}
                }
            }
        }
        let reader = Arc::clone(&sources);
        let loaded = match tokio::task::spawn_blocking(move || reader.load()).await {
            Ok(loaded) => loaded,
            Err(join) => {
                tracing::error!(error = %join, "credential reader task failed");
                continue;
            }
        };
        match loaded {
            Ok(new) if **tx.borrow() != new => {
                metrics.credential_reloads.inc();
                tracing::info!("credentials changed; requesting a token with the new ones");
                tx.send_replace(Arc::new(new));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "keeping the previous credentials");
            }
        }
    }
}

/// What changes a credential file in a watched directory: a Secret volume's `..data` symlink
/// swapped by rename, files created, removed, written or re-moded, the directory itself moved or
/// removed. Opening and reading (our own re-reads included) are not watched.
const CHANGES: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MODIFY)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// Room for at least one event with the longest file name (16 bytes + 255 + NUL).
type EventBuffer = [u8; 1024];

/// An inotify watch on the directories, read on the runtime's reactor: no thread of its own and
/// nothing that blocks. `None` (periodic re-reads only) when it cannot be set up.
fn watch_directories(directories: &BTreeSet<PathBuf>) -> Option<EventStream<EventBuffer>> {
    let inotify = match Inotify::init() {
        Ok(inotify) => inotify,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the credential files; relying on periodic re-reads");
            return None;
        }
    };
    for dir in directories {
        if let Err(e) = inotify.watches().add(dir, CHANGES) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch a credentials directory; relying on periodic re-reads");
        }
    }
    match inotify.into_event_stream([0; 1024]) {
        Ok(events) => Some(events),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the credential files; relying on periodic re-reads");
            None
        }
    }
}

/// The next change in a watched directory. A watch that fails to read is dropped (periodic
/// re-reads go on), so an error cannot turn into a busy loop; with no watch, never.
async fn next_change(changes: &mut Option<EventStream<EventBuffer>>) {
    let Some(events) = changes.as_mut() else {
        return std::future::pending().await;
    };
    match events.next().await {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the credential file watch failed; relying on periodic re-reads");
            *changes = None;
        }
        None => *changes = None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_sources(dir: &Path) -> CredentialSources {
        CredentialSources {
            client_id: Source::File {
                name: "client_id",
                path: dir.join("client_id"),
            },
            client_secret: Source::File {
                name: "client_secret",
                path: dir.join("client_secret"),
            },
            poll_interval: Duration::from_secs(10),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fiskil-creds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn values_are_trimmed() {
        let dir = temp_dir("trim");
        std::fs::write(dir.join("client_id"), "  id-1\n").unwrap();
        std::fs::write(dir.join("client_secret"), "secret-1\r\n").unwrap();
        let creds = file_sources(&dir).load().unwrap();
        assert_eq!(creds.client_id.expose_secret(), "id-1");
        assert_eq!(creds.client_secret.expose_secret(), "secret-1");
        assert_eq!(format!("{creds:?}"), "Credentials([REDACTED])");
    }

    #[test]
    fn errors_name_the_file_and_never_the_content() {
        let dir = temp_dir("errors");
        std::fs::write(dir.join("client_id"), "id-1").unwrap();
        let err = file_sources(&dir).load().unwrap_err().to_string();
        assert!(err.contains("client_secret file"), "{err}");
        assert!(err.contains(&dir.join("client_secret").display().to_string()));
        assert!(err.contains("--client-secret-file"), "{err}");
        std::fs::write(dir.join("client_secret"), " \n").unwrap();
        let err = file_sources(&dir).load().unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        assert!(!err.contains("id-1"));
    }

    #[test]
    fn a_credential_from_env_and_file_is_an_error() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            credentials: CredentialArgs,
        }
        let parse = |argv: &[&str]| {
            let argv = std::iter::once("test").chain(argv.iter().copied());
            Cli::try_parse_from(argv).unwrap().credentials
        };
        let env = |name: &str| (name == CLIENT_SECRET_ENV).then(|| "s3cr3t".to_owned());
        let err = parse(&["--client-secret-file", "/x"])
            .settings(env)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "client_secret is given twice, as FISKIL_CLIENT_SECRET and as --client-secret-file; use one of them"
        );
        let sources = parse(&[]).settings(env).unwrap();
        assert!(matches!(sources.client_secret, Source::Value { .. }));
        assert!(
            matches!(sources.client_id, Source::File { ref path, .. } if path == Path::new(DEFAULT_CLIENT_ID_FILE))
        );
    }

    #[test]
    fn odd_files_are_refused_without_hanging() {
        let dir = temp_dir("odd");
        std::fs::write(dir.join("client_id"), "id-1").unwrap();
        let fifo = dir.join("client_secret");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = file_sources(&dir).load().unwrap_err().to_string();
        assert!(err.contains("is a FIFO, not a regular file"), "{err}");
        std::fs::remove_file(&fifo).unwrap();
        std::fs::create_dir(&fifo).unwrap();
        let err = file_sources(&dir).load().unwrap_err().to_string();
        assert!(err.contains("is a directory, not a regular file"), "{err}");
        std::fs::remove_dir(&fifo).unwrap();
        let big = std::fs::File::create(&fifo).unwrap();
        big.set_len(200 * 1024 * 1024).unwrap();
        let err = file_sources(&dir).load().unwrap_err().to_string();
        assert!(err.contains("is larger than 65536 bytes"), "{err}");
        std::fs::write(&fifo, "x".repeat(65536)).unwrap();
        assert!(
            file_sources(&dir).load().is_ok(),
            "64 KiB is still accepted"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pair_is_always_read_from_one_generation() {
        use std::os::unix::fs::symlink;
        let dir = temp_dir("pairs");
        let write_generation = |n: u32| {
            let gen = dir.join(format!("..gen_{n}"));
            std::fs::create_dir(&gen).unwrap();
            std::fs::write(gen.join("client_id"), format!("id-{n}")).unwrap();
            std::fs::write(gen.join("client_secret"), format!("secret-{n}")).unwrap();
        };
        write_generation(0);
        symlink("..gen_0", dir.join("..data")).unwrap();
        symlink("..data/client_id", dir.join("client_id")).unwrap();
        symlink("..data/client_secret", dir.join("client_secret")).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Swaps generations the way kubelet does: a new directory, a new ..data symlink renamed
        // over the old one, then the old directory removed.
        let swapper = {
            let (dir, stop, swapped) = (dir.clone(), Arc::clone(&stop), Arc::clone(&swapped));
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let gen = dir.join(format!("..gen_{n}"));
                    std::fs::create_dir(&gen).unwrap();
                    std::fs::write(gen.join("client_id"), format!("id-{n}")).unwrap();
                    std::fs::write(gen.join("client_secret"), format!("secret-{n}")).unwrap();
                    symlink(format!("..gen_{n}"), dir.join("..data_tmp")).unwrap();
                    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
                    std::fs::remove_dir_all(dir.join(format!("..gen_{}", n - 1))).unwrap();
                    swapped.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                n
            })
        };
        let sources = file_sources(&dir);
        let mut loads = 0;
        // Enough interleavings to matter, however slow the machine: 200 loads while at least
        // 200 swaps happen; the time limit only stops a test that cannot make progress.
        let started = std::time::Instant::now();
        while loads < 200 || swapped.load(std::sync::atomic::Ordering::Relaxed) < 200 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{loads} loads in 120 s"
            );
            if let Ok(creds) = sources.load() {
                let id = creds
                    .client_id
                    .expose_secret()
                    .trim_start_matches("id-")
                    .to_owned();
                let secret = creds
                    .client_secret
                    .expose_secret()
                    .trim_start_matches("secret-")
                    .to_owned();
                assert_eq!(
                    id, secret,
                    "a client_id paired with another generation's secret"
                );
                loads += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(loads >= 200 && swaps >= 200, "{loads} loads, {swaps} swaps");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_values_must_not_be_blank() {
        let sources = CredentialSources {
            client_id: Source::Value {
                name: "client_id",
                env: "FISKIL_CLIENT_ID",
                value: SecretString::from(" "),
            },
            client_secret: Source::Value {
                name: "client_secret",
                env: "FISKIL_CLIENT_SECRET",
                value: SecretString::from("x"),
            },
            poll_interval: Duration::from_secs(10),
        };
        let err = sources.load().unwrap_err().to_string();
        assert!(
            err.starts_with("FISKIL_CLIENT_ID is set but empty"),
            "{err}"
        );
        assert!(!sources.has_files());
    }

    #[tokio::test]
    async fn the_watch_reports_a_data_swap_but_not_reads() {
        let dir = temp_dir("watch");
        for generation in ["..2026_12_07_1", "..2026_12_07_2"] {
            std::fs::create_dir(dir.join(generation)).unwrap();
            std::fs::write(dir.join(generation).join("client_id"), generation).unwrap();
        }
        std::os::unix::fs::symlink("..2026_12_07_1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/client_id", dir.join("client_id")).unwrap();
        std::os::unix::fs::symlink("..2026_12_07_2", dir.join("..data_tmp")).unwrap();
        std::fs::write(dir.join("client_secret"), "a plain file").unwrap();
        let mut changes = watch_directories(&BTreeSet::from([dir.clone()]));
        assert!(changes.is_some(), "no watch on {}", dir.display());

        // Opening and reading, as every re-read does, is not a change.
        for file in ["client_id", "client_secret"] {
            std::fs::read(dir.join(file)).unwrap();
        }
        let quiet = tokio::time::timeout(Duration::from_millis(300), next_change(&mut changes));
        assert!(quiet.await.is_err(), "a read was reported as a change");

        // kubelet's swap: the `..data` link replaced by rename.
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        tokio::time::timeout(Duration::from_secs(10), next_change(&mut changes))
            .await
            .expect("the swap was not reported");
        assert!(changes.is_some(), "the watch was dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
