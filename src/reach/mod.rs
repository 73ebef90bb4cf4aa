//! Ways the token reaches applications besides the file: notifications, a token endpoint, a proxy.

pub mod notify;
pub mod proxy;
pub mod token_endpoint;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::fiskil::HttpSettings;
use crate::fiskil::{ClientError, Token};
use crate::metrics::Metrics;
use crate::status::OutputStatus;

/// The flags of every way to reach an application; each is off unless given.
#[derive(clap::Args, Debug, Clone)]
pub struct ReachArgs {
    #[command(flatten)]
    pub notify: notify::NotifyArgs,
    #[command(flatten)]
    pub token_endpoint: token_endpoint::TokenEndpointArgs,
    #[command(flatten)]
    pub proxy: proxy::ProxyArgs,
}

/// What [`ReachArgs`] configure, validated.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    pub notify: Option<notify::NotifyConfig>,
    pub token_listen: Option<SocketAddr>,
    pub proxy: Option<proxy::ProxyConfig>,
}

impl Reach {
    /// True when no feature is configured.
    pub fn is_empty(&self) -> bool {
        self.notify.is_none() && self.token_listen.is_none() && self.proxy.is_none()
    }
}

/// A mistake in the reach flags, reported as one line.
#[derive(Debug, thiserror::Error)]
pub enum ReachConfigError {
    #[error("{flag} {addr} is not a loopback address; it hands out the token, so use 127.0.0.1:PORT or [::1]:PORT")]
    NotLoopback {
        flag: &'static str,
        addr: SocketAddr,
    },
    #[error(transparent)]
    Notify(#[from] notify::NotifyConfigError),
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyConfigError),
}

impl ReachArgs {
    /// Validates every group; `token_url` gives the proxy its default upstream.
    pub fn validate(self, token_url: &Url) -> Result<Reach, ReachConfigError> {
        Ok(Reach {
            notify: self.notify.validate()?,
            token_listen: self.token_endpoint.validate()?,
            proxy: self.proxy.validate(token_url)?,
        })
    }
}

/// Accepts `addr` only if its IP is a loopback address.
pub fn check_loopback(
    flag: &'static str,
    addr: SocketAddr,
) -> Result<SocketAddr, ReachConfigError> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(ReachConfigError::NotLoopback { flag, addr })
    }
}

/// Why a configured feature could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReachStartError {
    #[error("cannot listen on {flag} {addr}: {source}; choose a free loopback port")]
    Listen {
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What the features read from the rest of the daemon.
pub struct Inputs {
    pub tokens: watch::Receiver<Option<Arc<Token>>>,
    /// The file output's status and path, when there is a file: notifications follow its writes.
    pub file: Option<(Arc<OutputStatus>, PathBuf)>,
    /// Asks the refresh loop for a token now (the proxy uses it after an upstream 401).
    pub refresh_now: Arc<Notify>,
    pub http: HttpSettings,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

/// Binds the listeners and starts the configured features; they stop on shutdown.
pub async fn start(reach: Reach, inputs: Inputs) -> Result<(), ReachStartError> {
    let token_listener = match reach.token_listen {
        Some(addr) => Some(bind("--token-listen", addr).await?),
        None => None,
    };
    let proxy_listener = match &reach.proxy {
        Some(proxy) => Some(bind("--proxy-listen", proxy.listen).await?),
        None => None,
    };
    if let Some(config) = reach.notify {
        notify::spawn(
            config,
            &inputs.http,
            inputs.tokens.clone(),
            inputs.file.clone(),
            Arc::clone(&inputs.metrics),
            inputs.shutdown.clone(),
        )?;
    }
    if let Some(listener) = token_listener {
        tokio::spawn(token_endpoint::serve(
            listener,
            inputs.tokens.clone(),
            inputs.shutdown.clone(),
        ));
    }
    if let (Some(config), Some(listener)) = (reach.proxy, proxy_listener) {
        let proxy = proxy::Proxy::new(
            &config,
            &inputs.http,
            inputs.tokens.clone(),
            Arc::clone(&inputs.refresh_now),
            Arc::clone(&inputs.metrics),
        )?;
        tokio::spawn(proxy::serve(
            listener,
            Arc::new(proxy),
            inputs.shutdown.clone(),
        ));
    }
    Ok(())
}

async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, ReachStartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ReachStartError::Listen { flag, addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(flag, listen = %bound, "listening");
    Ok(listener)
}
