//! The request body as the guest reads it, cut at the app's size limit. The
//! guest never sees a byte past the limit: the frame that would cross it is
//! replaced by a `wasi:http` body-size error, and the handler, told so by a
//! flag, answers 413 if the guest had not answered yet. A body the client
//! garbled (bad chunked encoding, cut short) is flagged the same way and
//! answered with a 400.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
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
