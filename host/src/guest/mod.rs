//! Everything about running guests, behind one door: [`serve`] takes a
//! routed request and returns the response the HTTP layer sends, whatever
//! the guest did. Behind it:
//!
//! ```text
//! serve         the body-size check and read-ahead (bodies), a place to run
//!               (admission), then the app's world:
//!   p2          wasi:http/incoming-handler@0.2: an instance per request
//!               (instances), the call, its faults as statuses (faults)
//!   p3          wasi:http/handler@0.3: the request given to an instance that
//!               serves several at once (p3::sharing says which may take it,
//!               p3::driver runs its store)
//! ```
//!
//! Beside the path: `app` loads a component (`engine`, `compile_cache`,
//! `linker`); `instances` owns every instance's life (take, give back,
//! retire, spares); `sandbox`, `limits` and `output` are what one instance
//! runs inside. What an instance leaves after its response reaches the
//! connection as a plain task (`crate::deferred`), so the HTTP layer names
//! no type of this folder but the ones exported here.

pub mod admission;
pub mod app;
pub mod bodies;
pub mod compile_cache;
pub mod config;
pub mod deadline;
pub mod engine;
pub mod faults;
pub mod instances;
pub mod keyvalue;
pub mod limits;
pub mod linker;
pub mod output;
mod p2;
mod p3;
pub mod sandbox;

pub use app::App;
pub use faults::{Body, plain};

use crate::deferred::Deferred;
use crate::telemetry::request_metrics;
use bodies::{BodyFault, ClientFault, LimitedBody};
use faults::{Fault, fault_response, try_again};
use http::{Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Who sent a request, as the guest side needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Its address (a trusted proxy's forwarded one), which bounds what it
    /// may hold of an app (`admission`).
    pub ip: IpAddr,
    /// Whether it came over TLS: the request's scheme.
    pub https: bool,
}

/// What a request borrows from its connection.
pub struct Connection<'a> {
    /// The connection's share of places to run in guests, taken before an
    /// app's own, so one connection cannot fill an app's places.
    pub places: &'a Arc<Semaphore>,
    /// Where the work an instance leaves after the response goes.
    pub deferred: &'a Arc<Deferred>,
}

/// A request body of declared length up to this is read whole before the
/// request takes an app's place (`LimitedBody::read_ahead`): a client that
/// stalls one holds only its own connection's share. At most 25 of them per
/// connection (the connection's places) bound what that buffers: 1.6 MiB.
const READ_AHEAD: u64 = 64 * 1024;

/// Serves one request on `app`, the one it was routed to. A guest fault
/// costs only its own request: it becomes the response's status.
pub async fn serve(
    app: Arc<App>,
    request: http::Request<Incoming>,
    client: Client,
    connection: Connection<'_>,
) -> Response<Body> {
    // A declared length over the limit is refused before any instance is
    // taken; a body that grows past it is cut as the guest reads it.
    let limits = app.instances.limits();
    let body_limit = limits.body_limit;
    if request.body().size_hint().lower() > body_limit {
        return too_large(&app, body_limit);
    }
    // The connection's share first: its requests past it wait here, not
    // in the app's places.
    let share = connection
        .places
        .clone()
        .acquire_owned()
        .await
        .expect("a connection's places are never closed");
    let body_fault = BodyFault::default();
    let mut request = request
        .map(|body| LimitedBody::new(body, body_limit, limits.body_timeout, body_fault.clone()));
    if let Some(fault) = request.body_mut().read_ahead(READ_AHEAD).await {
        if fault == ClientFault::Stalled {
            crate::limited!(warn, app = %app.route, "client sent nothing of the request body for {:?}; answered 408 before the guest ran", limits.body_timeout);
        }
        return client_fault_response(&app, fault);
    }
    let Some(admitted) = app.admission.admit(&app.route, client.ip).await else {
        return busy(&app);
    };
    let admitted = (admitted, share);
    if app.instances.is_p3() {
        p3::serve(app, admitted, connection.deferred, client.https, request).await
    } else {
        p2::serve(
            app,
            admitted,
            connection.deferred,
            client.https,
            request,
            body_fault,
        )
        .await
    }
}

/// The answer for a request whose client spoilt its body.
fn client_fault_response(app: &App, fault: ClientFault) -> Response<Body> {
    match fault {
        ClientFault::TooLarge => too_large(app, app.instances.limits().body_limit),
        ClientFault::Stalled => fault_response(Fault::BodyStalled),
        ClientFault::Malformed => plain(
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        ),
    }
}

/// The answer to a request that found the app's places to run and to wait
/// all taken.
fn busy(app: &App) -> Response<Body> {
    if let Some(counts) = request_metrics::get() {
        counts.cached(&app.metrics, &app.route).refused();
    }
    tracing::debug!(app = %app.route, "app at its concurrency and queue limits; answered 503");
    try_again("the application is at capacity; try again shortly")
}

/// The answer to a request whose body is over the app's limit.
fn too_large(app: &App, limit: u64) -> Response<Body> {
    crate::limited!(info, app = %app.route, "request body over the limit of {limit} bytes; answered 413");
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than this app accepts ({limit} bytes)"),
    )
}
