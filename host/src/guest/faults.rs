//! How a guest's failure is answered: the kinds of fault, the one line
//! each is logged with, and the host's own short responses. Shared by the
//! 0.2 path (`p2`) and the 0.3 one (`p3`), so the same fault
//! gets the same status and the same line in both.

use crate::guest::limits::Exceeded;
use crate::telemetry::log_rate::clip;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode as P3ErrorCode;

/// Response bodies: streamed from the guest, or a short message from the host.
pub type Body = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// How the guest ended a request that produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Trap, panic or failed instantiation: the app is broken for this request.
    Trapped,
    /// The handler returned without setting its response-outparam.
    NoResponse,
    /// The guest answered with a `wasi:http` error code instead of a response.
    ErrorCode,
    /// The guest answered with an informational status (1xx), which is not
    /// a final response: forwarded, it would break the exchange (a `101`
    /// switches protocols nobody asked for; HTTP/2 resets the stream).
    Informational,
    /// An instance tried to grow its memory past the app's limit.
    OutOfMemory,
    /// The guest ran for longer than the app's CPU time limit.
    CpuTime,
    /// The handler had not returned when the app's timeout passed.
    TimedOut,
    /// Its instance could not grow: all guests' memory budget is in use.
    Budget,
    /// The client sent nothing of the request body for the app's
    /// `body_timeout` while the guest waited for it.
    BodyStalled,
}

impl Fault {
    /// Its name in `/metrics` (`wasmhost_guest_faults_total{kind=…}`).
    pub fn kind(self) -> &'static str {
        match self {
            Fault::Trapped => "trap",
            Fault::NoResponse => "no_response",
            Fault::ErrorCode => "error_code",
            Fault::Informational => "informational",
            Fault::OutOfMemory => "out_of_memory",
            Fault::CpuTime => "cpu_limit",
            Fault::TimedOut => "timeout",
            Fault::Budget => "memory_budget",
            Fault::BodyStalled => "body_stalled",
        }
    }
}

/// Logs a guest failure on one line and tells which it was.
pub fn fault_of(route: &str, error: &wasmtime::Error) -> Fault {
    log_fault(route, error, 1);
    classify(error)
}

/// Which fault `error` is, without a word in the log.
pub fn classify(error: &wasmtime::Error) -> Fault {
    if error.downcast_ref::<P3ErrorCode>().is_some() {
        return Fault::ErrorCode;
    }
    match exceeded(error) {
        Some(Exceeded::Memory { .. }) => Fault::OutOfMemory,
        Some(Exceeded::CpuTime(_)) => Fault::CpuTime,
        Some(Exceeded::Budget(_)) => Fault::Budget,
        None => Fault::Trapped,
    }
}

/// Logs a guest failure on one line; `ended` is how many requests it ended
/// (those that shared a WASI 0.3 instance end together).
pub fn log_fault(route: &str, error: &wasmtime::Error, ended: usize) {
    let what = match (error.downcast_ref::<P3ErrorCode>(), exceeded(error)) {
        (Some(code), _) => format!(
            "guest answered with error code {}",
            clip(&format!("{code:?}"))
        ),
        (None, Some(exceeded)) => format!("guest {exceeded}"),
        (None, None) => format!("guest trapped: {}", clip(&trap_message(error))),
    };
    match ended {
        0 | 1 => crate::limited!(warn, app = %route, "{what}"),
        n => {
            crate::limited!(warn, app = %route, "{what}; it ended the {n} requests on its instance")
        }
    }
}

fn exceeded(error: &wasmtime::Error) -> Option<&Exceeded> {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Exceeded>())
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

/// The host's answer for a request the guest did not answer.
pub fn fault_response(fault: Fault) -> Response<Body> {
    match fault {
        Fault::Trapped | Fault::ErrorCode | Fault::OutOfMemory => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the application failed while handling this request",
        ),
        Fault::NoResponse => plain(
            StatusCode::BAD_GATEWAY,
            "the application returned without a response",
        ),
        Fault::Informational => plain(
            StatusCode::BAD_GATEWAY,
            "the application answered with an informational status, not a response",
        ),
        Fault::CpuTime | Fault::TimedOut => plain(
            StatusCode::GATEWAY_TIMEOUT,
            "the application did not answer in time",
        ),
        Fault::BodyStalled => plain(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        ),
        Fault::Budget => {
            try_again("the server's memory for applications is in use; try again shortly")
        }
    }
}

/// A `503` with `Retry-After`: the server is full for now.
pub fn try_again(message: &str) -> Response<Body> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
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
