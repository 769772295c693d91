//! SIGINT and SIGTERM: stop accepting, let requests in flight finish (up to
//! --shutdown-timeout), exit 0.

use crate::WASMHOST;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use wasmhost_tests::{Guest, Server, get, guest, libc};

fn fault_server(extra: &[&str]) -> Server {
    let mut args = vec![guest(Guest::Fault).to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(WASMHOST, &args)
}

/// Starts `/sleep/<ms>` on a thread and returns once the guest is running it.
fn slow_request(
    server: &Server,
    ms: u64,
) -> std::thread::JoinHandle<Result<(u16, String), String>> {
    let url = server.url(&format!("/sleep/{ms}"));
    let thread = std::thread::spawn(move || {
        get(&url)
            .map(|r| (r.status, r.body))
            .map_err(|e| e.to_string())
    });
    assert!(
        server.wait_for_log(&format!("[/] sleeping {ms} ms"), Duration::from_secs(30)),
        "{}",
        server.log()
    );
    thread
}

fn finishes_in_flight_request_on(signal: i32) {
    let mut server = fault_server(&[]);
    let request = slow_request(&server, 1500);
    server.signal(signal);
    assert!(
        server.wait_for_log("shutting down", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    // Accepting stopped with the signal.
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "new connections must be refused"
    );
    assert_eq!(
        request.join().unwrap(),
        Ok((200, "slept 1500 ms\n".to_string()))
    );
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("exits after draining");
    assert_eq!(status.code(), Some(0), "{}", server.log());
}

#[test]
fn sigterm_lets_a_slow_request_finish_then_exits_zero() {
    finishes_in_flight_request_on(libc::SIGTERM);
}

#[test]
fn sigint_lets_a_slow_request_finish_then_exits_zero() {
    finishes_in_flight_request_on(libc::SIGINT);
}

#[test]
fn the_shutdown_timeout_cuts_requests_that_run_too_long() {
    let mut server = fault_server(&["--shutdown-timeout", "300ms"]);
    let request = slow_request(&server, 60_000);
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("exits at the timeout");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(signalled.elapsed() < Duration::from_secs(20));
    assert!(
        request.join().unwrap().is_err(),
        "the cut request must fail"
    );
    assert!(
        server
            .log()
            .contains("shutdown timeout passed; cutting 1 connection(s)"),
        "{}",
        server.log()
    );
}

#[test]
fn a_second_signal_cuts_the_drain_short() {
    let mut server = fault_server(&[]);
    let request = slow_request(&server, 60_000);
    server.signal(libc::SIGTERM);
    assert!(server.wait_for_log("shutting down", Duration::from_secs(10)));
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("exits on the second signal");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(request.join().unwrap().is_err());
    assert!(server.log().contains("second signal"), "{}", server.log());
}

#[test]
fn idle_keep_alive_connections_do_not_delay_shutdown() {
    let mut server = fault_server(&[]);
    let mut idle = TcpStream::connect(server.addr).unwrap();
    write!(idle, "GET / HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // The connection stays open and idle; the default drain timeout is 30 s.
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "an idle connection held shutdown for {:?}",
        signalled.elapsed()
    );
}

#[test]
fn sigterm_answers_running_and_queued_requests_and_closes_keep_alive_politely() {
    // One request runs at a time; the rest queue. The debug log says when a
    // request joins the queue.
    let mut command = std::process::Command::new(WASMHOST);
    command
        .arg("serve")
        .arg(guest(Guest::Fault))
        .args(["--port", "0", "--concurrency", "1", "--queue", "8"])
        .env("RUST_LOG", "info,wasmhost=debug");
    let mut server = Server::spawn(command);

    let mut running = TcpStream::connect(server.addr).unwrap();
    write!(running, "GET /sleep/1500 HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    assert!(
        server.wait_for_log("sleeping 1500 ms", Duration::from_secs(30)),
        "{}",
        server.log()
    );
    let queued: Vec<_> = (0..3)
        .map(|_| {
            let url = server.url("/sleep/100");
            std::thread::spawn(move || {
                get(&url)
                    .map(|r| (r.status, r.body))
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    assert!(
        server.wait_for_count("request queued", 3, Duration::from_secs(30)),
        "{}",
        server.log()
    );

    server.signal(libc::SIGTERM);
    assert!(server.wait_for_log("shutting down", Duration::from_secs(10)));
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "new connections must be refused"
    );
    // The running request is answered, told the connection closes, and the
    // connection is closed after it.
    running
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reply = Vec::new();
    running.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply).to_lowercase();
    assert!(reply.starts_with("http/1.1 200"), "{reply}");
    assert!(reply.contains("\r\nconnection: close\r\n"), "{reply}");
    assert!(reply.contains("slept 1500 ms"), "{reply}");
    for request in queued {
        assert_eq!(
            request.join().unwrap(),
            Ok((200, "slept 100 ms\n".to_string()))
        );
    }
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("exits after draining");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(server.log().contains("stopped"), "{}", server.log());
}

#[test]
fn a_request_on_an_idle_connection_after_sigterm_is_answered_and_closes_it() {
    // Closing an idle HTTP/1 connection at once would race a client (a
    // proxy) sending on it; it stays open a moment, and what arrives is
    // answered with `Connection: close`.
    let mut server = fault_server(&[]);
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(idle, "GET / HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut first = [0u8; 256];
    let n = idle.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    server.signal(libc::SIGTERM);
    assert!(server.wait_for_log("shutting down", Duration::from_secs(10)));
    write!(idle, "GET /count HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    idle.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply).to_lowercase();
    assert!(reply.starts_with("http/1.1 200"), "{reply}");
    assert!(reply.contains("\r\nconnection: close\r\n"), "{reply}");
    let status = server.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.log());
}
