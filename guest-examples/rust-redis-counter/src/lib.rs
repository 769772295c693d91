//! A counter kept in Redis: every request to `/` increments the key `hits`
//! and answers `count N`. Redis's address comes from the environment
//! (`REDIS_URL=redis://HOST:PORT`), and the connection is an ordinary
//! `std::net::TcpStream`, which on wasm32-wasip2 is wasi:sockets: wasmhost
//! lets it through only if `allowed_outbound_hosts` grants
//! `tcp://HOST:PORT`. Without the grant the connect fails and the app
//! answers 503 with the error, as it would for a database that is down.
//!
//! An instance that serves several requests (`reuse`) keeps its
//! connection; a fresh instance per request opens one each time.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// The connection of this instance, once made.
static REDIS: Mutex<Option<BufReader<TcpStream>>> = Mutex::new(None);

struct Counter;

wasi::http::proxy::export!(Counter);

impl wasi::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, text) = match path.as_str() {
            "/" => match count() {
                Ok(n) => (200, format!("count {n}\n")),
                Err(error) => (503, format!("{error}\n")),
            },
            _ => (404, "not found\n".to_string()),
        };
        respond(out, status, text.as_bytes());
    }
}

/// `INCR hits`, on this instance's connection or a new one.
fn count() -> Result<i64, String> {
    let mut redis = REDIS.lock().unwrap_or_else(|e| e.into_inner());
    // A kept connection may have been closed by Redis; retry once on a new one.
    for attempt in 0..2 {
        if redis.is_none() {
            *redis = Some(connect()?);
        }
        let connection = redis.as_mut().expect("connected just above");
        match incr(connection, "hits") {
            Ok(n) => return Ok(n),
            Err(error) => {
                *redis = None;
                if attempt == 1 {
                    return Err(format!("Redis: {error}"));
                }
            }
        }
    }
    unreachable!("the loop returns on its second attempt")
}

fn connect() -> Result<BufReader<TcpStream>, String> {
    let url = std::env::var("REDIS_URL")
        .map_err(|_| "REDIS_URL is not set; grant it with env = { REDIS_URL = \"redis://127.0.0.1:6379\" }".to_string())?;
    let address = url
        .strip_prefix("redis://")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .ok_or_else(|| format!("REDIS_URL {url} is not redis://HOST:PORT"))?;
    let stream = TcpStream::connect(address)
        .map_err(|error| format!("cannot reach Redis at {address}: {error}"))?;
    Ok(BufReader::new(stream))
}

/// Sends `INCR key` in Redis's protocol (RESP) and reads the integer reply.
fn incr(connection: &mut BufReader<TcpStream>, key: &str) -> Result<i64, String> {
    let command = format!("*2\r\n$4\r\nINCR\r\n${}\r\n{key}\r\n", key.len());
    connection
        .get_mut()
        .write_all(command.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    connection.read_line(&mut reply).map_err(|e| e.to_string())?;
    match reply.strip_prefix(':') {
        Some(n) => n.trim_end().parse().map_err(|_| format!("odd reply {reply:?}")),
        None if reply.is_empty() => Err("connection closed".into()),
        None => Err(format!("error reply {}", reply.trim_end())),
    }
}

fn respond(out: ResponseOutparam, status: u16, text: &[u8]) {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("a new body has a stream");
    stream
        .blocking_write_and_flush(text)
        .expect("the client is still connected");
    drop(stream);
    OutgoingBody::finish(body, None).expect("the body is complete");
}
