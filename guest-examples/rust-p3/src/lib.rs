//! A WASI 0.3 app: exports `wasi:http/handler@0.3.0`, whose `handle` is an
//! async function, so one instance can serve several requests at once.
//!
//! - `/`              `Hello from a WASI 0.3 component!`
//! - `/echo`          streams the request body back as it arrives
//! - `/sleep/<ms>`    prints `sleeping <ms> ms`, waits (without holding a
//!                    thread), then answers `slept <ms> ms`
//! - `/count`         requests this instance has started, this one included
//! - `/trap`          panics: the host answers 500
//! - `/trailers`      `with trailers`, and a trailer `x-checksum: done`
//!
//! Each text answer says in `x-instance-request` which request of its
//! instance it was: requests that share an instance count up together.

wit_bindgen::generate!({
    path: "../../wit/0.3",
    world: "wasmhost:app03/app",
    generate_all,
});

use exports::wasi::http::handler::Guest;
use std::sync::atomic::{AtomicU32, Ordering};
use wasi::http::types::{ErrorCode, Fields, Request, Response};

/// Lives as long as the instance.
static STARTED: AtomicU32 = AtomicU32::new(0);

struct App;

impl Guest for App {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let n = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
        let path = request.get_path_with_query().unwrap_or_default();
        let route = path.split('?').next().unwrap_or("").to_string();
        match route.as_str() {
            "/echo" => echo(request),
            "/count" => Ok(text(format!("{n}\n"), n)),
            "/trap" => panic!("rust-p3: /trap was requested"),
            "/trailers" => Ok(with_trailers()),
            _ if route.starts_with("/sleep/") => match route["/sleep/".len()..].parse::<u64>() {
                Ok(ms) => {
                    println!("sleeping {ms} ms");
                    wasi::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                    Ok(text(format!("slept {ms} ms\n"), n))
                }
                Err(_) => Ok(text("bad sleep\n".into(), n)),
            },
            _ => Ok(text("Hello from a WASI 0.3 component!\n".into(), n)),
        }
    }
}

/// A response whose body is `body`, written by a task of its own after
/// `handle` has returned; `n` is which request of the instance it answers.
fn text(body: String, n: u32) -> Response {
    let headers = Fields::from_list(&[
        (
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        ),
        ("x-instance-request".to_string(), n.to_string().into_bytes()),
    ])
    .expect("valid headers");
    let (mut writer, reader) = wit_stream::new::<u8>();
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(reader), trailers);
    wit_bindgen::spawn(async move {
        writer.write_all(body.into_bytes()).await;
    });
    response
}

/// The request body, streamed back as it arrives.
fn echo(request: Request) -> Result<Response, ErrorCode> {
    let (_, request_done) = wit_future::new(|| Ok(()));
    let (mut incoming, _request_trailers) = Request::consume_body(request, request_done);
    let (mut writer, reader) = wit_stream::new::<u8>();
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(reader), trailers);
    wit_bindgen::spawn(async move {
        loop {
            let (result, chunk) = incoming.read(Vec::with_capacity(64 << 10)).await;
            match result {
                wit_bindgen::StreamResult::Complete(_) => {
                    if !writer.write_all(chunk).await.is_empty() {
                        return;
                    }
                }
                wit_bindgen::StreamResult::Dropped | wit_bindgen::StreamResult::Cancelled => {
                    return;
                }
            }
        }
    });
    Ok(response)
}

/// A body, then a trailer.
fn with_trailers() -> Response {
    let (mut writer, reader) = wit_stream::new::<u8>();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(reader), trailers_rx);
    wit_bindgen::spawn(async move {
        writer.write_all(b"with trailers\n".to_vec()).await;
        drop(writer);
        let trailers = Fields::from_list(&[("x-checksum".to_string(), b"done".to_vec())])
            .expect("a valid trailer");
        let _ = trailers_tx.write(Ok(Some(trailers))).await;
    });
    response
}

export!(App);
