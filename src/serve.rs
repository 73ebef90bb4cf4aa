//! The HTTP/1.1 server behind the daemon's own endpoints: a dual-stack listener, a header-read
//! timeout, a cap on open connections, and a stop that lets requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Time a client has to send a request's headers, and to start the next one on an idle
/// keep-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// How long requests in flight may take to finish after the stop.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A response with its whole body in memory.
pub type Reply = Response<Full<Bytes>>;

/// Binds `addr`. The IPv6 unspecified address (`[::]`) accepts IPv4 too, and falls back to
/// `0.0.0.0` on the same port where the machine has no IPv6.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let dual_stack = matches!(addr, SocketAddr::V6(v6) if v6.ip().is_unspecified());
    match listen(addr, dual_stack) {
        Err(e) if dual_stack && e.kind() != io::ErrorKind::AddrInUse => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::info!(error = %e, listen = %v4, "no IPv6 here; listening on IPv4 only");
            listen(v4, false)
        }
        other => other,
    }
}

fn listen(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Serves `handler` on `listener` until `stop`, then gives requests in flight a moment.
pub async fn serve<H, F>(listener: TcpListener, handler: H, stop: CancellationToken)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let reply = handler(request);
                async move { Ok::<_, Infallible>(reply.await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(STOP_GRACE, connections.wait()).await;
}

/// A reply with a status, a content type and a body.
pub fn reply(
    status: hyper::StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
