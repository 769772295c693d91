//! A guest's outbound HTTP (`wasi:http/outgoing-handler`): the app's
//! grants checked (`egress`), then the request sent on the app's pool of
//! upstream connections (`upstream_pool`), within its timeout and its
//! concurrency cap.
//!
//! wasmtime-wasi-http's own sender opens a connection for every request
//! and closes it after the response, so every call pays a TCP (and TLS)
//! handshake and leaves a socket in TIME_WAIT. Here each app has one pool
//! whose keep-alive connections are shared by all its instances and
//! requests; HTTPS upstreams that offer HTTP/2 get one connection for
//! everything. One per app, not per process, because apps trust different
//! CAs and are capped separately.

use crate::config::outbound::{Host, Scheme};
use crate::config::{Grants, Limits};
use crate::grants::egress::Egress;
use crate::grants::upstream::{ConnectError, Connector};
use crate::grants::upstream_pool::{Lease, SendError, UpstreamPool};
use crate::telemetry::request_metrics::{self, OutboundMetrics};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// The outbound HTTP of one app.
pub struct Outbound {
    egress: Arc<Egress>,
    pool: UpstreamPool,
    /// One permit per request in flight, held until its response body ends.
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    /// With an admin listener: what the app's requests are counted with.
    metrics: Option<OutboundMetrics>,
}

impl Outbound {
    pub fn new(route: &str, egress: Arc<Egress>, grants: &Grants, limits: &Limits) -> Self {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(ca) = &grants.outbound_ca {
            // Parsed when the configuration was read; one that does not
            // make a trust anchor was refused then.
            roots.add_parsable_certificates(ca.certs.iter().cloned());
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = Connector {
            egress: egress.clone(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            timeout: limits.outbound_timeout,
        };
        let concurrency = limits.outbound_concurrency as usize;
        Self {
            egress,
            // No origin needs more connections than requests in flight.
            pool: UpstreamPool::new(connector, concurrency),
            in_flight: Arc::new(Semaphore::new(concurrency)),
            timeout: limits.outbound_timeout,
            metrics: request_metrics::get().map(|counts| counts.outbound(&Arc::from(route))),
        }
    }

    /// Sends a guest's request, if a grant allows it. The guest's own
    /// request options may shorten the app's timeout, never lengthen it.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let uri = request.uri();
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return Err(Error::HttpProtocolError),
        };
        let port = uri.port_u16().or(scheme.default_port()).unwrap_or_default();
        // Owned: the request moves into the pool with its URI.
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
        let host = Host::parse(&host);
        if !self.egress.allows(scheme, host, port) {
            if let Some(metrics) = &self.metrics {
                metrics.denied();
            }
            return Err(Error::HttpRequestDenied);
        }
        let grant = self
            .metrics
            .as_ref()
            .and_then(|_| Some(self.egress.granting(scheme, host, port)?.to_string()));
        let options = options.unwrap_or_default();
        let within = |asked: Option<Duration>| asked.map_or(self.timeout, |t| t.min(self.timeout));
        // The connect and the wait for the head together, as the guest's
        // own connect and first-byte timeouts add up.
        let head_timeout = match (options.connect_timeout, options.first_byte_timeout) {
            (None, None) => self.timeout,
            (connect, first_byte) => within(Some(
                connect.unwrap_or(self.timeout) + first_byte.unwrap_or(self.timeout),
            )),
        };
        let between_reads = within(options.between_bytes_timeout);
        // Past the cap a request waits for a place, within its guest's own
        // request timeout; its head timeout starts once it has one.
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let response =
            tokio::time::timeout(head_timeout, self.pool.send(scheme, host, port, request)).await;
        if let (Some(metrics), Some(grant)) = (&self.metrics, &grant) {
            let status = match &response {
                Ok(Ok((response, _))) => Some(response.status().as_u16()),
                _ => None,
            };
            metrics.sent(grant, status);
        }
        let (response, lease) = response
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(error_for_guest)?;
        Ok(response.map(|body| {
            UpstreamBody {
                body,
                between_reads,
                idle: None,
                lease,
                permit: Some(permit),
            }
            .boxed_unsync()
        }))
    }
}

/// The wasi:http error a failed request gives the guest.
fn error_for_guest(error: SendError) -> Error {
    match error {
        SendError::Http(error) => hyper_error(&error),
        SendError::Connect(error) => match error {
            ConnectError::Internal(_) => Error::DestinationIpProhibited,
            ConnectError::Lookup { .. } | ConnectError::NoAddress(_) => Error::DnsError {
                rcode: Some("name unresolvable".into()),
                info_code: None,
            },
            ConnectError::Timeout => Error::ConnectionTimeout,
            ConnectError::Connect(_) => Error::ConnectionRefused,
            ConnectError::Tls(error) if error.get_ref().is_some_and(is_certificate_error) => {
                Error::TlsCertificateError
            }
            ConnectError::Tls(_) => Error::TlsProtocolError,
        },
    }
}

fn is_certificate_error(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(
        error.downcast_ref::<rustls::Error>(),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

fn hyper_error(error: &hyper::Error) -> Error {
    if error.is_timeout() {
        Error::HttpResponseTimeout
    } else if error.is_incomplete_message() {
        Error::HttpResponseIncomplete
    } else if error.is_closed() || error.is_canceled() {
        Error::ConnectionTerminated
    } else {
        Error::HttpProtocolError
    }
}

/// An upstream's response body as the guest reads it: each read within
/// the timeout; at its end the connection goes back to the pool and the
/// app's concurrency permit is given back.
struct UpstreamBody {
    body: hyper::body::Incoming,
    between_reads: Duration,
    /// Armed while a read waits.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    lease: Lease,
    permit: Option<OwnedSemaphorePermit>,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let Poll::Ready(frame) = polled else {
            let between_reads = this.between_reads;
            let idle = this
                .idle
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(between_reads)));
            ready!(idle.as_mut().poll(cx));
            this.permit = None;
            return Poll::Ready(Some(Err(Error::ConnectionReadTimeout)));
        };
        this.idle = None;
        match frame {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(error)) => {
                this.permit = None;
                Poll::Ready(Some(Err(hyper_error(&error))))
            }
            None => {
                this.lease.give_back();
                this.permit = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
