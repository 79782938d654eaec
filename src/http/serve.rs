//! The connection layer, in place of `axum::serve`: accept TCP connections up to
//! `max_connections` (past it, new connections wait in the kernel's backlog),
//! serve each over HTTP/1.1 with hyper, and cut off clients that stall, which a
//! plain `axum::serve` never does:
//! - a request's headers must all arrive within `header_read_timeout` of its
//!   first byte (a slowloris client is closed);
//! - a keep-alive connection with no request in flight and no byte in or out
//!   closes after `idle_timeout` (a slow reader of a large response is not idle
//!   while its bytes keep going out).
//!
//! Request bodies and handlers are bounded by the request guard's timeouts.
//! Shutdown stops accepting, closes idle connections, lets in-flight requests
//! finish, and returns once every connection is gone.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How long connections may take, and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serve `router` on `listener` until `shutdown` resolves, then drain.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &permits) => accepted,
        };
        let Some((stream, permit)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
        let service = Tracked { inner: TowerToHyperService::new(router.clone()), activity: activity.clone() };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            // Stalls are cut by `Activity`; hyper's own header timer would also end
            // idle keep-alive connections at the header deadline.
            .header_read_timeout(None)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                result = conn => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                reason = activity.stalled(limits) => tracing::debug!(reason, "connection closed"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The next connection, once the limit allows one. `None` after a failed accept
/// (e.g. out of file descriptors), after a short pause so the loop never spins.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
    match listener.accept().await {
        Ok((stream, _)) => Some((stream, permit)),
        Err(error) => {
            tracing::warn!(%error, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// What one connection is doing, for the stall checks. Times are milliseconds
/// since `start` (from 1); 0 in `request_started_ms` means no request is being
/// received. A new connection counts as receiving one: a client that connects
/// and sends nothing gets the header timeout, not the longer idle one.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// The last response or the accept: when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// First byte of a request whose headers are not complete yet (0: none).
    request_started_ms: AtomicU64,
    /// Last time response bytes went out: a client reading a large response
    /// slowly is making progress, not idling (hyper may already hold the whole
    /// body, so the body's end says nothing about the socket).
    wrote_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(1),
            request_started_ms: AtomicU64::new(1),
            wrote_ms: AtomicU64::new(1),
        }
    }
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }
    /// Bytes arrived: the start of a request, unless one is being handled.
    fn read(&self) {
        if self.in_flight.load(SeqCst) == 0 && self.request_started_ms.load(SeqCst) == 0 {
            self.request_started_ms.store(self.now_ms(), SeqCst);
        }
    }
    /// Headers complete: the handler has the request until the returned guard
    /// drops, which is once the response body is written (or the request dropped).
    fn request_began(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, SeqCst);
        self.request_started_ms.store(0, SeqCst);
        InFlight(self.clone())
    }

    /// Resolves when the connection has stalled past a limit.
    async fn stalled(&self, limits: ConnectionLimits) -> &'static str {
        let tick = limits.header_read_timeout.min(limits.idle_timeout).min(Duration::from_secs(1)) / 4;
        loop {
            tokio::time::sleep(tick.max(Duration::from_millis(10))).await;
            if self.in_flight.load(SeqCst) > 0 {
                continue;
            }
            let started = self.request_started_ms.load(SeqCst);
            let idle_since = self.idle_since_ms.load(SeqCst).max(self.wrote_ms.load(SeqCst));
            let now = self.now_ms();
            if started != 0 {
                if now.saturating_sub(started) > limits.header_read_timeout.as_millis() as u64 {
                    return "request headers not complete within the header read timeout";
                }
            } else if now.saturating_sub(idle_since) > limits.idle_timeout.as_millis() as u64 {
                return "idle past the idle timeout";
            }
        }
    }
}

/// The socket, telling `Activity` when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read();
        }
        result
    }
}

impl Watched {
    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.wrote_ms.store(self.activity.now_ms(), SeqCst);
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(&result);
        result
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&result);
        result
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The router as a hyper service, telling `Activity` when a request is handled.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request_began();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // The request ends when its body is written, not when its head is.
            Ok(response.map(|body| axum::body::Body::new(TrackedBody { inner: body, _in_flight: in_flight })))
        })
    }
}

/// While alive, the connection has a request in flight.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(self.0.now_ms(), SeqCst);
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

/// A response body that ends its request's `InFlight` when dropped.
struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
