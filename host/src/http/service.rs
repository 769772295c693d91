//! The hyper service of one connection: what happens to each request
//! between hyper and its app. It marks the request running for the
//! connection's clock, checks its head (`request_head`), rewrites the
//! forwarding headers (`forwarded`), routes the request once (`router`),
//! starts its access-log record and hands it to the guest (`guest::serve`;
//! under `wasmhost dev`, an app whose build failed answers with its error
//! page, `dev_errors`). Once the server is shutting down it asks an HTTP/1
//! client to close after the response. The response goes out wrapped
//! (`response_body`).

use crate::deferred::Deferred;
use crate::guest::{self, Body};
use crate::http::access_log::AccessLog;
use crate::http::connection::Activity;
use crate::http::dev_errors::DevErrors;
use crate::http::forwarded::{Forwarding, X_REQUEST_ID};
use crate::http::request_head::{self, BadHead};
use crate::http::response_body::Tracked;
use crate::http::router::{Routes, Unrouted};
use crate::telemetry::request_metrics;
use http::StatusCode;
use http::header::{CONNECTION, HeaderValue};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// The service for one connection's requests; `local` is the listener's
/// address.
pub fn new(
    local: SocketAddr,
    routes: Arc<Routes>,
    deferred: Arc<Deferred>,
    activity: Arc<Activity>,
    forwarding: Forwarding,
    access_log: Option<Arc<AccessLog>>,
    dev_errors: Option<Arc<DevErrors>>,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = http::Response<Tracked<Body>>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<Tracked<Body>>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        let running = activity.begin(request.version());
        let http1 = request.version() < http::Version::HTTP_2;
        let head = request_head::check(&mut request, local);
        let client = forwarding.apply(request.headers_mut());
        let request_id = request.headers().get(X_REQUEST_ID).cloned();
        let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let table = routes.load();
        let routed = head
            .map_err(Unserved::Head)
            .and_then(|()| table.route(path).map_err(Unserved::Route));
        let mut record = access_log.as_ref().map(|log| {
            let app = match &routed {
                Ok(routed) => routed.target.route.clone(),
                Err(_) => Arc::from("-"),
            };
            Box::new(log.begin(&request, client.ip, app))
        });
        let app = routed.and_then(|routed| {
            routed.rewrite(&mut request).map_err(Unserved::Route)?;
            Ok(routed.target.clone())
        });
        drop(table);
        let counts = request_metrics::get();
        let mut measure = counts.map(|counts| {
            match &app {
                Ok(app) => counts.cached(&app.metrics, &app.route),
                Err(_) => counts.unrouted(),
            }
            .begin(request.method())
        });
        let head_refused = matches!(app, Err(Unserved::Head(_)));
        let deferred = deferred.clone();
        let failed_build = match (&app, &dev_errors) {
            (Ok(app), Some(errors)) => errors.page(&app.route),
            _ => None,
        };
        async move {
            let mut response = match (app, failed_build) {
                (Ok(_), Some(page)) => page,
                (Ok(app), None) => {
                    let connection = guest::Connection {
                        places: running.places(),
                        deferred: &deferred,
                    };
                    guest::serve(app, request, client, connection).await
                }
                (Err(rejected), _) => rejected.response(),
            };
            // Shutting down: the client closes this connection after the
            // response, instead of racing our close (connection.rs).
            if http1 && running.stopping() {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            if let Some(id) = request_id {
                response.headers_mut().insert(X_REQUEST_ID, id);
            }
            let status = response.status().as_u16();
            if let Some(record) = &mut record {
                record.set_status(status);
            }
            if let Some(measure) = &mut measure {
                measure.set_status(status);
            }
            if let (Some(counts), true) = (counts, head_refused) {
                counts.head_refused(status);
            }
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, running, record, measure)))
        }
    })
}

/// A request that reaches no app.
enum Unserved {
    /// Its head breaks a rule of `request_head`.
    Head(BadHead),
    /// The router found no app for it.
    Route(Unrouted),
}

impl Unserved {
    fn response(&self) -> http::Response<Body> {
        let (status, message) = match self {
            Unserved::Head(BadHead::TooManyHeaders) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request has too many header fields",
            ),
            Unserved::Head(BadHead::NoHost) => {
                (StatusCode::BAD_REQUEST, "the request has no Host header")
            }
            Unserved::Head(BadHead::RepeatedHost) => (
                StatusCode::BAD_REQUEST,
                "the request has more than one Host header",
            ),
            Unserved::Head(BadHead::BadHost) => (
                StatusCode::BAD_REQUEST,
                "the Host header is not a host name or address with an optional port",
            ),
            Unserved::Route(Unrouted::NotFound) => {
                (StatusCode::NOT_FOUND, "no app is mounted at this path")
            }
            Unserved::Route(Unrouted::BadPath) => (
                StatusCode::BAD_REQUEST,
                "the path leaves its app with `..` or is not a path",
            ),
        };
        guest::plain(status, message)
    }
}
