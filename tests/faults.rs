//! A misbehaving guest costs only its own request: the status says what went
//! wrong, the log names the app, and the next request is served.

use crate::WASMHOST;
use std::time::Duration;
use wasmhost_tests::{Guest, Server, get, guest};

fn fault_server() -> Server {
    Server::start(WASMHOST, &[guest(Guest::Fault).to_str().unwrap()])
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
}

#[test]
fn many_traps_in_a_row_leave_the_server_serving() {
    let server = fault_server();
    for _ in 0..200 {
        assert_eq!(get(&server.url("/trap")).unwrap().status, 500);
    }
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
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
}

#[test]
fn a_handler_that_returns_keeping_its_outparam_is_a_502_at_once() {
    // The outparam's handle stays in the guest's table (with --reuse the
    // instance lives on): the host must not wait for a response that
    // cannot come.
    let server = Server::start(
        WASMHOST,
        &[guest(Guest::Fault).to_str().unwrap(), "--reuse", "10"],
    );
    let started = std::time::Instant::now();
    let reply = get(&server.url("/keep-outparam")).unwrap();
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
}

#[test]
fn ten_thousand_faults_give_back_every_slot_permit_and_megabyte() {
    // Two places to run and none to wait: a permit or a pool slot (1000)
    // kept by a faulting request would turn the good requests below away.
    let server = Server::start(
        WASMHOST,
        &[
            guest(Guest::Fault).to_str().unwrap(),
            "--concurrency",
            "2",
            "--queue",
            "0",
        ],
    );
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
}
