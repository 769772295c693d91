//! The response body as the guest writes it, with one correction: a guest
//! that traps mid-body must not look like one that finished.
//!
//! wasmtime-wasi-http ends the body stream cleanly when the store is dropped
//! without the guest calling `outgoing-body.finish` (its finish channel
//! reports "closed", which it treats as "done"). After a trap that would send
//! a truncated body as a complete response. The guest task raises a flag
//! before it drops the store, so when the stream ends we can tell the two
//! apart and turn a truncated end into an error, which makes hyper abort the
//! response instead of terminating it properly.
//!
//! A body the guest itself abandons (`outgoing-body.finish` refused because
//! fewer bytes were written than its `content-length` said) also ends in an
//! error; that one is logged here, naming the app, since nothing else sees it.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use wasmtime_wasi_http::Error;

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
