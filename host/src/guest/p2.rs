//! One admitted request on a WASI 0.2 app: take an instance (`instances`),
//! call `wasi:http/incoming-handler.handle`, and turn whatever the guest did
//! into an HTTP response.

use super::client_fault_response;
use crate::deferred::Deferred;
use crate::guest::admission::Admitted;
use crate::guest::app::App;
use crate::guest::bodies::{BodyFault, FailureFlag, GuestBody, LimitedBody};
use crate::guest::faults::{Body, plain};
use crate::guest::faults::{Fault, fault_of, fault_response};
use crate::guest::instances::{Instance, Leftovers};
use crate::telemetry::log_rate::clip;
use crate::telemetry::request_metrics;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;
use wasmtime::component::Resource;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

/// What the guest sends through its response-outparam.
type GuestResponse = Result<Response<HyperOutgoingBody>, ErrorCode>;

/// Serves one admitted request on `app`, a WASI 0.2 guest. What is left to
/// do once the guest is done (the spent instance, new spares) goes to
/// `deferred`, for the connection to do after the response is out.
pub(super) async fn serve(
    app: Arc<App>,
    admitted: (Admitted, OwnedSemaphorePermit),
    deferred: &Arc<Deferred>,
    https: bool,
    request: http::Request<LimitedBody<Incoming>>,
    body_fault: BodyFault,
) -> Response<Body> {
    let head = request.method() == http::Method::HEAD;
    let mut instance = app.instances.take().await;
    let (sender, receiver) = oneshot::channel();
    let (guest_request, outparam) = match resources(&mut instance, https, request, sender) {
        Ok(pair) => pair,
        // wasi:http refuses a request without an authority, and
        // `request_head` gives every request one (an HTTP/1.0 request
        // without Host the listener's address): this is a guard, not a path.
        Err(error) => {
            tracing::debug!(app = %app.route, "rejected request: {error:#}");
            return plain(StatusCode::BAD_REQUEST, "request has no Host header");
        }
    };
    let failure = FailureFlag::default();
    let started = Instant::now();
    let guest = Box::pin(run_guest(
        app.clone(),
        admitted,
        instance,
        guest_request,
        outparam,
        failure.clone(),
    ));
    let waiting = Waiting {
        deferred,
        failure: &failure,
        body_fault: &body_fault,
        started,
    };
    let (response, outcome) = match wait(&app, guest, receiver, waiting).await {
        Ok(answer) => answer,
        Err(fault) => {
            request_metrics::fault(&app.route, fault.kind());
            return fault_response(fault);
        }
    };
    respond(&app, head, response, outcome, failure, &body_fault)
}

/// The request and the response-outparam as resources of the guest's store.
fn resources(
    instance: &mut Instance,
    https: bool,
    request: http::Request<LimitedBody<Incoming>>,
    sender: oneshot::Sender<GuestResponse>,
) -> wasmtime::Result<(
    Resource<HostIncomingRequest>,
    Resource<HostResponseOutparam>,
)> {
    let mut http = instance.store.data_mut().http();
    let scheme = if https { Scheme::Https } else { Scheme::Http };
    let request = http.new_incoming_request(scheme, request)?;
    Ok((request, http.new_response_outparam(sender)?))
}

/// The guest's call, as [`run_guest`] makes it.
type Guest = Pin<Box<dyn Future<Output = (Result<(), Fault>, Returned)> + Send>>;

/// An instance whose guest has returned, not yet given back: whether it
/// sent a response decides, with how its call went, whether it serves
/// again. It holds the request's place until then.
struct Returned {
    app: Arc<App>,
    instance: Instance,
    ok: bool,
    admitted: (Admitted, OwnedSemaphorePermit),
}

impl Returned {
    /// The place is freed only once the instance is back among the idle
    /// ones: a request waiting for that place, often on another worker
    /// thread, then finds it there instead of making a new one (with one
    /// place and `--spares 0`, every request ran on a new instance whenever
    /// it won that race). What is slow (dropping a spent instance, making
    /// spares) still waits in the leftovers.
    fn give_back(self, answered: bool) -> Leftovers {
        let Returned {
            app,
            instance,
            ok,
            admitted,
        } = self;
        if ok && !answered {
            app.instances
                .returned_without_response(&app.route, &instance);
        }
        let leftovers = app.instances.give_back(instance, ok && answered);
        drop(admitted);
        leftovers
    }
}

/// Waits for the guest's response head (or its end) within the app's
/// timeout: the response if it sent one, and how its call went so far.
///
/// The guest runs inside this request's future until it has produced the
/// response head: for a typical handler that is the whole call, with no
/// task spawned and no thread woken. If it is still running then (it is
/// streaming a body), it moves to a task of its own and carries on while
/// hyper sends what it writes; the task owns the store, the instance and
/// its slot until the handler returns.
async fn wait(
    app: &Arc<App>,
    mut guest: Guest,
    mut receiver: oneshot::Receiver<GuestResponse>,
    waiting: Waiting<'_>,
) -> Result<(Option<GuestResponse>, Result<(), Fault>), Fault> {
    let Waiting {
        deferred,
        failure,
        body_fault,
        started,
    } = waiting;
    // Most guests finish in their first poll; only one that does not needs
    // the timer (arming one per request cost ~2% of a hello's CPU). Once the
    // guest has returned, a response it did not send never comes (even if it
    // kept the outparam), so the receiver is only looked at, here and below.
    if let Some((outcome, returned)) = poll_once(&mut guest).await {
        let response = receiver.try_recv().ok();
        deferred.push(returned.give_back(response.is_some()).later());
        return Ok((response, outcome));
    }
    let timeout = app.instances.limits().timeout;
    let deadline = started + timeout;
    tokio::select! {
        biased;
        // The guest before its answer: one that answered may have stopped
        // only for an epoch yield on its way out, and polled again it
        // returns and frees its place before its response leaves. Taking
        // the answer first left the place held a moment after the client
        // had the whole response, and its next request could be refused
        // (a 503 with `--queue 0`, 1 in 20,000 sequential requests on a
        // loaded machine).
        (outcome, returned) = &mut guest => {
            let response = receiver.try_recv().ok();
            deferred.push(returned.give_back(response.is_some()).later());
            Ok((response, outcome))
        }
        response = &mut receiver => {
            let outcome = match response {
                Ok(_) => {
                    stream_on(app, guest, failure.clone(), body_fault.clone(), deadline, timeout);
                    Ok(())
                }
                Err(_) => returned_within(app, guest, deferred, deadline, timeout).await,
            };
            Ok((response.ok(), outcome))
        }
        () = tokio::time::sleep_until(deadline) => {
            // Dropping the call stops the guest wherever it is; its instance
            // goes with it.
            drop(guest);
            crate::limited!(warn, app = %app.route, "guest did not answer within the {timeout:?} timeout; stopped");
            Err(Fault::TimedOut)
        }
        () = body_fault.stalled() => {
            // Its place is freed now, not at the timeout.
            drop(guest);
            crate::limited!(warn, app = %app.route, "client sent nothing of the request body for {:?}; guest stopped, answered 408", app.instances.limits().body_timeout);
            Err(Fault::BodyStalled)
        }
    }
}

/// What [`wait`] watches besides the guest.
struct Waiting<'a> {
    deferred: &'a Deferred,
    failure: &'a FailureFlag,
    body_fault: &'a BodyFault,
    started: Instant,
}

/// The guest sent its response head and streams the body: it runs on a
/// task of its own, until its handler returns, the timeout passes, the
/// client is gone or its request body stalls. Dropping the guest ends the
/// body (the flag, raised first, makes that end read as cut) and frees its
/// place at once.
fn stream_on(
    app: &Arc<App>,
    mut guest: Guest,
    failure: FailureFlag,
    body_fault: BodyFault,
    deadline: Instant,
    timeout: Duration,
) {
    let app = app.clone();
    tokio::spawn(async move {
        let why = tokio::select! {
            (_, returned) = &mut guest => return returned.give_back(true).run().await,
            () = tokio::time::sleep_until(deadline) => format!("still streaming after the {timeout:?} timeout"),
            () = failure.gone() => "its client stopped taking the response".to_string(),
            () = body_fault.stalled() => "its client stopped sending the request body".to_string(),
        };
        failure.raise();
        drop(guest);
        crate::limited!(warn, app = %app.route, "guest {why}; response cut, guest stopped");
    });
}

/// The outparam was dropped unset: the guest is ending, within the timeout
/// like everything else it does.
async fn returned_within(
    app: &App,
    guest: Guest,
    deferred: &Deferred,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), Fault> {
    match tokio::time::timeout_at(deadline, guest).await {
        Ok((outcome, returned)) => {
            deferred.push(returned.give_back(false).later());
            outcome
        }
        Err(_) => {
            crate::limited!(warn, app = %app.route, "guest did not return within the {timeout:?} timeout; stopped");
            Err(Fault::TimedOut)
        }
    }
}

/// Turns what the guest did into the response: its own, or the host's
/// answer for how it failed.
fn respond(
    app: &App,
    head: bool,
    response: Option<GuestResponse>,
    outcome: Result<(), Fault>,
    failure: FailureFlag,
    body_fault: &BodyFault,
) -> Response<Body> {
    let fault = match response {
        Some(Ok(response)) if response.status().is_informational() => {
            crate::limited!(
                warn,
                app = %app.route,
                "guest answered with status {}, which is not a final response; answered 502",
                response.status().as_u16()
            );
            Fault::Informational
        }
        Some(Ok(response)) => {
            // hyper sends no body after these heads, whatever the guest
            // writes, so the body's early drop is its end.
            let bodiless = head
                || matches!(
                    response.status(),
                    StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
                );
            let declared = if bodiless {
                Some(0)
            } else {
                response
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|value| value.to_str().ok()?.parse().ok())
            };
            return response.map(|body| {
                GuestBody::new(body, failure, app.route.clone(), declared).boxed_unsync()
            });
        }
        Some(Err(code)) => {
            crate::limited!(warn, app = %app.route, "guest answered with error code {}", clip(&format!("{code:?}")));
            Fault::ErrorCode
        }
        None => match outcome {
            Ok(()) => {
                crate::limited!(warn, app = %app.route, "guest returned without sending a response");
                Fault::NoResponse
            }
            Err(fault) => fault,
        },
    };
    // Whatever the guest made of a body that was too large or garbled, the
    // client's request was the cause.
    match body_fault.get() {
        Some(client) => client_fault_response(app, client),
        None => {
            request_metrics::fault(&app.route, fault.kind());
            fault_response(fault)
        }
    }
}

/// Polls `future` once: its output if that finished it.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match Pin::new(&mut *future).poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Calls the guest's handler; how that went, and what is left to do now
/// that it is done. A failed instance is given back only after the failure
/// flag is up, so an unfinished response body is reported as cut, not
/// complete.
async fn run_guest(
    app: Arc<App>,
    admitted: (Admitted, OwnedSemaphorePermit),
    mut instance: Instance,
    request: Resource<HostIncomingRequest>,
    outparam: Resource<HostResponseOutparam>,
    failure: FailureFlag,
) -> (Result<(), Fault>, Returned) {
    let result = app.instances.call(&mut instance, request, outparam).await;
    let outcome = result.map_err(|error| {
        failure.raise();
        fault_of(&app.route, &error)
    });
    let ok = outcome.is_ok();
    let returned = Returned {
        app,
        instance,
        ok,
        admitted,
    };
    (outcome, returned)
}
