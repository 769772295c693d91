//! One request: route it to its app, take an instance (fresh or idle, see
//! `instances`), call `wasi:http/incoming-handler.handle`, and turn whatever
//! the guest did into an HTTP response. A guest fault costs only its own
//! request.

use crate::admission::Admitted;
use crate::app::App;
use crate::chores::{Aftermath, Chores};
use crate::guest_body::{FailureFlag, GuestBody};
use crate::instances::Instance;
use crate::limits::Exceeded;
use crate::request_body::{BodyFault, ClientFault, LimitedBody};
use crate::router::{Refusal, Router};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::Semaphore;
use wasmtime::component::Resource;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

/// Response bodies: streamed from the guest, or a short message from the host.
pub type Body = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// The route table requests are served from. A reload swaps in a new one;
/// a request holds the app it was routed to until it is done with it.
pub type Routes = ArcSwap<Router<Arc<App>>>;

/// Everything a request needs to reach an app.
pub struct Target {
    pub routes: Routes,
    /// Bounds the instances alive at once to what the pool holds, so that a
    /// burst waits for a slot instead of failing to instantiate.
    pub slots: Arc<Semaphore>,
}

/// How the guest ended a request that produced no response.
enum Fault {
    /// Trap, panic or failed instantiation: the app is broken for this request.
    Trapped,
    /// The handler returned without setting its response-outparam.
    NoResponse,
    /// The guest answered with a `wasi:http` error code instead of a response.
    ErrorCode,
    /// An instance tried to grow its memory past the app's limit.
    OutOfMemory,
    /// The guest ran for longer than the app's CPU time limit.
    CpuTime,
    /// The handler had not returned when the app's timeout passed.
    TimedOut,
}

/// Serves one request. What is left to do once the guest is done (the spent
/// instance, new spares) goes to `chores`, for the connection to do after
/// the response is out.
pub async fn handle(
    target: &Target,
    chores: &Chores,
    https: bool,
    mut request: http::Request<Incoming>,
) -> Response<Body> {
    let app = match mount(&target.routes.load(), &mut request) {
        Ok(app) => app.clone(),
        Err(Refusal::NotFound) => {
            return plain(StatusCode::NOT_FOUND, "no app is mounted at this path");
        }
        Err(Refusal::BadPath) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "the path leaves its app with `..` or is not a path",
            );
        }
    };
    // A declared length over the limit is refused before any instance is
    // taken; a body that grows past it is cut as the guest reads it.
    let limits = app.instances.limits();
    let body_limit = limits.body;
    if request.body().size_hint().lower() > body_limit {
        return too_large(&app, body_limit);
    }
    let Some(admitted) = app.instances.admit(&app.route).await else {
        return busy(&app);
    };
    let body_fault = BodyFault::default();
    let request = request.map(|body| LimitedBody::new(body, body_limit, body_fault.clone()));
    let Some(mut instance) = app
        .instances
        .checkout(app.pre.engine(), &target.slots)
        .await
    else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
    };

    let (sender, mut receiver) = tokio::sync::oneshot::channel();
    let resources = {
        let mut http = instance.store.data_mut().http();
        let scheme = if https { Scheme::Https } else { Scheme::Http };
        http.new_incoming_request(scheme, request)
            .and_then(|req| Ok((req, http.new_response_outparam(sender)?)))
    };
    let (guest_request, outparam) = match resources {
        Ok(pair) => pair,
        // The only request hyper hands over that wasi:http refuses is one
        // without an authority (an HTTP/1.0 request with no Host header).
        Err(error) => {
            tracing::debug!(app = %app.route, "rejected request: {error:#}");
            return plain(StatusCode::BAD_REQUEST, "request has no Host header");
        }
    };

    // The guest runs inside this request's future until it has produced the
    // response head: for a typical handler that is the whole call, with no
    // task spawned and no thread woken. If it is still running then (it is
    // streaming a body), it moves to a task of its own and carries on while
    // hyper sends what it writes; the task owns the store, the instance and
    // its slot until the handler returns.
    let failure = FailureFlag::default();
    let timeout = limits.timeout;
    let started = tokio::time::Instant::now();
    let mut guest = Box::pin(run_guest(
        app.clone(),
        target.slots.clone(),
        admitted,
        instance,
        guest_request,
        outparam,
        failure.clone(),
    ));
    // Most guests finish in their first poll; only one that does not needs
    // the timer (arming one per request cost ~2% of a hello's CPU). Once the
    // guest has returned, a response it did not send never comes (even if it
    // kept the outparam), so the receiver is only looked at, here and below.
    if let Some((outcome, aftermath)) = poll_once(&mut guest).await {
        chores.push(aftermath);
        return respond(
            &app,
            receiver.try_recv().ok(),
            outcome,
            failure,
            &body_fault,
            body_limit,
        );
    }
    let deadline = started + timeout;
    let (response, outcome) = tokio::select! {
        biased;
        response = &mut receiver => {
            let outcome = if response.is_ok() {
                let app = app.clone();
                let failure = failure.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        (_, aftermath) = &mut guest => aftermath.run().await,
                        () = tokio::time::sleep_until(deadline) => {
                            // Dropping the guest ends the body; the flag,
                            // raised first, makes that end read as cut.
                            failure.raise();
                            drop(guest);
                            tracing::warn!(app = %app.route, "guest still streaming after the {timeout:?} timeout; response cut");
                        }
                    }
                });
                Ok(())
            } else {
                // The outparam was dropped unset: the guest is ending, within
                // the timeout like everything else it does.
                match tokio::time::timeout_at(deadline, guest).await {
                    Ok((outcome, aftermath)) => {
                        chores.push(aftermath);
                        outcome
                    }
                    Err(_) => {
                        tracing::warn!(app = %app.route, "guest did not return within the {timeout:?} timeout; stopped");
                        Err(Fault::TimedOut)
                    }
                }
            };
            (response.ok(), outcome)
        }
        (outcome, aftermath) = &mut guest => {
            chores.push(aftermath);
            (receiver.try_recv().ok(), outcome)
        }
        () = tokio::time::sleep_until(deadline) => {
            // Dropping the call stops the guest wherever it is; its instance
            // goes with it.
            drop(guest);
            tracing::warn!(app = %app.route, "guest did not answer within the {timeout:?} timeout; stopped");
            return fault_response(Fault::TimedOut);
        }
    };
    respond(&app, response, outcome, failure, &body_fault, body_limit)
}

/// Turns what the guest did into the response: its own, or the host's
/// answer for how it failed.
fn respond(
    app: &App,
    response: Option<Result<Response<HyperOutgoingBody>, ErrorCode>>,
    outcome: Result<(), Fault>,
    failure: FailureFlag,
    body_fault: &BodyFault,
    body_limit: u64,
) -> Response<Body> {
    let fault = match response {
        Some(Ok(response)) => {
            return response
                .map(|body| GuestBody::new(body, failure, app.route.clone()).boxed_unsync());
        }
        Some(Err(code)) => {
            tracing::warn!(app = %app.route, "guest answered with error code {code:?}");
            Fault::ErrorCode
        }
        None => match outcome {
            Ok(()) => {
                tracing::warn!(app = %app.route, "guest returned without sending a response");
                Fault::NoResponse
            }
            Err(fault) => fault,
        },
    };
    // Whatever the guest made of a body that was too large or garbled, the
    // client's request was the cause.
    match body_fault.get() {
        Some(ClientFault::TooLarge) => too_large(app, body_limit),
        Some(ClientFault::Malformed) => plain(
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        ),
        None => fault_response(fault),
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

/// The answer to a request that found the app's places to run and to wait
/// all taken.
fn busy(app: &App) -> Response<Body> {
    tracing::debug!(app = %app.route, "app at its concurrency and queue limits; answered 503");
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "the application is at capacity; try again shortly",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// The answer to a request whose body is over the app's limit.
fn too_large(app: &App, limit: u64) -> Response<Body> {
    tracing::info!(app = %app.route, "request body over the limit of {limit} bytes; answered 413");
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than this app accepts ({limit} bytes)"),
    )
}

/// The host's answer for a request the guest did not answer.
fn fault_response(fault: Fault) -> Response<Body> {
    match fault {
        Fault::Trapped | Fault::ErrorCode | Fault::OutOfMemory => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the application failed while handling this request",
        ),
        Fault::NoResponse => plain(
            StatusCode::BAD_GATEWAY,
            "the application returned without a response",
        ),
        Fault::CpuTime | Fault::TimedOut => plain(
            StatusCode::GATEWAY_TIMEOUT,
            "the application did not answer in time",
        ),
    }
}

/// Instantiates if needed and calls the guest's handler; how that went, and
/// what is left to do now that it is done. A healthy instance goes back to
/// its app for reuse; a failed one is dropped only after the failure flag is
/// up, so an unfinished response body is reported as cut, not complete.
async fn run_guest(
    app: Arc<App>,
    slots: Arc<Semaphore>,
    admitted: Admitted,
    mut instance: Instance,
    request: Resource<HostIncomingRequest>,
    outparam: Resource<HostResponseOutparam>,
    failure: FailureFlag,
) -> (Result<(), Fault>, Aftermath) {
    let result = async {
        let (store, proxy) = instance.ready(&app.pre).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(store, request, outparam)
            .await
    }
    .await;
    // The next request of the app may run while this one's leftovers wait.
    drop(admitted);
    let (outcome, spent) = match result {
        Ok(()) => (Ok(()), app.instances.checkin(instance)),
        Err(error) => {
            failure.raise();
            (Err(fault_of(&app, &error)), Some(instance))
        }
    };
    (outcome, Aftermath::new(app, &slots, spent))
}

/// Logs a guest failure on one line and tells which it was.
fn fault_of(app: &App, error: &wasmtime::Error) -> Fault {
    let exceeded = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Exceeded>());
    match exceeded {
        Some(exceeded) => {
            tracing::warn!(app = %app.route, "guest {exceeded}");
            match exceeded {
                Exceeded::Memory { .. } => Fault::OutOfMemory,
                Exceeded::CpuTime(_) => Fault::CpuTime,
            }
        }
        None => {
            tracing::warn!(app = %app.route, "guest trapped: {}", trap_message(error));
            Fault::Trapped
        }
    }
}

/// The header carrying the mount point to the app, like WSGI's SCRIPT_NAME.
const FORWARDED_PREFIX: header::HeaderName = header::HeaderName::from_static("x-forwarded-prefix");

/// Finds the request's app and rewrites the request as the app must see it:
/// its path relative to the mount, the mount in `X-Forwarded-Prefix`.
fn mount<'a>(
    router: &'a Router<Arc<App>>,
    request: &mut http::Request<Incoming>,
) -> Result<&'a Arc<App>, Refusal> {
    let original = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let routed = router.route(original)?;
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(
        routed
            .path_and_query
            .parse()
            .map_err(|_| Refusal::BadPath)?,
    );
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| Refusal::BadPath)?;
    // A client-sent prefix would lie to the app about where it is mounted.
    let headers = request.headers_mut();
    headers.remove(&FORWARDED_PREFIX);
    if routed.prefix != "/" {
        let value = header::HeaderValue::from_str(routed.prefix).map_err(|_| Refusal::BadPath)?;
        headers.insert(FORWARDED_PREFIX, value);
    }
    Ok(routed.target)
}

/// The root cause of a guest failure on one line (the full chain carries a
/// multi-line wasm backtrace, which goes to the debug log instead).
fn trap_message(error: &wasmtime::Error) -> String {
    tracing::debug!("guest failure in full: {error:?}");
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    }
}

/// A short plain-text response made by the host itself.
pub fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let text = format!(
        "{} {}: {message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
