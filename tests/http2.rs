//! HTTP/2 clients that misbehave on one connection, with a real HTTP/2
//! client library: a stream whose header block is too large fails alone;
//! streams that never open their flow-control window, or whose request
//! bodies stall, are ended by the progress timeouts while another client's
//! requests to the same app keep being answered.

use crate::WASMHOST;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;
use wasmhost_tests::{Guest, Server, assert_fires_at, get, guest};

fn fault_server(flags: &[&str]) -> Server {
    let mut args = vec![guest(Guest::Fault).to_str().unwrap()];
    args.extend_from_slice(flags);
    Server::start(WASMHOST, &args)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An HTTP/2 connection (prior knowledge) with the given stream window,
/// and the task driving it, which ends when the server closes it.
async fn connect(
    addr: SocketAddr,
    window: u32,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .unwrap();
    (client, tokio::spawn(connection))
}

fn get_request(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://test{path}"))
        .body(())
        .unwrap()
}

#[test]
fn an_oversized_header_block_fails_its_stream_not_the_connection() {
    let server = fault_server(&[]);
    let addr = server.addresses(1)[0];
    runtime().block_on(async {
        let (client, _connection) = connect(addr, 65_535).await;
        let mut client = client.ready().await.unwrap();
        let mut big = get_request("/");
        big.headers_mut()
            .insert("x-big", "a".repeat(70_000).parse().unwrap());
        let (big, _) = client.send_request(big, true).unwrap();
        let mut client = client.ready().await.unwrap();
        let (small, _) = client.send_request(get_request("/"), true).unwrap();
        assert_eq!(big.await.unwrap().status(), 431);
        assert_eq!(small.await.unwrap().status(), 200);
    });
}

#[test]
fn streams_with_a_zero_window_are_dropped_at_the_send_timeout_while_others_are_served() {
    let server = fault_server(&["--send-timeout", "1s"]);
    let addr = server.addresses(1)[0];
    let url = server.url("/");
    let start = std::time::Instant::now();
    runtime().block_on(async {
        let (mut client, connection) = connect(addr, 0).await;
        let mut heads = Vec::new();
        for _ in 0..100 {
            client = client.ready().await.unwrap();
            let (response, _) = client
                .send_request(get_request("/drip/100000/0"), true)
                .unwrap();
            heads.push(response);
        }
        // Another client of the same app is answered meanwhile.
        let other = tokio::task::spawn_blocking(move || get(&url).unwrap().body);
        assert_eq!(other.await.unwrap(), "hello\n");
        // The server drops the connection that takes nothing.
        let ended = tokio::time::timeout(Duration::from_secs(30), connection).await;
        assert!(ended.is_ok(), "the zero-window connection was not dropped");
        drop(heads);
    });
    assert!(
        server.wait_for_log(
            "it took nothing of its response for 1s",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    // At its value (+ 2 s), not restarted by the streams beside.
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // Its guests were stopped and their places freed.
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
}

#[test]
fn stalled_request_bodies_on_one_connection_get_408_while_others_are_served() {
    let server = fault_server(&["--body-timeout", "1s"]);
    let addr = server.addresses(1)[0];
    let url = server.url("/");
    runtime().block_on(async {
        let (mut client, _connection) = connect(addr, 65_535).await;
        let mut stalled = Vec::new();
        for _ in 0..50 {
            client = client.ready().await.unwrap();
            let request = http::Request::post("http://test/read-body")
                .header("content-length", "1000")
                .body(())
                .unwrap();
            let (response, mut body) = client.send_request(request, false).unwrap();
            body.send_data(Bytes::from_static(b"0123456789"), false)
                .unwrap();
            // The rest never comes; `body` is kept so the stream stays open.
            stalled.push((response, body));
        }
        let other = tokio::task::spawn_blocking(move || get(&url).unwrap().body);
        assert_eq!(other.await.unwrap(), "hello\n");
        for (response, _body) in stalled {
            let response = tokio::time::timeout(Duration::from_secs(30), response)
                .await
                .expect("a stalled stream was never answered")
                .unwrap();
            assert_eq!(response.status(), 408);
        }
    });
}

#[test]
fn one_connection_runs_at_most_its_share_of_requests_in_guests() {
    // 100 places in the app, but 25 for one connection: with 25 slow
    // requests running on it, a quick one on the same connection waits for
    // one of them to end, while on another connection it is answered.
    const SLOW: Duration = Duration::from_secs(6);
    let server = fault_server(&[]);
    let addr = server.addresses(1)[0];
    let url = server.url("/");
    runtime().block_on(async {
        let (mut client, _connection) = connect(addr, 65_535).await;
        let first_sent = tokio::time::Instant::now();
        let mut slow = Vec::new();
        for _ in 0..25 {
            client = client.ready().await.unwrap();
            let path = format!("/sleep/{}", SLOW.as_millis());
            let (response, _) = client.send_request(get_request(&path), true).unwrap();
            slow.push(response);
        }
        // The connection runs on the runtime's workers; this thread may wait.
        let line = format!("sleeping {} ms", SLOW.as_millis());
        assert!(
            server.wait_for_count(&line, 25, Duration::from_secs(30)),
            "{}",
            server.log()
        );
        client = client.ready().await.unwrap();
        let (quick, _) = client.send_request(get_request("/"), true).unwrap();
        // Another connection is not held up by this one's share.
        let other = tokio::task::spawn_blocking(move || get(&url).unwrap().body);
        assert_eq!(other.await.unwrap(), "hello\n");
        assert_eq!(quick.await.unwrap().status(), 200);
        // A lower bound, which load cannot break: every slow request began
        // its sleep after it was sent, so the quick one, which ran only once
        // a slow one had given its place back, cannot be done sooner.
        assert!(
            first_sent.elapsed() >= SLOW,
            "the 26th request ran beside 25 others"
        );
        for response in slow {
            assert_eq!(response.await.unwrap().status(), 200);
        }
    });
}

/// A guest's trailers reach an HTTP/2 client without the fields no trailer
/// may carry, which made the client fail the stream.
#[test]
fn a_guests_forbidden_trailers_are_dropped_and_the_others_arrive() {
    let server = fault_server(&[]);
    let addr = server.addresses(1)[0];
    runtime().block_on(async {
        let (client, _connection) = connect(addr, 65_535).await;
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(get_request("/trailers"), true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(text, b"body");
        let trailers = body.trailers().await.unwrap().unwrap_or_default();
        let mut names: Vec<&str> = trailers.keys().map(|name| name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["x-checksum"], "{trailers:?}");
    });
    // The guest's own line (that wasi:http took the field) reaches the log
    // through a reader thread, which can come after the response.
    assert!(
        server.wait_for_log("trailer content-length: Ok(())", Duration::from_secs(10)),
        "{}",
        server.log()
    );
}

/// Over HTTP/2, each timeout fires at its value, a stalled stream's beside
/// a live one: the first request's head, a request body, the guest's, and
/// keep-alive.
#[test]
fn every_timeout_fires_at_its_value_over_http2() {
    let server = fault_server(&[
        "--header-timeout",
        "2s",
        "--body-timeout",
        "2s",
        "--keep-alive-timeout",
        "2s",
        "--timeout",
        "3s",
    ]);
    let addr = server.addresses(1)[0];
    let two = Duration::from_secs(2);

    // The preface and nothing more: no request head ever comes.
    let mut preface = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    preface
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut preface, &mut sink);
    assert_fires_at("header", start.elapsed(), two);

    runtime().block_on(async {
        let (client, connection) = connect(addr, 65_535).await;
        // A stream whose body stalls and one whose guest is slow, beside
        // streams that are answered meanwhile.
        let mut client = client.ready().await.unwrap();
        let stalled = http::Request::post("http://test/read-body")
            .header("content-length", "1000")
            .body(())
            .unwrap();
        let start = std::time::Instant::now();
        let (stalled, _body) = client.send_request(stalled, false).unwrap();
        let mut client = client.ready().await.unwrap();
        let (slow, _) = client
            .send_request(get_request("/sleep/10000"), true)
            .unwrap();
        for _ in 0..3 {
            let mut live = client.clone().ready().await.unwrap();
            let (response, _) = live.send_request(get_request("/"), true).unwrap();
            assert_eq!(response.await.unwrap().status(), 200);
        }
        let stalled = stalled.await.unwrap();
        assert_eq!(stalled.status(), 408);
        assert_fires_at("body", start.elapsed(), two);
        let slow = slow.await.unwrap();
        assert_eq!(slow.status(), 504);
        assert_fires_at("guest", start.elapsed(), Duration::from_secs(3));
        // Nothing runs now: the connection is closed after keep-alive.
        let idle = std::time::Instant::now();
        drop(client);
        drop(_body);
        let ended = tokio::time::timeout(Duration::from_secs(30), connection).await;
        assert!(ended.is_ok(), "the idle connection was not closed");
        assert_fires_at("keep-alive", idle.elapsed(), two);
    });
}
