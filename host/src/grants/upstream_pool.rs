//! An app's keep-alive connections to its upstreams, per origin (scheme,
//! host, port): a request takes an idle connection, else opens one while
//! the origin has fewer open than its cap, else waits for one to come back.
//!
//! An HTTP/1.1 connection comes back the moment its response body has been
//! read to its end, before the guest sees the end, so the next request
//! finds it idle; connections opened stay at the most requests an origin
//! had in flight, and never pass the cap. hyper-util's pooled client
//! bounds only idle connections: it hands one back from a task of its own,
//! a little later, and races a checkout that finds none idle with a new
//! connect (17 opened for 16 in flight in bench/outbound, bench/NOTES.md),
//! and a connection whose request was given up stays open waiting for the
//! response. An HTTP/2 connection (offered by TLS, by ALPN) is shared by
//! all requests.

use crate::config::outbound::{Host, Scheme};
use crate::grants::upstream::{ConnectError, Connector};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use wasmtime_wasi_http::WasiBody;

/// An idle connection older than this is closed rather than reused:
/// upstreams close theirs after a while (nginx after 75 s, Node after 5),
/// and one closed as a request is written costs that request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Origins remembered before those without connections are forgotten.
const ORIGINS_KEPT: usize = 256;

/// Why a request got no response.
pub enum SendError {
    Connect(ConnectError),
    Http(hyper::Error),
}

pub struct UpstreamPool {
    connector: Connector,
    /// Connections one origin may have open at once.
    per_origin: usize,
    origins: Mutex<HashMap<OriginKey, Arc<Origin>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OriginKey {
    scheme: Scheme,
    host: String,
    port: u16,
}

/// The connections of one origin.
struct Origin {
    /// HTTPS, where HTTP/2 may be offered.
    tls: bool,
    state: Mutex<State>,
    /// A connection came back or closed: a waiting checkout looks again.
    changed: Notify,
    per_origin: usize,
}

/// An HTTP/1.1 connection: its sender, and the task that drives it. Dropped
/// (an idle one gone stale, a request cut by its timeout or its guest), it
/// ends the task: hyper would keep a connection whose response was given up
/// waiting for that response, holding its place in the origin's count.
struct Http1 {
    sender: http1::SendRequest<WasiBody>,
    task: tokio::task::AbortHandle,
}

impl Drop for Http1 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct State {
    /// Most recently used last, so few connections stay warm.
    idle: Vec<(Http1, Instant)>,
    shared: Option<http2::SendRequest<WasiBody>>,
    open: usize,
    /// Whether this origin's connections turned out HTTP/2, once one has
    /// been made. Until then an HTTPS origin makes one connection at a
    /// time, so a burst of first requests shares one HTTP/2 connection
    /// instead of each making its own.
    http2: Option<bool>,
}

/// What a checkout got.
enum Taken {
    Idle(Http1),
    Shared(http2::SendRequest<WasiBody>),
    /// Leave to open a connection, counted as open already.
    Open,
}

/// The connection a response came on, until its body has been read.
pub struct Lease(Leased);

enum Leased {
    Http1 {
        connection: Option<Http1>,
        origin: Arc<Origin>,
    },
    Http2,
}

impl Lease {
    /// The body was read to its end: the connection is free for the next
    /// request. A lease dropped before that closes its connection, which
    /// still has the rest of a body on it.
    pub fn give_back(&mut self) {
        if let Leased::Http1 { connection, origin } = &mut self.0
            && let Some(connection) = connection.take()
        {
            let mut state = origin.state.lock();
            // What went stale while this one was busy is closed now, not
            // at some later checkout.
            state
                .idle
                .retain(|(idle, since)| !idle.sender.is_closed() && since.elapsed() < IDLE_TIMEOUT);
            state.idle.push((connection, Instant::now()));
            drop(state);
            origin.changed.notify_one();
        }
    }
}

impl UpstreamPool {
    pub fn new(connector: Connector, per_origin: usize) -> Self {
        Self {
            connector,
            per_origin: per_origin.max(1),
            origins: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `request` (its URI absolute) to `host` on `port`.
    pub async fn send(
        &self,
        scheme: Scheme,
        host: Host<'_>,
        port: u16,
        mut request: http::Request<WasiBody>,
    ) -> Result<(http::Response<Incoming>, Lease), SendError> {
        let origin = self.origin(scheme, host, port);
        let absolute = request.uri().clone();
        loop {
            match origin.checkout().await {
                Taken::Idle(mut connection) => {
                    if connection.sender.ready().await.is_err() {
                        // Closed while idle.
                        continue;
                    }
                    *request.uri_mut() = origin_form(&absolute);
                    match connection.sender.try_send_request(request).await {
                        Ok(response) => {
                            let lease = Lease(Leased::Http1 {
                                connection: Some(connection),
                                origin,
                            });
                            return Ok((response, lease));
                        }
                        Err(mut error) => match error.take_message() {
                            // The connection closed before the request was
                            // written: another one takes it.
                            Some(unsent) => request = unsent,
                            None => return Err(SendError::Http(error.into_error())),
                        },
                    }
                }
                Taken::Shared(mut sender) => {
                    if sender.ready().await.is_err() {
                        continue;
                    }
                    *request.uri_mut() = absolute;
                    let response = sender
                        .send_request(request)
                        .await
                        .map_err(SendError::Http)?;
                    return Ok((response, Lease(Leased::Http2)));
                }
                Taken::Open => {
                    let mut request = request;
                    return match self.open(&origin, scheme, host, port).await? {
                        Opened::Http1(mut connection) => {
                            *request.uri_mut() = origin_form(&absolute);
                            let response = connection
                                .sender
                                .send_request(request)
                                .await
                                .map_err(SendError::Http)?;
                            let lease = Lease(Leased::Http1 {
                                connection: Some(connection),
                                origin,
                            });
                            Ok((response, lease))
                        }
                        Opened::Http2(mut sender) => {
                            let response = sender
                                .send_request(request)
                                .await
                                .map_err(SendError::Http)?;
                            Ok((response, Lease(Leased::Http2)))
                        }
                    };
                }
            }
        }
    }

    fn origin(&self, scheme: Scheme, host: Host, port: u16) -> Arc<Origin> {
        let host = match host {
            Host::Name(name) => name.to_ascii_lowercase(),
            Host::Address(ip) => ip.to_string(),
        };
        let key = OriginKey { scheme, host, port };
        let mut origins = self.origins.lock();
        if origins.len() >= ORIGINS_KEPT && !origins.contains_key(&key) {
            // A wildcard grant lets a guest name any number of origins:
            // forget those with nothing open and no request on them.
            origins
                .retain(|_, origin| Arc::strong_count(origin) > 1 || origin.state.lock().open > 0);
        }
        origins
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Origin {
                    tls: scheme == Scheme::Https,
                    state: Mutex::default(),
                    changed: Notify::new(),
                    per_origin: self.per_origin,
                })
            })
            .clone()
    }

    /// Connects and hands the connection to a task that drives it; the
    /// origin counts it open until that task ends.
    async fn open(
        &self,
        origin: &Arc<Origin>,
        scheme: Scheme,
        host: Host<'_>,
        port: u16,
    ) -> Result<Opened, SendError> {
        let opened = async {
            let upstream = self
                .connector
                .connect(scheme, host, port)
                .await
                .map_err(SendError::Connect)?;
            // In the task, so that it is counted closed however the task
            // ends, aborted included.
            let counted = Counted(origin.clone());
            if upstream.h2 {
                let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(upstream.io)
                    .await
                    .map_err(SendError::Http)?;
                tokio::spawn(async move {
                    let _counted = counted;
                    let _ = connection.await;
                });
                let mut state = origin.state.lock();
                state.shared = Some(sender.clone());
                state.http2 = Some(true);
                drop(state);
                origin.changed.notify_waiters();
                Ok(Opened::Http2(sender))
            } else {
                let (sender, connection) = http1::handshake(upstream.io)
                    .await
                    .map_err(SendError::Http)?;
                let task = tokio::spawn(async move {
                    let _counted = counted;
                    let _ = connection.await;
                });
                if origin.state.lock().http2.replace(false).is_none() {
                    origin.changed.notify_waiters();
                }
                Ok(Opened::Http1(Http1 {
                    sender,
                    task: task.abort_handle(),
                }))
            }
        };
        let mut counted = OpenCount(Some(origin));
        let result = opened.await;
        if result.is_ok() {
            // Its task counts it closed from now on.
            counted.0 = None;
        }
        result
    }
}

enum Opened {
    Http1(Http1),
    Http2(http2::SendRequest<WasiBody>),
}

/// An open connection's place in its origin's count, given back when its
/// task ends.
struct Counted(Arc<Origin>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// A connection counted open while it is being made: if that fails, or the
/// request is dropped meanwhile, the count is given back.
struct OpenCount<'a>(Option<&'a Arc<Origin>>);

impl Drop for OpenCount<'_> {
    fn drop(&mut self) {
        if let Some(origin) = self.0 {
            origin.closed();
        }
    }
}

impl Origin {
    async fn checkout(&self) -> Taken {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a connection coming back
            // between the look and the wait is not missed.
            changed.as_mut().enable();
            {
                let mut state = self.state.lock();
                if let Some(shared) = &state.shared {
                    if !shared.is_closed() {
                        return Taken::Shared(shared.clone());
                    }
                    state.shared = None;
                }
                while let Some((connection, since)) = state.idle.pop() {
                    // Dropped, a stale one closes; its task counts it.
                    if !connection.sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                        return Taken::Idle(connection);
                    }
                }
                let first_pending = self.tls && state.http2.is_none() && state.open > 0;
                if state.open < self.per_origin && !first_pending {
                    state.open += 1;
                    return Taken::Open;
                }
            }
            changed.await;
        }
    }

    fn closed(&self) {
        let mut state = self.state.lock();
        state.open = state.open.saturating_sub(1);
        drop(state);
        self.changed.notify_one();
    }
}

/// The path and query alone, as an HTTP/1.1 request line to an origin
/// server carries them.
fn origin_form(uri: &http::Uri) -> http::Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    http::Uri::try_from(path).unwrap_or_else(|_| http::Uri::from_static("/"))
}
