//! Keeps a valid Fiskil API bearer token in a file and/or a Kubernetes Secret, refreshed
//! before it expires.
// One call into the C allocator (`memory::trim`, glibc only) is allowed; nothing else.
#![deny(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod explain;
pub mod fiskil;
pub mod fleet;
pub mod kubernetes;
pub mod memory;
pub mod metrics;
pub mod reach;
pub mod refresher;
pub mod schedule;
pub mod serve;
pub mod signals;
pub mod sink;
mod small_file;
pub mod status;
pub mod telemetry;
pub mod trust;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use config::Config;
use credentials::CredentialsError;
use fiskil::{ClientError, TokenClient};
use fleet::events::{Events, Regarding};
use fleet::lease::{Elector, Leadership};
use kubernetes::{Kube, KubeSetupError, Pod};
use metrics::Metrics;
use refresher::{OnceError, RefreshRequests, Refresher};
use sink::{file::FileError, secret::SecretSink, Output, OutputError};
use status::{OutputStatus, Status};

/// How long outputs may take to finish their writes after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(4);
/// How long releasing the Lease, and publishing the last Events, may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the daemon stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    FileSetup(#[from] FileError),
    #[error(transparent)]
    Kube(#[from] KubeSetupError),
    #[error("cannot listen on --listen {addr}: {source}; choose a free address or port")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Reach(#[from] reach::ReachStartError),
    #[error(transparent)]
    Once(#[from] OnceError),
    #[error("--once got a token but could not write it: {0}")]
    OnceWrite(#[from] OutputError),
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
            Error::Signals(_) | Error::Once(_) | Error::OnceWrite(_) => 1,
        }
    }
}

/// Runs the daemon (or one exchange with `--once`) until a stop signal.
pub async fn run(config: Config) -> Result<(), Error> {
    let credentials = config.credentials.load()?;
    let client = TokenClient::new(&config.http)?;
    let env = |name: &str| std::env::var(name).ok();
    let kube = match (&config.secret, config.events) {
        (None, false) => None,
        (secret, _) => {
            let needed = if secret.is_some() {
                "--secret-name/--secret"
            } else {
                "--events"
            };
            Some(Kube::connect(config.http.request_timeout, needed).await?)
        }
    };
    let mut outputs = Vec::new();
    if let Some(file) = &config.file {
        outputs.push(Output::File(sink::file::FileSink::new(file)?));
    }
    let secret_sinks = match (&config.secret, &kube) {
        (Some(secret), Some(kube)) => SecretSink::for_each_target(kube, secret),
        _ => Vec::new(),
    };
    let first_secret = secret_sinks.first().map(|sink| sink.target().clone());
    outputs.extend(
        secret_sinks
            .into_iter()
            .map(|sink| Output::Secret(Box::new(sink))),
    );
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let requests = Arc::new(RefreshRequests::default());
    signals::install(shutdown.clone(), Arc::clone(&requests)).map_err(Error::Signals)?;
    let identity = kubernetes::identity(env);
    let leadership = match &config.election {
        Some(election) => Leadership::elected(election.duration),
        None => Leadership::single(),
    };
    metrics.set_leader(config.election.is_none());
    let status = Arc::new(Status::new(
        outputs
            .iter()
            .map(|o| Arc::new(OutputStatus::new(o.name().to_owned())))
            .collect(),
        Arc::clone(&leadership),
        shutdown.clone(),
    ));
    let (tokens, tokens_rx) = watch::channel(None);

    if let Some(timeout) = config.once {
        let deadline = tokio::time::Instant::now() + timeout;
        let refresher = Refresher {
            client,
            credentials: watch::channel(Arc::new(credentials)).1,
            timing: config.timing,
            tokens,
            status,
            metrics: Arc::clone(&metrics),
            requests,
            leadership: Arc::clone(&leadership),
            events: Events::default(),
        };
        let token = refresher.once(deadline, &shutdown).await?;
        for output in &outputs {
            sink::write_once(output, &token, &metrics, config.timing, deadline).await?;
        }
        tracing::info!(
            expires_at = %humantime::format_rfc3339_seconds(token.expires_at()),
            "token written"
        );
        return Ok(());
    }

    let listener = serve::bind(config.listen).map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    let listen = listener.local_addr().unwrap_or(config.listen);
    reach::start(
        config.reach,
        reach::Inputs {
            tokens: tokens_rx.clone(),
            file: status
                .outputs
                .iter()
                .find(|output| output.name == "file")
                .zip(config.file.as_ref())
                .map(|(output, file)| (Arc::clone(output), file.path.clone())),
            requests: Arc::clone(&requests),
            http: config.http.clone(),
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.clone(),
        },
    )
    .await?;
    tracing::info!(listen = %listen, version = env!("CARGO_PKG_VERSION"), token_url = %config.http.token_url, "started");

    let (events, publisher) = match (&kube, config.events) {
        (Some(kube), true) => {
            let regarding = Regarding {
                pod: Pod::from_env(env, &kube.default_namespace),
                fallback: first_secret,
            };
            let (events, task) =
                fleet::events::start(kube.client.clone(), identity.clone(), regarding);
            (events, Some(task))
        }
        _ => (Events::default(), None),
    };
    let elector_stop = CancellationToken::new();
    let elector = match (&kube, config.election) {
        (Some(kube), Some(election)) => {
            let namespace = election
                .namespace
                .clone()
                .unwrap_or_else(|| kube.default_namespace.clone());
            let elector = Elector {
                api: kube::Api::namespaced(kube.client.clone(), &namespace),
                election,
                identity,
                leadership: Arc::clone(&leadership),
                metrics: Arc::clone(&metrics),
                events: events.clone(),
            };
            Some(tokio::spawn(
                elector.run(shutdown.clone(), elector_stop.clone()),
            ))
        }
        _ => None,
    };
    let credentials = credentials::watch(
        config.credentials,
        credentials,
        Arc::clone(&metrics),
        shutdown.clone(),
    );
    let shared = sink::Shared {
        metrics: Arc::clone(&metrics),
        timing: config.timing,
        leadership: Arc::clone(&leadership),
        events: events.clone(),
    };
    let mut writers = JoinSet::new();
    for (output, output_status) in outputs.into_iter().zip(status.outputs.iter()) {
        writers.spawn(sink::run(
            output,
            tokens_rx.clone(),
            Arc::clone(output_status),
            shared.clone(),
            shutdown.clone(),
        ));
    }
    drop(shared);
    // The health server outlives the drain, so probes see "not ready" rather than a refused
    // connection while the outputs finish.
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(admin::serve(
        listener,
        Arc::clone(&status),
        Arc::clone(&metrics),
        admin_stop.clone(),
    ));
    Refresher {
        client,
        credentials,
        timing: config.timing,
        tokens,
        status: Arc::clone(&status),
        metrics,
        requests,
        leadership: Arc::clone(&leadership),
        events,
    }
    .run(shutdown.clone())
    .await;
    status.set_dead();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while writers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("outputs still busy at shutdown; stopping them");
    }
    // Writes are over: the Lease can go to a follower now.
    elector_stop.cancel();
    if let Some(elector) = elector {
        let _ = tokio::time::timeout(RELEASE_TIMEOUT, elector).await;
    }
    if let Some(publisher) = publisher {
        let _ = tokio::time::timeout(RELEASE_TIMEOUT, publisher).await;
    }
    admin_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), admin).await;
    tracing::info!("stopped");
    Ok(())
}
