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
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// On shutdown, how long an idle HTTP/1 connection is left open for its
/// client to send one more request (answered with `Connection: close`).
/// Under load a proxy uses every kept-alive connection well within it.
pub const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// What the socket and the service have seen, for the connection's clock
/// (`connection`). Written on the connection's own task (atomics only to
/// make it `Sync`).
#[derive(Debug)]
pub struct Activity {
    /// Cancelled when the server shuts down (shared by every connection).
    shutdown: CancellationToken,
    /// The client has spoken HTTP/2 (which can be told to close at once).
    http2: AtomicBool,
    /// Requests whose response is not yet sent in full.
    in_flight: AtomicUsize,
    /// A request ended since the clock last looked: it may have begun and
    /// ended between two looks.
    ended: AtomicBool,
    /// Some byte arrived since the clock last looked.
    arrived: AtomicBool,
    /// Writes to the socket that succeeded, and one is waiting now (the
    /// client is not reading, or slowly).
    writes: AtomicU64,
    write_waiting: AtomicBool,
    /// Response bodies hyper has not taken the next frame of since it was
    /// ready (or since the head went out), and how often any was taken.
    bodies_waiting: AtomicUsize,
    bodies_taken: AtomicU64,
    /// This connection's share of places to run in guests, taken before an
    /// app's own: one connection (HTTP/2 streams, all stalled on their
    /// client) cannot fill an app's places by itself.
    places: Arc<Semaphore>,
}

/// Requests of one connection that may run in guests at once: a quarter of
/// an app's default 100 places. More wait on the connection, holding no
/// app's place.
pub const PLACES_PER_CONNECTION: usize = 25;

impl Activity {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            http2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            ended: AtomicBool::new(false),
            arrived: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            write_waiting: AtomicBool::new(false),
            bodies_waiting: AtomicUsize::new(0),
            bodies_taken: AtomicU64::new(0),
            places: Arc::new(Semaphore::new(PLACES_PER_CONNECTION)),
        }
    }

    /// Notes how a write to the socket went: done, or waiting on the client.
    pub fn wrote(&self, done: bool) {
        if done {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        self.write_waiting.store(!done, Ordering::Relaxed);
    }

    /// Whether a response waits on the client, and a count that moves
    /// whenever the client takes something.
    pub fn sending(&self) -> (bool, u64) {
        let waiting = self.write_waiting.load(Ordering::Relaxed)
            || self.bodies_waiting.load(Ordering::Relaxed) > 0;
        let progress =
            self.writes.load(Ordering::Relaxed) + self.bodies_taken.load(Ordering::Relaxed);
        (waiting, progress)
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

    /// Notes that bytes arrived on the socket.
    pub fn arrived(&self) {
        self.arrived.store(true, Ordering::Relaxed);
    }

    pub fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// Whether a request ended since the last call.
    pub fn take_ended(&self) -> bool {
        self.ended.swap(false, Ordering::Relaxed)
    }

    /// Whether bytes arrived since the last call.
    pub fn take_arrived(&self) -> bool {
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
        self.0.shutdown.is_cancelled()
    }

    /// The connection's share of places to run in guests.
    pub fn places(&self) -> &Arc<Semaphore> {
        &self.0.places
    }

    /// A response body of this request has a frame ready that hyper has
    /// not come for (`true`), or no longer has (`false`).
    pub fn body_waiting(&self, waiting: bool) {
        if waiting {
            self.0.bodies_waiting.fetch_add(1, Ordering::Relaxed);
        } else {
            self.0.bodies_waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// hyper came for a frame of a response body: the client takes it.
    pub fn body_taken(&self) {
        self.0.bodies_taken.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.ended.store(true, Ordering::Relaxed);
    }
}

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
struct ConnectionClock {
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

impl ConnectionClock {
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
pub enum ConnectionEnd<E> {
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
) -> ConnectionEnd<E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    let mut stopping = std::pin::pin!(shutdown.cancelled());
    let mut clock = ConnectionClock::new(timeouts);
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
                return Poll::Ready(ConnectionEnd::Closed(result));
            }
            deferred.run(&mut current, cx);
            clock.observe(&activity, rung);
            match clock.poll_expired(cx) {
                None => return Poll::Pending,
                Some(Expired::Send) => return Poll::Ready(ConnectionEnd::SendTimedOut),
                Some(Expired::Phase(Phase::Head)) => {
                    return Poll::Ready(ConnectionEnd::HeadTimedOut);
                }
                Some(_) if clock.closing => return Poll::Ready(ConnectionEnd::Lingered),
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
    if matches!(ended, ConnectionEnd::SendTimedOut) {
        reset();
    }
    // The connection is over: nobody waits on this task any more, so what
    // its requests left runs here, unhurried.
    deferred.finish(current).await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        keep_alive: Duration::from_secs(30),
        send: Duration::from_secs(20),
    };

    /// A clock and the activity it reads, at a paused time's start.
    fn clock() -> (ConnectionClock, Arc<Activity>) {
        let activity = Arc::new(Activity::new(CancellationToken::new()));
        (ConnectionClock::new(TIMEOUTS), activity)
    }

    /// What has expired after `after` more of paused time, as the
    /// connection's poll would see it.
    async fn expired_after(
        clock: &mut ConnectionClock,
        activity: &Activity,
        after: Duration,
    ) -> Option<Expired> {
        tokio::time::advance(after).await;
        let rung = clock.rang().then(|| activity.sending().1);
        clock.observe(activity, rung);
        clock.poll_expired(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_timeout_for_its_first_head() {
        let (mut clock, activity) = clock();
        let second = Duration::from_secs(1);
        assert_eq!(
            expired_after(&mut clock, &activity, TIMEOUTS.header - second).await,
            None
        );
        let expired = expired_after(&mut clock, &activity, second).await;
        assert_eq!(expired, Some(Expired::Phase(Phase::Head)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_request_stops_the_clock_and_its_end_starts_keep_alive() {
        let (mut clock, activity) = clock();
        let running = activity.begin(http::Version::HTTP_11);
        // Longer than every timeout: the request's own limits apply.
        let long = TIMEOUTS.keep_alive * 3;
        assert_eq!(expired_after(&mut clock, &activity, long).await, None);
        drop(running);
        // The request's end wakes the connection, which looks at once.
        assert_eq!(
            expired_after(&mut clock, &activity, Duration::ZERO).await,
            None
        );
        let second = Duration::from_secs(1);
        let almost = TIMEOUTS.keep_alive - second;
        assert_eq!(expired_after(&mut clock, &activity, almost).await, None);
        let expired = expired_after(&mut clock, &activity, second).await;
        assert_eq!(expired, Some(Expired::Phase(Phase::Idle)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_after_idle_gives_the_next_head_the_header_timeout() {
        let (mut clock, activity) = clock();
        drop(activity.begin(http::Version::HTTP_11));
        let five = Duration::from_secs(5);
        assert_eq!(expired_after(&mut clock, &activity, five).await, None);
        activity.arrived();
        assert_eq!(
            expired_after(&mut clock, &activity, Duration::ZERO).await,
            None
        );
        let expired = expired_after(&mut clock, &activity, TIMEOUTS.header).await;
        assert_eq!(expired, Some(Expired::Phase(Phase::Head)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_the_client_takes_nothing_of_outlasts_the_send_timeout() {
        let (mut clock, activity) = clock();
        let running = activity.begin(http::Version::HTTP_11);
        running.body_waiting(true);
        let second = Duration::from_secs(1);
        assert_eq!(
            expired_after(&mut clock, &activity, Duration::ZERO).await,
            None
        );
        // The client takes a frame just before the deadline: it starts again.
        assert_eq!(
            expired_after(&mut clock, &activity, TIMEOUTS.send - second).await,
            None
        );
        running.body_taken();
        assert_eq!(
            expired_after(&mut clock, &activity, Duration::ZERO).await,
            None
        );
        let almost = TIMEOUTS.send - second;
        assert_eq!(expired_after(&mut clock, &activity, almost).await, None);
        let expired = expired_after(&mut clock, &activity, second).await;
        assert_eq!(expired, Some(Expired::Send));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_idle_connection_lingers_then_expires() {
        let (mut clock, activity) = clock();
        drop(activity.begin(http::Version::HTTP_11));
        assert_eq!(
            expired_after(&mut clock, &activity, Duration::ZERO).await,
            None
        );
        clock.closing();
        let expired = expired_after(&mut clock, &activity, SHUTDOWN_LINGER).await;
        assert_eq!(expired, Some(Expired::Phase(Phase::Idle)));
        assert!(clock.closing);
    }

    /// A poll the timer caused lets hyper write the few bytes a stalled
    /// socket still takes (zero-window probes); that is not the client
    /// taking something, or the send timeout would restart at each look.
    #[tokio::test(start_paused = true)]
    async fn writes_made_by_the_timers_own_poll_do_not_restart_the_send_timeout() {
        let (mut clock, activity) = clock();
        let running = activity.begin(http::Version::HTTP_11);
        running.body_waiting(true);
        assert_eq!(
            expired_after(&mut clock, &activity, Duration::ZERO).await,
            None
        );
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            tokio::time::advance(TIMEOUTS.send / 4).await;
            let rung = clock.rang().then(|| activity.sending().1);
            if rung.is_some() {
                activity.wrote(true);
                activity.wrote(false);
            }
            clock.observe(&activity, rung);
            assert_eq!(clock.poll_expired(&mut cx), None);
        }
        let expired = expired_after(&mut clock, &activity, TIMEOUTS.send / 4).await;
        assert_eq!(expired, Some(Expired::Send));
    }
}
