//! Listening sockets: accept, hand each connection to hyper's HTTP/1.1 +
//! HTTP/2 builder and to `connection` to drive, and on shutdown stop
//! accepting and wait for the connections to finish what they started.

use crate::access_log::AccessLog;
use crate::chores::Chores;
use crate::connection::{self, Activity, Ended, Timeouts, Tracked, Watched};
use crate::forwarded::{Forwarding, TrustedProxies};
use crate::handler::{self, Target};
use anyhow::{Result, anyhow};
use http::header::{CONNECTION, HeaderValue};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::io::ErrorKind;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Bytes a request head may take (request line and headers); larger gets a
/// 431. nginx's default `large_client_header_buffers` allows 4 × 8 KiB lines.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Headers a request may have; more gets a 431.
const MAX_HEADERS: usize = 100;

/// Connections open at once unless configured; each costs a socket and a
/// little memory, and past it new ones wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Binds `addr`, with errors that say what to do about them.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!(
            "{addr} is already in use; pick another --port or stop the process holding it"
        ),
        ErrorKind::PermissionDenied => anyhow!(
            "not allowed to listen on {addr}; ports below 1024 need privileges, pick a --port above 1024"
        ),
        ErrorKind::AddrNotAvailable => anyhow!(
            "cannot listen on {addr}: no network interface has that address; check --host"
        ),
        _ => anyhow!("cannot listen on {addr}: {error}"),
    })
}

/// How a shutdown ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished its requests.
    Clean,
    /// The timeout passed, or a second signal came, with requests running.
    Cut,
}

/// How connections are served.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections open at once across listeners.
    pub max_connections: usize,
    pub timeouts: Timeouts,
    /// After the shutdown signal, how long requests in flight may run.
    pub drain_timeout: Duration,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Arc<TrustedProxies>,
    pub access_log: Option<Arc<AccessLog>>,
}

/// Serves `target` on every listener until `shutdown` resolves, then waits
/// up to the drain timeout (or until `force` resolves) for requests in
/// flight.
pub async fn serve(
    listeners: Vec<Listener>,
    target: Arc<Target>,
    options: Options,
    shutdown: impl Future<Output = ()>,
    force: impl Future<Output = ()>,
) -> Drained {
    let (stop, stopped) = watch::channel(false);
    let mut accept_loops = JoinSet::new();
    // Every open connection holds a permit, so all permits back means all
    // connections closed.
    let capacity = options
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let open = Arc::new(Semaphore::new(capacity));
    let stopping = Arc::new(AtomicBool::new(false));
    for listener in listeners {
        accept_loops.spawn(accept_loop(
            listener,
            target.clone(),
            open.clone(),
            stopping.clone(),
            options.clone(),
            stopped.clone(),
        ));
    }
    shutdown.await;
    stopping.store(true, Ordering::Relaxed);
    let _ = stop.send(true);
    // Once the accept loops have stopped, no connection can start.
    while let Some(joined) = accept_loops.join_next().await {
        if let Err(error) = joined {
            tracing::error!("an accept loop failed: {error}");
        }
    }
    let connections = capacity - open.available_permits();
    if connections > 0 {
        tracing::info!(
            "shutting down: waiting up to {:?} for {connections} open connection(s)",
            options.drain_timeout
        );
    }
    let all_closed = open.acquire_many(capacity as u32);
    let cut = |why: &str| {
        let left = capacity - open.available_permits();
        tracing::warn!("{why}; cutting {left} connection(s) with requests still running");
        Drained::Cut
    };
    tokio::select! {
        _ = all_closed => Drained::Clean,
        () = tokio::time::sleep(options.drain_timeout) => cut("shutdown timeout passed"),
        () = force => cut("second signal"),
    }
}

/// A bound socket, and the TLS it speaks if any.
pub struct Listener {
    pub socket: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// Accepts connections on one listener until `stopped` turns true, then
/// closes the listener. Each connection, on a task of its own, is told to
/// close through `stopped` too.
async fn accept_loop(
    listener: Listener,
    target: Arc<Target>,
    open: Arc<Semaphore>,
    stopping: Arc<AtomicBool>,
    options: Options,
    mut stopped: watch::Receiver<bool>,
) {
    let timeouts = options.timeouts;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // `connection` times request heads from their first byte.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let https = listener.tls.is_some();

    loop {
        // The permit comes before `accept`: at the limit, new connections
        // wait in the kernel's backlog rather than being accepted and idle.
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stop_requested(&mut stopped) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = stop_requested(&mut stopped) => break,
        };
        // Small streamed chunks would otherwise wait up to 40 ms for Nagle.
        let _ = stream.set_nodelay(true);
        let chores = Arc::new(Chores::default());
        let activity = Arc::new(Activity::new(stopping.clone()));
        let forwarding = Forwarding::new(peer, &options.trusted_proxies, https);
        let service = service_fn({
            let target = target.clone();
            let chores = chores.clone();
            let activity = activity.clone();
            let access_log = options.access_log.clone();
            move |mut request: http::Request<Incoming>| {
                let running = activity.begin(request.version());
                let http1 = request.version() < http::Version::HTTP_2;
                let client = forwarding.apply(request.headers_mut());
                let mut record = access_log
                    .as_ref()
                    .map(|log| Box::new(log.begin(&request, client.ip, app_of(&target, &request))));
                let target = target.clone();
                let chores = chores.clone();
                async move {
                    let mut response =
                        handler::handle(&target, &chores, client.https, request).await;
                    // Shutting down: the client closes this connection after
                    // the response, instead of racing our close (connection.rs).
                    if http1 && running.stopping() {
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    if let Some(record) = &mut record {
                        record.set_status(response.status().as_u16());
                    }
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, running, record)))
                }
            }
        });
        let watched = Watched::new(stream, activity.clone());
        let tls = listener.tls.clone();
        let builder = builder.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let io = match tls {
                None => Stream::Plain(watched),
                Some(acceptor) => {
                    match handshake(&acceptor, watched, peer, timeouts.header).await {
                        Some(tls) => Stream::Tls(Box::new(tls)),
                        None => return drop(permit),
                    }
                }
            };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            let close = |connection: Pin<&mut _>| {
                auto::UpgradeableConnection::graceful_shutdown(connection)
            };
            match connection::drive(connection, close, activity, chores, timeouts, stopped).await {
                Ended::Closed(Ok(())) => {}
                Ended::Closed(Err(error)) => {
                    tracing::debug!("connection ended with an error: {error}");
                }
                Ended::HeadTimedOut => tracing::debug!(
                    "closed a connection: no complete request head within {:?}",
                    timeouts.header
                ),
                Ended::Lingered => {}
            }
            drop(permit);
        });
    }
}

/// What a plain-HTTP client gets from a TLS port, as nginx answers it.
const PLAIN_HTTP_TO_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 63\r\n\
connection: close\r\n\r\n\
400 Bad Request: this port speaks HTTPS; use an https:// URL.\n";

/// The TLS handshake, within the header timeout. A client that sends plain
/// HTTP (its first byte is not a TLS handshake record) is told so with a
/// 400; any failure costs this connection only.
async fn handshake(
    acceptor: &TlsAcceptor,
    mut stream: Watched<TcpStream>,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsStream<Watched<TcpStream>>> {
    let attempt = async {
        let mut first = [0u8; 1];
        if stream.get_ref().peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE_RECORD {
            // Read the request head first: closing on unread bytes would
            // reset the connection before the client reads the answer.
            let mut head = vec![0u8; 16 * 1024];
            let _ = stream.read(&mut head).await;
            stream.write_all(PLAIN_HTTP_TO_TLS_PORT).await?;
            stream.shutdown().await?;
            return Err(std::io::Error::other(
                "plain HTTP sent to a TLS port; answered 400",
            ));
        }
        acceptor.accept(stream).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            tracing::debug!("TLS handshake with {peer} failed: {error}");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake with {peer} took longer than {timeout:?}");
            None
        }
    }
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection's byte stream, plain or TLS: one type, so each connection
/// is served by the same hyper code.
enum Stream {
    Plain(Watched<TcpStream>),
    Tls(Box<TlsStream<Watched<TcpStream>>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Stream::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Stream::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Stream::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(io) => io.is_write_vectored(),
            Stream::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_flush(cx),
            Stream::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Stream::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The route of the app a request goes to, for the access log; `-` if none.
fn app_of<B>(target: &Target, request: &http::Request<B>) -> Arc<str> {
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    match target.routes.load().route(path) {
        Ok(routed) => routed.target.route.clone(),
        Err(_) => Arc::from("-"),
    }
}

async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Accept fails for the whole listener only on resource exhaustion (EMFILE,
/// ENFILE, ENOBUFS); back off briefly so the loop does not spin while
/// connections close, then carry on.
async fn accept_failed(error: std::io::Error) {
    tracing::warn!("accept failed: {error}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
