//! Ways the token reaches applications besides the file: notifications, a token endpoint, a proxy.

pub(crate) mod notify;
pub(crate) mod proxy;
pub(crate) mod token_endpoint;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use hyper::header::HOST;
use hyper::Request;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::fiskil::HttpSettings;
use crate::fiskil::{ClientError, Tokens};
use crate::metrics::Metrics;
use crate::refresher::RefreshRequests;
use crate::status::OutputStatus;

/// The flags of every way to reach an application; each is off unless given.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ReachArgs {
    #[command(flatten)]
    pub notify: notify::NotifyArgs,
    #[command(flatten)]
    pub token_endpoint: token_endpoint::TokenEndpointArgs,
    #[command(flatten)]
    pub proxy: proxy::ProxyArgs,
}

/// What [`ReachArgs`] configure, validated.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reach {
    pub notify: Option<notify::NotifyConfig>,
    pub token_listen: Option<SocketAddr>,
    pub proxy: Option<proxy::ProxyConfig>,
}

impl Reach {
    /// True when no feature is configured.
    pub(crate) fn is_empty(&self) -> bool {
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
    pub(crate) fn settings(self, token_url: &Url) -> Result<Reach, ReachConfigError> {
        Ok(Reach {
            notify: self.notify.settings()?,
            token_listen: self.token_endpoint.settings()?,
            proxy: self.proxy.settings(token_url)?,
        })
    }
}

/// Accepts `addr` only if its IP is a loopback address.
pub(crate) fn check_loopback(
    flag: &'static str,
    addr: SocketAddr,
) -> Result<SocketAddr, ReachConfigError> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(ReachConfigError::NotLoopback { flag, addr })
    }
}

/// What a request that names another host is told: no token for it.
pub(crate) const NOT_LOOPBACK_HOST: &str = "the Host header must name a loopback address (127.0.0.1, [::1] or localhost); other names are refused as a guard against DNS rebinding";

/// Whether a request was addressed to a loopback host: its `Host` header (and an absolute-form
/// target, if any) names `localhost` or a loopback address. A browser or a request library
/// steered to the listener through a name that resolves to 127.0.0.1 (DNS rebinding) sends
/// that name instead, and gets no token. A request without `Host` (HTTP/1.0) passes; two do not.
pub(crate) fn addressed_to_loopback<B>(request: &Request<B>) -> bool {
    let mut hosts = request.headers().get_all(HOST).iter();
    let header_ok = match (hosts.next(), hosts.next()) {
        (None, _) => true,
        (Some(host), None) => host.to_str().is_ok_and(is_loopback_host),
        (Some(_), Some(_)) => false,
    };
    header_ok
        && request
            .uri()
            .authority()
            .is_none_or(|authority| is_loopback_host(authority.as_str()))
}

/// Whether `host[:port]` names `localhost`, a 127.0.0.0/8 address or `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => {
                return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
                    && (port.is_empty() || valid_port(port.strip_prefix(':')));
            }
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    if port.is_some() && !valid_port(port) {
        return false;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() && ip.is_ipv4())
}

fn valid_port(port: Option<&str>) -> bool {
    port.is_some_and(|port| port.parse::<u16>().is_ok())
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
pub(crate) struct Inputs {
    pub tokens: Tokens,
    /// The file output's status and path, when there is a file: notifications follow its writes.
    pub file: Option<(Arc<OutputStatus>, PathBuf)>,
    /// Asks the refresh loop for a token now (the proxy uses it after an upstream 401).
    pub requests: Arc<RefreshRequests>,
    pub http: HttpSettings,
    pub metrics: Arc<Metrics>,
}

/// The configured features, bound and built, ready to start.
pub(crate) struct Ready {
    notifier: Option<notify::Notifier>,
    token_endpoint: Option<(TcpListener, Tokens)>,
    proxy: Option<(TcpListener, proxy::Proxy)>,
}

/// Binds the listeners and builds the clients of the configured features: everything that can
/// fail, before anything starts.
pub(crate) async fn bind(reach: Reach, inputs: Inputs) -> Result<Ready, ReachStartError> {
    let token_listener = match reach.token_listen {
        Some(addr) => Some(listen("--token-listen", addr).await?),
        None => None,
    };
    let proxy_listener = match &reach.proxy {
        Some(proxy) => Some(listen("--proxy-listen", proxy.listen).await?),
        None => None,
    };
    let notifier = match reach.notify {
        Some(config) => Some(notify::Notifier::new(
            config,
            &inputs.http,
            inputs.tokens.clone(),
            inputs.file.clone(),
            Arc::clone(&inputs.metrics),
        )?),
        None => None,
    };
    let proxy = match (reach.proxy, proxy_listener) {
        (Some(config), Some(listener)) => Some((
            listener,
            proxy::Proxy::new(
                &config,
                &inputs.http,
                inputs.tokens.clone(),
                Arc::clone(&inputs.requests),
                Arc::clone(&inputs.metrics),
            )?,
        )),
        _ => None,
    };
    Ok(Ready {
        notifier,
        token_endpoint: token_listener.map(|listener| (listener, inputs.tokens)),
        proxy,
    })
}

impl Ready {
    /// Starts the features on `tasks`; they stop at `shutdown` (the servers after their grace
    /// period for requests in flight).
    pub(crate) fn start(self, tasks: &TaskTracker, shutdown: &CancellationToken) {
        if let Some(notifier) = self.notifier {
            notifier.start(tasks, shutdown);
        }
        if let Some((listener, tokens)) = self.token_endpoint {
            tasks.spawn(token_endpoint::serve(listener, tokens, shutdown.clone()));
        }
        if let Some((listener, proxy)) = self.proxy {
            tasks.spawn(proxy::serve(listener, Arc::new(proxy), shutdown.clone()));
        }
    }
}

async fn listen(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, ReachStartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ReachStartError::Listen { flag, addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(flag, listen = %bound, "listening");
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(hosts: &[&str], target: &str) -> Request<()> {
        let mut builder = Request::builder().uri(target);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_loopback_hosts_are_served() {
        for host in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "localhost",
            "LOCALHOST:9000",
            "localhost.:9000",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(
                addressed_to_loopback(&request(&[host], "/token")),
                "{host} is loopback"
            );
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1",
            "0.0.0.0",
            "[::]:80",
            "[::ffff:127.0.0.1]",
            "127.0.0.1:notaport",
            "127.0.0.1:99999",
            "[::1",
            "",
        ] {
            assert!(
                !addressed_to_loopback(&request(&[host], "/token")),
                "{host:?} is refused"
            );
        }
        assert!(addressed_to_loopback(&request(&[], "/token")), "HTTP/1.0");
        assert!(!addressed_to_loopback(&request(
            &["127.0.0.1", "evil.example"],
            "/token"
        )));
        assert!(!addressed_to_loopback(&request(
            &["127.0.0.1"],
            "http://evil.example/token"
        )));
        assert!(addressed_to_loopback(&request(
            &["127.0.0.1"],
            "http://127.0.0.1:80/token"
        )));
    }
}
