//! The admin listener (`--admin`, off by default): what operators, their
//! probes and Prometheus ask the server about itself, on an address of its
//! own that no app is ever routed to. `GET /healthz` (the process answers),
//! `GET /readyz` (every app loaded and the listeners bound: the place to
//! send traffic), `GET /metrics` (`metrics`), and a live status page at `/`
//! (one self-contained HTML file polling `/status.json`, `status`). Plain
//! HTTP/1.1; it answers
//! from before the apps are compiled until the process exits, draining
//! included, so a probe sees each state.

pub mod metrics;
pub mod status;

use crate::admin::metrics::Metrics;
use crate::admin::status::Status;
use anyhow::{Result, anyhow};
use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections the admin listener serves at once: probes, a scraper and a
/// status page need a handful, but a client holding many half-sent
/// requests must not take them all; past this, more wait in the backlog.
const MAX_CONNECTIONS: usize = 1024;

/// Connections one client address may have open at once: a scraper keeps
/// one, a probe opens one at a time, a browser six. Past it a connection is
/// closed as soon as it is accepted, so that one address cannot starve
/// Kubernetes' probes of `/healthz`.
const MAX_PER_ADDRESS: usize = 16;

/// Time a client has to send a request head: probes send theirs at once.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the server should be sent traffic, as `/readyz` answers.
#[derive(Debug, Default)]
pub struct Readiness(AtomicU8);

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    /// Every app loaded, the listeners accepting.
    pub fn ready(&self) {
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutting down: finishing the requests in flight, taking no new ones.
    pub fn draining(&self) {
        self.0.store(DRAINING, Ordering::Release);
    }

    /// The status and body of `/readyz`.
    fn answer(&self) -> (StatusCode, &'static str) {
        match self.0.load(Ordering::Acquire) {
            READY => (StatusCode::OK, "ready\n"),
            STARTING => (
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: the apps are loading (compiling, or reading the compile cache)\n",
            ),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                "draining: shutting down, finishing the requests in flight\n",
            ),
        }
    }
}

/// What the admin listener answers from.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub status: Arc<Status>,
}

/// The status page: no CDN, no build step, its script inline.
const STATUS_PAGE: &str = include_str!("status.html");

/// Binds `addr` and answers on it on a task that ends with the runtime.
/// Returns the bound address (port 0 picks one).
pub async fn start(addr: SocketAddr, admin: Arc<Admin>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!(
            "--admin {addr}: the address is already in use; give the admin listener another port"
        ),
        ErrorKind::AddrNotAvailable => {
            anyhow!("--admin {addr}: no network interface has that address")
        }
        _ => anyhow!("--admin {addr}: cannot listen there: {error}"),
    })?;
    let bound = listener.local_addr()?;
    tokio::spawn(accept_loop(listener, admin));
    Ok(bound)
}

async fn accept_loop(listener: TcpListener, admin: Arc<Admin>) {
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let by_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!("admin listener: accept failed: {error}");
                // Out of file descriptors, most likely: let some close.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(address) = AddressPlace::take(&by_address, peer.ip()) else {
            crate::limited!(
                warn,
                "admin listener: {} has {MAX_PER_ADDRESS} connections open already; closed another",
                peer.ip()
            );
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&admin, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop((permit, address));
        });
    }
}

/// One of an address's connections to the admin listener.
struct AddressPlace {
    ip: IpAddr,
    by_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl AddressPlace {
    fn take(by_address: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Self> {
        let mut counts = by_address.lock();
        let count = counts.entry(ip).or_default();
        if *count >= MAX_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(Self {
            ip,
            by_address: by_address.clone(),
        })
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut counts = self.by_address.lock();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

fn answer<B>(admin: &Admin, request: &http::Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the admin listener answers GET and HEAD\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/" => typed(
            Bytes::from_static(STATUS_PAGE.as_bytes()),
            "text/html; charset=utf-8",
        ),
        "/status.json" => typed(Bytes::from(admin.status.json()), "application/json"),
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let (status, body) = admin.readiness.answer();
            plain(status, body)
        }
        "/metrics" => {
            // Prometheus asks for OpenMetrics first; anything else gets the
            // older text format every tool reads.
            let openmetrics = request
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .any(|value| value.contains("application/openmetrics-text"));
            let (body, content_type) = if openmetrics {
                (
                    admin.metrics.openmetrics(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (
                    admin.metrics.text(),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            };
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            );
            response
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: the admin listener serves /, /status.json, /healthz, /readyz and /metrics\n",
        ),
    }
}

fn typed(body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    // No-store (from `typed`): a probe's answer is about now.
    let mut response = typed(
        Bytes::from_static(body.as_bytes()),
        "text/plain; charset=utf-8",
    );
    *response.status_mut() = status;
    response
}
