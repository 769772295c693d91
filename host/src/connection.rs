//! One client connection from accept to close. hyper speaks the protocol;
//! this drives it and decides when the connection ends:
//!
//! - between requests it runs the chores its requests left (`chores`);
//! - a client gets `header_timeout` to send a complete request head, counted
//!   from its first byte (or from accept, for the first request), so a
//!   trickling client (slowloris) is closed;
//! - a connection with no request running and no byte arriving for
//!   `keep_alive_timeout` is closed politely (HTTP/2 gets a GOAWAY);
//! - on shutdown it finishes what it started and closes (below).
//!
//! Closing an idle HTTP/1 connection races the client: a request it sends
//! as the close is on its way is lost, and a proxy cannot retry a POST it
//! has sent (nginx logs "upstream prematurely closed connection"). HTTP/1
//! has no way to say "closing" except on a response, so on shutdown an
//! HTTP/1 connection is not closed while idle: every response from then on
//! carries `Connection: close` (the server adds it), so the client closes
//! in step with us, and a connection nobody sends on for `SHUTDOWN_LINGER`
//! is closed then. HTTP/2 says it with GOAWAY at once.
//!
//! hyper's own header timer starts when the connection goes idle, so it
//! cannot tell an idle keep-alive connection from a slow client; it is off,
//! and the clock here tells them apart by what the socket and the service saw.

use crate::access_log::Record;
use crate::chores::Chores;
use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// How long a connection may wait on its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the first byte of a request head (or from accept) to its end.
    pub header: Duration,
    /// With no request running and nothing arriving.
    pub keep_alive: Duration,
}

/// Defaults as nginx's `client_header_timeout` would have them if it were
/// stricter, and its `keepalive_timeout`. The keep-alive default is above
/// the 60 s nginx keeps idle upstream connections, so that behind nginx it
/// is nginx that closes them: a connection closed by us just as nginx sends
/// a request on it would fail that request.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    header: Duration::from_secs(30),
    keep_alive: Duration::from_secs(75),
};

/// On shutdown, how long an idle HTTP/1 connection is left open for its
/// client to send one more request (answered with `Connection: close`).
/// Under load a proxy uses every kept-alive connection well within it.
pub const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// What the socket and the service have seen, for the clock. Written on
/// the connection's own task (atomics only to make it `Sync`).
#[derive(Debug)]
pub struct Activity {
    /// The server is shutting down (shared by every connection).
    stopping: Arc<AtomicBool>,
    /// The client has spoken HTTP/2 (which can be told to close at once).
    http2: AtomicBool,
    /// Requests whose response is not yet sent in full.
    in_flight: AtomicUsize,
    /// A request ended since the clock last looked: it may have begun and
    /// ended between two looks.
    ended: AtomicBool,
    /// Some byte arrived since the clock last looked.
    arrived: AtomicBool,
}

impl Activity {
    pub fn new(stopping: Arc<AtomicBool>) -> Self {
        Self {
            stopping,
            http2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            ended: AtomicBool::new(false),
            arrived: AtomicBool::new(false),
        }
    }

    /// Marks a request running until the returned guard (kept with its
    /// response body) is dropped.
    pub fn begin(self: &Arc<Self>, version: http::Version) -> Running {
        if version == http::Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Running(self.clone())
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    fn take_ended(&self) -> bool {
        self.ended.swap(false, Ordering::Relaxed)
    }

    fn take_arrived(&self) -> bool {
        self.arrived.swap(false, Ordering::Relaxed)
    }
}

/// A request still being answered.
#[derive(Debug)]
pub struct Running(Arc<Activity>);

impl Running {
    /// The server is shutting down: the response should close the
    /// connection.
    pub fn stopping(&self) -> bool {
        self.0.stopping.load(Ordering::Relaxed)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.ended.store(true, Ordering::Relaxed);
    }
}

/// A response body that keeps its request running until hyper has sent it
/// (or dropped it), so a long response never looks like an idle connection;
/// its access-log record, if any, counts the bytes and is written then.
pub struct Tracked<B> {
    body: B,
    _running: Running,
    record: Option<Box<Record>>,
}

impl<B> Tracked<B> {
    pub fn new(body: B, running: Running, record: Option<Box<Record>>) -> Self {
        Self {
            body,
            _running: running,
            record,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let (Some(record), Poll::Ready(Some(Ok(frame)))) = (&mut self.record, &polled)
            && let Some(data) = frame.data_ref()
        {
            record.sent(data.remaining());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket that notes when bytes arrive.
pub struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.arrived.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What the connection is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request runs: its own limits apply, not the connection's.
    Busy,
    /// Nothing runs and nothing has arrived since.
    Idle,
    /// Bytes of a request head are arriving (or, on a new connection, due).
    Head,
}

/// Tracks the phase and when it began, and says when it has lasted too
/// long. The timer is lazy: a request moving the deadline later does not
/// touch it; when it fires early it is set again for the real deadline, so
/// a busy connection resets it about once per timeout, not per request.
struct Clock {
    timeouts: Timeouts,
    phase: Phase,
    /// Closing: an idle connection gets `SHUTDOWN_LINGER`, a request head
    /// on its way the header timeout.
    closing: bool,
    since: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Clock {
    fn new(timeouts: Timeouts) -> Self {
        let now = Instant::now();
        Self {
            timeouts,
            phase: Phase::Head,
            closing: false,
            since: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeouts.header)),
        }
    }

    /// Reads `activity` into the phase.
    fn observe(&mut self, activity: &Activity) {
        let ended = activity.take_ended();
        let arrived = activity.take_arrived();
        if activity.busy() {
            self.phase = Phase::Busy;
            return;
        }
        match self.phase {
            Phase::Busy => self.enter(Phase::Idle),
            _ if ended => self.enter(Phase::Idle),
            Phase::Idle if arrived => self.enter(Phase::Head),
            Phase::Idle | Phase::Head => {}
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.since = Instant::now();
    }

    /// The connection is closing: its time starts again, shorter.
    fn closing(&mut self) {
        self.closing = true;
        self.since = Instant::now();
    }

    /// The phase that outlasted its timeout, if one did; otherwise makes
    /// sure the task is woken by the deadline.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<Phase> {
        let limit = match self.phase {
            Phase::Busy => return None,
            Phase::Idle if self.closing => SHUTDOWN_LINGER,
            Phase::Idle => self.timeouts.keep_alive,
            Phase::Head => self.timeouts.header,
        };
        let deadline = self.since + limit;
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Some(self.phase);
            }
            self.timer.as_mut().reset(deadline);
        }
        None
    }
}

/// How a connection ended, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<E> {
    /// hyper finished it: the client closed, or it was closed politely.
    Closed(Result<(), E>),
    /// No complete request head in time: dropped.
    HeadTimedOut,
    /// Closing, it stayed idle (or did not finish) for `SHUTDOWN_LINGER`:
    /// dropped.
    Lingered,
}

/// Drives `connection` to its end. `close` asks it to finish the requests it
/// has and close (hyper's graceful shutdown); that happens when it has been
/// idle for the keep-alive timeout, or, for HTTP/2, when `stop` turns true.
/// A closing connection idle for `SHUTDOWN_LINGER`, or whose client takes
/// too long over a request head, is dropped.
pub async fn drive<C, E>(
    connection: C,
    mut close: impl FnMut(Pin<&mut C>),
    activity: Arc<Activity>,
    chores: Arc<Chores>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) -> Ended<E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    let mut stopping = std::pin::pin!(async move {
        // An error means the sender is gone, which also means stop.
        let _ = stop.wait_for(|stop| *stop).await;
    });
    let mut clock = Clock::new(timeouts);
    let mut refill = None;
    let ended = std::future::poll_fn(|cx| {
        loop {
            if !clock.closing && stopping.as_mut().poll(cx).is_ready() {
                if activity.http2.load(Ordering::Relaxed) {
                    close(connection.as_mut());
                }
                clock.closing();
            }
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(Ended::Closed(result));
            }
            chores.run(&mut refill, cx);
            clock.observe(&activity);
            match clock.poll_expired(cx) {
                None => return Poll::Pending,
                Some(Phase::Head) => return Poll::Ready(Ended::HeadTimedOut),
                Some(_) if clock.closing => return Poll::Ready(Ended::Lingered),
                Some(_) => {
                    // Idle: close politely, then poll again, since closing
                    // an idle HTTP/1 connection finishes it at once.
                    close(connection.as_mut());
                    clock.closing();
                }
            }
        }
    })
    .await;
    // The connection is over: nobody waits on this task any more, so what
    // its requests left runs here, unhurried.
    chores.finish(refill).await;
    ended
}
