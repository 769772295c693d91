//! Connection timeouts: a client gets `--header-timeout` to send a request
//! head, counted from its first byte; a connection with nothing running and
//! nothing arriving is closed after `--keep-alive-timeout`. Neither cuts a
//! request or response that is slow but moving, and the server serves on.

use crate::WASMHOST;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use wasmhost_tests::{Guest, Server, assert_fires_at, get, guest, socket2, until_answer_or_close};

fn fault_server(flags: &[&str]) -> Server {
    let mut args = vec![guest(Guest::Fault).to_str().unwrap()];
    args.extend_from_slice(flags);
    Server::start(WASMHOST, &args)
}

/// Reads one chunked response (the fault guest's kind) off a keep-alive
/// connection; its text, head included.
fn read_chunked_reply(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n0\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => reply.push(byte[0]),
            other => panic!(
                "connection ended after {:?}: {other:?}",
                String::from_utf8_lossy(&reply)
            ),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// Waits for the server to close `stream`; how long that took, and what it
/// sent meanwhile.
fn time_to_close(stream: &mut TcpStream) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut sent = Vec::new();
    match stream.read_to_end(&mut sent) {
        Ok(_) => (start.elapsed(), sent),
        Err(error) => panic!("not closed within 20 s: {error}"),
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn an_idle_connection_is_closed_after_the_keep_alive_timeout() {
    let server = fault_server(&["--keep-alive-timeout", "1s", "--header-timeout", "30s"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.write_all(GET).unwrap();
    assert!(read_chunked_reply(&mut stream).starts_with("HTTP/1.1 200"));
    let (waited, sent) = time_to_close(&mut stream);
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
}

#[test]
fn a_pause_between_requests_is_not_header_time() {
    let server = fault_server(&["--header-timeout", "1s", "--keep-alive-timeout", "30s"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(GET).unwrap();
    assert!(read_chunked_reply(&mut stream).starts_with("HTTP/1.1 200"));
    // The pause is what is under test: twice the header timeout, well
    // within the keep-alive timeout.
    std::thread::sleep(Duration::from_secs(2));
    stream.write_all(GET).unwrap();
    assert!(read_chunked_reply(&mut stream).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_client_slow_to_send_its_head_is_disconnected_at_the_header_timeout() {
    let server = fault_server(&["--header-timeout", "1s", "--keep-alive-timeout", "30s"]);
    let silent = TcpStream::connect(server.addr).unwrap();
    let mut trickling = TcpStream::connect(server.addr).unwrap();
    trickling
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    // A second request started on a kept-alive connection, never finished.
    let mut kept = TcpStream::connect(server.addr).unwrap();
    kept.write_all(GET).unwrap();
    assert!(read_chunked_reply(&mut kept).starts_with("HTTP/1.1 200"));
    kept.write_all(b"GET / HTTP/1.1\r\n").unwrap();

    for (what, mut stream) in [
        ("silent", silent),
        ("trickling", trickling),
        ("kept-alive", kept),
    ] {
        let (waited, sent) = time_to_close(&mut stream);
        assert!(
            sent.is_empty(),
            "{what}: {:?}",
            String::from_utf8_lossy(&sent)
        );
        assert!(
            waited < Duration::from_secs(10),
            "{what}: closed after {waited:?}"
        );
    }
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
}

#[test]
fn slow_bodies_either_way_outlast_the_connection_timeouts() {
    let server = fault_server(&["--header-timeout", "1s", "--keep-alive-timeout", "1s"]);

    // A response that takes 2 s to stream.
    let reply = get(&server.url("/drip/6/400")).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        "line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n"
    );

    // A request body that takes 2 s to arrive.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(b"POST /read-body HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\n")
        .unwrap();
    for byte in b"abcdef" {
        stream.write_all(&[*byte]).unwrap();
        // The pace is what is under test: slower than either timeout allows
        // an idle client, yet the request is running all along.
        std::thread::sleep(Duration::from_millis(400));
    }
    let reply = read_chunked_reply(&mut stream);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("read 6 bytes"), "{reply}");
}

/// Sends `GET path` on each of `count` connections whose client reads
/// nothing (a small receive buffer, never read); they are kept open.
fn stop_reading(server: &Server, path: &str, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(&server.addr.into()).unwrap();
            let mut stream: TcpStream = socket.into();
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
            stream
        })
        .collect()
}

/// Waits for `count` send-timeout lines naming `value`; how long since
/// `start` the last came.
fn send_timeouts(server: &Server, value: &str, count: usize, start: Instant) -> Duration {
    let line = format!("it took nothing of its response for {value}");
    assert!(
        server.wait_for_count(&line, count, Duration::from_secs(120)),
        "{}",
        server.log()
    );
    start.elapsed()
}

/// The client stops reading at once; the kernel's buffers fill within
/// moments, and from then the send timeout runs. It used to be restarted
/// by the few bytes a stalled socket still takes whenever it is written
/// to, and fired at twice its value or more.
#[test]
fn the_send_timeout_fires_at_its_value() {
    let server = fault_server(&["--send-timeout", "2s"]);
    let start = Instant::now();
    let _stalled = stop_reading(&server, "/big/200", 5);
    let waited = send_timeouts(&server, "2s", 5, start);
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
}

#[test]
fn the_default_send_timeout_fires_at_30_s() {
    let server = fault_server(&[]);
    let start = Instant::now();
    let _stalled = stop_reading(&server, "/big/200", 3);
    let waited = send_timeouts(&server, "30s", 3, start);
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(32),
        "{waited:?}"
    );
}

/// Every timeout at its default, over HTTP/1.1, all at once on one server:
/// the header (30 s), the request body (30 s, read ahead and streamed),
/// sending (30 s), keep-alive (75 s) and the guest's (60 s).
#[test]
fn every_timeout_fires_at_its_default() {
    let server = fault_server(&[]);
    let addr = server.addr;
    let header = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
        {
            stream
                .set_read_timeout(Some(Duration::from_secs(90)))
                .unwrap();
            until_answer_or_close(&mut stream)
        }
    });
    let keep_alive = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(GET).unwrap();
        assert!(read_chunked_reply(&mut stream).starts_with("HTTP/1.1 200"));
        {
            stream
                .set_read_timeout(Some(Duration::from_secs(90)))
                .unwrap();
            until_answer_or_close(&mut stream)
        }
    });
    let body = |length: usize| {
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .write_all(
                    format!(
                        "POST /read-body HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .unwrap();
            {
                stream
                    .set_read_timeout(Some(Duration::from_secs(90)))
                    .unwrap();
                until_answer_or_close(&mut stream)
            }
        })
    };
    let (small_body, large_body) = (body(1000), body(1_000_000));
    let guest = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /sleep/100000 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        {
            stream
                .set_read_timeout(Some(Duration::from_secs(90)))
                .unwrap();
            until_answer_or_close(&mut stream)
        }
    });
    let start = Instant::now();
    let _stalled = stop_reading(&server, "/big/200", 1);
    let send = send_timeouts(&server, "30s", 1, start);
    assert_fires_at("send", send, Duration::from_secs(30));

    let (waited, sent) = header.join().unwrap();
    assert!(sent.is_empty(), "{sent}");
    assert_fires_at("header", waited, Duration::from_secs(30));
    for (what, thread) in [("small body", small_body), ("large body", large_body)] {
        let (waited, sent) = thread.join().unwrap();
        assert!(sent.starts_with("HTTP/1.1 408"), "{what}: {sent}");
        assert_fires_at(what, waited, Duration::from_secs(30));
    }
    let (waited, sent) = guest.join().unwrap();
    assert!(sent.starts_with("HTTP/1.1 504"), "{sent}");
    assert_fires_at("guest", waited, Duration::from_secs(60));
    let (waited, sent) = keep_alive.join().unwrap();
    assert!(sent.is_empty(), "{sent}");
    assert_fires_at("keep-alive", waited, Duration::from_secs(75));
}
