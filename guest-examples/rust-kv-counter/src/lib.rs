//! A visit counter kept in a `wasi:keyvalue` bucket, greeting with a
//! `wasi:config` variable. Every instance of the app, and the next version
//! after a reload, counts on from the same number: the count lives in the
//! bucket the server grants (in its memory, or in Redis), not in the guest.
//!
//! `GET /` increments the count atomically; `GET /visits` reads it and
//! writes it back plus one (a GET and a SET, as a cache does).

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "kv-counter", generate_all });
}

use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::{atomics, store};

struct Counter;

impl wasi::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = match answer(&path) {
            Ok(text) => (200, text),
            Err((status, text)) => (status, text),
        };
        respond(out, status, &body);
    }
}

type Answer = Result<String, (u16, String)>;

fn answer(path: &str) -> Answer {
    let greeting = config::get("greeting")
        .map_err(|e| (500, format!("config: {e:?}\n")))?
        .unwrap_or_else(|| "Hello".to_string());
    // The default bucket, by the name `wasmtime serve` gives it ("");
    // wasmhost also takes "default", Spin's name. A server that granted no
    // bucket answers access-denied.
    let bucket = store::open("").map_err(|e| (503, format!("keyvalue: {e:?}\n")))?;
    let count = match path {
        "/" => atomics::increment(&bucket, "hits", 1).map_err(failed)?,
        "/visits" => {
            let seen = bucket.get("visits").map_err(failed)?;
            let seen: u64 = seen
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| text.parse().ok())
                .unwrap_or(0);
            bucket
                .set("visits", (seen + 1).to_string().as_bytes())
                .map_err(failed)?;
            seen + 1
        }
        _ => return Err((404, "not found\n".into())),
    };
    Ok(format!("{greeting}, visitor {count}\n"))
}

fn failed(error: store::Error) -> (u16, String) {
    (503, format!("keyvalue: {error:?}\n"))
}

fn respond(out: ResponseOutparam, status: u16, body: &str) {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .expect("a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body, taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the stream, taken once");
    stream
        .blocking_write_and_flush(body.as_bytes())
        .expect("the client reads the body");
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("the body ends");
}

wasi::http::proxy::export!(Counter);
