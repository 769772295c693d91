//! A component that misbehaves on request, so tests can check that the host
//! contains each fault to its own request. Routes:
//!
//! - `/`               200 `hello`
//! - `/trap`           panics (a wasm trap) before responding
//! - `/trap-after-head` sends a 200 head, then panics mid-body
//! - `/no-response`    returns without setting the response
//! - `/keep-outparam`  returns without setting the response or dropping the outparam
//! - `/sleep/<ms>`     waits, then 200 `slept <ms> ms`
//! - `/echo`           streams the request body back
//! - `/print`          writes to stdout and stderr, then 200
//! - `/print-pieces`   wasmtime's `cli_serve_with_print`: half a line, a
//!                     flush, its end, an empty line and one more, on each
//!                     stream, each write through a handle of its own
//! - `/trailers`       200 `body`, then trailers `content-length`, `te`,
//!                     `authorization` (none of which a trailer may carry)
//!                     and `x-checksum`
//! - `/spam/<n>/<len>` prints `n` lines to stdout, each a terminal escape, a
//!                     carriage return and `len` `x`s, then 200
//! - `/sandbox`        reports what the sandbox grants: env, preopens, outbound HTTP
//! - `/seen`           reports the method, scheme, authority, path and headers it received
//! - `/count`          how many requests this instance has served, this one included
//! - `/loop`           computes forever without calling the host
//! - `/alloc/<mib>`    allocates and touches that many MiB, then 200 `allocated <mib> MiB`
//! - `/read-body`      reads the whole request body, then 200 `read <n> bytes`
//! - `/drip/<n>/<ms>`  streams `n` lines, one every `ms` milliseconds
//! - `/bad-headers`    tries to set an invalid header name and value, a
//!                     forbidden header, an unparsable content-length and
//!                     status 1000; 200 with what each call returned
//! - `/short-body`     declares `content-length: 100`, writes 5 bytes, finishes
//! - `/late-finish`    declares `content-length: 5`, writes 5 bytes, waits
//!                     100 ms, then finishes and 200s; its instance's count
//!                     (as `/count`) in `x-served`
//! - `/hold/<mib>/<ms>` allocates and touches that many MiB, keeps them for `ms`
//!                     milliseconds, then 200 `held <mib> MiB`
//! - `/big/<mib>`      streams that many MiB of `x` in 64 KiB writes
//! - `/status/<n>`     answers with status `n` and the body `status <n>`
//! - `/fetch?url=URL`  GETs URL (wasi:http outgoing-handler); the upstream's
//!                     status and body, or 502 and the error code
//! - `/connect?to=HOST:PORT` opens a TCP connection (wasi:sockets, through
//!                     std); 200 `connected`, or 502 and the error
//! - `/rename?from=A&to=B` renames a path in a granted directory
//! - `/symlink?target=T&link=L` makes a symbolic link `L` (a path in a
//!                     granted directory) to `T`, as written
//! - `/hoard/<files|sockets>/<n>/<ms>?at=A` opens the file `A` (or connects
//!                     to `A`, HOST:PORT) up to `n` times, keeping each open,
//!                     holds them `ms` milliseconds, then 200 `opened <k>`
//!                     and the first error

use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use wasi::io::streams::StreamError;

/// Lives as long as the instance: tells a fresh instance from a reused one.
static SERVED: AtomicU32 = AtomicU32::new(0);

struct Fault;

wasi::http::proxy::export!(Fault);

impl wasi::exports::http::incoming_handler::Guest for Fault {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let route = path.split('?').next().unwrap_or("");
        match route {
            "/trap" => panic!("fault guest: /trap was requested"),
            "/trap-after-head" => {
                let (body, stream) = start(out, 200);
                stream.blocking_write_and_flush(b"partial ").unwrap();
                // The stream is the body's child: it goes first, the body
                // stays open, so the host sees a trap mid-body.
                drop(stream);
                let _open = body;
                panic!("fault guest: trapping mid-body");
            }
            "/no-response" => {}
            "/keep-outparam" => std::mem::forget(out),
            "/echo" => echo(request, out),
            "/read-body" => {
                let n = read_all(request);
                respond(out, 200, format!("read {n} bytes\n").as_bytes());
            }
            "/print" => {
                println!("line to stdout");
                eprintln!("line to stderr");
                respond(out, 200, b"printed\n");
            }
            "/print-pieces" => {
                print!("this is half a print ");
                std::io::stdout().flush().unwrap();
                println!("to stdout");
                println!();
                println!("after empty");
                eprint!("this is half a print ");
                std::io::stderr().flush().unwrap();
                eprintln!("to stderr");
                eprintln!();
                eprintln!("after empty");
                respond(out, 200, b"printed\n");
            }
            "/sandbox" => respond(out, 200, sandbox().as_bytes()),
            "/fetch" => {
                let url = path.split_once("?url=").map_or("", |(_, url)| url);
                match fetch(url) {
                    Ok((status, body)) => respond(out, status, &body),
                    Err(error) => respond(out, 502, format!("{error}\n").as_bytes()),
                }
            }
            "/connect" => {
                let to = path.split_once("?to=").map_or("", |(_, to)| to);
                match std::net::TcpStream::connect(to) {
                    Ok(_) => respond(out, 200, b"connected\n"),
                    Err(error) => respond(out, 502, format!("{error}\n").as_bytes()),
                }
            }
            "/env" => {
                let lines: String = wasi::cli::environment::get_environment()
                    .into_iter()
                    .map(|(name, value)| format!("{name}={value}\n"))
                    .collect();
                respond(out, 200, lines.as_bytes());
            }
            "/bad-headers" => bad_headers(out),
            "/short-body" => {
                let headers = Fields::from_list(&[("content-length".into(), b"100".to_vec())]).unwrap();
                let response = OutgoingResponse::new(headers);
                let body = response.body().unwrap();
                ResponseOutparam::set(out, Ok(response));
                let stream = body.write().unwrap();
                stream.blocking_write_and_flush(b"short").unwrap();
                drop(stream);
                // The host refuses to finish a body shorter than declared.
                let finished = OutgoingBody::finish(body, None);
                println!("short body finished: {finished:?}");
            }
            "/late-finish" => {
                let n = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
                let headers = Fields::from_list(&[
                    ("content-length".into(), b"5".to_vec()),
                    ("x-served".into(), n.to_string().into_bytes()),
                ])
                .unwrap();
                let response = OutgoingResponse::new(headers);
                let body = response.body().unwrap();
                ResponseOutparam::set(out, Ok(response));
                let stream = body.write().unwrap();
                stream.blocking_write_and_flush(b"whole").unwrap();
                drop(stream);
                wasi::clocks::monotonic_clock::subscribe_duration(100_000_000).block();
                // The client has the whole body by now, and the host may have
                // let the stream go: finishing may say so, and that is fine.
                let _ = OutgoingBody::finish(body, None);
            }
            "/seen" => respond(out, 200, seen(&request).as_bytes()),
            "/count" => {
                let n = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
                respond(out, 200, format!("{n}\n").as_bytes());
            }
            "/loop" => {
                println!("looping");
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            // A granted directory's files, through wasi:filesystem.
            _ if route.starts_with("/file/") => match std::fs::read_to_string(&route["/file".len()..]) {
                Ok(text) => respond(out, 200, text.as_bytes()),
                Err(error) => respond(out, 403, format!("{error}\n").as_bytes()),
            },
            _ if route.starts_with("/write/") => match std::fs::write(&route["/write".len()..], b"written\n") {
                Ok(()) => respond(out, 200, b"written\n"),
                Err(error) => respond(out, 403, format!("{error}\n").as_bytes()),
            },
            _ if route.starts_with("/drip/") => {
                let mut parts = route["/drip/".len()..].split('/').map(str::parse::<u64>);
                match (parts.next(), parts.next()) {
                    (Some(Ok(lines)), Some(Ok(ms))) => drip(out, lines, ms),
                    _ => respond(out, 400, b"bad drip\n"),
                }
            }
            "/rename" => match std::fs::rename(query(&path, "from"), query(&path, "to")) {
                Ok(()) => respond(out, 200, b"renamed\n"),
                Err(error) => respond(out, 403, format!("{error}\n").as_bytes()),
            },
            "/symlink" => match symlink(query(&path, "target"), query(&path, "link")) {
                Ok(()) => respond(out, 200, b"linked\n"),
                Err(error) => respond(out, 403, format!("{error:?}\n").as_bytes()),
            },
            "/trailers" => {
                let response = OutgoingResponse::new(Fields::new());
                let body = response.body().unwrap();
                ResponseOutparam::set(out, Ok(response));
                let stream = body.write().unwrap();
                stream.blocking_write_and_flush(b"body").unwrap();
                drop(stream);
                let trailers = Fields::new();
                for (name, value) in [
                    ("content-length", "99"),
                    ("te", "trailers"),
                    ("authorization", "Basic eDp5"),
                    ("x-checksum", "abc"),
                ] {
                    let set = trailers.append(&name.to_string(), &value.as_bytes().to_vec());
                    println!("trailer {name}: {set:?}");
                }
                OutgoingBody::finish(body, Some(trailers)).unwrap();
            }
            _ if route.starts_with("/spam/") => {
                let mut parts = route["/spam/".len()..].split('/').map(str::parse::<usize>);
                match (parts.next(), parts.next()) {
                    (Some(Ok(lines)), Some(Ok(len))) => {
                        let line = format!("\u{1b}[2J\r{}", "x".repeat(len));
                        for _ in 0..lines {
                            println!("{line}");
                        }
                        respond(out, 200, b"spammed\n");
                    }
                    _ => respond(out, 400, b"bad spam\n"),
                }
            }
            _ if route.starts_with("/hoard/") => {
                let mut parts = route["/hoard/".len()..].split('/');
                let (kind, n, ms) = (parts.next(), parts.next(), parts.next());
                match (kind, n.map(str::parse::<usize>), ms.map(str::parse::<u64>)) {
                    (Some(kind), Some(Ok(n)), Some(Ok(ms))) => {
                        respond(out, 200, hoard(kind, n, ms, query(&path, "at")).as_bytes())
                    }
                    _ => respond(out, 400, b"bad hoard\n"),
                }
            }
            _ if route.starts_with("/hold/") => {
                let mut parts = route["/hold/".len()..].split('/').map(str::parse::<u64>);
                match (parts.next(), parts.next()) {
                    (Some(Ok(mib)), Some(Ok(ms))) => {
                        let block = vec![1u8; (mib as usize) << 20];
                        println!("holding {mib} MiB");
                        wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                        std::hint::black_box(&block);
                        respond(out, 200, format!("held {mib} MiB\n").as_bytes());
                    }
                    _ => respond(out, 400, b"bad hold\n"),
                }
            }
            _ if route.starts_with("/big/") => match route["/big/".len()..].parse::<usize>() {
                Ok(mib) => {
                    let (body, stream) = start(out, 200);
                    let chunk = vec![b'x'; 64 << 10];
                    for _ in 0..mib * 16 {
                        let mut rest = &chunk[..];
                        while !rest.is_empty() {
                            stream.subscribe().block();
                            let n = (stream.check_write().unwrap() as usize).min(rest.len());
                            stream.write(&rest[..n]).unwrap();
                            rest = &rest[n..];
                        }
                    }
                    stream.blocking_flush().unwrap();
                    drop(stream);
                    OutgoingBody::finish(body, None).unwrap();
                }
                Err(_) => respond(out, 400, b"bad size\n"),
            },
            _ if route.starts_with("/status/") => match route["/status/".len()..].parse::<u16>() {
                Ok(status) => respond(out, status, format!("status {status}\n").as_bytes()),
                Err(_) => respond(out, 400, b"bad status\n"),
            },
            _ if route.starts_with("/alloc/") => match route["/alloc/".len()..].parse::<usize>() {
                Ok(mib) => {
                    let block = vec![1u8; mib << 20];
                    let touched = std::hint::black_box(&block).iter().step_by(4096).count();
                    let text = format!("allocated {mib} MiB ({touched} pages)\n");
                    respond(out, 200, text.as_bytes());
                }
                Err(_) => respond(out, 400, b"bad size\n"),
            },
            _ => match route.strip_prefix("/sleep/").map(str::parse::<u64>) {
                Some(Ok(ms)) => {
                    // Tells a test watching the log that the request is in flight.
                    println!("sleeping {ms} ms");
                    wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                    respond(out, 200, format!("slept {ms} ms\n").as_bytes());
                }
                Some(Err(_)) => respond(out, 400, b"bad sleep\n"),
                None if route == "/" => respond(out, 200, b"hello\n"),
                None => respond(out, 404, b"no such fault\n"),
            },
        }
    }
}

fn start(out: ResponseOutparam, status: u16) -> (OutgoingBody, wasi::io::streams::OutputStream) {
    let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())]).unwrap();
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).unwrap();
    let body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().unwrap();
    (body, stream)
}

fn respond(out: ResponseOutparam, status: u16, text: &[u8]) {
    let (body, stream) = start(out, status);
    for chunk in text.chunks(4096) {
        stream.blocking_write_and_flush(chunk).unwrap();
    }
    drop(stream);
    OutgoingBody::finish(body, None).unwrap();
}

/// Reads the body to its end; panics (traps) if reading fails.
fn read_all(request: IncomingRequest) -> usize {
    let incoming = request.consume().unwrap();
    let input = incoming.stream().unwrap();
    let mut total = 0;
    loop {
        match input.blocking_read(64 * 1024) {
            Ok(chunk) => total += chunk.len(),
            Err(StreamError::Closed) => return total,
            Err(StreamError::LastOperationFailed(e)) => panic!("reading body: {}", e.to_debug_string()),
        }
    }
}

fn drip(out: ResponseOutparam, lines: u64, ms: u64) {
    let (body, stream) = start(out, 200);
    for line in 1..=lines {
        if line > 1 {
            wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        }
        stream.blocking_write_and_flush(format!("line {line}\n").as_bytes()).unwrap();
    }
    drop(stream);
    OutgoingBody::finish(body, None).unwrap();
}

/// Tries what wasi:http must refuse, and answers with what it said; a guest
/// that ignores the errors still sends a valid response.
fn bad_headers(out: ResponseOutparam) {
    let fields = Fields::new();
    let name = fields.append("bad name", b"x");
    let value = fields.append("x-bad-value", b"a\r\nInjected: yes");
    let forbidden = fields.append("connection", b"close");
    let length = fields.append("content-length", b"a lot");
    let response = OutgoingResponse::new(fields);
    let status = response.set_status_code(1000);
    let text = format!(
        "name={name:?}\nvalue={value:?}\nforbidden={forbidden:?}\nlength={length:?}\nstatus={status:?}\n"
    );
    let body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().unwrap();
    stream.blocking_write_and_flush(text.as_bytes()).unwrap();
    drop(stream);
    OutgoingBody::finish(body, None).unwrap();
}

fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let incoming = request.consume().unwrap();
    let input = incoming.stream().unwrap();
    let (body, output) = start(out, 200);
    loop {
        match input.blocking_read(64 * 1024) {
            Ok(chunk) => {
                for piece in chunk.chunks(4096) {
                    output.blocking_write_and_flush(piece).unwrap();
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => panic!("reading body: {}", e.to_debug_string()),
        }
    }
    drop(output);
    OutgoingBody::finish(body, None).unwrap();
}

/// The value of `key` in the query of `path`, as written.
fn query<'a>(path: &'a str, key: &str) -> &'a str {
    let query = path.split_once('?').map_or("", |(_, query)| query);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("")
}

/// Makes the link `link` to `target` through the preopen that holds `link`.
fn symlink(target: &str, link: &str) -> Result<(), wasi::filesystem::types::ErrorCode> {
    let preopens = wasi::filesystem::preopens::get_directories();
    let (dir, below) = preopens
        .iter()
        .filter_map(|(dir, at)| Some((dir, link.strip_prefix(at.as_str())?.trim_start_matches('/'))))
        .min_by_key(|(_, below)| below.len())
        .ok_or(wasi::filesystem::types::ErrorCode::NoEntry)?;
    dir.symlink_at(target, below)
}

/// Opens `at` up to `n` times, holds what opened for `ms` milliseconds,
/// and says how many opened and what stopped it.
fn hoard(kind: &str, n: usize, ms: u64, at: &str) -> String {
    let mut files = Vec::new();
    let mut sockets = Vec::new();
    let mut stopped = String::from("none");
    for _ in 0..n {
        let opened = match kind {
            "files" => std::fs::File::open(at).map(|file| files.push(file)),
            _ => std::net::TcpStream::connect(at).map(|socket| sockets.push(socket)),
        };
        if let Err(error) = opened {
            stopped = error.to_string();
            break;
        }
    }
    wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
    format!("opened {}\nthen: {stopped}\n", files.len() + sockets.len())
}

fn sandbox() -> String {
    let env = wasi::cli::environment::get_environment().len();
    let preopens = wasi::filesystem::preopens::get_directories().len();
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).unwrap();
    request.set_scheme(Some(&Scheme::Http)).unwrap();
    request.set_authority(Some("127.0.0.1:9")).unwrap();
    request.set_path_with_query(Some("/")).unwrap();
    let outbound = match outgoing_handler::handle(request, None) {
        Err(code) => format!("{code:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => format!("status {}", response.status()),
                Some(Ok(Err(code))) => format!("{code:?}"),
                other => format!("{other:?}"),
            }
        }
    };
    format!("env={env} preopens={preopens} outbound={outbound}\n")
}

/// GETs an absolute `http(s)://authority/path` URL.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(format!("not an http(s) URL: {url}")),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).unwrap();
    request.set_scheme(Some(&scheme)).unwrap();
    request.set_authority(Some(authority)).unwrap();
    request.set_path_with_query(Some(path)).unwrap();
    let future = outgoing_handler::handle(request, None).map_err(|code| format!("{code:?}"))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(format!("{code:?}")),
        other => return Err(format!("{other:?}")),
    };
    let status = response.status();
    let body = response.consume().unwrap();
    let stream = body.stream().unwrap();
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
    drop(stream);
    drop(body);
    Ok((status, bytes))
}

fn seen(request: &IncomingRequest) -> String {
    let mut text = format!(
        "method={:?}\nscheme={:?}\npath={}\nauthority={}\n",
        request.method(),
        request.scheme(),
        request.path_with_query().unwrap_or_default(),
        request.authority().unwrap_or_default()
    );
    for (name, value) in request.headers().entries() {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(&value)));
    }
    text
}
