//! The authenticating reverse proxy: forwards loopback requests upstream with the current token.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::cli::is_loopback_url;
use crate::fiskil::HttpSettings;
use crate::fiskil::{connector, error_chain, ClientError, HttpsClient, Token, Tokens};
use crate::metrics::Metrics;
use crate::reach::{addressed_to_loopback, check_loopback, ReachConfigError, NOT_LOOPBACK_HOST};
use crate::refresher::RefreshRequests;
use crate::serve::{BodyError, Paced, MAX_BUF_SIZE};

/// Request bodies up to this size are kept, so the request can be sent again after a 401.
pub(crate) const MAX_RETRY_BODY: usize = 64 * 1024;
/// How long a request the upstream answered 401 waits for the new token it asked for; then the
/// 401 goes back to the client, and later 401s for the same token go back at once.
const REFRESH_WAIT: Duration = Duration::from_secs(3);
/// Once a new token did not end the 401s, the next one is asked for this long after the last,
/// doubling each time, up to the rejected token's lifetime; until then 401s go back at once.
const REFRESH_BACKOFF: Duration = Duration::from_secs(5);
/// How long idle upstream connections are kept for reuse.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(10);
/// Connections the proxy serves at once (each may hold one upstream connection too).
pub(crate) const PROXY_MAX_CONNECTIONS: usize = 128;
/// Idle upstream connections kept for reuse: as many as the proxy can use at once, so that a
/// steady load never closes and reopens TLS connections; [`POOL_IDLE`] closes them after it.
pub(crate) const POOL_MAX_IDLE: usize = PROXY_MAX_CONNECTIONS;
/// How long the upstream has to start answering (its status and headers), counted from
/// sending the request; then the client gets 504.
pub(crate) const UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request body may keep the proxy waiting before it has earned more time by
/// arriving (see [`crate::serve::MIN_BODY_RATE`]); then the client gets 408.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Successful requests (status below 400) get an `info` line at most this often; the others are
/// logged at `debug`. Requests answered with an error status are always logged at `info`.
const SUCCESS_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The proxy's flags.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ProxyArgs {
    /// Serve a reverse proxy to the Fiskil API on this loopback address; it adds the token
    #[arg(long, env = "FISKIL_PROXY_LISTEN", value_name = "ADDR")]
    pub proxy_listen: Option<SocketAddr>,

    /// Where the proxy forwards, scheme://host[:port] [default: the origin of --token-url]
    #[arg(long, env = "FISKIL_PROXY_UPSTREAM", value_name = "URL")]
    pub proxy_upstream: Option<String>,
}

/// The proxy's settings, validated.
#[derive(Debug, Clone)]
pub(crate) struct ProxyConfig {
    pub listen: SocketAddr,
    /// The upstream origin: scheme, host and port.
    pub upstream: Url,
}

/// A mistake in the proxy flags.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    #[error("--proxy-upstream {0:?} is not a valid URL: {1}")]
    BadUrl(String, url::ParseError),
    #[error("--proxy-upstream {0} uses http:// to a host that is not loopback; the token must travel over TLS, so use https://")]
    PlainHttp(String),
    #[error("--proxy-upstream {0} has an unsupported scheme; use https://")]
    BadScheme(String),
    #[error("--proxy-upstream {0} has a path, query or user; give only scheme://host[:port], request paths come from the application")]
    NotOrigin(String),
    #[error(
        "--proxy-upstream is set but --proxy-listen is not; add --proxy-listen 127.0.0.1:PORT"
    )]
    UpstreamWithoutListen,
}

impl ProxyArgs {
    /// The proxy's settings if `--proxy-listen` is given; the upstream defaults to the origin
    /// of `token_url`.
    pub(crate) fn settings(self, token_url: &Url) -> Result<Option<ProxyConfig>, ReachConfigError> {
        let Some(listen) = self.proxy_listen else {
            return match self.proxy_upstream {
                Some(_) => Err(ProxyConfigError::UpstreamWithoutListen.into()),
                None => Ok(None),
            };
        };
        let listen = check_loopback("--proxy-listen", listen)?;
        let upstream = match self.proxy_upstream {
            Some(raw) => check_upstream(&raw)?,
            None => origin(token_url),
        };
        Ok(Some(ProxyConfig { listen, upstream }))
    }
}

fn origin(url: &Url) -> Url {
    let mut origin = url.clone();
    origin.set_path("/");
    origin.set_query(None);
    origin.set_fragment(None);
    let _ = origin.set_username("");
    let _ = origin.set_password(None);
    origin
}

fn check_upstream(raw: &str) -> Result<Url, ProxyConfigError> {
    let url = Url::parse(raw).map_err(|e| ProxyConfigError::BadUrl(raw.to_owned(), e))?;
    if url.path() != "/"
        || url.query().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(ProxyConfigError::NotOrigin(raw.to_owned()));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_url(&url) => Ok(url),
        "http" => Err(ProxyConfigError::PlainHttp(raw.to_owned())),
        _ => Err(ProxyConfigError::BadScheme(raw.to_owned())),
    }
}

type ResponseBody = Either<Incoming, Full<Bytes>>;
/// A response on its way to the client: the upstream's body is paced like a request body.
type Answer = Either<Paced, Full<Bytes>>;

/// Forwards requests to one upstream with the current token.
pub(crate) struct Proxy {
    client: HttpsClient,
    scheme: Scheme,
    authority: Authority,
    shown_upstream: String,
    tokens: Tokens,
    reauth: Reauth,
    metrics: Arc<Metrics>,
    sampler: LogSampler,
}

impl Proxy {
    /// Builds the upstream client: the token client's trust, HTTP/1.1 with keep-alive, no
    /// environment proxies, no redirects.
    pub(crate) fn new(
        config: &ProxyConfig,
        http: &HttpSettings,
        tokens: Tokens,
        requests: Arc<RefreshRequests>,
        metrics: Arc<Metrics>,
    ) -> Result<Proxy, ClientError> {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(http.connect_timeout));
        let https = connector(http.trust.client_config()?, tcp, None, None)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .http1_max_buf_size(MAX_BUF_SIZE)
            .build(https);
        let host = config.upstream.host_str().unwrap_or("localhost");
        let authority = match config.upstream.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let authority = Authority::try_from(authority.as_str())
            .map_err(|e| ClientError::Build(format!("--proxy-upstream host: {e}")))?;
        let scheme = if config.upstream.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        Ok(Proxy {
            client,
            scheme,
            authority,
            shown_upstream: config.upstream.as_str().trim_end_matches('/').to_owned(),
            reauth: Reauth {
                asked: Mutex::new(Asked::default()),
                requests,
                tokens: tokens.clone(),
            },
            tokens,
            metrics,
            sampler: LogSampler::default(),
        })
    }

    /// Answers one request: forwards it, or refuses it; logs and counts it.
    async fn handle(&self, request: Request<Incoming>) -> Response<Answer> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let response = self.forward(request).await;
        let elapsed = started.elapsed();
        let code = response.status().as_u16();
        self.metrics.observe_proxy(code, elapsed.as_secs_f64());
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        if code >= 400 {
            tracing::info!(method = %method, path = %path, status = code, duration_ms, "proxied");
        } else if let Some(unlogged) = self.sampler.take(started + elapsed) {
            tracing::info!(
                method = %method,
                path = %path,
                status = code,
                duration_ms,
                unlogged,
                "proxied"
            );
        } else {
            tracing::debug!(method = %method, path = %path, status = code, duration_ms, "proxied");
        }
        response.map(|body| match body {
            Either::Left(upstream) => Either::Left(Paced::new(upstream, UPSTREAM_RESPONSE_TIMEOUT)),
            Either::Right(own) => Either::Right(own),
        })
    }

    async fn forward(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        if request.method() == Method::CONNECT {
            return refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!(
                    "CONNECT is refused: this is a reverse proxy to {}, not a forward proxy",
                    self.shown_upstream
                ),
            );
        }
        if request.method() == Method::TRACE {
            return refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                "TRACE is refused: the upstream would echo the token back",
            );
        }
        if request.headers().contains_key(header::UPGRADE) {
            return refusal(
                StatusCode::NOT_IMPLEMENTED,
                "protocol upgrades (WebSocket, h2c) are not proxied",
            );
        }
        let uri = request.uri();
        let target = match uri.path_and_query() {
            Some(target)
                if uri.scheme().is_none()
                    && uri.authority().is_none()
                    && target.as_str().starts_with('/') =>
            {
                target.clone()
            }
            _ => {
                let message = format!(
                    "only origin-form targets (GET /path) are accepted; all go to {}",
                    self.shown_upstream
                );
                return refusal(StatusCode::BAD_REQUEST, &message);
            }
        };
        if !addressed_to_loopback(&request) {
            return refusal(StatusCode::FORBIDDEN, NOT_LOOPBACK_HOST);
        }
        let Some(token) = self.current_token() else {
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "no unexpired token yet; see the daemon's logs and /readyz",
            );
        };
        let (parts, body) = request.into_parts();
        let body = match Outgoing::read(body).await {
            Ok(body) => body,
            Err(BodyError::TooSlow) => {
                tracing::warn!(
                    "the request body came too slowly; answered 408 and closed the connection"
                );
                return refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body came too slowly",
                );
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot read the request body");
                return refusal(StatusCode::BAD_REQUEST, "cannot read the request body");
            }
        };
        let kept = body.try_clone();
        let headers = forwarded_headers(&parts.headers);
        let response = match self.send(&parts, &target, &headers, &token, body).await {
            Ok(response) => response,
            Err(response) => return response,
        };
        if response.status() != StatusCode::UNAUTHORIZED {
            return passed_back(response);
        }
        let Some(kept) = kept else {
            self.reauth.ask(&token);
            return passed_back(response);
        };
        let Some(fresh) = self.reauth.newer_than(&token).await else {
            return passed_back(response);
        };
        drop(response);
        match self.send(&parts, &target, &headers, &fresh, kept).await {
            Ok(response) => {
                if response.status() != StatusCode::UNAUTHORIZED {
                    self.reauth.recovered();
                }
                passed_back(response)
            }
            Err(response) => response,
        }
    }

    fn current_token(&self) -> Option<Arc<Token>> {
        let now = SystemTime::now();
        self.tokens
            .borrow()
            .clone()
            .filter(|token| token.expires_at() > now)
    }

    /// Sends one request upstream; a transport failure becomes a 502 answer.
    async fn send(
        &self,
        parts: &Parts,
        target: &PathAndQuery,
        headers: &HeaderMap,
        token: &Token,
        body: Outgoing,
    ) -> Result<Response<Incoming>, Response<ResponseBody>> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(target.clone())
            .build()
            .map_err(|_| {
                refusal(
                    StatusCode::BAD_REQUEST,
                    "the request target cannot be forwarded",
                )
            })?;
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", token.value.expose_secret()))
            .map_err(|_| {
                refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the token cannot be sent in a header",
                )
            })?;
        bearer.set_sensitive(true);
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers.clone();
        request.headers_mut().insert(header::AUTHORIZATION, bearer);
        let upstream = &self.shown_upstream;
        let Ok(response) =
            tokio::time::timeout(UPSTREAM_RESPONSE_TIMEOUT, self.client.request(request)).await
        else {
            tracing::warn!(
                %upstream,
                timeout = ?UPSTREAM_RESPONSE_TIMEOUT,
                "the upstream did not answer in time"
            );
            return Err(refusal(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("{upstream} did not answer within {UPSTREAM_RESPONSE_TIMEOUT:?}"),
            ));
        };
        response.map_err(|e| {
            tracing::warn!(%upstream, error = %error_chain(&e), "upstream request failed");
            refusal(
                StatusCode::BAD_GATEWAY,
                &format!("the request to {upstream} failed"),
            )
        })
    }
}

/// Picks the successful requests logged at `info`: the first, then one per
/// [`SUCCESS_LOG_INTERVAL`]. A JSON line on stderr costs more CPU than proxying a small request
/// over a kept-alive connection does (about 11 µs of 60 µs measured), so under load a line per
/// request would be most of the proxy's work; the counters and the duration histogram still
/// count every request.
#[derive(Default)]
struct LogSampler {
    state: Mutex<Sampled>,
}

#[derive(Default)]
struct Sampled {
    /// When the last successful request was logged at `info`.
    last: Option<Instant>,
    /// Successful requests since then that were not.
    unlogged: u64,
}

impl LogSampler {
    /// Whether the successful request that finished at `now` gets an `info` line; if it does,
    /// how many successful requests went without one since the previous line.
    fn take(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.last {
            Some(last) if now.saturating_duration_since(last) < SUCCESS_LOG_INTERVAL => {
                state.unlogged += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.unlogged))
            }
        }
    }
}

/// What the proxy asked of the refresh loop after upstream 401s.
#[derive(Default)]
struct Asked {
    /// The token a refresh was last asked for, and when.
    last: Option<(Weak<Token>, Instant)>,
    /// Refreshes asked for since a new token last ended a 401 (a resent request was accepted).
    streak: u32,
    /// A token whose wait ended without a newer one: its 401s go back to the client at once.
    settled: Weak<Token>,
}

/// New tokens after upstream 401s: one request to the refresh loop per rejected token, backed
/// off while new tokens do not end the 401s, and a short wait that never stalls a client twice.
struct Reauth {
    asked: Mutex<Asked>,
    requests: Arc<RefreshRequests>,
    tokens: Tokens,
}

impl Reauth {
    fn asked(&self) -> std::sync::MutexGuard<'_, Asked> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the refresh loop for a token newer than `rejected`, unless one is already there,
    /// was already asked for, or the backoff since the last request has not passed. Returns
    /// whether a refresh for `rejected` is pending and worth waiting for.
    fn ask(&self, rejected: &Arc<Token>) -> bool {
        let current = self.tokens.borrow().clone();
        if current.is_some_and(|current| !Arc::ptr_eq(&current, rejected)) {
            return true;
        }
        let rejected_ref = Arc::downgrade(rejected);
        let mut asked = self.asked();
        if asked.settled.ptr_eq(&rejected_ref) {
            return false;
        }
        if let Some((token, at)) = &asked.last {
            if token.ptr_eq(&rejected_ref) {
                return true;
            }
            if at.elapsed() < backoff(asked.streak, rejected.lifetime) {
                return false;
            }
        }
        asked.last = Some((rejected_ref, Instant::now()));
        asked.streak = asked.streak.saturating_add(1);
        tracing::info!(
            streak = asked.streak,
            "the upstream answered 401; asking for a new token"
        );
        self.requests.request();
        true
    }

    /// A token other than `rejected` to resend with: the current one if it is newer, else the
    /// one asked for, if it arrives within [`REFRESH_WAIT`] and the refresh loop does not
    /// decline (a failed request, or one the endpoint's `Retry-After` defers).
    async fn newer_than(&self, rejected: &Arc<Token>) -> Option<Arc<Token>> {
        let mut tokens = self.tokens.clone();
        let newer = |tokens: &mut Tokens| {
            tokens
                .borrow_and_update()
                .clone()
                .filter(|token| !Arc::ptr_eq(token, rejected))
        };
        if let Some(token) = newer(&mut tokens) {
            return Some(token);
        }
        let mut declined = self.requests.declined();
        if !self.ask(rejected) {
            return None;
        }
        let fresh = tokio::time::timeout(REFRESH_WAIT, async {
            loop {
                tokio::select! {
                    changed = tokens.changed() => {
                        changed.ok()?;
                        if let Some(token) = newer(&mut tokens) {
                            return Some(token);
                        }
                    }
                    changed = declined.changed() => {
                        changed.ok()?;
                        return None;
                    }
                }
            }
        })
        .await
        .ok()
        .flatten();
        if fresh.is_none() {
            self.asked().settled = Arc::downgrade(rejected);
        }
        fresh
    }

    /// A request resent with a new token was accepted: the next 401 may ask at once.
    fn recovered(&self) {
        self.asked().streak = 0;
    }
}

/// How long after the last request for a token the next may be made, after `streak` requests
/// since a new token last ended a 401: none after a recovery, then [`REFRESH_BACKOFF`]
/// doubling, never more than the token's `lifetime`.
fn backoff(streak: u32, lifetime: Duration) -> Duration {
    match streak {
        0 => Duration::ZERO,
        n => REFRESH_BACKOFF
            .saturating_mul(1 << (n - 1).min(20))
            .min(lifetime),
    }
}

/// A request body on its way upstream: kept whole when small, else streamed as it arrives.
pub(crate) enum Outgoing {
    Kept {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Streamed {
        read: VecDeque<Bytes>,
        rest: Paced,
    },
}

impl Outgoing {
    /// A body held whole in memory.
    pub(crate) fn full(data: Bytes) -> Outgoing {
        Outgoing::Kept {
            data: Some(data),
            trailers: None,
        }
    }

    /// Reads up to [`MAX_RETRY_BODY`] bytes; a longer body streams on from there. The client
    /// has [`BODY_READ_TIMEOUT`] and then must keep up [`crate::serve::MIN_BODY_RATE`].
    async fn read(body: Incoming) -> Result<Outgoing, BodyError> {
        let mut body = Paced::new(body, BODY_READ_TIMEOUT);
        let mut read = VecDeque::new();
        if body.size_hint().lower() > MAX_RETRY_BODY as u64 {
            return Ok(Outgoing::Streamed { read, rest: body });
        }
        let mut length = 0;
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            match frame?.into_data() {
                Ok(data) => {
                    length += data.len();
                    read.push_back(data);
                    if length > MAX_RETRY_BODY {
                        return Ok(Outgoing::Streamed { read, rest: body });
                    }
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        let data = match read.len() {
            0 => None,
            1 => read.pop_front(),
            _ => Some(read.into_iter().flatten().collect()),
        };
        Ok(Outgoing::Kept { data, trailers })
    }

    /// A copy, for a kept body.
    fn try_clone(&self) -> Option<Outgoing> {
        match self {
            Outgoing::Kept { data, trailers } => Some(Outgoing::Kept {
                data: data.clone(),
                trailers: trailers.clone(),
            }),
            Outgoing::Streamed { .. } => None,
        }
    }
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Outgoing::Kept { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            Outgoing::Streamed { read, rest } => match read.pop_front() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Pin::new(rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Kept { data, trailers } => data.is_none() && trailers.is_none(),
            Outgoing::Streamed { read, rest } => read.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Outgoing::Kept { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Outgoing::Streamed { read, rest } => {
                let read: u64 = read.iter().map(|d| d.len() as u64).sum();
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
        }
    }
}

/// The client's headers minus hop-by-hop ones, `Host`, `Expect` and any `Authorization`.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    remove_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    headers.remove(header::EXPECT);
    headers
}

/// Removes `Connection`, the headers it names, and the other hop-by-hop headers.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

fn passed_back(response: Response<Incoming>) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Either::Left(body))
}

/// An answer of the proxy's own, with a JSON error.
fn refusal(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves the proxy on `listener` until `shutdown`, bounded like every listener of the daemon
/// (see [`crate::serve::serve`]), with at most [`PROXY_MAX_CONNECTIONS`] connections.
pub(crate) async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: CancellationToken) {
    let handler = move |request| {
        let proxy = Arc::clone(&proxy);
        async move { proxy.handle(request).await }
    };
    crate::serve::serve(listener, PROXY_MAX_CONNECTIONS, handler, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_url() -> Url {
        Url::parse("https://api.fiskil.com/v1/token").unwrap()
    }

    fn args(listen: Option<&str>, upstream: Option<&str>) -> ProxyArgs {
        ProxyArgs {
            proxy_listen: listen.map(|a| a.parse().unwrap()),
            proxy_upstream: upstream.map(str::to_owned),
        }
    }

    #[test]
    fn successful_requests_are_logged_once_per_interval_with_the_count_left_out() {
        let sampler = LogSampler::default();
        let start = Instant::now();
        assert_eq!(sampler.take(start), Some(0));
        let soon = start + SUCCESS_LOG_INTERVAL / 2;
        assert_eq!(sampler.take(soon), None);
        assert_eq!(sampler.take(soon), None);
        assert_eq!(sampler.take(start + SUCCESS_LOG_INTERVAL), Some(2));
        assert_eq!(sampler.take(start + SUCCESS_LOG_INTERVAL * 3), Some(0));
    }

    #[test]
    fn the_upstream_defaults_to_the_token_urls_origin() {
        let config = args(Some("127.0.0.1:8080"), None)
            .settings(&token_url())
            .unwrap()
            .unwrap();
        assert_eq!(config.upstream.as_str(), "https://api.fiskil.com/");
        assert!(args(None, None).settings(&token_url()).unwrap().is_none());
    }

    #[test]
    fn the_proxy_listens_on_loopback_and_sends_over_tls_or_to_loopback() {
        let bad = |listen: &str, upstream: Option<&str>| {
            args(Some(listen), upstream)
                .settings(&token_url())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("0.0.0.0:8080", None).contains("not a loopback address"));
        assert!(bad("127.0.0.1:1", Some("http://api.fiskil.com")).contains("uses http://"));
        assert!(bad("127.0.0.1:1", Some("https://api.fiskil.com/v1")).contains("has a path"));
        assert!(bad("127.0.0.1:1", Some("ftp://x")).contains("unsupported scheme"));
        assert!(args(Some("[::1]:1"), Some("http://127.0.0.1:8443"))
            .settings(&token_url())
            .is_ok());
        assert!(args(None, Some("https://x"))
            .settings(&token_url())
            .unwrap_err()
            .to_string()
            .contains("--proxy-listen is not"));
    }

    #[test]
    fn repeated_401s_back_off_up_to_the_token_lifetime() {
        let lifetime = Duration::from_secs(900);
        assert_eq!(backoff(0, lifetime), Duration::ZERO);
        assert_eq!(backoff(1, lifetime), Duration::from_secs(5));
        assert_eq!(backoff(2, lifetime), Duration::from_secs(10));
        assert_eq!(backoff(8, lifetime), Duration::from_secs(640));
        assert_eq!(backoff(9, lifetime), lifetime);
        assert_eq!(backoff(u32::MAX, lifetime), lifetime);
    }

    #[test]
    fn hop_by_hop_headers_and_credentials_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
            ("authorization", "Bearer from-the-client"),
            ("host", "127.0.0.1:8080"),
            ("expect", "100-continue"),
            ("x-request-id", "abc"),
            ("content-type", "application/json"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let forwarded = forwarded_headers(&headers);
        let mut names: Vec<&str> = forwarded.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "x-request-id"]);
    }
}
