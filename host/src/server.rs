//! Listening sockets and connections: accept, hand each connection to hyper's
//! HTTP/1.1 + HTTP/2 builder, and on shutdown stop accepting and let the
//! connections finish what they started.

use crate::chores::{self, Chores};
use crate::handler::{self, Target};
use anyhow::{Result, anyhow};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// A client that opened a connection must send its request head within this
/// time, so idle or trickling sockets (slowloris) cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Serves `target` on every listener, at most `max_connections` open at
/// once across them, until `shutdown` resolves, then waits up to
/// `drain_timeout` (or until `force` resolves) for requests in flight.
pub async fn serve(
    listeners: Vec<TcpListener>,
    target: Arc<Target>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
    force: impl Future<Output = ()>,
) -> Drained {
    let (stop, stopped) = watch::channel(false);
    let mut accept_loops = JoinSet::new();
    let open = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    for listener in listeners {
        accept_loops.spawn(accept_loop(
            listener,
            target.clone(),
            open.clone(),
            stopped.clone(),
        ));
    }
    shutdown.await;
    let _ = stop.send(true);

    // Each accept loop hands back its connections once it has stopped
    // accepting; then all of them drain together under one deadline.
    let mut connections = Vec::new();
    while let Some(joined) = accept_loops.join_next().await {
        match joined {
            Ok(graceful) => connections.push(graceful),
            Err(error) => tracing::error!("an accept loop failed: {error}"),
        }
    }
    let open: usize = connections.iter().map(GracefulShutdown::count).sum();
    if open > 0 {
        tracing::info!(
            "shutting down: waiting up to {drain_timeout:?} for {open} open connection(s)"
        );
    }
    let mut draining = JoinSet::new();
    for graceful in connections {
        draining.spawn(graceful.shutdown());
    }
    tokio::select! {
        _ = draining.join_all() => Drained::Clean,
        () = tokio::time::sleep(drain_timeout) => {
            tracing::warn!("shutdown timeout passed; cutting the requests still running");
            Drained::Cut
        }
        () = force => {
            tracing::warn!("second signal; cutting the requests still running");
            Drained::Cut
        }
    }
}

/// Accepts connections on one listener until `stopped` turns true, then
/// closes the listener and returns the connections still open.
async fn accept_loop(
    listener: TcpListener,
    target: Arc<Target>,
    open: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) -> GracefulShutdown {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();

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
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = stop_requested(&mut stopped) => break,
        };
        // Small streamed chunks would otherwise wait up to 40 ms for Nagle.
        let _ = stream.set_nodelay(true);
        let target = target.clone();
        let chores = Arc::new(Chores::default());
        let service = service_fn({
            let chores = chores.clone();
            move |request| {
                let target = target.clone();
                let chores = chores.clone();
                async move { Ok::<_, Infallible>(handler::handle(&target, &chores, request).await) }
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = chores::serve_with_chores(connection, chores).await {
                tracing::debug!("connection ended with an error: {error}");
            }
            drop(permit);
        });
    }
    graceful
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
