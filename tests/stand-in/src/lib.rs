//! A scriptable stand-in for Fiskil's token endpoint, served over real HTTPS with a
//! certificate authority made at start. It checks each request against the documented
//! contract and answers as it is told: issue tokens, reject, throttle, fail, hang, or send
//! malformed, oversized or redirecting answers.
//!
//! Three further modes are off unless switched on, so that the default contract stays strict:
//! [`StandIn::set_lenient`] tolerates request headers that differ from the documented ones
//! (for clients such as a `curl` loop), [`StandIn::enable_oauth2`] also serves a standard
//! OAuth2 client-credentials endpoint with an OIDC discovery document (for generic OAuth2
//! token refreshers), and [`StandIn::enable_control`] serves `/control/` paths through which
//! another process can change the behaviour and read counters.
//!
//! [`StandIn::enable_api`] serves the API side (see [`api`]): every other path accepts only
//! tokens the stand-in issued and has not revoked ([`StandIn::revoke_all`], or
//! `POST /control/revoke` with the control paths on).

pub mod api;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The path the token endpoint is served at.
pub const TOKEN_PATH: &str = "/v1/token";
/// A path that only a followed redirect would reach.
pub const ELSEWHERE_PATH: &str = "/elsewhere";
const JSON_UTF8: &str = "application/json; charset=UTF-8";
/// Largest request body read.
const MAX_REQUEST: usize = 16 * 1024;
/// The standard OAuth2 client-credentials token endpoint, served with [`StandIn::enable_oauth2`].
pub const OAUTH2_TOKEN_PATH: &str = "/oauth2/token";
/// The OIDC discovery document, served with [`StandIn::enable_oauth2`].
pub const OIDC_DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// An empty JSON Web Key Set, named by the discovery document.
pub const OAUTH2_JWKS_PATH: &str = "/oauth2/jwks";
/// `POST` a JSON behaviour here to change how token requests are answered
/// (served with [`StandIn::enable_control`]); see [`behaviour_from_json`].
pub const CONTROL_BEHAVIOUR_PATH: &str = "/control/behaviour";
/// `GET` counters here (served with [`StandIn::enable_control`]).
pub const CONTROL_STATS_PATH: &str = "/control/stats";
/// `POST` here to revoke every token issued so far (served with [`StandIn::enable_control`]).
pub const CONTROL_REVOKE_PATH: &str = "/control/revoke";
const FORM: &str = "application/x-www-form-urlencoded";

/// How the stand-in answers a token request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Issue a fresh token living `expires_in` seconds, if the credentials match.
    Issue { expires_in: i64 },
    /// Issue a token under `access_token` with `token_type`, as some documentation shows.
    IssueAccessToken { expires_in: i64 },
    /// Answer with this status and a Fiskil error body.
    Fail { status: u16 },
    /// Answer with this status and a `Retry-After` header.
    RetryAfter { status: u16, value: String },
    /// Never answer.
    Hang,
    /// Close the connection without answering, like a crashed or restarting endpoint.
    Close,
    /// Answer 200 with this exact body.
    Body(String),
    /// Answer 200 with a body of this many bytes.
    Oversized(usize),
    /// Answer 307 to this path on the same server.
    Redirect(String),
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub wall: SystemTime,
    pub path: String,
    pub client_id: Option<String>,
    /// Ways the request broke the documented contract; empty when it kept it.
    pub violations: Vec<String>,
}

#[derive(Debug)]
struct State {
    accepted: (String, String),
    default: Behaviour,
    queue: VecDeque<Behaviour>,
    seen: Vec<Seen>,
    issued: Vec<String>,
    /// Header deviations on the Fiskil path are tolerated.
    lenient: bool,
    /// The OAuth2 paths are served.
    oauth2: bool,
    /// The control paths are served.
    control: bool,
    /// Every other path is the API side.
    api: bool,
    /// Tokens the API side no longer accepts.
    revoked: Vec<String>,
    /// The API side refuses every token, new ones included.
    refuse_all: bool,
    /// API requests so far.
    api_seen: Vec<api::ApiSeen>,
}

/// A running stand-in. Dropping it stops the server.
pub struct StandIn {
    addr: SocketAddr,
    ca_pem: String,
    state: Arc<Mutex<State>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl StandIn {
    /// Starts on `127.0.0.1` at a free port, issuing tokens of `expires_in` seconds to
    /// `client_id`/`client_secret`.
    pub fn start(client_id: &str, client_secret: &str, expires_in: i64) -> StandIn {
        Self::start_on(
            "127.0.0.1:0".parse().expect("address"),
            client_id,
            client_secret,
            expires_in,
        )
    }

    /// Starts on `addr` (port 0 picks a free one).
    pub fn start_on(
        addr: SocketAddr,
        client_id: &str,
        client_secret: &str,
        expires_in: i64,
    ) -> StandIn {
        let (ca_pem, tls) = make_tls(addr.ip());
        let state = Arc::new(Mutex::new(State {
            accepted: (client_id.to_owned(), client_secret.to_owned()),
            default: Behaviour::Issue { expires_in },
            queue: VecDeque::new(),
            seen: Vec::new(),
            issued: Vec::new(),
            lenient: false,
            oauth2: false,
            control: false,
            api: false,
            revoked: Vec::new(),
            refuse_all: false,
            api_seen: Vec::new(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::bind(addr).await.expect("bind the stand-in");
                ready_tx
                    .send(listener.local_addr().expect("address"))
                    .expect("report address");
                tokio::select! {
                    () = serve(listener, TlsAcceptor::from(tls), shared) => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = ready_rx.recv().expect("the stand-in started");
        StandIn {
            addr,
            ca_pem,
            state,
            _stop: stop,
        }
    }

    /// The token endpoint's URL.
    pub fn url(&self) -> String {
        format!("https://localhost:{}{TOKEN_PATH}", self.addr.port())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the certificate authority that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on answer every request this way.
    pub fn set_default(&self, behaviour: Behaviour) {
        self.lock().default = behaviour;
    }

    /// Answer the next request this way, then go back to the default.
    pub fn push(&self, behaviour: Behaviour) {
        self.lock().queue.push_back(behaviour);
    }

    /// Accept only these credentials from now on.
    pub fn accept(&self, client_id: &str, client_secret: &str) {
        self.lock().accepted = (client_id.to_owned(), client_secret.to_owned());
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Every token issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        self.lock().issued.clone()
    }

    /// With `true`, `POST` requests to the Fiskil path whose `accept`, `content-type` or
    /// `user-agent` headers differ from the documented ones are answered anyway (the body
    /// must still be `{"client_id","client_secret"}`); those deviations are not recorded.
    pub fn set_lenient(&self, lenient: bool) {
        self.lock().lenient = lenient;
    }

    /// Also serve a standard OAuth2 client-credentials endpoint at [`OAUTH2_TOKEN_PATH`]
    /// (form-encoded `grant_type=client_credentials`, client authentication by HTTP Basic or
    /// form fields, answer `{"access_token","token_type","expires_in"}`), an OIDC discovery
    /// document at [`OIDC_DISCOVERY_PATH`] whose issuer is [`StandIn::issuer_url`], and an
    /// empty key set. Token requests there follow the same behaviours and credentials.
    pub fn enable_oauth2(&self) {
        self.lock().oauth2 = true;
    }

    /// Also serve [`CONTROL_BEHAVIOUR_PATH`] and [`CONTROL_STATS_PATH`]; control requests are
    /// not recorded in [`StandIn::seen`].
    pub fn enable_control(&self) {
        self.lock().control = true;
    }

    /// Serve the API side on every path that is not otherwise served (see [`api`]).
    pub fn enable_api(&self) {
        self.lock().api = true;
    }

    /// From now on the API side refuses every token issued so far.
    pub fn revoke_all(&self) {
        let mut guard = self.lock();
        let issued = guard.issued.clone();
        guard.revoked.extend(issued);
    }

    /// From now on the API side refuses every token, those issued later too (as an upstream
    /// does whose 401s a new token cannot cure).
    pub fn refuse_all_tokens(&self) {
        self.lock().refuse_all = true;
    }

    /// Every API request so far.
    pub fn api_seen(&self) -> Vec<api::ApiSeen> {
        self.lock().api_seen.clone()
    }

    /// The API side's base URL.
    pub fn api_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The OIDC issuer URL of the OAuth2 mode.
    pub fn issuer_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The OAuth2 token endpoint's URL.
    pub fn oauth2_url(&self) -> String {
        format!("https://localhost:{}{OAUTH2_TOKEN_PATH}", self.addr.port())
    }
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<Mutex<State>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let state = Arc::clone(&state);
                async move {
                    if is_api(&state, request.uri().path()) {
                        return Ok(api::answer(request, &state).await);
                    }
                    answer(request, &state).await.map(|r| r.map(boxed))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// True when `path` belongs to the API side: it is on and no other route serves the path.
fn is_api(state: &Mutex<State>, path: &str) -> bool {
    let guard = state.lock().unwrap_or_else(|e| e.into_inner());
    guard.api
        && path != TOKEN_PATH
        && !(guard.control && path.starts_with("/control/"))
        && !(guard.oauth2
            && [OAUTH2_TOKEN_PATH, OIDC_DISCOVERY_PATH, OAUTH2_JWKS_PATH].contains(&path))
}

fn boxed(body: Full<Bytes>) -> BoxBody<Bytes, hyper::Error> {
    body.map_err(|never| match never {}).boxed()
}

/// What to do with a request.
enum Reply {
    Respond(Response<Full<Bytes>>),
    Hang,
    Close,
}

/// The error that makes hyper drop a connection without answering.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by the stand-in")
    }
}

impl std::error::Error for Closed {}

async fn answer(
    request: Request<Incoming>,
    state: &Mutex<State>,
) -> Result<Response<Full<Bytes>>, Closed> {
    let at = Instant::now();
    let wall = SystemTime::now();
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_REQUEST).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path = parts.uri.path().to_owned();
    if let Some(reply) = extra_route(&parts, &path, &body, state, at, wall) {
        return finish(reply).await;
    }
    let mut violations = Vec::new();
    if parts.method != hyper::Method::POST {
        violations.push(format!("method {} instead of POST", parts.method));
    }
    for (name, wanted) in [("accept", JSON_UTF8), ("content-type", JSON_UTF8)] {
        let got = parts.headers.get(name).and_then(|v| v.to_str().ok());
        if got != Some(wanted) {
            violations.push(format!("{name} header {got:?} instead of {wanted:?}"));
        }
    }
    let agent = parts
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !agent.starts_with("fiskil-token-refresher/") {
        violations.push(format!("user-agent {agent:?} does not name the program"));
    }
    if state.lock().unwrap_or_else(|e| e.into_inner()).lenient {
        violations.retain(|v| v.starts_with("method "));
    }
    let parsed: Option<(String, String)> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) if fields.len() == 2 => {
            match (fields.get("client_id"), fields.get("client_secret")) {
                (Some(Value::String(id)), Some(Value::String(secret))) => {
                    Some((id.clone(), secret.clone()))
                }
                _ => None,
            }
        }
        _ => None,
    };
    if parsed.is_none() {
        violations.push("body is not {\"client_id\",\"client_secret\"}".to_owned());
    }
    finish(record_and_decide(state, at, wall, path, parsed, violations)).await
}

/// Records the request and picks the answer.
fn record_and_decide(
    state: &Mutex<State>,
    at: Instant,
    wall: SystemTime,
    path: String,
    parsed: Option<(String, String)>,
    violations: Vec<String>,
) -> Reply {
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    guard.seen.push(Seen {
        at,
        wall,
        path: path.clone(),
        client_id: parsed.as_ref().map(|(id, _)| id.clone()),
        violations: violations.clone(),
    });
    if path != TOKEN_PATH {
        return Reply::Respond(json_response(
            StatusCode::NOT_FOUND,
            &error_body("err_not_found", "not_found", "no such path"),
        ));
    }
    if !violations.is_empty() {
        return Reply::Respond(json_response(
            StatusCode::BAD_REQUEST,
            &error_body("err_contract", "bad_request", &violations.join("; ")),
        ));
    }
    let behaviour = guard
        .queue
        .pop_front()
        .unwrap_or_else(|| guard.default.clone());
    let credentials_ok = parsed.as_ref() == Some(&guard.accepted);
    respond(behaviour, credentials_ok, Dialect::Fiskil, &mut guard)
}

/// How answers are spelled: Fiskil's token API or standard OAuth2.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Fiskil,
    OAuth2,
}

impl Dialect {
    /// An error body: Fiskil's `{"id","name","message"}` or OAuth2's `{"error","error_description"}`.
    fn error(self, id: &str, name: &str, oauth2_error: &str, message: &str) -> Value {
        match self {
            Dialect::Fiskil => error_body(id, name, message),
            Dialect::OAuth2 => json!({"error": oauth2_error, "error_description": message}),
        }
    }

    /// The field the token travels in.
    fn token_field(self) -> &'static str {
        match self {
            Dialect::Fiskil => "token",
            Dialect::OAuth2 => "access_token",
        }
    }
}

/// The answer to a request that kept the contract, as `behaviour` says.
fn respond(
    behaviour: Behaviour,
    credentials_ok: bool,
    dialect: Dialect,
    state: &mut State,
) -> Reply {
    Reply::Respond(match behaviour {
        Behaviour::Issue { .. } | Behaviour::IssueAccessToken { .. } if !credentials_ok => {
            json_response(
                StatusCode::UNAUTHORIZED,
                &dialect.error(
                    "err_stand_in_401",
                    "unauthorized",
                    "invalid_client",
                    "invalid client credentials",
                ),
            )
        }
        Behaviour::Issue { expires_in } if dialect == Dialect::Fiskil => {
            let token = new_token(state);
            json_response(
                StatusCode::OK,
                &json!({"token": token, "expires_in": expires_in}),
            )
        }
        Behaviour::Issue { expires_in } | Behaviour::IssueAccessToken { expires_in } => {
            let token = new_token(state);
            json_response(
                StatusCode::OK,
                &json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}),
            )
        }
        Behaviour::Fail { status } => json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &dialect.error(
                &format!("err_stand_in_{status}"),
                "failure",
                "server_error",
                "told to fail",
            ),
        ),
        Behaviour::RetryAfter { status, value } => {
            let mut response = json_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
                &dialect.error(
                    "err_stand_in_rate",
                    "rate_limited",
                    "temporarily_unavailable",
                    "slow down",
                ),
            );
            response
                .headers_mut()
                .insert("retry-after", value.parse().expect("header value"));
            response
        }
        Behaviour::Hang => return Reply::Hang,
        Behaviour::Close => return Reply::Close,
        Behaviour::Body(body) => raw_response(StatusCode::OK, body.into_bytes()),
        Behaviour::Oversized(size) => {
            let mut body = format!("{{\"{}\":\"", dialect.token_field()).into_bytes();
            body.resize(size, b'a');
            raw_response(StatusCode::OK, body)
        }
        Behaviour::Redirect(path) => {
            let mut response = raw_response(StatusCode::TEMPORARY_REDIRECT, Vec::new());
            response
                .headers_mut()
                .insert("location", path.parse().expect("header value"));
            response
        }
    })
}

fn new_token(state: &mut State) -> String {
    let token = format!("tok-{:04}-{:016x}", state.issued.len() + 1, rand_u64());
    state.issued.push(token.clone());
    token
}

/// A random number from the standard library's randomly keyed hasher.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

fn error_body(id: &str, name: &str, message: &str) -> Value {
    json!({"id": id, "name": name, "message": message})
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = raw_response(status, body.to_string().into_bytes());
    response
        .headers_mut()
        .insert("content-type", JSON_UTF8.parse().expect("header value"));
    response
}

fn raw_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Makes a certificate authority and a server certificate it signs, for `localhost`,
/// `127.0.0.1` and `ip` (the listening address, when it is a specific one: a test node's pods
/// reach the stand-in on the host's address on their bridge).
fn make_tls(ip: std::net::IpAddr) -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fiskil stand-in test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let leaf_key = KeyPair::generate().expect("server key");
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "fiskil.test".to_owned(),
    ];
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let leaf = CertificateParams::new(names)
        .expect("server params")
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .expect("server certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server TLS config");
    (ca_cert.pem(), Arc::new(config))
}

/// Answers the optional OAuth2 and control paths, when they are switched on; `None` leaves
/// the request to the Fiskil contract.
fn extra_route(
    parts: &hyper::http::request::Parts,
    path: &str,
    body: &[u8],
    state: &Mutex<State>,
    at: Instant,
    wall: SystemTime,
) -> Option<Reply> {
    let (oauth2, control) = {
        let guard = state.lock().unwrap_or_else(|e| e.into_inner());
        (guard.oauth2, guard.control)
    };
    if control && path.starts_with("/control/") {
        return Some(Reply::Respond(control_reply(parts, path, body, state)));
    }
    if !oauth2 {
        return None;
    }
    match path {
        OIDC_DISCOVERY_PATH | OAUTH2_JWKS_PATH => {
            let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
            guard.seen.push(Seen {
                at,
                wall,
                path: path.to_owned(),
                client_id: None,
                violations: Vec::new(),
            });
            if path == OAUTH2_JWKS_PATH {
                return Some(Reply::Respond(json_response(
                    StatusCode::OK,
                    &json!({"keys": []}),
                )));
            }
            let host = parts
                .headers
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            let issuer = format!("https://{host}");
            Some(Reply::Respond(json_response(
                StatusCode::OK,
                &json!({
                    "issuer": issuer,
                    "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
                    "token_endpoint": format!("{issuer}{OAUTH2_TOKEN_PATH}"),
                    "jwks_uri": format!("{issuer}{OAUTH2_JWKS_PATH}"),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "grant_types_supported": ["client_credentials"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                }),
            )))
        }
        OAUTH2_TOKEN_PATH => Some(oauth2_token(parts, body, state, at, wall)),
        _ => None,
    }
}

/// Turns a reply into what hyper is given, hanging or closing as told.
async fn finish(reply: Reply) -> Result<Response<Full<Bytes>>, Closed> {
    match reply {
        Reply::Respond(response) => Ok(response),
        Reply::Close => Err(Closed),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(json_response(StatusCode::GATEWAY_TIMEOUT, &json!({})))
        }
    }
}

/// A standard OAuth2 client-credentials token request (RFC 6749 section 4.4).
fn oauth2_token(
    parts: &hyper::http::request::Parts,
    body: &[u8],
    state: &Mutex<State>,
    at: Instant,
    wall: SystemTime,
) -> Reply {
    let mut violations = Vec::new();
    if parts.method != hyper::Method::POST {
        violations.push(format!("method {} instead of POST", parts.method));
    }
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with(FORM) {
        violations.push(format!("content-type {content_type:?} instead of {FORM:?}"));
    }
    let form = parse_form(body);
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    if field("grant_type").as_deref() != Some("client_credentials") {
        violations.push("grant_type is not client_credentials".to_owned());
    }
    let basic = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64_decode(v.trim()))
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| {
            let (id, secret) = v.split_once(':')?;
            Some((
                percent_decode(id.as_bytes())?,
                percent_decode(secret.as_bytes())?,
            ))
        });
    let credentials = basic.or_else(|| Some((field("client_id")?, field("client_secret")?)));
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    guard.seen.push(Seen {
        at,
        wall,
        path: OAUTH2_TOKEN_PATH.to_owned(),
        client_id: credentials.as_ref().map(|(id, _)| id.clone()),
        violations: violations.clone(),
    });
    if !violations.is_empty() {
        return Reply::Respond(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request", "error_description": violations.join("; ")}),
        ));
    }
    let behaviour = guard
        .queue
        .pop_front()
        .unwrap_or_else(|| guard.default.clone());
    let credentials_ok = credentials.as_ref() == Some(&guard.accepted);
    respond(behaviour, credentials_ok, Dialect::OAuth2, &mut guard)
}

/// `POST /control/behaviour` and `GET /control/stats`.
fn control_reply(
    parts: &hyper::http::request::Parts,
    path: &str,
    body: &[u8],
    state: &Mutex<State>,
) -> Response<Full<Bytes>> {
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    match (parts.method.as_str(), path) {
        ("GET", CONTROL_STATS_PATH) => {
            let token_requests = guard
                .seen
                .iter()
                .filter(|s| s.path == TOKEN_PATH || s.path == OAUTH2_TOKEN_PATH)
                .count();
            json_response(
                StatusCode::OK,
                &json!({
                    "requests": guard.seen.len(),
                    "token_requests": token_requests,
                    "issued": guard.issued.len(),
                    "last_issued": guard.issued.last(),
                    "api_requests": guard.api_seen.len(),
                    "api_unauthorized": guard.api_seen.iter().filter(|s| s.status == 401).count(),
                }),
            )
        }
        ("POST", CONTROL_REVOKE_PATH) => {
            let issued = guard.issued.clone();
            guard.revoked.extend(issued);
            json_response(StatusCode::OK, &json!({"revoked": guard.revoked.len()}))
        }
        ("POST", CONTROL_BEHAVIOUR_PATH) => {
            let parsed = serde_json::from_slice::<Value>(body)
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    let once = v.get("once").and_then(Value::as_bool).unwrap_or(false);
                    behaviour_from_json(&v).map(|b| (b, once))
                });
            match parsed {
                Ok((behaviour, true)) => {
                    guard.queue.push_back(behaviour);
                    json_response(StatusCode::OK, &json!({"ok": true}))
                }
                Ok((behaviour, false)) => {
                    guard.default = behaviour;
                    json_response(StatusCode::OK, &json!({"ok": true}))
                }
                Err(message) => json_response(StatusCode::BAD_REQUEST, &json!({"error": message})),
            }
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "no such control path or method"}),
        ),
    }
}

/// Reads a behaviour from the control endpoint's JSON: `{"behaviour": NAME, ...}` with NAME
/// one of `issue` and `issue_access_token` (with `expires_in`), `fail` (with `status`),
/// `retry_after` (with `status` and `value`), `hang`, `close`, `body` (with `body`),
/// `oversized` (with `size`) and `redirect` (with `path`). With `"once": true` the control
/// endpoint answers only the next request this way.
pub fn behaviour_from_json(value: &Value) -> Result<Behaviour, String> {
    let int = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("{name} must be an integer"))
    };
    let text = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{name} must be a string"))
    };
    let status = || {
        int("status").and_then(|s| {
            u16::try_from(s)
                .ok()
                .filter(|s| (100..=999).contains(s))
                .ok_or_else(|| "status must be between 100 and 999".to_owned())
        })
    };
    match value.get("behaviour").and_then(Value::as_str) {
        Some("issue") => Ok(Behaviour::Issue {
            expires_in: int("expires_in")?,
        }),
        Some("issue_access_token") => Ok(Behaviour::IssueAccessToken {
            expires_in: int("expires_in")?,
        }),
        Some("fail") => Ok(Behaviour::Fail { status: status()? }),
        Some("retry_after") => Ok(Behaviour::RetryAfter {
            status: status()?,
            value: text("value")?,
        }),
        Some("hang") => Ok(Behaviour::Hang),
        Some("close") => Ok(Behaviour::Close),
        Some("body") => Ok(Behaviour::Body(text("body")?)),
        Some("oversized") => usize::try_from(int("size")?)
            .map(Behaviour::Oversized)
            .map_err(|_| "size must not be negative".to_owned()),
        Some("redirect") => Ok(Behaviour::Redirect(text("path")?)),
        other => Err(format!("unknown behaviour {other:?}")),
    }
}

/// Splits an `application/x-www-form-urlencoded` body; undecodable pairs are left out.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            Some((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` as a space; `None` for a bad escape or invalid UTF-8.
fn percent_decode(input: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Decodes standard base64 (padding optional); `None` for anything else.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    LENIENT.decode(input).ok()
}

#[cfg(test)]
mod extra_tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn decoders() {
        assert_eq!(percent_decode(b"a%20b+c%2B").as_deref(), Some("a b c+"));
        assert_eq!(percent_decode(b"bad%2"), None);
        assert_eq!(
            base64_decode("aWQ6c2VjcmV0").as_deref(),
            Some(&b"id:secret"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("a*b"), None);
        assert_eq!(
            parse_form(b"grant_type=client_credentials&client_id=a%3Ab&x"),
            vec![
                ("grant_type".to_owned(), "client_credentials".to_owned()),
                ("client_id".to_owned(), "a:b".to_owned()),
                ("x".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn behaviours_from_json() {
        assert_eq!(
            behaviour_from_json(&json!({"behaviour": "fail", "status": 500})),
            Ok(Behaviour::Fail { status: 500 })
        );
        assert_eq!(
            behaviour_from_json(&json!({"behaviour": "issue", "expires_in": 3})),
            Ok(Behaviour::Issue { expires_in: 3 })
        );
        assert!(behaviour_from_json(&json!({"behaviour": "fail", "status": 70000})).is_err());
        assert!(behaviour_from_json(&json!({"behaviour": "nap"})).is_err());
    }

    /// One HTTPS request to the stand-in, trusting its CA; returns status line and body.
    fn request(stand_in: &StandIn, head: &str, body: &str) -> (String, String) {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls::pki_types::CertificateDer::from_pem_slice(stand_in.ca_pem().as_bytes())
                    .expect("CA"),
            )
            .expect("add CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut tcp = TcpStream::connect(stand_in.addr()).expect("connect");
        let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
        let text = format!(
            "{head}\r\nhost: localhost:{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            stand_in.addr().port(),
            body.len()
        );
        stream.write_all(text.as_bytes()).expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.lines().next().unwrap_or("").to_owned();
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }

    #[test]
    fn optional_modes_are_off_by_default() {
        let stand_in = StandIn::start("id", "secret", 3);
        let (status, _) = request(&stand_in, "GET /control/stats HTTP/1.1", "");
        assert!(status.contains(" 404 "), "{status}");
        let (status, _) = request(
            &stand_in,
            "POST /oauth2/token HTTP/1.1\r\ncontent-type: application/x-www-form-urlencoded",
            "grant_type=client_credentials&client_id=id&client_secret=secret",
        );
        assert!(status.contains(" 404 "), "{status}");
        let (status, _) = request(
            &stand_in,
            "POST /v1/token HTTP/1.1\r\ncontent-type: application/json",
            r#"{"client_id":"id","client_secret":"secret"}"#,
        );
        assert!(status.contains(" 400 "), "{status}");
        assert!(stand_in.issued().is_empty());
    }

    #[test]
    fn lenient_oauth2_and_control_modes() {
        let stand_in = StandIn::start("id", "s:cret", 3);
        stand_in.set_lenient(true);
        stand_in.enable_oauth2();
        stand_in.enable_control();
        let (status, body) = request(
            &stand_in,
            "POST /v1/token HTTP/1.1\r\ncontent-type: application/json\r\nuser-agent: curl/8",
            r#"{"client_id":"id","client_secret":"s:cret"}"#,
        );
        assert!(status.contains(" 200 "), "{status} {body}");
        assert!(body.contains(r#""token":"tok-0001-"#), "{body}");

        let (status, body) = request(
            &stand_in,
            "GET /.well-known/openid-configuration HTTP/1.1",
            "",
        );
        assert!(status.contains(" 200 "), "{status}");
        let discovery: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(discovery["issuer"], stand_in.issuer_url());
        assert_eq!(discovery["token_endpoint"], stand_in.oauth2_url());

        // HTTP Basic with form-encoded id and secret, as golang.org/x/oauth2 sends it.
        let (status, body) = request(
            &stand_in,
            "POST /oauth2/token HTTP/1.1\r\ncontent-type: application/x-www-form-urlencoded\r\nauthorization: Basic aWQ6cyUzQWNyZXQ=",
            "grant_type=client_credentials",
        );
        assert!(status.contains(" 200 "), "{status} {body}");
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(answer["token_type"], "Bearer");
        assert_eq!(answer["expires_in"], 3);
        assert!(answer["access_token"]
            .as_str()
            .unwrap_or("")
            .starts_with("tok-0002-"));

        let (status, _) = request(
            &stand_in,
            "POST /oauth2/token HTTP/1.1\r\ncontent-type: application/x-www-form-urlencoded",
            "grant_type=client_credentials&client_id=id&client_secret=wrong",
        );
        assert!(status.contains(" 401 "), "{status}");

        let (status, _) = request(
            &stand_in,
            "POST /control/behaviour HTTP/1.1\r\ncontent-type: application/json",
            r#"{"behaviour":"fail","status":500}"#,
        );
        assert!(status.contains(" 200 "), "{status}");
        let (status, body) = request(
            &stand_in,
            "POST /oauth2/token HTTP/1.1\r\ncontent-type: application/x-www-form-urlencoded",
            "grant_type=client_credentials&client_id=id&client_secret=s%3Acret",
        );
        assert!(status.contains(" 500 "), "{status}");
        assert!(body.contains("server_error"), "{body}");

        let (_, body) = request(&stand_in, "GET /control/stats HTTP/1.1", "");
        let stats: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(stats["token_requests"], 4);
        assert_eq!(stats["issued"], 2);
        assert_eq!(stats["requests"], 5);
    }
}
