//! One request on a WASI 0.3 app (`wasi:http/handler@0.3`): given to an
//! instance (one already serving requests that takes it, `sharing`, or a
//! new `driver` on an idle or new one), its answer awaited within the app's
//! timeout, and its response body passed on until done, driving the store
//! if this request started it.
//!
//! Whatever the instance does, this request's limits hold here: past its
//! deadline it gets a `504`, or its body is cut; a trap that ended the
//! instance answers it as the same fault of a 0.2 guest.

use crate::deferred::Deferred;
use crate::guest::app::App;
use crate::guest::bodies::LimitedBody;
use crate::guest::deadline::LazyDeadline;
use crate::guest::faults::{Body, Fault, classify, fault_response, log_fault, plain, try_again};
mod driver;
pub mod sharing;

use crate::telemetry::request_metrics;
use bytes::Bytes;
use driver::{Driver, LocalWakes};
use futures::channel::oneshot;
use http::{Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sharing::{Answer, Inbox, InstanceEnd, Job};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

/// Serves `request`; `place` (the app's admission) is held until the
/// response body is done.
pub async fn serve(
    app: Arc<App>,
    place: impl Send + 'static,
    deferred: &Arc<Deferred>,
    https: bool,
    request: http::Request<LimitedBody<Incoming>>,
) -> Response<Body> {
    let timeout = app.instances.limits().timeout;
    let deadline = Instant::now() + timeout;
    let request = match absolute(https, request) {
        Ok(request) => request,
        Err(()) => return plain(StatusCode::BAD_REQUEST, "request has no Host header"),
    };
    let (answer_tx, mut answer_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let mut job = Some(Job {
        request,
        answer: answer_tx,
        done: done_rx,
        deadline,
    });
    let (inbox, mut driver) = match (app.instances.open().offer(&mut job), job) {
        (Some(inbox), _) => {
            tracing::debug!(app = %app.route, "request given to an instance serving {} at once", inbox.in_flight());
            (inbox, None)
        }
        (None, None) => unreachable!("a job is taken only by the instance that returns its inbox"),
        (None, Some(job)) => {
            let instance = app.instances.take().await;
            let driver = Driver::start(&app.instances, app.route.clone(), instance, job);
            (driver.inbox().clone(), Some(driver))
        }
    };
    let wakes = LocalWakes::default();
    let waited = wait(&mut driver, &mut answer_rx, deadline, deferred, &wakes).await;
    let fault = match waited {
        Waited::Answer(Ok(response)) => {
            return response.map(|body| {
                DrivingBody {
                    body,
                    done: Some(done_tx),
                    place: Some(Box::new(place)),
                    driver,
                    wakes,
                    deferred: deferred.clone(),
                    inbox,
                    deadline: LazyDeadline::new(deadline),
                    route: app.route.clone(),
                    timeout,
                }
                .boxed_unsync()
            });
        }
        Waited::Answer(Err(_)) | Waited::TimedOut if Instant::now() >= deadline => Fault::TimedOut,
        Waited::Answer(Err(error)) => {
            // Traps are logged by the driver, once for all the requests
            // they end; the guest's error code is this request's alone.
            if error.downcast_ref::<ErrorCode>().is_some() {
                log_fault(&app.route, &error, 1);
            }
            classify(&error)
        }
        Waited::TimedOut => Fault::TimedOut,
        Waited::Ended => match inbox.ended(deadline).await {
            InstanceEnd::Fault(fault) => fault,
            InstanceEnd::NotTaken => {
                return try_again(
                    "the application's instance was retired before it took this request; try again",
                );
            }
            InstanceEnd::StillRunning => Fault::TimedOut,
        },
    };
    if fault == Fault::TimedOut {
        // Its guest task may run on: the instance takes no more requests,
        // and is retired once the others on it are done.
        inbox.expire();
        crate::limited!(warn, app = %app.route, "guest did not answer within the {timeout:?} timeout; stopped");
    }
    if let Some(driver) = driver {
        driver.detach(&wakes);
    }
    request_metrics::fault(&app.route, fault.kind());
    fault_response(fault)
}

/// How waiting for the guest's answer ended.
enum Waited {
    Answer(Answer),
    /// The instance ended without answering.
    Ended,
    TimedOut,
}

/// Waits for the answer until `deadline`, driving the store meanwhile if
/// this request holds its driver; a driver done before the answer leaves
/// its instance to `deferred`.
async fn wait(
    driver: &mut Option<Driver>,
    answer: &mut oneshot::Receiver<Answer>,
    deadline: Instant,
    deferred: &Deferred,
    wakes: &LocalWakes,
) -> Waited {
    // Armed only if the first poll does not answer: most guests do.
    let mut timer = LazyDeadline::new(deadline);
    std::future::poll_fn(|cx| {
        wakes.poll(cx, |cx| {
            if let Some(running) = driver
                && let Poll::Ready(leftovers) = running.poll(cx, wakes)
            {
                deferred.push(leftovers.later());
                *driver = None;
            }
            match Pin::new(&mut *answer).poll(cx) {
                Poll::Ready(Ok(answer)) => return Poll::Ready(Waited::Answer(answer)),
                // Its own driver is finishing: done once it has said why.
                Poll::Ready(Err(_)) if driver.is_none() => return Poll::Ready(Waited::Ended),
                Poll::Ready(Err(_)) | Poll::Pending => {}
            }
            match timer.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Waited::TimedOut),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}

/// The request as wasi:http 0.3 takes it: an absolute URI, its authority
/// from the Host header (`request_head` made sure there is one).
fn absolute(
    https: bool,
    request: http::Request<LimitedBody<Incoming>>,
) -> Result<http::Request<Body>, ()> {
    let (mut parts, body) = request.into_parts();
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .ok_or(())?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = http::Uri::builder()
        .scheme(if https { "https" } else { "http" })
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| ())?;
    Ok(http::Request::from_parts(parts, body.boxed_unsync()))
}

/// A 0.3 guest's response body as it goes to the client: drives the
/// store if this request holds its driver, tells the driver when it is
/// done (read to its end, cut, or dropped by hyper), frees the request's
/// place then, and is cut at the request's deadline.
struct DrivingBody {
    body: Body,
    done: Option<oneshot::Sender<()>>,
    place: Option<Box<dyn Send>>,
    driver: Option<Driver>,
    /// What the body and the driver are polled within.
    wakes: LocalWakes,
    deferred: Arc<Deferred>,
    inbox: Arc<Inbox>,
    /// When the body is cut, whatever the store is doing.
    deadline: LazyDeadline,
    route: Arc<str>,
    timeout: Duration,
}

type Polled = Poll<Option<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>>;

impl DrivingBody {
    /// The body is over: the driver learns it, a driver with work left
    /// carries on by itself, and the place is freed. A driver done with its
    /// instance has given it back by then, so a request that was waiting
    /// for the place finds it idle rather than making another.
    fn over(&mut self, cx: &mut Context<'_>) {
        self.done = None;
        if let Some(mut driver) = self.driver.take() {
            match driver.poll(cx, &self.wakes) {
                Poll::Ready(leftovers) => self.deferred.push(leftovers.later()),
                Poll::Pending => driver.detach(&self.wakes),
            }
        }
        self.place = None;
    }

    /// What the guest's body gave, with its end checked: a body that ends
    /// because a trap took its instance was cut, not finished.
    fn passed(&mut self, cx: &mut Context<'_>, polled: Polled) -> Polled {
        match polled {
            Poll::Ready(None) if self.inbox.fault_now().is_some() => {
                self.over(cx);
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)))
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                self.over(cx);
                polled
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(
                crate::guest::bodies::without_forbidden_trailers(frame),
            ))),
            other => other,
        }
    }
}

impl http_body::Body for DrivingBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = &mut *self;
        if this.driver.is_none() {
            return this.poll_body(cx);
        }
        let wakes = this.wakes.clone();
        wakes.poll(cx, |cx| this.poll_body(cx))
    }

    fn is_end_stream(&self) -> bool {
        // Polled to its end while it drives the store, so the store runs
        // to the end of the request.
        self.driver.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl DrivingBody {
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Polled {
        let this = self;
        let polled = http_body::Body::poll_frame(Pin::new(&mut this.body), cx);
        if polled.is_ready() {
            return this.passed(cx, polled);
        }
        if let Some(driver) = &mut this.driver {
            let finished = match driver.poll(cx, &this.wakes) {
                Poll::Ready(leftovers) => {
                    this.deferred.push(leftovers.later());
                    true
                }
                Poll::Pending => false,
            };
            if finished {
                this.driver = None;
            }
            // What the store just ran may have written the next frame.
            let polled = http_body::Body::poll_frame(Pin::new(&mut this.body), cx);
            if polled.is_ready() {
                return this.passed(cx, polled);
            }
        }
        if this.deadline.poll(cx).is_ready() {
            crate::limited!(warn, app = %this.route, "guest still streaming after the {:?} timeout; response cut, guest stopped", this.timeout);
            this.over(cx);
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)));
        }
        Poll::Pending
    }
}

impl Drop for DrivingBody {
    fn drop(&mut self) {
        // Dropped before its end (the client is gone): the guest's writes
        // now fail, and the driver ends the request.
        self.done = None;
        if let Some(driver) = self.driver.take() {
            driver.detach(&self.wakes);
        }
    }
}
