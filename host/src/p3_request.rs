//! One request on a WASI 0.3 app (`wasi:http/handler@0.3`): the guest's
//! `handle` started on its instance, the store driven on a task of its own
//! until the response body has been sent (a 0.3 guest writes its body from
//! tasks that run after `handle` has returned), then the instance given
//! back, or retired if the guest failed.
//!
//! One request per instance for now, in fresh and reuse mode alike; the
//! app's timeout ends the request wherever it is, and a trap answers 500.

use crate::app::App;
use crate::bodies::LimitedBody;
use crate::guest_faults::{Body, Fault, fault_of, fault_response, plain};
use crate::instances::Instance;
use crate::sandbox::Sandbox;
use bytes::Bytes;
use futures::channel::oneshot;
use http::{Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use wasmtime::AsContextMut;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{Prepared, Proxy};

type Answer = Result<http::Response<Body>, wasmtime::Error>;

/// Serves `request` on `instance`; `place` (the app's admission) is held
/// until the response body is done.
pub async fn serve(
    app: Arc<App>,
    place: impl Send + 'static,
    instance: Instance,
    https: bool,
    request: http::Request<LimitedBody<Incoming>>,
) -> Response<Body> {
    let timeout = app.instances.limits().timeout;
    let deadline = Instant::now() + timeout;
    let request = match absolute(https, request) {
        Ok(request) => request,
        Err(()) => return plain(StatusCode::BAD_REQUEST, "request has no Host header"),
    };
    let (answer_tx, answer_rx) = oneshot::channel::<Answer>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let runner = app.clone();
    tokio::spawn(async move {
        let healthy = run(&runner, instance, request, answer_tx, done_rx, deadline).await;
        drop(place);
        healthy.run().await;
    });
    let answer = match tokio::time::timeout_at(deadline, answer_rx).await {
        Ok(Ok(answer)) => answer,
        // The task ended without an answer: it failed before the guest ran.
        Ok(Err(_)) => Err(wasmtime::format_err!(
            "the guest's task ended without a response"
        )),
        Err(_) => {
            crate::limited!(warn, app = %app.route, "guest did not answer within the {timeout:?} timeout; stopped");
            return fault_response(Fault::TimedOut);
        }
    };
    match answer {
        Ok(response) => response.map(|body| {
            Finished {
                body,
                done: Some(done_tx),
            }
            .boxed_unsync()
        }),
        Err(error) if Instant::now() >= deadline => {
            tracing::debug!(app = %app.route, "guest stopped at its timeout: {error:#}");
            crate::limited!(warn, app = %app.route, "guest did not answer within the {timeout:?} timeout; stopped");
            fault_response(Fault::TimedOut)
        }
        // Logged on one line, answered as the same fault of a 0.2 guest.
        Err(error) => fault_response(fault_of(&app, &error)),
    }
}

/// Runs the guest's call on `instance` until its response body is done
/// (or the deadline), and gives the instance back: what is left to do.
async fn run(
    app: &Arc<App>,
    mut instance: Instance,
    request: http::Request<Body>,
    answer_tx: oneshot::Sender<Answer>,
    done_rx: oneshot::Receiver<()>,
    deadline: Instant,
) -> crate::instances::Leftovers {
    let mut answer_tx = Some(answer_tx);
    let healthy = match call(
        app,
        &mut instance,
        request,
        &mut answer_tx,
        done_rx,
        deadline,
    )
    .await
    {
        Ok(healthy) => healthy,
        Err(error) => {
            // A trap ends the store's run before the guest's answer is
            // taken: the request learns why here.
            match answer_tx.take() {
                Some(tx) => drop(tx.send(Err(error))),
                None => {
                    tracing::debug!(app = %app.route, "0.3 call failed after its answer: {error:#}")
                }
            }
            false
        }
    };
    app.instances.give_back(instance, healthy)
}

async fn call(
    app: &Arc<App>,
    instance: &mut Instance,
    request: http::Request<Body>,
    answer_tx: &mut Option<oneshot::Sender<Answer>>,
    done_rx: oneshot::Receiver<()>,
    deadline: Instant,
) -> wasmtime::Result<bool> {
    app.instances.start(instance).await?;
    let Some(proxy @ Proxy::P3(_)) = &instance.proxy else {
        wasmtime::bail!("a wasi:http 0.2 guest is called through `handler`");
    };
    let (guest_tx, guest_rx) = oneshot::channel();
    let prepared = Prepared::new(
        instance.store.as_context_mut(),
        proxy,
        request,
        <Sandbox as WasiHttpView>::http,
        guest_tx,
    )?;
    instance
        .store
        .run_concurrent(async |accessor| {
            let expired = tokio::time::sleep_until(deadline);
            let _ = prepared.run(accessor, expired).await;
            let answer = match guest_rx.await {
                Ok(answer) => answer,
                Err(_) => Err(wasmtime::format_err!("the guest returned no response")),
            };
            let healthy = answer.is_ok();
            if let Some(tx) = answer_tx.take() {
                let _ = tx.send(answer);
            }
            if healthy {
                // The guest writes its body from tasks that run as long as
                // the store is driven, here.
                let _ = tokio::time::timeout_at(deadline, done_rx).await;
            }
            healthy
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

/// A 0.3 guest's response body, telling the store's task when it is done
/// (read to its end, or dropped by hyper).
struct Finished {
    body: Body,
    done: Option<oneshot::Sender<()>>,
}

impl http_body::Body for Finished {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.done = None;
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
