//! A scriptable stand-in for Fiskil's token endpoint, served over real HTTPS with a
//! certificate authority made at start. It checks each request against the documented
//! contract and answers as it is told: issue tokens, reject, throttle, fail, hang, or send
//! malformed, oversized or redirecting answers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

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
        let (ca_pem, tls) = make_tls();
        let state = Arc::new(Mutex::new(State {
            accepted: (client_id.to_owned(), client_secret.to_owned()),
            default: Behaviour::Issue { expires_in },
            queue: VecDeque::new(),
            seen: Vec::new(),
            issued: Vec::new(),
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
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { answer(request, &state).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
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
    let mut violations = Vec::new();
    let path = parts.uri.path().to_owned();
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
    match record_and_decide(state, at, wall, path, parsed, violations) {
        Reply::Respond(response) => Ok(response),
        Reply::Close => Err(Closed),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(json_response(StatusCode::GATEWAY_TIMEOUT, &json!({})))
        }
    }
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
    Reply::Respond(match behaviour {
        Behaviour::Issue { .. } | Behaviour::IssueAccessToken { .. } if !credentials_ok => {
            json_response(
                StatusCode::UNAUTHORIZED,
                &error_body(
                    "err_stand_in_401",
                    "unauthorized",
                    "invalid client credentials",
                ),
            )
        }
        Behaviour::Issue { expires_in } => {
            let token = new_token(&mut guard);
            json_response(
                StatusCode::OK,
                &json!({"token": token, "expires_in": expires_in}),
            )
        }
        Behaviour::IssueAccessToken { expires_in } => {
            let token = new_token(&mut guard);
            json_response(
                StatusCode::OK,
                &json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}),
            )
        }
        Behaviour::Fail { status } => json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &error_body(&format!("err_stand_in_{status}"), "failure", "told to fail"),
        ),
        Behaviour::RetryAfter { status, value } => {
            let mut response = json_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
                &error_body("err_stand_in_rate", "rate_limited", "slow down"),
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
            let mut body = br#"{"token":""#.to_vec();
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

/// Makes a certificate authority and a `localhost`/`127.0.0.1` server certificate it signs.
fn make_tls() -> (String, Arc<rustls::ServerConfig>) {
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
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
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
