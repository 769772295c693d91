//! One client connection from accept to close. hyper speaks the protocol;
//! this drives it and decides when the connection ends:
//!
//! - between requests it runs the work its requests left (`deferred`);
//! - a client gets `header_timeout` to send a complete request head, counted
//!   from its first byte (or from accept, for the first request), so a
//!   trickling client (slowloris) is closed;
//! - a connection with no request running and no byte arriving for
//!   `keep_alive_timeout` is closed politely (HTTP/2 gets a GOAWAY);
//! - a connection whose client takes nothing of a response (no write to
//!   the socket succeeds, no response body is taken: a client that stopped
//!   reading, or an HTTP/2 window left at zero) for `send_timeout` is
//!   dropped, with every response on it;
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

use crate::config::Timeouts;
use crate::deferred::Deferred;
use crate::http::service::Activity;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// On shutdown, how long an idle HTTP/1 connection is left open for its
/// client to send one more request (answered with `Connection: close`).
/// Under load a proxy uses every kept-alive connection well within it.
pub const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// A socket that notes when bytes arrive and how writes go.
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
            self.activity.arrived();
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
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.activity.wrote(polled.is_ready());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.activity.wrote(polled.is_ready());
        polled
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
    /// A response has waited on the client since then, with the client's
    /// progress count as it was (`Activity::sending`).
    stuck: Option<(Instant, u64)>,
    timer: Pin<Box<Sleep>>,
}

/// What outlasted its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Phase(Phase),
    /// A response waited for `send_timeout` on a client taking nothing.
    Send,
}

impl Clock {
    fn new(timeouts: Timeouts) -> Self {
        let now = Instant::now();
        Self {
            timeouts,
            phase: Phase::Head,
            closing: false,
            since: now,
            stuck: None,
            timer: Box::pin(tokio::time::sleep_until(now + timeouts.header)),
        }
    }

    /// Whether the timer's deadline has passed: the connection is being
    /// polled because of it.
    fn rang(&self) -> bool {
        self.timer.is_elapsed()
    }

    /// Reads `activity` into the phase. `rung` is the client's progress
    /// count as it was before a poll that the timer caused: what that poll
    /// wrote is not the client taking something. A socket whose client
    /// reads nothing still takes a few bytes now and then (the kernel's
    /// zero-window probes leave room), and hyper writes them whenever it is
    /// polled; counted, they restarted the send timeout at each of its
    /// deadlines, so it fired at twice its value or more.
    fn observe(&mut self, activity: &Activity, rung: Option<u64>) {
        self.stuck = match (activity.sending(), self.stuck) {
            ((false, _), _) => None,
            ((true, progress), Some((since, before))) if progress == before => {
                Some((since, before))
            }
            ((true, progress), Some((since, before))) if rung == Some(before) => {
                Some((since, progress))
            }
            ((true, progress), _) => Some((Instant::now(), progress)),
        };
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

    /// What outlasted its timeout, if anything did; otherwise makes sure
    /// the task is woken by the next deadline.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<Expired> {
        let limit = match self.phase {
            Phase::Busy => None,
            Phase::Idle if self.closing => Some(SHUTDOWN_LINGER),
            Phase::Idle => Some(self.timeouts.keep_alive),
            Phase::Head => Some(self.timeouts.header),
        };
        let phase = limit.map(|limit| (self.since + limit, Expired::Phase(self.phase)));
        let send = self
            .stuck
            .map(|(since, _)| (since + self.timeouts.send, Expired::Send));
        let (deadline, expired) = match (phase, send) {
            (Some(a), Some(b)) => {
                if a.0 <= b.0 {
                    a
                } else {
                    b
                }
            }
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => return None,
        };
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Some(expired);
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
    /// Its client took nothing of a response for `send_timeout`: dropped,
    /// and with it every response on it (their guests stopped).
    SendTimedOut,
}

/// Drives `connection` to its end. `close` asks it to finish the requests it
/// has and close (hyper's graceful shutdown); that happens when it has been
/// idle for the keep-alive timeout, or, for HTTP/2, when `shutdown` is
/// cancelled.
/// A closing connection idle for `SHUTDOWN_LINGER`, or whose client takes
/// too long over a request head, is dropped; one whose client takes nothing
/// for the send timeout is `reset` first (its unsent bytes discarded), then
/// dropped.
pub async fn drive<C, E>(
    connection: C,
    mut close: impl FnMut(Pin<&mut C>),
    reset: impl FnOnce(),
    activity: Arc<Activity>,
    deferred: Arc<Deferred>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) -> Ended<E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    let mut stopping = std::pin::pin!(shutdown.cancelled());
    let mut clock = Clock::new(timeouts);
    let mut current = None;
    let ended = std::future::poll_fn(|cx| {
        loop {
            if !clock.closing && stopping.as_mut().poll(cx).is_ready() {
                if activity.is_http2() {
                    close(connection.as_mut());
                }
                clock.closing();
            }
            let rung = clock.rang().then(|| activity.sending().1);
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(Ended::Closed(result));
            }
            deferred.run(&mut current, cx);
            clock.observe(&activity, rung);
            match clock.poll_expired(cx) {
                None => return Poll::Pending,
                Some(Expired::Send) => return Poll::Ready(Ended::SendTimedOut),
                Some(Expired::Phase(Phase::Head)) => return Poll::Ready(Ended::HeadTimedOut),
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
    if matches!(ended, Ended::SendTimedOut) {
        reset();
    }
    // The connection is over: nobody waits on this task any more, so what
    // its requests left runs here, unhurried.
    deferred.finish(current).await;
    ended
}
