//! Request heads and response heads are valid HTTP, the same on HTTP/1 and
//! HTTP/2, whatever the client sends or the guest answers: one valid Host
//! (the target's authority winning), the same header limits on both
//! protocols, no informational status from a guest, and the system's
//! listen backlog.

use crate::WASMHOST;
use std::process::Command;
use std::time::Duration;
use wasmhost_tests::{Guest, Server, guest, raw_request};

fn fault_server() -> Server {
    Server::start(WASMHOST, &[guest(Guest::Fault).to_str().unwrap()])
}

/// curl's status line number and body, over HTTP/1.1 or HTTP/2 (prior
/// knowledge, as a client of a plain listener speaks it).
fn curl(http2: bool, url: &str, extra: &[&str]) -> (u16, String) {
    let protocol = if http2 {
        "--http2-prior-knowledge"
    } else {
        "--http1.1"
    };
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", protocol])
        .args(extra)
        .arg(url)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.parse().unwrap_or(0), body.to_string())
}

#[test]
#[ignore = "needs curl; tests/run installs it and runs this"]
fn an_informational_status_from_a_guest_is_a_502_on_both_protocols() {
    let server = fault_server();
    for status in [100, 101, 103, 199] {
        for http2 in [false, true] {
            let (got, body) = curl(http2, &server.url(&format!("/status/{status}")), &[]);
            assert_eq!(got, 502, "status {status}, http2 {http2}: {body}");
            assert_eq!(
                body,
                "502 Bad Gateway: the application answered with an informational status, not a response\n"
            );
        }
    }
    assert!(
        server.wait_for_log(
            "guest answered with status 101, which is not a final response; answered 502",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    // A final status the guest chooses still goes through.
    assert_eq!(curl(false, &server.url("/status/204"), &[]).0, 204);
}

#[test]
fn an_http_1_0_request_without_host_is_for_the_listeners_address() {
    let server = fault_server();
    let addr = server.addresses(1)[0];
    let reply = raw_request(addr, "GET /seen HTTP/1.0\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
    assert!(reply.contains(&format!("\nauthority={addr}\n")), "{reply}");
    // (wasi:http gives the guest Host as its authority, not as a header.)
    assert!(
        reply.contains(&format!("\nx-forwarded-host: {addr}\n")),
        "{reply}"
    );
}

#[test]
fn host_must_be_one_host_and_port() {
    let server = fault_server();
    let addr = server.addresses(1)[0];
    let cases = [
        "GET /seen HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        "GET /seen HTTP/1.1\r\nHost: evil.example/x?<script>\r\nConnection: close\r\n\r\n",
        "GET /seen HTTP/1.1\r\nHost: user@a.test\r\nConnection: close\r\n\r\n",
        "GET /seen HTTP/1.1\r\nConnection: close\r\n\r\n",
    ];
    for request in cases {
        let reply = raw_request(addr, request);
        assert!(reply.starts_with("HTTP/1.1 400 "), "{request:?} -> {reply}");
    }
    let ok = raw_request(
        addr,
        "GET /seen HTTP/1.1\r\nHost: a.test:8080\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
}

#[test]
fn an_absolute_target_wins_over_host_for_the_authority_and_x_forwarded_host() {
    let server = fault_server();
    let addr = server.addresses(1)[0];
    let reply = raw_request(
        addr,
        "GET http://a.example/seen HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.contains("\nauthority=a.example\n"), "{reply}");
    assert!(reply.contains("\nx-forwarded-host: a.example\n"), "{reply}");
    assert!(!reply.contains("b.example"), "{reply}");
}

#[test]
#[ignore = "needs curl; tests/run installs it and runs this"]
fn header_limits_are_the_same_on_http_1_and_http_2() {
    let server = fault_server();
    let url = server.url("/");
    // One 17 KB header: within the 64 KiB head on both.
    let big = format!("x-big: {}", "a".repeat(17 * 1024));
    for http2 in [false, true] {
        assert_eq!(
            curl(http2, &url, &["-H", &big]),
            (200, "hello\n".into()),
            "http2 {http2}"
        );
    }
    // 150 headers: over the 100 allowed on both.
    let many: Vec<String> = (0..150).map(|n| format!("x-h{n}: {n}")).collect();
    let args: Vec<&str> = many.iter().flat_map(|h| ["-H", h.as_str()]).collect();
    for http2 in [false, true] {
        assert_eq!(curl(http2, &url, &args).0, 431, "http2 {http2}");
    }
}

#[test]
#[ignore = "needs ss; tests/run installs it and runs this"]
fn listeners_take_the_systems_backlog() {
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("Linux says its listen backlog in /proc/sys/net/core/somaxconn");
    let server = fault_server();
    let port = server.addresses(1)[0].port();
    // For a listening socket, ss shows the backlog as Send-Q.
    let output = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("running ss (iproute2)");
    let text = String::from_utf8_lossy(&output.stdout);
    let send_q = text.split_whitespace().nth(2).unwrap_or_default();
    assert_eq!(send_q, somaxconn.trim(), "{text}");
}
