//! The bounded HTTP/1.1 server behind every listener: timers on every phase, small buffers, and a connection cap that always makes room for a newcomer.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Time a client has to send a whole request head, counted from the accept or from the end
/// of the previous response: the header-read timeout and the keep-alive idle timeout in one.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections the health server and the token endpoint serve at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Largest read buffer of a connection, and so the largest request head (larger gets 431):
/// with the write buffer, what one connection can make the daemon hold.
pub(crate) const MAX_BUF_SIZE: usize = 16 * 1024;
/// How long a response may wait for a client that does not read it.
pub(crate) const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may take to finish after the stop.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A response with its whole body in memory.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Binds `addr`. The IPv6 unspecified address (`[::]`) accepts IPv4 too, and falls back to
/// `0.0.0.0` on the same port where the machine has no IPv6.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
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
    tracing::debug!(%addr, "listening");
    TcpListener::from_std(socket.into())
}

/// Serves `handler` on `listener` until `stop`, then gives requests in flight a moment.
///
/// At most `max_connections` are open at once. A connection past that closes the one that has
/// gone longest without a request in flight (idle, or still sending its head), so a newcomer,
/// such as a kubelet probe, is always taken in; only when every connection has a request in
/// flight does the newcomer wait for one to finish (and those after it in the kernel's backlog).
pub(crate) async fn serve<H, F, B>(
    listener: TcpListener,
    max_connections: usize,
    handler: H,
    stop: CancellationToken,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let open = Arc::new(Open::default());
    let connections = tokio_util::task::TaskTracker::new();
    loop {
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
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            slot = open.admit(max_connections) => slot,
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            handler.clone(),
            slot,
            Arc::clone(&open),
            stop.clone(),
        ));
        // The new connection reads its request before the next accept can choose it.
        tokio::task::yield_now().await;
    }
    connections.close();
    let _ = tokio::time::timeout(STOP_GRACE, connections.wait()).await;
}

async fn connection<H, F, B>(
    stream: TcpStream,
    handler: H,
    slot: Arc<Slot>,
    open: Arc<Open>,
    stop: CancellationToken,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = {
        let (slot, open) = (Arc::clone(&slot), Arc::clone(&open));
        hyper::service::service_fn(move |request| {
            let in_flight = InFlight::start(&slot, &open);
            let reply = handler(request);
            async move {
                let response = reply.await;
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let io = WriteStall {
        io: TokioIo::new(stream),
        stalled: None,
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF_SIZE)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        biased;
        () = slot.evicted.cancelled() => {}
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
        _ = connection.as_mut() => {}
    }
    open.remove(&slot);
}

/// The open connections of one listener.
#[derive(Default)]
struct Open {
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Signalled when a connection closes or its request ends.
    changed: Notify,
}

/// One open connection, as the accept loop sees it.
struct Slot {
    /// Requests whose response is not yet wholly handed to the connection.
    in_flight: AtomicUsize,
    /// When the connection last had no request in flight: its accept, or its last response.
    idle_since: Mutex<Instant>,
    evicted: CancellationToken,
}

impl Open {
    /// A slot for a new connection: a free one, or the one of the connection that has gone
    /// longest without a request in flight, which is closed.
    async fn admit(&self, max: usize) -> Arc<Slot> {
        loop {
            let changed = self.changed.notified();
            {
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                if slots.len() >= max {
                    let oldest = slots
                        .iter()
                        .enumerate()
                        .filter(|(_, slot)| slot.in_flight.load(Ordering::SeqCst) == 0)
                        .min_by_key(|(_, slot)| slot.idle_since())
                        .map(|(at, _)| at);
                    if let Some(at) = oldest {
                        let evicted = slots.swap_remove(at);
                        evicted.evicted.cancel();
                        tracing::debug!("closed the longest idle connection for a new one");
                    }
                }
                if slots.len() < max {
                    let slot = Arc::new(Slot {
                        in_flight: AtomicUsize::new(0),
                        idle_since: Mutex::new(Instant::now()),
                        evicted: CancellationToken::new(),
                    });
                    slots.push(Arc::clone(&slot));
                    return slot;
                }
            }
            changed.await;
        }
    }

    fn remove(&self, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = slots.iter().position(|s| Arc::ptr_eq(s, slot)) {
            slots.swap_remove(at);
        }
        let last = slots.is_empty();
        drop(slots);
        self.changed.notify_one();
        if last {
            crate::memory::release_soon();
        }
    }
}

impl Slot {
    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks a request in flight on its connection until dropped.
struct InFlight {
    slot: Arc<Slot>,
    open: Arc<Open>,
}

impl InFlight {
    fn start(slot: &Arc<Slot>, open: &Arc<Open>) -> InFlight {
        slot.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            slot: Arc::clone(slot),
            open: Arc::clone(open),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.slot.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self
                .slot
                .idle_since
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Instant::now();
            self.open.changed.notify_one();
        }
    }
}

/// A response body that keeps its request in flight until the connection has taken all of it.
struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's transport that fails a write the client has not let through for
/// [`WRITE_STALL_TIMEOUT`].
struct WriteStall<T> {
    io: T,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteStall<T> {
    fn progress<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL_TIMEOUT)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not read the response",
        )))
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for WriteStall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for WriteStall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why a [`Paced`] body ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("reading the body failed")]
    Read(#[source] hyper::Error),
    #[error("the body came slower than {MIN_BODY_RATE} bytes a second")]
    TooSlow,
}

/// Bytes a second a body must average once its grace is spent.
pub(crate) const MIN_BODY_RATE: u64 = 1024;

/// A body that may keep its reader waiting, in all, for `grace` plus one second for every
/// [`MIN_BODY_RATE`] bytes it delivered; then it fails with [`BodyError::TooSlow`]. Time its
/// reader spends elsewhere (a slow upstream taking the bytes) does not count.
pub(crate) struct Paced {
    body: Incoming,
    budget: Duration,
    waiting: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl Paced {
    pub(crate) fn new(body: Incoming, grace: Duration) -> Paced {
        Paced {
            body,
            budget: grace,
            waiting: None,
        }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some((since, _)) = this.waiting.take() {
                    this.budget = this.budget.saturating_sub(since.elapsed());
                }
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                    let earned = data.len() as u64 * 1000 / MIN_BODY_RATE;
                    this.budget += Duration::from_millis(earned);
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)))
            }
            Poll::Pending => {
                let budget = this.budget;
                let (_, deadline) = this
                    .waiting
                    .get_or_insert_with(|| (Instant::now(), Box::pin(tokio::time::sleep(budget))));
                ready!(deadline.as_mut().poll(cx));
                this.budget = Duration::ZERO;
                Poll::Ready(Some(Err(BodyError::TooSlow)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A reply with a status, a content type and a body.
pub(crate) fn reply(
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
