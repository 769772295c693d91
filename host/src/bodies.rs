//! The two bodies that cross between a client and a guest, each with the
//! correction the host owes it.
//!
//! **The request body** as the guest reads it ([`LimitedBody`]), cut at the
//! app's size limit. The guest never sees a byte past the limit: the frame
//! that would cross it is replaced by a `wasi:http` body-size error, and the
//! handler, told so by a flag, answers 413 if the guest had not answered
//! yet. A body the client garbled (bad chunked encoding, cut short) is
//! flagged the same way and answered with a 400.
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

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};
use wasmtime_wasi_http::Error;

/// What went wrong with a request's body on the client's side, if anything.
#[derive(Clone, Default)]
pub struct BodyFault(Arc<AtomicU8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// It went past the app's limit.
    TooLarge,
    /// It could not be read: bad chunked encoding, or the client went away.
    Malformed,
}

impl BodyFault {
    pub fn get(&self) -> Option<ClientFault> {
        match self.0.load(Ordering::Acquire) {
            1 => Some(ClientFault::TooLarge),
            2 => Some(ClientFault::Malformed),
            _ => None,
        }
    }

    fn raise(&self, fault: ClientFault) {
        let code = match fault {
            ClientFault::TooLarge => 1,
            ClientFault::Malformed => 2,
        };
        self.0.store(code, Ordering::Release);
    }
}

pub struct LimitedBody<B> {
    inner: B,
    /// Bytes still allowed.
    remaining: u64,
    limit: u64,
    fault: BodyFault,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64, fault: BodyFault) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            fault,
        }
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
        if self.fault.get() == Some(ClientFault::TooLarge) {
            return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(self.limit)))));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => {
                self.fault.raise(ClientFault::Malformed);
                return Poll::Ready(Some(Err(error.into())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
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

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Set by the guest task when the guest failed, before its store is dropped.
#[derive(Clone, Default)]
pub struct FailureFlag(Arc<AtomicBool>);

impl FailureFlag {
    pub fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_raised(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pub struct GuestBody<B> {
    inner: B,
    failure: FailureFlag,
    /// The app's route, for the log.
    app: Arc<str>,
}

impl<B> GuestBody<B> {
    pub fn new(inner: B, failure: FailureFlag, app: Arc<str>) -> Self {
        Self {
            inner,
            failure,
            app,
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
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.failure.is_raised() => {
                Poll::Ready(Some(Err(Error::HttpResponseIncomplete)))
            }
            Poll::Ready(Some(Err(error))) => {
                if !self.failure.is_raised() {
                    tracing::warn!(app = %self.app, "guest abandoned its response body ({error}); response cut");
                }
                Poll::Ready(Some(Err(error)))
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
