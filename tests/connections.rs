//! Connection-level protection: oversized or malformed requests are refused
//! by status and the connection closed, and the number of open connections is
//! bounded. The server carries on serving.

use crate::WASMHOST;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use wasmhost_tests::{Guest, Server, get, guest, raw_request};

const HELLO: &str = "Hello from a WebAssembly component!\n";

fn hello_server(flags: &[&str]) -> Server {
    let mut args = vec![guest(Guest::RustHello).to_str().unwrap()];
    args.extend_from_slice(flags);
    Server::start(WASMHOST, &args)
}

fn status_line(reply: &str) -> &str {
    reply.lines().next().unwrap_or("")
}

/// Sends a GET with `extra` header lines and expects a 431, then a normal
/// request still served.
fn assert_head_refused(extra: &str) {
    let server = hello_server(&[]);
    let addr = server.addresses(1)[0];
    let reply = raw_request(addr, &format!("GET / HTTP/1.1\r\nHost: t\r\n{extra}\r\n"));
    assert_eq!(
        status_line(&reply),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "{reply}"
    );
    assert_eq!(get(&server.url("/")).unwrap().body, HELLO);
}

#[test]
fn a_request_head_over_64_kib_gets_a_431() {
    assert_head_refused(&format!("X-Big: {}\r\n", "a".repeat(70 * 1024)));
}

#[test]
fn more_than_100_headers_get_a_431() {
    let headers: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_head_refused(&headers);
}

#[test]
fn malformed_requests_get_a_400_and_the_connection_is_closed() {
    let fault = format!("--mount=/f={}", guest(Guest::Fault).to_str().unwrap());
    let server = hello_server(&[&fault]);
    let addr = server.addresses(1)[0];
    for request in [
        "NOT A REQUEST LINE\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
        // Found while the guest reads the body.
        "POST /f/read-body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    ] {
        // raw_request reads to the end: it returns only because the server
        // closed the connection.
        let reply = raw_request(addr, request);
        assert!(
            status_line(&reply).starts_with("HTTP/1.1 400 Bad Request"),
            "{request:?} -> {reply}"
        );
    }
    assert_eq!(get(&server.url("/")).unwrap().body, HELLO);
}

#[test]
fn past_max_connections_a_new_one_waits_until_another_closes() {
    let server = hello_server(&["--max-connections", "2"]);
    let addr = server.addresses(1)[0];
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Give the server the chance to accept both before the third arrives.
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut first = [0u8; 1];
    let waited = third.read(&mut first);
    assert!(
        waited.is_err(),
        "answered while two connections were open: {waited:?}"
    );

    drop(idle);
    third
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reply = Vec::new();
    third.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert_eq!(status_line(&reply), "HTTP/1.1 200 OK", "{reply}");
    assert!(reply.contains(HELLO), "{reply}");
}
