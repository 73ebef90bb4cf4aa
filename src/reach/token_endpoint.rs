//! The loopback token endpoint: `GET /token` answers the current token, as text or JSON.

use std::net::SocketAddr;
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fiskil::Tokens;
use crate::reach::{addressed_to_loopback, check_loopback, ReachConfigError, NOT_LOOPBACK_HOST};
use crate::serve::{reply, Reply};

/// The token endpoint's flag.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct TokenEndpointArgs {
    /// Serve GET /token (the current token) on this loopback address; port 0 picks one
    #[arg(long, env = "FISKIL_TOKEN_LISTEN", value_name = "ADDR")]
    pub token_listen: Option<SocketAddr>,
}

impl TokenEndpointArgs {
    /// The address to listen on, if any; only loopback addresses are accepted.
    pub(crate) fn settings(self) -> Result<Option<SocketAddr>, ReachConfigError> {
        self.token_listen
            .map(|addr| check_loopback("--token-listen", addr))
            .transpose()
    }
}

/// Serves `/token` on `listener` until `shutdown`.
pub(crate) async fn serve(listener: TcpListener, tokens: Tokens, shutdown: CancellationToken) {
    let handler = move |request: Request<Incoming>| {
        let reply = answer(&request, &tokens, SystemTime::now());
        async move { reply }
    };
    crate::serve::serve(listener, crate::serve::MAX_CONNECTIONS, handler, shutdown).await;
}

/// The answer to one request: the token unexpired at `now`, as text or (asked for) JSON.
fn answer(request: &Request<Incoming>, tokens: &Tokens, now: SystemTime) -> Reply {
    if !addressed_to_loopback(request) {
        return no_store(reply(
            StatusCode::FORBIDDEN,
            "text/plain",
            format!("{NOT_LOOPBACK_HOST}\n"),
        ));
    }
    if request.uri().path() != "/token" {
        return no_store(reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"));
    }
    if request.method() != Method::GET {
        return no_store(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n",
        ));
    }
    let current = tokens
        .borrow()
        .clone()
        .filter(|token| token.expires_at() > now);
    let Some(token) = current else {
        return no_store(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            r#"{"error":"no unexpired token yet; see the daemon's logs and /readyz"}"#,
        ));
    };
    let wants_json = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"));
    if wants_json {
        let expires_in = token
            .expires_at()
            .duration_since(now)
            .unwrap_or_default()
            .as_secs();
        let body = serde_json::json!({
            "token": token.value.expose_secret(),
            "expires_at": humantime::format_rfc3339_seconds(token.expires_at()).to_string(),
            "expires_in": expires_in,
        });
        no_store(reply(StatusCode::OK, "application/json", body.to_string()))
    } else {
        no_store(reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            token.value.expose_secret().to_owned(),
        ))
    }
}

/// Marks a reply as never to be cached.
fn no_store(mut reply: Reply) -> Reply {
    reply
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}
