//! The daemon's life: [`App::build`] does every fallible step of set-up, [`App::run`] spawns each
//! task on one tracker and, at a stop signal, drains them in named phases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::credentials::{self, CredentialSources, Credentials, CredentialsError};
use crate::fiskil::{ClientError, Token, TokenClient};
use crate::happenings::Happenings;
use crate::kubernetes::client::{Downward, Kube, KubeSetupError};
use crate::kubernetes::events::{self, Regarding};
use crate::kubernetes::lease::{Election, Elector};
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::reach::{self, ReachStartError};
use crate::refresher::{DaemonObserver, OnceError, RefreshRequests, Refresher};
use crate::schedule::Timing;
use crate::signals::{Controls, Signals};
use crate::sink::{self, file::FileError, file::FileSink, secret::SecretSink, Output, OutputError};
use crate::status::{OutputStatus, Status};
use crate::{admin, serve};

/// Drain, phase 2: how long outputs may take to finish the write in progress.
const DRAIN_WRITERS: Duration = Duration::from_secs(4);
/// Drain, phase 3: how long giving the Lease up may take.
const RELEASE_LEASE: Duration = Duration::from_secs(3);
/// Drain, phase 4: how long publishing the last Events may take.
const FLUSH_EVENTS: Duration = Duration::from_secs(3);
/// Drain, phase 5: how long the servers (health, token endpoint, proxy) and every other task may
/// take to stop; above the servers' own grace period for requests in flight.
const STOP_SERVERS: Duration = Duration::from_secs(3);

/// Why the daemon stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The credentials could not be read at start.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The token client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The token file cannot be written.
    #[error(transparent)]
    FileSetup(#[from] FileError),
    /// No Kubernetes connection where one is needed.
    #[error(transparent)]
    Kube(#[from] KubeSetupError),
    /// The health and metrics listener could not be bound.
    #[error("cannot listen on --listen {addr}: {source}; choose a free address or port")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it could not be bound.
        source: std::io::Error,
    },
    /// The signal handlers could not be registered.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A listener or client of the token endpoint, the proxy or notifications failed.
    #[error(transparent)]
    Reach(#[from] ReachStartError),
    /// `--once` did not get a token.
    #[error(transparent)]
    Once(#[from] OnceError),
    /// `--once` got a token but could not write it.
    #[error("--once got a token but could not write it: {0}")]
    OnceWrite(#[from] OutputError),
    /// A second stop signal arrived during the drain.
    #[error("a second stop signal arrived; exiting before the drain finished")]
    Aborted,
}

impl Error {
    /// 2 for configuration errors found at start, 1 for failures at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Credentials(_)
            | Error::Client(_)
            | Error::FileSetup(_)
            | Error::Kube(_)
            | Error::Listen { .. }
            | Error::Reach(_) => 2,
            Error::Signals(_) | Error::Once(_) | Error::OnceWrite(_) | Error::Aborted => 1,
        }
    }
}

/// Everything the daemon runs, built and bound.
pub struct App {
    parts: Parts,
    signals: Signals,
    mode: Mode,
}

/// The components every mode uses.
struct Parts {
    timing: Timing,
    client: TokenClient,
    sources: CredentialSources,
    credentials: Credentials,
    kube: Option<Kube>,
    outputs: Vec<Output>,
    election: Option<Election>,
    events: bool,
    downward: Downward,
    metrics: Arc<Metrics>,
    requests: Arc<RefreshRequests>,
    leadership: Arc<Leadership>,
    status: Arc<Status>,
    tokens: watch::Sender<Option<Arc<Token>>>,
    /// Cancelled at the first stop signal.
    drain: CancellationToken,
}

/// One exchange, or the daemon with its listeners.
enum Mode {
    /// `--once`: the time allowed.
    Once(Duration),
    /// The daemon: the health listener and the bound features.
    Daemon(Box<Listeners>),
}

/// What the daemon serves, bound.
struct Listeners {
    admin: TcpListener,
    reach: reach::Ready,
}

impl App {
    /// Reads the credentials, builds the clients and outputs, connects to Kubernetes when
    /// needed, registers the signal handlers and binds every listener. Every configuration
    /// error found at start (exit code 2) comes from here.
    pub async fn build(config: Config) -> Result<App, Error> {
        let credentials = config.credentials.load()?;
        let client = TokenClient::new(&config.http)?;
        let kube = match (&config.secret, config.events) {
            (None, false) => None,
            (secret, _) => {
                let needed = if secret.is_some() {
                    "--secret-name/--secret"
                } else {
                    "--events"
                };
                let timeout = config.http.request_timeout;
                let namespace = config.downward.namespace.as_deref();
                Some(Kube::connect(timeout, needed, namespace, &config.http.trust).await?)
            }
        };
        let mut outputs = Vec::new();
        if let Some(file) = &config.file {
            outputs.push(Output::File(FileSink::new(file)?));
        }
        if let (Some(secret), Some(kube)) = (&config.secret, &kube) {
            outputs.extend(
                SecretSink::for_each_target(kube, secret)
                    .into_iter()
                    .map(|sink| Output::Secret(Box::new(sink))),
            );
        }
        let metrics = Arc::new(Metrics::new());
        metrics.set_leader(config.election.is_none());
        let drain = CancellationToken::new();
        let requests = Arc::new(RefreshRequests::default());
        let signals = Signals::install().map_err(Error::Signals)?;
        let leadership = match &config.election {
            Some(election) => Leadership::elected(election.duration, election.renew_deadline),
            None => Leadership::single(),
        };
        let status = Arc::new(Status::new(
            outputs
                .iter()
                .map(|o| Arc::new(OutputStatus::new(o.name().to_owned())))
                .collect(),
            Arc::clone(&leadership),
            drain.clone(),
        ));
        let (tokens, tokens_rx) = watch::channel(None);
        let mode = match config.once {
            Some(timeout) => Mode::Once(timeout),
            None => {
                let admin = serve::bind(config.listen).map_err(|source| Error::Listen {
                    addr: config.listen,
                    source,
                })?;
                let file = status
                    .outputs
                    .iter()
                    .find(|output| output.name == "file")
                    .zip(config.file.as_ref())
                    .map(|(output, file)| (Arc::clone(output), file.path.clone()));
                let reach = reach::bind(
                    config.reach,
                    reach::Inputs {
                        tokens: tokens_rx,
                        file,
                        requests: Arc::clone(&requests),
                        http: config.http.clone(),
                        metrics: Arc::clone(&metrics),
                    },
                )
                .await?;
                let listen = admin.local_addr().unwrap_or(config.listen);
                tracing::info!(listen = %listen, version = env!("CARGO_PKG_VERSION"), token_url = %config.http.token_url, "started");
                Mode::Daemon(Box::new(Listeners { admin, reach }))
            }
        };
        let parts = Parts {
            timing: config.timing,
            client,
            sources: config.credentials,
            credentials,
            kube,
            outputs,
            election: config.election,
            events: config.events,
            downward: config.downward,
            metrics,
            requests,
            leadership,
            status,
            tokens,
            drain,
        };
        Ok(App {
            parts,
            signals,
            mode,
        })
    }

    /// Runs until a stop signal and the drain after it, or, with `--once`, until one token is
    /// written. A second stop signal abandons either: [`Error::Aborted`].
    pub async fn run(self) -> Result<(), Error> {
        let App {
            parts,
            signals,
            mode,
        } = self;
        let tasks = TaskTracker::new();
        let abort = CancellationToken::new();
        // Cancelled in the drain's last phase; the signal handler stops listening then.
        let done = CancellationToken::new();
        tasks.spawn(signals.listen(Controls {
            drain: parts.drain.clone(),
            abort: abort.clone(),
            requests: Arc::clone(&parts.requests),
            done: done.clone(),
        }));
        let outcome = tokio::select! {
            () = abort.cancelled() => Err(Error::Aborted),
            outcome = async {
                match mode {
                    Mode::Once(timeout) => parts.once(timeout).await,
                    Mode::Daemon(listeners) => {
                        parts.daemon(*listeners, &tasks, done.clone()).await;
                        Ok(())
                    }
                }
            } => outcome,
        };
        done.cancel();
        outcome
    }
}

impl Parts {
    /// `--once`: one token, written to every output, within `timeout`.
    async fn once(self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let metrics = Arc::clone(&self.metrics);
        let outputs = self.outputs;
        let refresher = Refresher {
            client: self.client,
            credentials: watch::channel(Arc::new(self.credentials)).1,
            timing: watch::channel(self.timing).1,
            tokens: self.tokens,
            observer: Arc::new(DaemonObserver {
                status: self.status,
                metrics: Arc::clone(&metrics),
            }),
            requests: self.requests,
            leadership: self.leadership,
            happenings: Happenings::default(),
        };
        let token = refresher.once(deadline, &self.drain).await?;
        for output in &outputs {
            sink::write_once(output, &token, &metrics, self.timing, deadline).await?;
        }
        tracing::info!(
            expires_at = %humantime::format_rfc3339_seconds(token.expires_at()),
            "token written"
        );
        Ok(())
    }

    /// The daemon: every task on `tasks`, refreshing until the first stop signal, then the
    /// drain: stop refreshing, drain the writers, release the Lease, flush the Events, stop the
    /// servers.
    async fn daemon(
        self,
        Listeners { admin, reach }: Listeners,
        tasks: &TaskTracker,
        stop_servers: CancellationToken,
    ) {
        let drain = self.drain.clone();
        reach.start(tasks, &drain);
        let identity = self.downward.identity();
        let (happenings, publisher) = match (&self.kube, self.events) {
            (Some(kube), true) => {
                let regarding = Regarding {
                    pod: self.downward.pod(&kube.default_namespace),
                    fallback: self.outputs.iter().find_map(|output| match output {
                        Output::Secret(sink) => Some(sink.target().clone()),
                        Output::File(_) => None,
                    }),
                };
                let (happenings, publisher) =
                    events::start(kube.client.clone(), identity.clone(), regarding, tasks);
                (happenings, Some(publisher))
            }
            _ => (Happenings::default(), None),
        };
        let release = CancellationToken::new();
        let elector = match (&self.kube, self.election) {
            (Some(kube), Some(election)) => {
                let namespace = election
                    .namespace
                    .clone()
                    .unwrap_or_else(|| kube.default_namespace.clone());
                let elector = Elector {
                    api: kube::Api::namespaced(kube.client.clone(), &namespace),
                    election,
                    identity,
                    leadership: Arc::clone(&self.leadership),
                    metrics: Arc::clone(&self.metrics),
                    happenings: happenings.clone(),
                };
                Some(tasks.spawn(elector.run(drain.clone(), release.clone())))
            }
            _ => None,
        };
        let credentials = credentials::watch(
            self.sources,
            self.credentials,
            Arc::clone(&self.metrics),
            tasks,
            drain.clone(),
        );
        let shared = sink::Shared {
            metrics: Arc::clone(&self.metrics),
            timing: self.timing,
            leadership: Arc::clone(&self.leadership),
            happenings: happenings.clone(),
        };
        let mut writers = JoinSet::new();
        for (output, output_status) in self.outputs.into_iter().zip(self.status.outputs.iter()) {
            writers.spawn(tasks.track_future(sink::run(
                output,
                self.tokens.subscribe(),
                Arc::clone(output_status),
                shared.clone(),
                drain.clone(),
            )));
        }
        drop(shared);
        // The health server outlives the drain, so probes see "not ready" rather than a refused
        // connection while the outputs finish.
        tasks.spawn(admin::serve(
            admin,
            Arc::clone(&self.status),
            Arc::clone(&self.metrics),
            stop_servers.clone(),
        ));
        Refresher {
            client: self.client,
            credentials,
            timing: watch::channel(self.timing).1,
            tokens: self.tokens,
            observer: Arc::new(DaemonObserver {
                status: Arc::clone(&self.status),
                metrics: self.metrics,
            }),
            requests: self.requests,
            leadership: self.leadership,
            happenings,
        }
        .run(drain)
        .await;

        // Phase 1, stop refreshing: the refresh loop has returned; not ready from now on.
        self.status.set_dead();
        // Phase 2, drain the writers: a write in progress finishes, within its bound.
        let drained = tokio::time::timeout(DRAIN_WRITERS, async {
            while writers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("outputs still busy at shutdown; stopping them");
            writers.shutdown().await;
        }
        // Phase 3, release the Lease: writes are over, so a follower can take over at once.
        release.cancel();
        if let Some(elector) = elector {
            let _ = tokio::time::timeout(RELEASE_LEASE, elector).await;
        }
        // Phase 4, flush the Events: the refresh loop, the writers and the elector held the
        // last handles, so the publisher ends once its queue is empty.
        if let Some(publisher) = publisher {
            let _ = tokio::time::timeout(FLUSH_EVENTS, publisher).await;
        }
        // Phase 5, stop the servers (the token endpoint and the proxy began to at the drain)
        // and wait for every task, the signal handler's included.
        stop_servers.cancel();
        tasks.close();
        let _ = tokio::time::timeout(STOP_SERVERS, tasks.wait()).await;
        tracing::info!("stopped");
    }
}
