//! The health and metrics server: `/healthz`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::status::Status;

/// The health and metrics server.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Health and metrics")]
pub struct AdminArgs {
    /// Address of the health and metrics server (/healthz, /readyz, /metrics); port 0 picks one
    #[arg(
        long,
        env = "FISKIL_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:9847"
    )]
    pub listen: SocketAddr,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct AppState {
    status: Arc<Status>,
    metrics: Arc<Metrics>,
}

/// Serves the endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { status, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.status.is_alive() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "refresh loop stopped\n").into_response()
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.status.readiness(SystemTime::now());
    let time =
        |at: Option<SystemTime>| at.map(|at| humantime::format_rfc3339_millis(at).to_string());
    let outputs: serde_json::Map<String, serde_json::Value> = state
        .status
        .outputs
        .iter()
        .map(|output| (output.name.to_owned(), time(output.expires_at()).into()))
        .collect();
    let body = serde_json::json!({
        "ready": readiness.ready,
        "expires_at": time(readiness.expires_at),
        "next_refresh_at": time(readiness.next_refresh_at),
        "outputs": outputs,
    });
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.metrics.encode(),
    )
        .into_response()
}
