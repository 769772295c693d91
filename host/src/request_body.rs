//! The request body as the guest reads it, cut at the app's size limit. The
//! guest never sees a byte past the limit: the frame that would cross it is
//! replaced by a `wasi:http` body-size error, and the handler, told so by a
//! flag, answers 413 if the guest had not answered yet.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use wasmtime_wasi_http::Error;

/// Raised when a request's body went past its limit.
#[derive(Clone, Default)]
pub struct TooLarge(Arc<AtomicBool>);

impl TooLarge {
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }
}

pub struct LimitedBody<B> {
    inner: B,
    /// Bytes still allowed.
    remaining: u64,
    limit: u64,
    too_large: TooLarge,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64, too_large: TooLarge) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            too_large,
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
        if self.too_large.is_raised() {
            return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(self.limit)))));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.too_large.raise();
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
