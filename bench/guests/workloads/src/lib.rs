//! The benchmark workloads as one component. bench/native-hello serves the
//! same routes with the same bodies natively, so the two compare like for like.
//!
//! - `/`      the hello body
//! - `/64k`   65,536 bytes of `x`
//! - `/echo`  the request body, streamed back
//! - `/cpu`   a fixed amount of integer work (see `spin`), then its result

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{OutputStream, StreamError};

struct Workloads;

wasi::http::proxy::export!(Workloads);

const HELLO: &[u8] = b"Hello from a WebAssembly component!\n";

/// Rounds of xorshift in `/cpu`: about a millisecond of work.
const CPU_ROUNDS: u64 = 2_000_000;

impl wasi::exports::http::incoming_handler::Guest for Workloads {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        match path.as_str() {
            "/64k" => respond(out, &[b'x'; 65536]),
            "/echo" => echo(request, out),
            "/cpu" => respond(out, format!("{}\n", spin(CPU_ROUNDS)).as_bytes()),
            _ => respond(out, HELLO),
        }
    }
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

fn start(out: ResponseOutparam) -> (OutgoingBody, OutputStream) {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .unwrap();
    let response = OutgoingResponse::new(headers);
    let body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().unwrap();
    (body, stream)
}

fn write_all(stream: &OutputStream, bytes: &[u8]) {
    for chunk in bytes.chunks(4096) {
        stream.blocking_write_and_flush(chunk).unwrap();
    }
}

fn respond(out: ResponseOutparam, bytes: &[u8]) {
    let (body, stream) = start(out);
    write_all(&stream, bytes);
    drop(stream);
    OutgoingBody::finish(body, None).unwrap();
}

fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let incoming = request.consume().unwrap();
    let input = incoming.stream().unwrap();
    let (body, output) = start(out);
    loop {
        match input.blocking_read(64 * 1024) {
            Ok(chunk) => write_all(&output, &chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => panic!("reading body: {}", e.to_debug_string()),
        }
    }
    drop(output);
    OutgoingBody::finish(body, None).unwrap();
}
