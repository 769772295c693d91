//! The two bodies that cross between a client and a guest, each with the
//! correction the host owes it.
//!
//! **The request body** as the guest reads it ([`LimitedBody`]), cut at the
//! app's size limit. The guest never sees a byte past the limit: the frame
//! that would cross it is replaced by a `wasi:http` body-size error, and the
//! handler, told so by a flag, answers 413 if the guest had not answered
//! yet. A body the client garbled (bad chunked encoding, cut short) is
//! flagged the same way and answered with a 400. A client that sends
//! nothing for the app's `body_timeout` while the guest waits for its body
//! is flagged too: the guest's read fails, the handler stops the guest at
//! once (freeing its place) and answers 408 if it had not answered. A small
//! body of declared length is read whole before the request takes a place
//! ([`LimitedBody::read_ahead`]), as nginx buffers request bodies, so a
//! client that stalls one holds no app's place at all.
//!
//! **The response body** as the guest writes it ([`GuestBody`]): a guest
//! that traps mid-body must not look like one that finished.
//! wasmtime-wasi-http ends the body stream cleanly when the store is dropped
//! without the guest calling `outgoing-body.finish` (its finish channel
//! reports "closed", which it treats as "done"). After a trap that would send
//! a truncated body as a complete response. The guest task raises a flag
//! before it drops the store, so when the stream ends we can tell the two
//! apart and turn a truncated end into an error, which makes hyper abort the
//! response instead of terminating it properly. A body the guest itself
//! abandons (`outgoing-body.finish` refused because fewer bytes were written
//! than its `content-length` said) also ends in an error; that one is logged
//! here, naming the app, since nothing else sees it.

use crate::guest::deadline::LazyDeadline;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use wasmtime_wasi_http::Error;

/// Something that happens once, which a task can wait for.
#[derive(Default)]
struct Signal {
    raised: AtomicBool,
    notify: Notify,
}

impl Signal {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        loop {
            // Made before the check, so a raise between the two is not lost.
            let notified = self.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

/// What went wrong with a request's body on the client's side, if anything.
#[derive(Clone, Default)]
pub struct BodyFault(Arc<FaultState>);

#[derive(Default)]
struct FaultState {
    code: AtomicU8,
    /// Raised when the body stalls, for the handler to stop the guest.
    stalled: Signal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// It went past the app's limit.
    TooLarge,
    /// It could not be read: bad chunked encoding, or the client went away.
    Malformed,
    /// Nothing of it arrived for the app's `body_timeout` while the guest
    /// waited for it.
    Stalled,
}

impl BodyFault {
    pub fn get(&self) -> Option<ClientFault> {
        match self.0.code.load(Ordering::Acquire) {
            1 => Some(ClientFault::TooLarge),
            2 => Some(ClientFault::Malformed),
            3 => Some(ClientFault::Stalled),
            _ => None,
        }
    }

    fn raise(&self, fault: ClientFault) {
        let code = match fault {
            ClientFault::TooLarge => 1,
            ClientFault::Malformed => 2,
            ClientFault::Stalled => 3,
        };
        self.0.code.store(code, Ordering::Release);
        if fault == ClientFault::Stalled {
            self.0.stalled.raise();
        }
    }

    /// Resolves once the body has stalled.
    pub async fn stalled(&self) {
        self.0.stalled.wait().await;
    }
}

pub struct LimitedBody<B> {
    inner: B,
    /// Bytes still allowed.
    remaining: u64,
    limit: u64,
    /// Time the guest may wait for the next bytes.
    timeout: Duration,
    /// When the guest's wait for bytes times out; moved whenever some came.
    wait: LazyDeadline,
    /// Bytes arrived since the timer was last set.
    moved: bool,
    fault: BodyFault,
    /// Frames read ahead, before the guest ran; given to it first.
    ahead: VecDeque<Frame<Bytes>>,
    /// The client's body has ended (read ahead to its end).
    ended: bool,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64, timeout: Duration, fault: BodyFault) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            timeout,
            wait: LazyDeadline::new(Instant::now() + timeout),
            moved: true,
            fault,
            ahead: VecDeque::new(),
            ended: false,
        }
    }

    /// The guest waits for bytes that have not come: has it waited for
    /// longer than the timeout since the last ones?
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if self.moved {
            self.wait.reset(Instant::now() + self.timeout);
            self.moved = false;
        }
        self.wait.poll(cx).is_ready()
    }
}

impl<B> LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    /// Reads the whole body now, before the request takes an app's place,
    /// for a body whose declared length is at most `up_to` bytes (a client
    /// that declared a length has said it will send it all; a body of
    /// unknown length may be a stream the client feeds as the guest
    /// answers, and is left to stream). The same limit and `body_timeout`
    /// apply as when the guest reads it. The fault that ended it early, if
    /// any.
    pub async fn read_ahead(&mut self, up_to: u64) -> Option<ClientFault> {
        let declared = self.inner.size_hint().exact();
        if self.inner.is_end_stream() || declared.is_none_or(|length| length > up_to) {
            return None;
        }
        while !self.ended {
            match std::future::poll_fn(|cx| self.poll_source(cx)).await {
                Some(Ok(frame)) => self.ahead.push_back(frame),
                Some(Err(_)) => return self.fault.get(),
                None => self.ended = true,
            }
        }
        None
    }

    /// The next frame from the client, checked against the limit and the
    /// timeout.
    fn poll_source(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match self.fault.get() {
            Some(ClientFault::TooLarge) => {
                return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(self.limit)))));
            }
            Some(ClientFault::Stalled) => {
                return Poll::Ready(Some(Err(Error::ConnectionReadTimeout)));
            }
            _ => {}
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => {
                self.fault.raise(ClientFault::Malformed);
                return Poll::Ready(Some(Err(error.into())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending if self.stalled(cx) => {
                self.fault.raise(ClientFault::Stalled);
                return Poll::Ready(Some(Err(Error::ConnectionReadTimeout)));
            }
            Poll::Pending => return Poll::Pending,
        };
        self.moved = true;
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.fault.raise(ClientFault::TooLarge);
                return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(self.limit)))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Some(frame) = self.ahead.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        self.poll_source(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_empty() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self
            .ahead
            .iter()
            .filter_map(|frame| frame.data_ref())
            .map(|data| data.len() as u64)
            .sum();
        if self.ended {
            return SizeHint::with_exact(ahead);
        }
        let mut hint = self.inner.size_hint();
        hint.set_lower(hint.lower() + ahead);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}

/// Shared by a streaming guest's task and its response body: the task
/// raises it when the guest failed, before its store is dropped; the body
/// says when the client is gone before the body's end, so the task stops
/// the guest (and frees its place) then rather than at its timeout.
#[derive(Clone, Default)]
pub struct FailureFlag(Arc<FlagState>);

#[derive(Default)]
struct FlagState {
    failed: Signal,
    gone: Signal,
}

impl FailureFlag {
    pub fn raise(&self) {
        self.0.failed.raise();
    }

    fn is_raised(&self) -> bool {
        self.0.failed.is_raised()
    }

    fn client_gone(&self) {
        self.0.gone.raise();
    }

    /// Resolves once the response body was dropped before its end: the
    /// client closed, reset the stream, or was cut for taking nothing.
    pub async fn gone(&self) {
        self.0.gone.wait().await;
    }
}

pub struct GuestBody<B> {
    inner: B,
    failure: FailureFlag,
    /// The app's route, for the log.
    app: Arc<str>,
    /// The body reached its end (or its error).
    ended: bool,
    /// Bytes still to come of the length its `content-length` declared.
    remaining: Option<u64>,
}

impl<B> GuestBody<B> {
    /// `declared` is the response's `content-length`: hyper stops polling
    /// once that much is sent, often before the guest has finished the body,
    /// and a body dropped there is whole, not abandoned by its client.
    pub fn new(inner: B, failure: FailureFlag, app: Arc<str>, declared: Option<u64>) -> Self {
        Self {
            inner,
            failure,
            app,
            ended: declared == Some(0),
            remaining: declared,
        }
    }
}

impl<B> Drop for GuestBody<B> {
    fn drop(&mut self) {
        if !self.ended {
            self.failure.client_gone();
        }
    }
}

impl<B> Body for GuestBody<B>
where
    B: Body<Data = Bytes, Error = Error> + Unpin,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // hyper stops polling once the body says it is at its end.
        if let (Poll::Ready(Some(Ok(frame))), Some(remaining)) = (&polled, self.remaining) {
            let sent = frame.data_ref().map_or(0, |data| data.len() as u64);
            self.remaining = Some(remaining.saturating_sub(sent));
        }
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || (matches!(polled, Poll::Ready(Some(Ok(_))))
                && (self.inner.is_end_stream() || self.remaining == Some(0)))
        {
            self.ended = true;
        }
        match polled {
            Poll::Ready(None) if self.failure.is_raised() => {
                Poll::Ready(Some(Err(Error::HttpResponseIncomplete)))
            }
            Poll::Ready(Some(Err(error))) => {
                if !self.failure.is_raised() {
                    crate::limited!(warn, app = %self.app, "guest abandoned its response body ({}); response cut", crate::telemetry::log_rate::clip(&error.to_string()));
                }
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                Poll::Ready(Some(Ok(without_forbidden_trailers(frame))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && !self.failure.is_raised()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Fields that may not be sent as trailers (RFC 9110 §6.5.1): framing,
/// routing, authentication, request modifiers and the response's own
/// controls. wasi:http lets a guest set any of them in its trailers, and an
/// HTTP/2 client fails the whole stream with a protocol error on
/// `content-length` or `te` there.
const FORBIDDEN_TRAILERS: [&str; 22] = [
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "www-authenticate",
    "set-cookie",
    "cookie",
    "content-type",
    "content-encoding",
    "content-range",
    "cache-control",
    "expires",
    "location",
    "retry-after",
];

/// `frame`, with the fields no trailer may carry dropped if it holds
/// trailers.
pub fn without_forbidden_trailers(frame: Frame<Bytes>) -> Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            for name in FORBIDDEN_TRAILERS {
                trailers.remove(name);
            }
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

#[cfg(test)]
mod trailer_tests {
    use super::*;

    #[test]
    fn forbidden_trailers_are_dropped_and_the_rest_kept() {
        let mut trailers = http::HeaderMap::new();
        for name in [
            "content-length",
            "te",
            "authorization",
            "grpc-status",
            "x-checksum",
        ] {
            trailers.insert(name, http::HeaderValue::from_static("1"));
        }
        let kept = without_forbidden_trailers(Frame::trailers(trailers))
            .into_trailers()
            .unwrap();
        let mut names: Vec<&str> = kept.keys().map(|name| name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["grpc-status", "x-checksum"]);
        let data = without_forbidden_trailers(Frame::data(Bytes::from_static(b"x")));
        assert_eq!(data.into_data().unwrap(), "x");
    }
}
