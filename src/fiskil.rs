//! The token exchange with Fiskil: the request, response validation and error classes.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER, USER_AGENT,
};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::net::TcpStream;
use url::Url;

use crate::cli::{is_loopback_url, positive_duration};
use crate::credentials::Credentials;
use crate::reach::proxy::Outgoing;
use crate::schedule::{parse_retry_after, Failure};
use crate::trust::{TrustError, TrustSources};

/// The documented token endpoint.
pub(crate) const DEFAULT_TOKEN_URL: &str = "https://api.fiskil.com/v1/token";

/// How the token endpoint is reached.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Token endpoint")]
pub(crate) struct HttpArgs {
    /// Token endpoint; must be https:// (see --insecure-allow-http)
    #[arg(long, env = "FISKIL_TOKEN_URL", value_name = "URL", default_value = DEFAULT_TOKEN_URL)]
    pub token_url: String,

    /// Allow an http:// --token-url, for a loopback test endpoint only
    #[arg(long, env = "FISKIL_INSECURE_ALLOW_HTTP")]
    pub insecure_allow_http: bool,

    /// Time allowed to open the TCP and TLS connection to the token endpoint
    #[arg(long, env = "FISKIL_CONNECT_TIMEOUT", value_name = "DURATION",
          default_value = "5s", value_parser = positive_duration)]
    pub connect_timeout: Duration,

    /// Time allowed for a whole token request, response included
    #[arg(long, env = "FISKIL_REQUEST_TIMEOUT", value_name = "DURATION",
          default_value = "30s", value_parser = positive_duration)]
    pub request_timeout: Duration,

    /// PEM bundle of certificate authorities trusted in addition to the built-in roots
    #[arg(long, env = "FISKIL_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

/// A token endpoint that must not be used.
#[derive(Debug, thiserror::Error)]
pub enum HttpArgsError {
    #[error("--token-url {0:?} is not a valid URL: {1}")]
    BadUrl(String, #[source] url::ParseError),
    #[error("--token-url {0} uses http://; use https://, or add --insecure-allow-http for a loopback test endpoint")]
    PlainHttp(String),
    #[error("--insecure-allow-http only allows loopback hosts, but --token-url points at {0}")]
    HttpNotLoopback(String),
    #[error("--token-url {0} has an unsupported scheme; use https://")]
    BadScheme(String),
}

/// Connection settings for the token endpoint.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub token_url: Url,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub trust: TrustSources,
    /// The proxy variables, for an https:// endpoint that is not loopback.
    pub proxies: ProxyEnv,
}

/// `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (or their lowercase names) as the environment gave
/// them. `Debug` says only which are set: a proxy URL may carry a password.
#[derive(Clone, Default)]
pub(crate) struct ProxyEnv {
    https: Option<String>,
    all: Option<String>,
    no: Option<String>,
}

impl ProxyEnv {
    /// Reads the variables through `env`; the uppercase name wins, empty counts as unset.
    fn from_env(env: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let first = |names: [&str; 2]| {
            names
                .into_iter()
                .find_map(|name| env(name).filter(|value| !value.is_empty()))
        };
        ProxyEnv {
            https: first(["HTTPS_PROXY", "https_proxy"]),
            all: first(["ALL_PROXY", "all_proxy"]),
            no: first(["NO_PROXY", "no_proxy"]),
        }
    }

    /// The proxy for `url`, if the variables name one for it.
    fn intercept(&self, url: &Uri) -> Option<Intercept> {
        let mut builder = Matcher::builder();
        if let Some(https) = &self.https {
            builder = builder.https(https.clone());
        }
        if let Some(all) = &self.all {
            builder = builder.all(all.clone());
        }
        if let Some(no) = &self.no {
            builder = builder.no(no.clone());
        }
        builder.build().intercept(url)
    }
}

impl std::fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyEnv")
            .field("https", &self.https.is_some())
            .field("all", &self.all.is_some())
            .field("no", &self.no)
            .finish()
    }
}

impl HttpArgs {
    /// Checks the URL: https://, or http:// to loopback when explicitly allowed. `env` looks up
    /// the trust bundle and proxy variables.
    pub(crate) fn settings(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<HttpSettings, HttpArgsError> {
        let raw = &self.token_url;
        let url = Url::parse(raw).map_err(|e| HttpArgsError::BadUrl(raw.to_owned(), e))?;
        match url.scheme() {
            "https" => {}
            "http" if !self.insecure_allow_http => {
                return Err(HttpArgsError::PlainHttp(raw.to_owned()))
            }
            "http" if is_loopback_url(&url) => {}
            "http" => {
                return Err(HttpArgsError::HttpNotLoopback(
                    url.host_str().unwrap_or_default().to_owned(),
                ))
            }
            _ => return Err(HttpArgsError::BadScheme(raw.to_owned())),
        }
        Ok(HttpSettings {
            token_url: url,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            proxies: ProxyEnv::from_env(&env),
            trust: TrustSources::new(self.ca_file, env),
        })
    }
}

/// The largest response body read; anything bigger is not a token response.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest token lifetime accepted: 30 days. Fiskil issues 900 s tokens; a much longer
/// lifetime is still honoured (the schedule wakes every 30 s whatever the lifetime), but a
/// number beyond this is more likely a unit mistake (milliseconds) or garbage than a lifetime,
/// and trusting it would leave an expired token in place for a very long time.
pub const MAX_EXPIRES_IN: u64 = 30 * 24 * 3600;
const JSON_UTF8: &str = "application/json; charset=UTF-8";
/// Longest piece of an endpoint's error text copied into a log line.
const MAX_ERROR_FIELD: usize = 200;

/// A bearer token and its lifetime. `Debug` does not show the token.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: SecretString,
    pub lifetime: Duration,
    /// Wall-clock time at which the request was sent: the lifetime counts from here.
    pub issued_at: SystemTime,
}

/// The refresh loop's channel of the newest token: `None` before the first one and while this
/// replica does not lead. Outputs, notifications, the token endpoint and the proxy follow it.
pub(crate) type Tokens = tokio::sync::watch::Receiver<Option<std::sync::Arc<Token>>>;

impl Token {
    /// Wall-clock time after which the token is no longer valid.
    pub(crate) fn expires_at(&self) -> SystemTime {
        self.issued_at + self.lifetime
    }
}

/// Fiskil's error body: `{"id", "name", "message"}`; `id` is what Fiskil support asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    pub id: Option<String>,
    pub name: Option<String>,
    pub message: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields = [
            ("id", &self.id),
            ("name", &self.name),
            ("message", &self.message),
        ];
        let mut first = true;
        for (key, value) in fields {
            if let Some(value) = value {
                write!(f, "{}{key}={value:?}", if first { "" } else { " " })?;
                first = false;
            }
        }
        if first {
            f.write_str("no error details")?;
        }
        Ok(())
    }
}

/// Why a token request failed. Messages never contain credentials or tokens.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("the token endpoint rejected the credentials (HTTP {status}; {api}); check the client_id and client_secret in the Fiskil console")]
    Rejected { status: u16, api: ApiError },
    #[error("the token endpoint is unavailable (HTTP {status}; {api})")]
    Unavailable {
        status: u16,
        api: ApiError,
        retry_after: Option<Duration>,
    },
    #[error("the token request failed: {0}")]
    Transport(String),
    #[error("the token endpoint sent an unusable answer: {0}")]
    InvalidResponse(String),
}

impl ExchangeError {
    /// The class of the failure, for retry timing.
    pub fn failure(&self) -> Failure {
        match self {
            ExchangeError::Rejected { .. } => Failure::Rejected,
            ExchangeError::Unavailable { retry_after, .. } => Failure::Transient {
                retry_after: *retry_after,
            },
            ExchangeError::Transport(_) => Failure::Transient { retry_after: None },
            ExchangeError::InvalidResponse(_) => Failure::InvalidResponse,
        }
    }
}

/// Why an HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("cannot set up the HTTPS client: {0}")]
    Build(String),
}

/// Sends token requests to one endpoint.
pub(crate) struct TokenClient {
    http: Poster,
    url: Uri,
}

impl TokenClient {
    /// Builds a client trusting the configured roots, never following redirects, and never
    /// sending a loopback or plain-http request through a proxy from the environment.
    pub(crate) fn new(settings: &HttpSettings) -> Result<Self, ClientError> {
        let url = Uri::try_from(settings.token_url.as_str())
            .map_err(|e| ClientError::Build(format!("--token-url: {e}")))?;
        let proxy = if may_use_proxy(&settings.token_url) {
            settings.proxies.intercept(&url)
        } else {
            None
        };
        let tls = settings.trust.client_config()?;
        let http = Poster::new(
            tls,
            proxy.as_ref(),
            settings.connect_timeout,
            settings.request_timeout,
        )?;
        tracing::debug!(via_proxy = proxy.is_some(), "token client ready");
        Ok(TokenClient { http, url })
    }

    /// Exchanges the credentials for a token: exactly the documented request, validated answer.
    pub(crate) async fn exchange(&self, credentials: &Credentials) -> Result<Token, ExchangeError> {
        let body = SecretString::from(
            serde_json::json!({
                "client_id": credentials.client_id.expose_secret(),
                "client_secret": credentials.client_secret.expose_secret(),
            })
            .to_string(),
        );
        let issued_at = SystemTime::now();
        let headers = [(ACCEPT, JSON_UTF8), (CONTENT_TYPE, JSON_UTF8)];
        let body = body.expose_secret().as_bytes().to_vec();
        tracing::debug!("sending the token request");
        self.http
            .post(&self.url, &headers, body, |response| async move {
                let (status, headers) = (response.status(), response.headers().clone());
                tracing::debug!(status = status.as_u16(), "the token endpoint answered");
                let body = read_capped(response).await?;
                classify(status, &headers, &body, issued_at)
            })
            .await
    }
}

/// A client for HTTPS (or loopback http://) endpoints. The token client, the notifications
/// and the proxy all use this one type, so the binary holds one copy of hyper-util's client.
pub(crate) type HttpsClient = Client<Connector, Outgoing>;

/// How connections to an endpoint are opened: TCP, directly or through an HTTP `CONNECT`
/// tunnel, then TLS for https://; with a timeout over all of it when one is set.
pub(crate) type Connector = Timed<HttpsConnector<Route>>;

/// A connector over `tcp` trusting `tls`, through `proxy` (a `CONNECT` tunnel) when given, the
/// whole connection set-up bounded by `timeout` when given.
pub(crate) fn connector(
    tls: rustls::ClientConfig,
    mut tcp: HttpConnector,
    proxy: Option<&Intercept>,
    timeout: Option<Duration>,
) -> Result<Connector, ClientError> {
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let route = match proxy {
        None => Route::Direct(tcp),
        // A proxy of another scheme (socks5://) fails each connection, as it did with reqwest
        // without its socks feature: the daemon retries and says why in its logs.
        Some(proxy) => {
            let to_proxy = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(tcp);
            let mut tunnel = Tunnel::new(proxy.uri().clone(), to_proxy);
            if let Some(auth) = proxy.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            Route::Tunnel(Box::new(tunnel))
        }
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(route);
    Ok(Timed {
        inner: https,
        timeout,
    })
}

/// A small HTTP/1.1 client for POSTs: keep-alive, no redirects followed, a connect timeout
/// (TCP, proxy tunnel and TLS) and a timeout for the whole exchange,
/// `user-agent: fiskil-token-refresher/<version>`.
#[derive(Clone)]
pub(crate) struct Poster {
    client: HttpsClient,
    timeout: Duration,
}

impl Poster {
    /// A client trusting `tls`; through `proxy` (a `CONNECT` tunnel) when given.
    pub(crate) fn new(
        tls: rustls::ClientConfig,
        proxy: Option<&Intercept>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Poster, ClientError> {
        let connector = connector(tls, HttpConnector::new(), proxy, Some(connect_timeout))?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Ok(Poster { client, timeout })
    }

    /// POSTs `body` with `headers` and hands the answer to `answer`; the request and `answer`
    /// together must finish within the timeout.
    pub(crate) async fn post<T, F, A>(
        &self,
        url: &Uri,
        headers: &[(hyper::header::HeaderName, &'static str)],
        body: Vec<u8>,
        answer: A,
    ) -> Result<T, ExchangeError>
    where
        A: FnOnce(Response<Incoming>) -> F,
        F: Future<Output = Result<T, ExchangeError>>,
    {
        let mut request = Request::new(Outgoing::full(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = url.clone();
        let sent = request.headers_mut();
        for (name, value) in headers {
            sent.insert(name.clone(), HeaderValue::from_static(value));
        }
        sent.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| ExchangeError::Transport(error_chain(&e)))?;
            answer(response).await
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ExchangeError::Transport(format!(
                    "no complete answer within {:?}",
                    self.timeout
                )))
            })
    }
}

/// How long an idle connection to the endpoint is kept for the next request.
const POOL_IDLE: Duration = Duration::from_secs(90);
const USER_AGENT_VALUE: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Tcp = MaybeHttpsStream<TokioIo<TcpStream>>;

/// The TCP part of a connection: direct, or a tunnel through a proxy (itself reached over TLS
/// for an https:// proxy).
#[derive(Clone)]
pub(crate) enum Route {
    Direct(HttpConnector),
    Tunnel(Box<Tunnel<HttpsConnector<HttpConnector>>>),
}

impl tower_service::Service<Uri> for Route {
    type Response = Tcp;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Tcp, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Route::Direct(tcp) => tcp.poll_ready(cx).map_err(Into::into),
            Route::Tunnel(tunnel) => tunnel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Route::Direct(tcp) => {
                let connecting = tcp.call(dst);
                Box::pin(async move { Ok(MaybeHttpsStream::Http(connecting.await?)) })
            }
            Route::Tunnel(tunnel) => {
                let connecting = tunnel.call(dst);
                Box::pin(async move { Ok(connecting.await?) })
            }
        }
    }
}

/// A connector whose whole connection set-up (TCP, tunnel, TLS) must finish within a time.
#[derive(Clone)]
pub(crate) struct Timed<C> {
    inner: C,
    timeout: Option<Duration>,
}

impl<C> tower_service::Service<Uri> for Timed<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let Some(timeout) = self.timeout else {
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(format!("the connection took longer than {timeout:?}").into()),
            }
        })
    }
}

/// Whether a request to `url` may go through `HTTPS_PROXY` / `ALL_PROXY`: only https:// to a
/// host that is not loopback. A loopback endpoint and plain http:// (loopback only) are always
/// reached directly, so no proxy ever sees the client secret.
pub(crate) fn may_use_proxy(url: &Url) -> bool {
    url.scheme() == "https" && !is_loopback_url(url)
}

/// Reads at most [`MAX_BODY_BYTES`] of the body; a longer 2xx body is an invalid response.
async fn read_capped(response: Response<Incoming>) -> Result<Vec<u8>, ExchangeError> {
    let success = response.status().is_success();
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    loop {
        let Some(frame) = incoming.frame().await else {
            return Ok(body);
        };
        let frame = frame.map_err(|e| ExchangeError::Transport(error_chain(&e)))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            if success {
                return Err(ExchangeError::InvalidResponse(format!(
                    "the body is larger than {MAX_BODY_BYTES} bytes"
                )));
            }
            return Ok(body);
        }
        body.extend_from_slice(&chunk);
    }
}

/// Turns a status, headers and body into a token or a classified error.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    issued_at: SystemTime,
) -> Result<Token, ExchangeError> {
    let code = status.as_u16();
    match code {
        200..=299 => {
            let (value, lifetime) =
                parse_token_response(body).map_err(ExchangeError::InvalidResponse)?;
            Ok(Token {
                value,
                lifetime,
                issued_at,
            })
        }
        300..=399 => {
            let target = headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!(" to {}", sanitize(v)))
                .unwrap_or_default();
            Err(ExchangeError::InvalidResponse(format!(
                "HTTP {code} redirect{target}, which is not followed so the credentials go nowhere else; set --token-url to the final address"
            )))
        }
        400 | 401 | 403 => Err(ExchangeError::Rejected {
            status: code,
            api: parse_api_error(body),
        }),
        408 | 429 | 500..=599 => Err(ExchangeError::Unavailable {
            status: code,
            api: parse_api_error(body),
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
        }),
        _ => Err(ExchangeError::InvalidResponse(format!(
            "unexpected HTTP {code} ({}); check --token-url",
            parse_api_error(body)
        ))),
    }
}

/// Validates a 2xx body: a usable `token` (or `access_token`) and a sane `expires_in`.
pub fn parse_token_response(body: &[u8]) -> Result<(SecretString, Duration), String> {
    let json: Value =
        serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_owned())?;
    let Value::Object(mut fields) = json else {
        return Err("the body is not a JSON object".to_owned());
    };
    let token = match fields.remove("token") {
        Some(Value::Null) | None => fields.remove("access_token"),
        present => present,
    };
    let token = match token {
        None | Some(Value::Null) => return Err("it has no token field".to_owned()),
        Some(Value::String(token)) => SecretString::from(token),
        Some(_) => return Err("the token field is not a string".to_owned()),
    };
    let text = token.expose_secret();
    if text.is_empty() {
        return Err("the token is empty".to_owned());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the token contains whitespace or control characters".to_owned());
    }
    let lifetime = match fields.get("expires_in") {
        None | Some(Value::Null) => return Err("it has no expires_in".to_owned()),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(0), _) => return Err("expires_in is 0".to_owned()),
            (Some(secs), _) if secs <= MAX_EXPIRES_IN => Duration::from_secs(secs),
            (Some(secs), _) => {
                return Err(format!(
                    "expires_in is {secs} s, more than the {MAX_EXPIRES_IN} s accepted"
                ))
            }
            (None, Some(secs)) => return Err(format!("expires_in is negative ({secs})")),
            (None, None) => {
                return Err(format!("expires_in is not a whole number of seconds ({n})"))
            }
        },
        Some(_) => return Err("expires_in is not a number".to_owned()),
    };
    Ok((token, lifetime))
}

/// Reads Fiskil's `{"id","name","message"}` error body, if that is what it is.
fn parse_api_error(body: &[u8]) -> ApiError {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return ApiError::default();
    };
    let field = |key: &str| fields.get(key).and_then(Value::as_str).map(sanitize);
    ApiError {
        id: field("id"),
        name: field("name"),
        message: field("message"),
    }
}

/// Keeps text from the network printable and short before it reaches a log line.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_FIELD)
        .collect()
}

/// An error and its sources on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        http: HttpArgs,
    }

    fn settings(argv: &[&str]) -> Result<HttpSettings, HttpArgsError> {
        let argv = std::iter::once("test").chain(argv.iter().copied());
        Cli::try_parse_from(argv).unwrap().http.settings(|_| None)
    }

    #[test]
    fn plain_http_is_refused_unless_allowed_for_loopback() {
        assert_eq!(settings(&[]).unwrap().token_url.as_str(), DEFAULT_TOKEN_URL);
        let err = settings(&["--token-url", "http://127.0.0.1:1/t"]);
        assert!(matches!(err, Err(HttpArgsError::PlainHttp(_))));
        let allowed = ["--insecure-allow-http", "--token-url"];
        assert!(settings(&[allowed[0], allowed[1], "http://localhost:1/t"]).is_ok());
        assert!(settings(&[allowed[0], allowed[1], "http://[::1]:1/t"]).is_ok());
        let err = settings(&[allowed[0], allowed[1], "http://api.fiskil.com/t"]);
        assert!(matches!(err, Err(HttpArgsError::HttpNotLoopback(h)) if h == "api.fiskil.com"));
        let err = settings(&["--token-url", "ftp://x/"]);
        assert!(matches!(err, Err(HttpArgsError::BadScheme(_))));
    }

    fn ok(body: &str) -> (String, u64) {
        let (token, lifetime) = parse_token_response(body.as_bytes()).unwrap();
        (token.expose_secret().to_owned(), lifetime.as_secs())
    }

    fn bad(body: &str) -> String {
        parse_token_response(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_the_documented_response_and_access_token() {
        assert_eq!(
            ok(r#"{"token":"abc.def","expires_in":900}"#),
            ("abc.def".into(), 900)
        );
        assert_eq!(
            ok(r#"{"access_token":"xyz","token_type":"Bearer","expires_in":60}"#),
            ("xyz".into(), 60)
        );
        assert_eq!(
            ok(r#"{"token":null,"access_token":"xyz","expires_in":1}"#).0,
            "xyz"
        );
    }

    #[test]
    fn lifetimes_longer_than_a_day_are_honoured_up_to_thirty_days() {
        assert_eq!(ok(r#"{"token":"t","expires_in":172800}"#).1, 172_800);
        assert_eq!(ok(r#"{"token":"t","expires_in":2592000}"#).1, 2_592_000);
        assert!(bad(r#"{"token":"t","expires_in":2592001}"#).contains("more than"));
    }

    #[test]
    fn rejects_unusable_responses_without_echoing_the_token() {
        assert_eq!(bad("<html>"), "the body is not JSON");
        assert_eq!(bad("[1]"), "the body is not a JSON object");
        assert_eq!(bad(r#"{"expires_in":900}"#), "it has no token field");
        assert_eq!(
            bad(r#"{"token":"","expires_in":900}"#),
            "the token is empty"
        );
        assert_eq!(
            bad(r#"{"token":7,"expires_in":900}"#),
            "the token field is not a string"
        );
        let spaced = bad(r#"{"token":"sekret tok","expires_in":900}"#);
        assert_eq!(
            spaced,
            "the token contains whitespace or control characters"
        );
        assert_eq!(
            bad(r#"{"token":"a\u0000b","expires_in":900}"#),
            "the token contains whitespace or control characters"
        );
        assert_eq!(bad(r#"{"token":"t"}"#), "it has no expires_in");
        assert_eq!(bad(r#"{"token":"t","expires_in":0}"#), "expires_in is 0");
        assert_eq!(
            bad(r#"{"token":"t","expires_in":-5}"#),
            "expires_in is negative (-5)"
        );
        assert_eq!(
            bad(r#"{"token":"t","expires_in":"900"}"#),
            "expires_in is not a number"
        );
        assert!(bad(r#"{"token":"t","expires_in":1.5}"#).contains("not a whole number"));
        assert!(bad(r#"{"token":"t","expires_in":31536000}"#).contains("more than"));
    }

    #[test]
    fn statuses_are_classified() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        let err = classify(
            StatusCode::UNAUTHORIZED,
            &none,
            br#"{"id":"err_1","name":"unauthorized","message":"bad key"}"#,
            now,
        )
        .unwrap_err();
        assert_eq!(err.failure(), Failure::Rejected);
        assert!(
            err.to_string()
                .contains(r#"id="err_1" name="unauthorized" message="bad key""#),
            "{err}"
        );
        let mut retry = HeaderMap::new();
        retry.insert(RETRY_AFTER, "7".parse().unwrap());
        let err = classify(StatusCode::TOO_MANY_REQUESTS, &retry, b"", now).unwrap_err();
        assert_eq!(
            err.failure(),
            Failure::Transient {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let err = classify(StatusCode::BAD_GATEWAY, &none, b"oops", now).unwrap_err();
        assert_eq!(err.failure(), Failure::Transient { retry_after: None });
        assert!(err.to_string().contains("no error details"));
        let mut moved = HeaderMap::new();
        moved.insert(LOCATION, "https://elsewhere.example/t".parse().unwrap());
        let err = classify(StatusCode::TEMPORARY_REDIRECT, &moved, b"", now).unwrap_err();
        assert_eq!(err.failure(), Failure::InvalidResponse);
        assert!(err.to_string().contains("to https://elsewhere.example/t"));
        let err = classify(StatusCode::NOT_FOUND, &none, b"", now).unwrap_err();
        assert_eq!(err.failure(), Failure::InvalidResponse);
        let token = classify(
            StatusCode::OK,
            &none,
            br#"{"token":"t","expires_in":2}"#,
            now,
        )
        .unwrap();
        assert_eq!(token.expires_at(), now + Duration::from_secs(2));
        assert!(!format!("{token:?}").contains("\"t\""));
    }
}
