//! The response body as hyper sends it: the guest's (or the host's own)
//! body, wrapped so the connection's clock, the access log and `/metrics`
//! see it go out.

use crate::http::access_log::Record;
use crate::http::connection::Running;
use crate::telemetry::request_metrics::Measure;
use bytes::Buf;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A response body that keeps its request running until hyper has sent it
/// (or dropped it), so a long response never looks like an idle connection;
/// its access-log record, if any, counts the bytes and is written then. It
/// also tells the connection's clock when it has a frame ready that hyper
/// has not come for (from the head on, and after each frame it gave):
/// hyper comes only when the client can take more, so a body left waiting
/// is a client that takes nothing (`send_timeout`). A body waiting on its
/// guest is not.
pub struct Tracked<B> {
    body: B,
    running: Running,
    record: Option<Box<Record>>,
    /// Counted for `/metrics` when the body is done.
    _measure: Option<Measure>,
    /// Counted in `bodies_waiting`.
    waiting: bool,
}

impl<B> Tracked<B> {
    pub fn new(
        body: B,
        running: Running,
        record: Option<Box<Record>>,
        measure: Option<Measure>,
    ) -> Self {
        running.body_waiting(true);
        Self {
            body,
            running,
            record,
            _measure: measure,
            waiting: true,
        }
    }

    fn set_waiting(&mut self, waiting: bool) {
        if waiting != self.waiting {
            self.waiting = waiting;
            self.running.body_waiting(waiting);
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if self.waiting {
            self.running.body_waiting(false);
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.running.body_taken();
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let ready = matches!(polled, Poll::Ready(Some(Ok(_)))) && !self.body.is_end_stream();
        self.set_waiting(ready);
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
