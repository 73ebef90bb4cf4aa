//! The loopback token endpoint: `GET /token` answers the current token, as text or JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fiskil::Token;
use crate::reach::{check_loopback, ReachConfigError};

/// The token endpoint's flag.
#[derive(clap::Args, Debug, Clone)]
pub struct TokenEndpointArgs {
    /// Serve GET /token (the current token) on this loopback address; port 0 picks one
    #[arg(long, env = "FISKIL_TOKEN_LISTEN", value_name = "ADDR")]
    pub token_listen: Option<SocketAddr>,
}

impl TokenEndpointArgs {
    /// The address to listen on, if any; only loopback addresses are accepted.
    pub fn validate(self) -> Result<Option<SocketAddr>, ReachConfigError> {
        self.token_listen
            .map(|addr| check_loopback("--token-listen", addr))
            .transpose()
    }
}

const NO_STORE: (header::HeaderName, HeaderValue) =
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));

/// Serves `/token` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tokens: watch::Receiver<Option<Arc<Token>>>,
    shutdown: CancellationToken,
) {
    let app = Router::new().route("/token", get(token)).with_state(tokens);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "token endpoint stopped with an error");
    }
}

async fn token(
    State(tokens): State<watch::Receiver<Option<Arc<Token>>>>,
    headers: HeaderMap,
) -> Response {
    let now = SystemTime::now();
    let current = tokens
        .borrow()
        .clone()
        .filter(|token| token.expires_at() > now);
    let Some(token) = current else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                NO_STORE,
            ],
            r#"{"error":"no unexpired token yet; see the daemon's logs and /readyz"}"#,
        )
            .into_response();
    };
    let wants_json = headers
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
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                NO_STORE,
            ],
            body.to_string(),
        )
            .into_response()
    } else {
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                NO_STORE,
            ],
            token.value.expose_secret().to_owned(),
        )
            .into_response()
    }
}
