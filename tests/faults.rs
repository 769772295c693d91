//! A misbehaving guest costs only its own request: the status says what went
//! wrong, the log names the app, the next request is served, and so is
//! another app's.

use crate::WASMHOST;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use wasmhost_tests::{Guest, Server, get, guest};

/// The fault guest at `/`, the Rust hello at `/other`.
fn fault_server() -> Server {
    fault_server_with(&[])
}

fn fault_server_with(flags: &[&str]) -> Server {
    let other = format!("--mount=/other={}", guest(Guest::RustHello).display());
    let mut args = vec![guest(Guest::Fault).to_str().unwrap(), other.as_str()];
    args.extend_from_slice(flags);
    Server::start(WASMHOST, &args)
}

/// The other app answers, and is not held up. The bound is generous on
/// purpose: an app held up by the faulty one would wait for its 60 s
/// timeout or for ever, and a loaded CI machine can take a second or two
/// for a request; how fast it answers is measured in bench/, not here.
fn assert_other_app_serves(server: &Server) {
    let started = Instant::now();
    let reply = get(&server.url("/other/")).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "Hello from a WebAssembly component!\n");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the other app took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_trap_is_a_500_and_the_next_request_succeeds() {
    let server = fault_server();
    let reply = get(&server.url("/trap")).unwrap();
    assert_eq!(reply.status, 500);
    assert_eq!(
        reply.body,
        "500 Internal Server Error: the application failed while handling this request\n"
    );
    let next = get(&server.url("/")).unwrap();
    assert_eq!((next.status, next.body.as_str()), (200, "hello\n"));
    assert_other_app_serves(&server);
}

#[test]
fn a_trap_is_logged_with_the_app_and_the_trap() {
    let server = fault_server();
    assert_eq!(get(&server.url("/trap")).unwrap().status, 500);
    assert!(
        server.wait_for_log(
            "guest trapped: wasm trap: wasm `unreachable`",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    let log = server.log();
    let line = log.lines().find(|l| l.contains("guest trapped")).unwrap();
    assert!(line.contains("app=/"), "{line}");
    // The guest's own panic message reaches the log through its stderr.
    assert!(
        log.contains("[/] stderr: fault guest: /trap was requested"),
        "{log}"
    );
    assert_other_app_serves(&server);
}

#[test]
fn many_traps_in_a_row_leave_the_server_serving() {
    let server = fault_server();
    for _ in 0..200 {
        assert_eq!(get(&server.url("/trap")).unwrap().status, 500);
    }
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
    assert_other_app_serves(&server);
}

#[test]
fn a_trap_after_the_response_head_cuts_only_that_response() {
    let server = fault_server();
    // The head was sent as 200, so the only honest signal left is an
    // incomplete body: the client sees an error, not a clean 200.
    let outcome = get(&server.url("/trap-after-head"));
    assert!(
        outcome.is_err(),
        "a truncated body must not read as complete: {outcome:?}"
    );
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
    assert_other_app_serves(&server);
}

#[test]
fn a_handler_that_never_responds_is_a_502() {
    let server = fault_server();
    let reply = get(&server.url("/no-response")).unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(
        reply.body,
        "502 Bad Gateway: the application returned without a response\n"
    );
    assert!(server.wait_for_log(
        "guest returned without sending a response",
        Duration::from_secs(10)
    ));
    assert_other_app_serves(&server);
}

/// An instance whose guest returned without a response is never handed
/// another request. One that had answered before (componentize-js's fetch
/// event, which answers once per instance) makes the version's instances
/// serve one request each, as in fresh mode. The operator is told once,
/// each, why.
#[test]
fn an_instance_that_returned_without_a_response_is_not_reused() {
    let server = fault_server_with(&["--reuse", "100", "--spares", "0"]);
    // On an instance's first request: that instance is retired.
    assert_eq!(get(&server.url("/no-response")).unwrap().status, 502);
    assert_eq!(
        get(&server.url("/count")).unwrap().body,
        "1\n",
        "{}",
        server.log()
    );
    assert_eq!(get(&server.url("/count")).unwrap().body, "2\n");
    assert!(server.wait_for_log(
        "each instance that does is retired",
        Duration::from_secs(10)
    ));
    // After it answered twice: every instance from now on serves once.
    assert_eq!(get(&server.url("/no-response")).unwrap().status, 502);
    for _ in 0..5 {
        assert_eq!(
            get(&server.url("/count")).unwrap().body,
            "1\n",
            "{}",
            server.log()
        );
    }
    assert_eq!(get(&server.url("/no-response")).unwrap().status, 502);
    assert!(server.wait_for_log("as in fresh mode", Duration::from_secs(10)));
    for line in ["each instance that does is retired", "as in fresh mode"] {
        assert_eq!(server.log().matches(line).count(), 1, "{}", server.log());
    }
}

/// hyper lets a body go once the length its head declared is sent, often
/// before the guest finishes it (componentize-js awaits the app's stream
/// between its last write and the finish): the response is whole, and the
/// instance serves on (one place, so each request waits for the instance
/// the last one ran on).
#[test]
fn a_body_finished_after_its_declared_length_was_sent_is_whole() {
    let server = fault_server_with(&["--reuse", "100", "--spares", "0", "--concurrency", "1"]);
    for served in 1..=3 {
        let reply = get(&server.url("/late-finish")).unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "whole"));
        assert_eq!(
            reply.header("x-served"),
            Some(served.to_string().as_str()),
            "{}",
            server.log()
        );
    }
    assert_eq!(get(&server.url("/count")).unwrap().body, "4\n");
    assert!(!server.log().contains("WARN"), "{}", server.log());
}

#[test]
fn a_handler_that_returns_keeping_its_outparam_is_a_502_at_once() {
    // The outparam's handle stays in the guest's table (with --reuse the
    // instance lives on): the host must not wait for a response that
    // cannot come.
    let server = fault_server_with(&["--reuse", "10"]);
    let started = Instant::now();
    let reply = get(&server.url("/keep-outparam")).unwrap();
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
    assert_other_app_serves(&server);
}

#[test]
fn invalid_headers_and_status_are_refused_inside_the_guest() {
    // wasi:http checks every header and the status as the guest sets them,
    // so none of these can reach a client; a guest that ignores the errors
    // sends a valid response without them.
    let server = fault_server();
    let reply = get(&server.url("/bad-headers")).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        "name=Err(HeaderError::InvalidSyntax)\n\
         value=Err(HeaderError::InvalidSyntax)\n\
         forbidden=Err(HeaderError::Forbidden)\n\
         length=Err(HeaderError::InvalidSyntax)\n\
         status=Err(())\n"
    );
    for name in ["x-bad-value", "injected", "connection", "content-length"] {
        assert_eq!(reply.header(name), None, "{name}");
    }
    assert_other_app_serves(&server);
}

#[test]
fn a_body_shorter_than_its_content_length_is_cut_and_logged() {
    let server = fault_server();
    let outcome = get(&server.url("/short-body"));
    assert!(
        outcome.is_err(),
        "a short body must not read as complete: {outcome:?}"
    );
    assert!(
        server.wait_for_log("guest abandoned its response body", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let log = server.log();
    let line = log.lines().find(|l| l.contains("abandoned")).unwrap();
    assert!(line.contains("app=/"), "{line}");
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
    assert_other_app_serves(&server);
}

#[test]
fn a_slow_streaming_response_does_not_hold_up_another_app() {
    let server = fault_server();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /drip/8/250 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Read until the first line has arrived: the stream is under way.
    let mut reply = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&reply).contains("line 1\n") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buffer[..n]);
    }
    assert_other_app_serves(&server);
    stream.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    for line in 1..=8 {
        assert!(reply.contains(&format!("line {line}\n")), "{reply}");
    }
    assert!(reply.ends_with("\r\n0\r\n\r\n"), "{reply}");
}

#[test]
fn ten_thousand_faults_give_back_every_slot_permit_and_megabyte() {
    // Two places to run and none to wait: a permit or a pool slot (1000)
    // kept by a faulting request would turn the good requests below away.
    let server = fault_server_with(&["--concurrency", "2", "--queue", "0"]);
    let url = server.url("/trap");
    let fault_all = |count: usize| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let agent = wasmhost_tests::client();
                    for _ in 0..count / 2 {
                        let status = agent.get(&url).call().unwrap().status().as_u16();
                        assert_eq!(status, 500);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    };
    fault_all(500);
    let before = server.rss_kib();
    fault_all(10_000);
    let after = server.rss_kib();
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    for _ in 0..2 {
        assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
    }
    assert_other_app_serves(&server);
}
