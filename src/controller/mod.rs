//! Cluster mode: `fiskil-token-refresher controller` keeps FiskilTokens' Secrets current, one
//! token request per credential per lifetime however many FiskilTokens share it.
//!
//! [`Controller::build`] connects and binds; [`Controller::run`] runs the elector, the reconcile
//! loop (`reconcile`), which starts one exchange per credential (`exchange`) and one writer per
//! FiskilToken (`target`), and the health and metrics server, then drains them at a stop
//! signal.

mod exchange;
mod metrics;
mod reconcile;
pub(crate) mod resources;
mod target;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter as EventReporter};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::AdminArgs;
use crate::app::Error;
use crate::fiskil::{HttpArgs, HttpSettings};
use crate::happenings::Happenings;
use crate::kubernetes::client::{Downward, Kube};
use crate::kubernetes::events::CONTROLLER;
use crate::kubernetes::lease::{Election, Elector, LeaseArgs};
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::refresher::RefreshRequests;
use crate::schedule::{Timing, TimingArgs};
use crate::signals::{Controls, Signals};
use crate::status::Status;
use crate::telemetry::LogArgs;
use crate::{admin, serve};

use self::exchange::Shared;
use self::metrics::ControllerMetrics;
use self::reconcile::Reconciler;
use self::target::TokenRef;

/// FiskilTokens' writers calling the API server at once.
const WRITERS_AT_ONCE: usize = 8;
/// Drain: how long writes in progress may take to finish.
const DRAIN_WRITERS: Duration = Duration::from_secs(4);
/// Drain: how long giving the Lease up may take.
const RELEASE_LEASE: Duration = Duration::from_secs(3);
/// Drain: how long the health server and the watches may take to stop.
const STOP_SERVERS: Duration = Duration::from_secs(3);

/// `controller`: the options of cluster mode.
#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    #[command(flatten)]
    pub(crate) timing: TimingArgs,
    #[command(flatten)]
    pub(crate) lease: LeaseArgs,
    #[command(flatten)]
    pub(crate) admin: AdminArgs,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// Cluster mode's settings, validated.
#[derive(Debug)]
pub struct ControllerConfig {
    pub(crate) http: HttpSettings,
    pub(crate) timing: Timing,
    pub(crate) election: Option<Election>,
    pub(crate) listen: SocketAddr,
    pub(crate) log: LogArgs,
    pub(crate) rust_log: Option<String>,
    pub(crate) downward: Downward,
}

impl ControllerConfig {
    /// Installs the global log subscriber: `--log-level` and `--log-format`, or `RUST_LOG`.
    pub fn init_logging(&self) {
        crate::telemetry::init(&self.log, self.rust_log.as_deref());
    }
}

/// How many FiskilTokens have each Ready reason, for the `fiskiltokens` metric.
pub(crate) struct Tally {
    reasons: Mutex<HashMap<(String, String), &'static str>>,
    metrics: Arc<ControllerMetrics>,
}

impl Tally {
    fn new(metrics: Arc<ControllerMetrics>) -> Tally {
        Tally {
            reasons: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Records a FiskilToken's Ready reason.
    pub(crate) fn set(&self, token: &TokenRef, reason: &'static str) {
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        let id = (token.namespace.clone(), token.name.clone());
        if reasons.insert(id, reason) != Some(reason) {
            self.publish(&reasons);
        }
    }

    /// Forgets a FiskilToken.
    pub(crate) fn remove(&self, namespace: &str, name: &str) {
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        if reasons
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some()
        {
            self.publish(&reasons);
        }
    }

    fn publish(&self, reasons: &HashMap<(String, String), &'static str>) {
        let mut counts = BTreeMap::new();
        for reason in reasons.values() {
            *counts.entry(*reason).or_insert(0) += 1;
        }
        self.metrics.set_tokens(&counts);
    }
}

/// Cluster mode, connected and bound.
pub struct Controller {
    config: ControllerConfig,
    kube: Kube,
    admin: TcpListener,
    signals: Signals,
}

impl Controller {
    /// Connects to Kubernetes, registers the signal handlers and binds the health listener.
    /// Every configuration error found at start (exit code 2) comes from here.
    pub async fn build(config: ControllerConfig) -> Result<Controller, Error> {
        let namespace = config.downward.namespace.as_deref();
        let timeout = config.http.request_timeout;
        let kube =
            Kube::connect_watching(timeout, "controller", namespace, &config.http.trust).await?;
        let signals = Signals::install().map_err(Error::Signals)?;
        let admin = serve::bind(config.listen).map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
        let listen = admin.local_addr().unwrap_or(config.listen);
        tracing::info!(listen = %listen, mode = "controller", version = env!("CARGO_PKG_VERSION"), token_url = %config.http.token_url, "started");
        Ok(Controller {
            config,
            kube,
            admin,
            signals,
        })
    }

    /// Runs until a stop signal and the drain after it; a second signal abandons the drain
    /// ([`Error::Aborted`]).
    pub async fn run(self) -> Result<(), Error> {
        let Controller {
            config,
            kube,
            admin,
            signals,
        } = self;
        let tasks = TaskTracker::new();
        let drain = CancellationToken::new();
        let abort = CancellationToken::new();
        let done = CancellationToken::new();
        tasks.spawn(signals.listen(Controls {
            drain: drain.clone(),
            abort: abort.clone(),
            // SIGHUP asks nothing of the controller: each credential keeps its own schedule.
            requests: Arc::new(RefreshRequests::default()),
            done: done.clone(),
        }));
        let outcome = tokio::select! {
            () = abort.cancelled() => Err(Error::Aborted),
            () = serve_until_drained(config, kube, admin, &tasks, drain, done.clone()) => Ok(()),
        };
        done.cancel();
        outcome
    }
}

/// Every task of cluster mode on `tasks`, until `drain`; then the drain: stop reconciling and
/// let writes in progress finish, release the Lease, stop the servers.
async fn serve_until_drained(
    config: ControllerConfig,
    kube: Kube,
    admin: TcpListener,
    tasks: &TaskTracker,
    drain: CancellationToken,
    stop_servers: CancellationToken,
) {
    let leadership = match &config.election {
        Some(election) => Leadership::elected(election.duration, election.renew_deadline),
        None => Leadership::single(),
    };
    let base = Metrics::new();
    base.set_leader(config.election.is_none());
    let metrics = ControllerMetrics::new(base);
    let status = Arc::new(Status::controller(Arc::clone(&leadership), drain.clone()));
    tasks.spawn(admin::serve(
        admin,
        Arc::clone(&status),
        Arc::clone(&metrics.base),
        stop_servers.clone(),
    ));
    let identity = config.downward.identity();
    let release = CancellationToken::new();
    let elector = config.election.map(|election| {
        let namespace = election
            .namespace
            .clone()
            .unwrap_or_else(|| kube.default_namespace.clone());
        let elector = Elector {
            api: kube::Api::namespaced(kube.client.clone(), &namespace),
            election,
            identity: identity.clone(),
            leadership: Arc::clone(&leadership),
            metrics: Arc::clone(&metrics.base),
            happenings: Happenings::default(),
        };
        tasks.spawn(elector.run(drain.clone(), release.clone()))
    });
    let work = TaskTracker::new();
    let reconciler = Reconciler {
        shared: Arc::new(Shared {
            client: kube.client.clone(),
            http: config.http.clone(),
            leadership: Arc::clone(&leadership),
            metrics: Arc::clone(&metrics),
            tasks: work.clone(),
        }),
        timing: config.timing,
        recorder: Recorder::new(
            kube.client.clone(),
            EventReporter {
                controller: CONTROLLER.into(),
                instance: Some(identity),
            },
        ),
        tally: Arc::new(Tally::new(Arc::clone(&metrics))),
        timeout: config.http.request_timeout,
        slots: Arc::new(Semaphore::new(WRITERS_AT_ONCE)),
    };
    let synced = Arc::clone(&status);
    reconciler
        .run(drain.clone(), move || synced.set_synced())
        .await;

    // The reconcile loop has returned and every exchange, writer and watch was told to stop:
    // not ready from now on; writes in progress finish within their bound.
    status.set_dead();
    work.close();
    if tokio::time::timeout(DRAIN_WRITERS, work.wait())
        .await
        .is_err()
    {
        tracing::warn!("writes still busy at shutdown; stopping them");
    }
    release.cancel();
    if let Some(elector) = elector {
        let _ = tokio::time::timeout(RELEASE_LEASE, elector).await;
    }
    stop_servers.cancel();
    tasks.close();
    let _ = tokio::time::timeout(STOP_SERVERS, tasks.wait()).await;
    tracing::info!("stopped");
}
