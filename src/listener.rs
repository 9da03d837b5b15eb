//! Serves HTTP/1 and HTTP/2 connections of one listener (OTLP/gRPC, OTLP/HTTP or the
//! dashboard) with the limits a server on an open network needs: a client must send its
//! request headers within a time and a size, a connection with nothing in flight is closed
//! after a while, and an HTTP/2 connection carries a bounded number of streams at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::tls::Tls;

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must have sent a request's headers this long after it started them (or after
    /// connecting, for the first request).
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), and HTTP/2 header list.
    pub max_header_bytes: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    pub max_streams: u32,
}

/// How often each connection checks its timeouts.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// How long requests in flight get to finish when the server stops.
const DRAIN: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until `cancel` fires, each served by `service`, over
/// TLS if `tls` is given. The TLS handshake must end within the header timeout.
pub fn serve<S, B>(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    service: S,
    limits: ConnectionLimits,
    what: &'static str,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's smallest buffer is 8 KiB; the head must fit in it.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let (tracker, cancel) = (tracker.clone(), cancel.clone());
    let connections = tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(%error, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (builder, service, cancel) = (builder.clone(), service.clone(), cancel.clone());
            let tls = tls.clone();
            connections.spawn(async move {
                let Some(tls) = tls else {
                    serve_connection(builder, stream, peer, service, limits, cancel, what).await;
                    return;
                };
                let handshake = tls.acceptor().accept(stream);
                match tokio::time::timeout(limits.header_timeout, handshake).await {
                    Ok(Ok(stream)) => {
                        serve_connection(builder, stream, peer, service, limits, cancel, what)
                            .await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "{what}: TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(%peer, "{what}: no TLS handshake in time"),
                }
            });
        }
    });
}

async fn serve_connection<S, B, I>(
    builder: auto::Builder<TokioExecutor>,
    stream: I,
    peer: SocketAddr,
    service: S,
    limits: ConnectionLimits,
    cancel: CancellationToken,
    what: &'static str,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let counted = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut service = service.clone();
            let guard = activity.begin();
            async move {
                let response = service.call(request).await;
                drop(guard);
                response
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(stream), counted);
    tokio::pin!(connection);
    let mut check = tokio::time::interval(CHECK_EVERY);
    let mut draining_since: Option<Instant> = None;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "{what}: connection ended");
                }
                return;
            }
            () = cancel.cancelled(), if draining_since.is_none() => {
                connection.as_mut().graceful_shutdown();
                draining_since = Some(Instant::now());
            }
            _ = check.tick() => {
                if let Some(since) = draining_since {
                    if since.elapsed() > DRAIN {
                        return;
                    }
                    continue;
                }
                match activity.quiet_for(limits) {
                    Quiet::No => {}
                    // Nothing in flight to finish: close at once.
                    Quiet::NeverAsked => {
                        tracing::debug!(%peer, "{what}: no request within the header timeout");
                        return;
                    }
                    Quiet::Idle => {
                        connection.as_mut().graceful_shutdown();
                        draining_since = Some(Instant::now());
                    }
                }
            }
        }
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `started` when the connection last had nothing in flight.
    quiet_since_ms: AtomicU64,
}

enum Quiet {
    No,
    /// Connected, and no request came within the header timeout (a slow or silent client).
    NeverAsked,
    /// Nothing in flight for the idle timeout.
    Idle,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            quiet_since_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn quiet_for(&self, limits: ConnectionLimits) -> Quiet {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Quiet::No;
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        let quiet = Duration::from_millis(
            now_ms.saturating_sub(self.quiet_since_ms.load(Ordering::Relaxed)),
        );
        if self.requests.load(Ordering::Relaxed) == 0 {
            if quiet > limits.header_timeout {
                return Quiet::NeverAsked;
            }
        } else if quiet > limits.idle_timeout {
            return Quiet::Idle;
        }
        Quiet::No
    }
}

/// One request in flight; when it ends the connection may become quiet.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now_ms = activity.started.elapsed().as_millis() as u64;
        activity.quiet_since_ms.store(now_ms, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
