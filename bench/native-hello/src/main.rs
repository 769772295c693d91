//! The benchmark ceiling: the workloads of bench/guests/workloads served
//! natively by hyper on tokio, with the same connection builder and socket
//! options as wasmhost. Usage: native-hello PORT [CERT.pem KEY.pem] (with a
//! certificate and key it serves HTTPS, ALPN h2 and http/1.1, with rustls as
//! wasmhost does).
//!
//! - `/`      the hello body
//! - `/64k`   65,536 bytes of `x`
//! - `/echo`  the request body, streamed back
//! - `/cpu`   the same integer work as the component, then its result
//! - `/connections` how many connections it has accepted (bench/outbound
//!   serves it as an upstream and counts what a client opened)

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::service::service_fn;
use hyper::{Request, Response, body::Incoming, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

static ACCEPTED: AtomicU64 = AtomicU64::new(0);

const HELLO: &[u8] = b"Hello from a WebAssembly component!\n";
const CPU_ROUNDS: u64 = 2_000_000;

type Body = BoxBody<Bytes, hyper::Error>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn spin(rounds: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

async fn serve(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let body = match request.uri().path() {
        "/64k" => full(vec![b'x'; 65536]),
        "/echo" => request.into_body().boxed(),
        "/cpu" => full(format!("{}\n", spin(std::hint::black_box(CPU_ROUNDS)))),
        "/connections" => full(format!("{}\n", ACCEPTED.load(Ordering::Relaxed))),
        _ => full(Bytes::from_static(HELLO)),
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8090);
    let tls = match (std::env::args().nth(2), std::env::args().nth(3)) {
        (Some(cert), Some(key)) => Some(acceptor(&cert, &key)),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("serving on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
        stream.set_nodelay(true)?;
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service_fn(serve))
                        .await;
                }
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service_fn(serve))
                            .await;
                    }
                }
            }
        });
    }
}

fn acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("reading the certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("a PEM certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("a PEM key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}
