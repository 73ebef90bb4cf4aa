//! The health and metrics server: `/healthz`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::leadership::Role;
use crate::metrics::Metrics;
use crate::serve::{reply, Reply};
use crate::status::Status;

/// The health and metrics server.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Health and metrics")]
pub(crate) struct AdminArgs {
    /// Address of the health and metrics server (/healthz, /readyz, /metrics); [::] accepts
    /// IPv4 and IPv6 (IPv4 only where IPv6 is off); port 0 picks one
    #[arg(
        long,
        env = "FISKIL_LISTEN",
        value_name = "ADDR",
        default_value = "[::]:9847"
    )]
    pub listen: SocketAddr,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the endpoints on `listener` until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let handler = move |request: Request<Incoming>| {
        let reply = route(&request, &status, &metrics);
        async move { reply }
    };
    crate::serve::serve(listener, crate::serve::MAX_CONNECTIONS, handler, stop).await;
}

fn route(request: &Request<Incoming>, status: &Status, metrics: &Metrics) -> Reply {
    let path = request.uri().path();
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    }
    if request.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    match path {
        "/healthz" if status.is_alive() => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/healthz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "refresh loop stopped\n",
        ),
        "/readyz" => readyz(status),
        _ => reply(StatusCode::OK, OPENMETRICS, metrics.encode()),
    }
}

fn readyz(status: &Status) -> Reply {
    let readiness = status.readiness(SystemTime::now(), tokio::time::Instant::now());
    let time =
        |at: Option<SystemTime>| at.map(|at| humantime::format_rfc3339_millis(at).to_string());
    let outputs: serde_json::Map<String, serde_json::Value> = status
        .outputs
        .iter()
        .map(|output| (output.name.clone(), time(output.expires_at()).into()))
        .collect();
    let role = match readiness.role {
        Role::Single => "single",
        Role::Leader(_) => "leader",
        Role::Follower => "follower",
    };
    let body = serde_json::json!({
        "ready": readiness.ready,
        "role": role,
        "leader": readiness.leader,
        "expires_at": time(readiness.expires_at),
        "next_refresh_at": time(readiness.next_refresh_at),
        "outputs": outputs,
    });
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(code, "application/json", body.to_string())
}
