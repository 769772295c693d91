//! The smallest useful wasmhost app: answers every request with a greeting.
//!
//! It exports `wasi:http/incoming-handler`, the one interface wasmhost calls,
//! and writes the body through the outgoing-body stream as any streaming
//! handler would.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

wasi::http::proxy::export!(Hello);

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("content-type is a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(response_out, Ok(response));

        let stream = body.write().expect("a new body has a stream");
        stream
            .blocking_write_and_flush(b"Hello from a WebAssembly component!\n")
            .expect("the client is still connected");
        drop(stream);
        OutgoingBody::finish(body, None).expect("the body is complete");
    }
}
