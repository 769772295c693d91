//! The demo app, in Rust: the same five routes as every guest-examples/*-demo.
//!
//! `GET /` greets, `GET /hello/NAME` answers `{"hello": NAME}`, `POST /echo`
//! streams the request body back with its content type, `GET /env/NAME`
//! shows an environment variable the app was granted, anything else is 404.

use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use wasi::io::streams::StreamError;

struct Demo;

wasi::http::proxy::export!(Demo);

impl wasi::exports::http::incoming_handler::Guest for Demo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let path = target.split('?').next().unwrap_or("/");
        let get = matches!(request.method(), Method::Get);
        match path {
            "/" if get => reply(response_out, 200, "text/plain; charset=utf-8", "Hello from Rust!\n"),
            "/echo" if matches!(request.method(), Method::Post) => echo(request, response_out),
            "/echo" => reply(response_out, 405, "text/plain; charset=utf-8", "use POST\n"),
            _ if get && path.starts_with("/hello/") => {
                let name = percent_decode(&path["/hello/".len()..]);
                let json = format!("{{\"hello\": \"{}\"}}\n", json_escape(&name));
                reply(response_out, 200, "application/json", &json)
            }
            _ if get && path.starts_with("/env/") => {
                match std::env::var(percent_decode(&path["/env/".len()..])) {
                    Ok(value) => reply(response_out, 200, "text/plain; charset=utf-8", &format!("{value}\n")),
                    Err(_) => reply(response_out, 404, "text/plain; charset=utf-8", "no such variable granted\n"),
                }
            }
            _ => reply(response_out, 404, "text/plain; charset=utf-8", "not found\n"),
        }
    }
}

fn reply(response_out: ResponseOutparam, status: u16, content_type: &str, text: &str) {
    let body = start(response_out, status, content_type.as_bytes());
    let stream = body.write().expect("a new body has a stream");
    // A client that went away is not this app's error: the host logs it.
    let _ = stream.blocking_write_and_flush(text.as_bytes());
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

/// Sends the head and hands back the body to write.
fn start(response_out: ResponseOutparam, status: u16, content_type: &[u8]) -> OutgoingBody {
    let headers = Fields::from_list(&[("content-type".to_string(), content_type.to_vec())])
        .expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(response_out, Ok(response));
    body
}

/// Copies the request body to the response as it arrives, never whole.
fn echo(request: IncomingRequest, response_out: ResponseOutparam) {
    let content_type = request
        .headers()
        .get("content-type")
        .into_iter()
        .next()
        .unwrap_or_else(|| b"application/octet-stream".to_vec());
    let incoming = request.consume().expect("the body is read once");
    let input = incoming.stream().expect("a new body has a stream");
    let body = start(response_out, 200, &content_type);
    let output = body.write().expect("a new body has a stream");
    let copied = loop {
        match output.blocking_splice(&input, 64 * 1024) {
            Ok(_) => continue,
            Err(StreamError::Closed) => break true,
            Err(StreamError::LastOperationFailed(_)) => break false,
        }
    };
    // Children before parents: the streams, then the bodies, then the request.
    drop(input);
    drop(IncomingBody::finish(incoming));
    let _ = output.blocking_flush();
    drop(output);
    if copied {
        let _ = OutgoingBody::finish(body, None);
    }
    // An unfinished body tells the client the echo was cut short.
    drop(request);
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}
