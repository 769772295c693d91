//! Listening sockets: accept, shake hands for TLS, hand each connection to
//! hyper's HTTP/1.1 + HTTP/2 builder with its `service` and to `connection`
//! to drive, and on shutdown stop accepting and wait for the connections to
//! finish what they started. [`run`] is the library's entry point.

use crate::config::Timeouts;
use crate::deferred::Deferred;
use crate::http::access_log::AccessLog;
use crate::http::connection::Activity;
use crate::http::connection::{self, ConnectionEnd, Watched};
use crate::http::dev_errors::DevErrors;
use crate::http::forwarded::{Forwarding, TrustedProxies};
use crate::http::request_head::{MAX_HEAD_BYTES, MAX_HEADERS};
use crate::http::router::Routes;
use crate::http::service;
use crate::telemetry::request_metrics::{self, ListenerMetrics, OpenConnection};
use anyhow::{Result, anyhow};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// Binds `addr` and listens with the system's backlog, with errors that
/// say what to do about them.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .and_then(|socket| {
        // As std's and tokio's own listeners: a restart can bind at once
        // while the old process's connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok(socket)
    })
    .map_err(|error| bind_error(addr, error))?;
    socket
        .listen(backlog())
        .map_err(|error| bind_error(addr, error))
}

fn bind_error(addr: SocketAddr, error: std::io::Error) -> anyhow::Error {
    match error.kind() {
        ErrorKind::AddrInUse => {
            anyhow!("{addr} is already in use; pick another --port or stop the process holding it")
        }
        ErrorKind::PermissionDenied => anyhow!(
            "not allowed to listen on {addr}; ports below 1024 need privileges, pick a --port above 1024"
        ),
        ErrorKind::AddrNotAvailable => {
            anyhow!("cannot listen on {addr}: no network interface has that address; check --host")
        }
        _ => anyhow!("cannot listen on {addr}: {error}"),
    }
}

/// Connections the kernel may queue for `accept`: the system's maximum
/// (`net.core.somaxconn`, 4096 on current kernels), so that connections
/// past `--max-connections` wait there as the README says, rather than in
/// std's and tokio's 1024 or the old 128.
fn backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(DEFAULT_BACKLOG)
}

/// Where the system does not say.
const DEFAULT_BACKLOG: u32 = 4096;

/// Streams one HTTP/2 connection may have open at once (hyper's default is
/// 200): a third of an app's default 300 places (100 running, 200 waiting),
/// so one connection whose streams all wait on a stalled client cannot take
/// them all, and still what browsers and h2load open before they have read
/// the server's settings.
pub const MAX_STREAMS: u32 = 100;

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
    /// After `shutdown`, how long requests in flight may run.
    pub drain_timeout: Duration,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Arc<TrustedProxies>,
    pub access_log: Option<Arc<AccessLog>>,
    /// Failed builds' pages: under `wasmhost dev` unless --no-dev-errors.
    pub dev_errors: Option<Arc<DevErrors>>,
    /// The runtimes connections are served on, taken in turn; none: the
    /// runtime `run` is called on.
    pub workers: Vec<tokio::runtime::Handle>,
}

/// A bound socket, and the TLS it speaks if any.
pub struct Listener {
    pub socket: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// The server, as a library call: serves `routes` on every listener until
/// `shutdown` resolves, then stops accepting and waits up to the drain
/// timeout (or until `force` resolves) for the requests in flight. Signals
/// are the caller's business (`commands` turns SIGINT and SIGTERM into
/// these two futures; a test or an embedder passes its own).
pub async fn run(
    listeners: Vec<Listener>,
    routes: Arc<Routes>,
    options: Options,
    shutdown: impl Future<Output = ()>,
    force: impl Future<Output = ()>,
) -> Drained {
    let stopping = CancellationToken::new();
    let mut accept_loops = JoinSet::new();
    // Every open connection holds a permit, so all permits back means all
    // connections closed.
    let capacity = options
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let open = Arc::new(Semaphore::new(capacity));
    let accepting = Accepting {
        routes,
        open: open.clone(),
        stopping: stopping.clone(),
        options: options.clone(),
        http: http_builder(),
    };
    let accepting = Arc::new(accepting);
    for listener in listeners {
        accept_loops.spawn(accept_loop(listener, accepting.clone()));
    }
    shutdown.await;
    stopping.cancel();
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

/// What every accept loop shares.
struct Accepting {
    routes: Arc<Routes>,
    /// One permit per connection that may be open.
    open: Arc<Semaphore>,
    /// Cancelled when the server stops accepting; every connection closes.
    stopping: CancellationToken,
    options: Options,
    http: auto::Builder<TokioExecutor>,
}

/// hyper's HTTP/1.1 + HTTP/2 builder, with the limits on request heads.
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // `connection` times request heads from their first byte.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    // The same head limit as HTTP/1 (`request_head` counts the fields);
    // hyper's HTTP/2 default is 16 KiB, which refused what HTTP/1 serves.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_concurrent_streams(MAX_STREAMS);
    builder
}

/// Accepts connections on one listener until the server stops, then
/// closes the listener. Each connection runs on a task of its own.
async fn accept_loop(listener: Listener, accepting: Arc<Accepting>) {
    let counted = request_metrics::get().map(|counts| {
        let name = listener
            .socket
            .local_addr()
            .map_or_else(|_| "-".to_string(), |addr| addr.to_string());
        counts.listener(&name)
    });
    let mut next = 0;
    loop {
        // The permit comes before `accept`: at the limit, new connections
        // wait in the kernel's backlog rather than being accepted and idle.
        let permit = tokio::select! {
            permit = accepting.open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = accepting.stopping.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = accepting.stopping.cancelled() => break,
        };
        let counted = counted
            .as_ref()
            .map(|counted| (counted.accepted(), counted.clone()));
        let workers = &accepting.options.workers;
        if workers.is_empty() {
            tokio::spawn(serve_connection(
                stream,
                peer,
                listener.tls.clone(),
                accepting.clone(),
                (permit, counted),
            ));
            continue;
        }
        next = (next + 1) % workers.len();
        // The socket moves to the worker's own reactor.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let tls = listener.tls.clone();
        let accepting = accepting.clone();
        workers[next].spawn(async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                serve_connection(stream, peer, tls, accepting, (permit, counted)).await;
            }
        });
    }
}

/// One connection, from its TLS handshake (if any) to its close; `permit`
/// is its place among the open connections (and its count in `/metrics`,
/// when kept).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    accepting: Arc<Accepting>,
    permit: (
        OwnedSemaphorePermit,
        Option<(OpenConnection, ListenerMetrics)>,
    ),
) {
    // Small streamed chunks would otherwise wait up to 40 ms for Nagle.
    let _ = stream.set_nodelay(true);
    let options = &accepting.options;
    let timeouts = options.timeouts;
    let deferred = Arc::new(Deferred::default());
    let activity = Arc::new(Activity::new(accepting.stopping.clone()));
    let forwarding = Forwarding::new(peer, &options.trusted_proxies, tls.is_some());
    let Ok(local) = stream.local_addr() else {
        return drop(permit);
    };
    let service = service::new(
        local,
        accepting.routes.clone(),
        deferred.clone(),
        activity.clone(),
        forwarding,
        options.access_log.clone(),
        options.dev_errors.clone(),
    );
    let fd = stream.as_raw_fd();
    let watched = Watched::new(stream, activity.clone());
    let io = match tls {
        None => Either::Left(watched),
        Some(acceptor) => match handshake(&acceptor, watched, peer, timeouts.header).await {
            Some(tls) => Either::Right(tls),
            None => {
                if let Some((_, counted)) = &permit.1 {
                    counted.tls_failed();
                }
                return drop(permit);
            }
        },
    };
    let connection = accepting
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    let close =
        |connection: Pin<&mut _>| auto::UpgradeableConnection::graceful_shutdown(connection);
    let stopping = accepting.stopping.clone();
    // Called while the connection still owns the socket.
    let reset = move || reset_on_close(fd);
    match connection::drive(
        connection, close, reset, activity, deferred, timeouts, stopping,
    )
    .await
    {
        ConnectionEnd::Closed(Ok(())) => {}
        ConnectionEnd::Closed(Err(error)) => {
            tracing::debug!("connection ended with an error: {error}");
        }
        ConnectionEnd::HeadTimedOut => tracing::debug!(
            "closed a connection: no complete request head within {:?}",
            timeouts.header
        ),
        ConnectionEnd::Lingered => {}
        ConnectionEnd::SendTimedOut => crate::limited!(
            info,
            "closed a connection from {peer}: it took nothing of its response for {:?}",
            timeouts.send
        ),
    }
    drop(permit);
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

/// Makes closing the socket a reset (`SO_LINGER` 0) rather than a FIN
/// queued behind unsent data, as nginx's `reset_timedout_connection`: for a
/// client that reads nothing, the FIN would never arrive and the kernel
/// would keep the unsent bytes until its retries ran out.
fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the connection's socket, still open (the connection
    // owning it has not been dropped), and `linger` outlives the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Accept fails for the whole listener only on resource exhaustion (EMFILE,
/// ENFILE, ENOBUFS); back off briefly so the loop does not spin while
/// connections close, then carry on.
async fn accept_failed(error: std::io::Error) {
    tracing::warn!("accept failed: {error}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, Mode, Mount, Origin};
    use crate::guest::app::{self, Tier};
    use crate::guest::engine::{Engines, PoolSize};
    use crate::guest::instances::Pool;
    use crate::http::router::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The library serves without signals: an embedder hands it a listener,
    /// a route table and a future that says when to stop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_serves_until_its_shutdown_future_resolves() {
        let pool_size = PoolSize {
            instances: 4,
            ..PoolSize::default()
        };
        let engines = Engines::new(pool_size, None);
        let mount = Mount {
            route: "/".into(),
            component: concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../guest-examples/rust-hello/hello.wasm"
            )
            .into(),
            mode: Mode::Fresh,
            spares: 1,
            concurrency_per_instance: crate::config::DEFAULT_CONCURRENCY_PER_INSTANCE,
            limits: Limits::default(),
            grants: Default::default(),
            origin: Origin::Flag("test"),
        };
        let app = app::load(
            &engines,
            &mount,
            Tier::Final,
            &Pool::new(
                pool_size.instances,
                crate::guest::limits::MemoryBudget::new(u64::MAX),
            ),
        )
        .map(Arc::new)
        .unwrap();
        let routes = Arc::new(Routes::from_pointee(Router::new([(
            app.route.clone(),
            app,
        )])));
        let socket = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let options = Options {
            max_connections: 8,
            timeouts: crate::config::DEFAULT_TIMEOUTS,
            drain_timeout: Duration::from_secs(5),
            trusted_proxies: Arc::new(TrustedProxies::default()),
            access_log: None,
            dev_errors: None,
            workers: Vec::new(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(
            vec![Listener { socket, tls: None }],
            routes,
            options,
            async {
                let _ = stopped.await;
            },
            std::future::pending(),
        ));

        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        // Chunked: the guest streams its body.
        assert!(
            reply.ends_with("\r\nHello from a WebAssembly component!\n\r\n0\r\n\r\n"),
            "{reply}"
        );

        stop.send(()).unwrap();
        assert_eq!(server.await.unwrap(), Drained::Clean);
        assert!(TcpStream::connect(addr).await.is_err(), "stopped accepting");
    }
}
