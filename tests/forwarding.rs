//! What the guest is told about its client, and the access log: forwarding
//! headers are believed only from `--trusted-proxy` peers; everyone else's
//! are replaced with what the socket says. Every request gets one access-log
//! line in the combined format, plus duration and app.

use crate::WASMHOST;
use std::time::Duration;
use wasmhost_tests::{Guest, Server, client, guest};

/// The fault guest (its /seen reports what it received) at `/`, the hello
/// at `/hello`.
fn server(flags: &[&str]) -> Server {
    let hello = format!("--mount=/hello={}", guest(Guest::RustHello).display());
    let mut args = vec![guest(Guest::Fault).to_str().unwrap(), hello.as_str()];
    args.extend_from_slice(flags);
    Server::start(WASMHOST, &args)
}

/// GET /seen with `headers`; what the guest saw, one line per header.
fn seen(server: &Server, headers: &[(&str, &str)]) -> String {
    let mut request = client().get(server.url("/seen"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().unwrap();
    assert_eq!(response.status(), 200);
    response.body_mut().read_to_string().unwrap()
}

const SPOOFED: &[(&str, &str)] = &[
    ("X-Real-IP", "6.6.6.6"),
    ("X-Forwarded-For", "6.6.6.6, 198.51.100.4"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.test"),
    ("Forwarded", "for=6.6.6.6"),
];

#[test]
fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
    let server = server(&[]);
    let seen = seen(&server, SPOOFED);
    let host = format!("x-forwarded-host: {}\n", server.addr);
    for line in [
        "scheme=Some(Scheme::Http)\n",
        "x-real-ip: 127.0.0.1\n",
        "x-forwarded-for: 127.0.0.1\n",
        "x-forwarded-proto: http\n",
        host.as_str(),
    ] {
        assert!(seen.contains(line), "{line:?} not in:\n{seen}");
    }
    assert!(!seen.contains("6.6.6.6"), "{seen}");
    assert!(!seen.contains("evil.test"), "{seen}");
    assert!(!seen.contains("forwarded: "), "{seen}");
}

#[test]
fn forwarding_headers_from_a_trusted_proxy_are_believed() {
    let server = server(&["--trusted-proxy", "127.0.0.0/8"]);
    let seen = seen(&server, SPOOFED);
    // 198.51.100.4 is the last address that is not a trusted proxy.
    for line in [
        "scheme=Some(Scheme::Https)\n",
        "x-real-ip: 198.51.100.4\n",
        "x-forwarded-for: 198.51.100.4\n",
        "x-forwarded-proto: https\n",
        "x-forwarded-host: evil.test\n",
    ] {
        assert!(seen.contains(line), "{line:?} not in:\n{seen}");
    }
}

#[test]
fn a_trusted_proxy_can_be_set_in_the_config_file() {
    let dir = wasmhost_tests::tempfile::TempDir::new().unwrap();
    let config = dir.path().join("wasmhost.toml");
    std::fs::write(
        &config,
        format!(
            "trusted_proxies = [\"127.0.0.1\"]\n[[app]]\nroute = \"/\"\ncomponent = {:?}\n",
            guest(Guest::Fault)
        ),
    )
    .unwrap();
    let server = Server::start(WASMHOST, &["--config", config.to_str().unwrap()]);
    let seen = seen(&server, &[("X-Forwarded-For", "192.0.2.44")]);
    assert!(seen.contains("x-real-ip: 192.0.2.44\n"), "{seen}");
}

#[test]
fn every_request_gets_a_combined_format_access_log_line() {
    let server = server(&["--access-log", "-"]);
    let mut response = client()
        .get(server.url("/hello/?q=1"))
        .header("Referer", "http://example.test/page")
        .header("User-Agent", "test \"agent\"")
        .call()
        .unwrap();
    let hello_id = response
        .headers()
        .get("x-request-id")
        .map(|id| id.to_str().unwrap().to_string());
    let body = response.body_mut().read_to_string().unwrap();
    let missing = client().get(server.url("/drip/3/50")).call().unwrap();
    assert_eq!(missing.status(), 200);
    let _ = missing.into_body().read_to_string().unwrap();
    assert!(
        server.wait_for_count("\" 200 ", 2, Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let log = server.log();
    let hello = log
        .lines()
        .find(|line| line.contains("GET /hello/?q=1"))
        .unwrap_or_else(|| panic!("{log}"));
    // 127.0.0.1 - - [25/Nov/2026:03:14:20 +0000] "GET /hello/?q=1 HTTP/1.1" 200 36 "http://example.test/page" "test \x22agent\x22" 0.001 /hello
    let (before, after) = hello.split_once("] ").unwrap();
    assert!(before.starts_with("127.0.0.1 - - ["), "{hello}");
    assert!(before.ends_with(" +0000"), "{hello}");
    let expected = format!(
        "\"GET /hello/?q=1 HTTP/1.1\" 200 {} \"http://example.test/page\" \"test \\x22agent\\x22\" ",
        body.len()
    );
    assert!(after.starts_with(&expected), "{hello}\nexpected {expected}");
    let fields: Vec<&str> = after[expected.len()..].split(' ').collect();
    let [seconds, app, request_id] = fields[..] else {
        panic!("{hello}")
    };
    assert!(seconds.parse::<f64>().unwrap() < 10.0, "{hello}");
    assert_eq!(app, "/hello");
    // The id the response carried.
    assert_eq!(Some(request_id), hello_id.as_deref(), "{hello}");

    // A streamed response is logged once sent, with every byte and the
    // time it took.
    let drip = log
        .lines()
        .find(|line| line.contains("GET /drip/3/50"))
        .unwrap_or_else(|| panic!("{log}"));
    let fields: Vec<&str> = drip.rsplitn(4, ' ').collect();
    assert_eq!(fields[0].len(), 32, "{drip}");
    assert_eq!(fields[1], "/", "{drip}");
    assert!(fields[2].parse::<f64>().unwrap() >= 0.1, "{drip}");
    assert!(drip.contains("\" 200 21 \"-\" "), "{drip}");
}

#[test]
fn the_access_log_appends_to_a_file_and_is_off_by_default() {
    let dir = wasmhost_tests::tempfile::TempDir::new().unwrap();
    let path = dir.path().join("access.log");
    std::fs::write(&path, "earlier line\n").unwrap();
    let server = server(&["--access-log", path.to_str().unwrap()]);
    for _ in 0..3 {
        assert_eq!(client().get(server.url("/")).call().unwrap().status(), 200);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if text.lines().count() >= 4 || std::time::Instant::now() > deadline {
            break text;
        }
        // Polling a file another process writes; nothing can signal it.
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "earlier line");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains("\"GET / HTTP/1.1\" 200 6 ")),
        "{text}"
    );

    let quiet = server_default_log();
    assert!(!quiet.contains("\"GET /"), "{quiet}");
}

/// The log of a server that served one request with default flags.
fn server_default_log() -> String {
    let server = server(&[]);
    assert_eq!(client().get(server.url("/")).call().unwrap().status(), 200);
    // A line would be written once the response is out; the one after it
    // proves the first has been through.
    assert_eq!(
        client().get(server.url("/print")).call().unwrap().status(),
        200
    );
    assert!(server.wait_for_log("line to stderr", Duration::from_secs(10)));
    server.log()
}

#[test]
fn a_bad_access_log_path_is_one_clear_line() {
    let finished = wasmhost_tests::run_to_exit(
        WASMHOST,
        &[
            "serve",
            guest(Guest::Fault).to_str().unwrap(),
            "--port",
            "0",
            "--access-log",
            "/nonexistent-dir/access.log",
        ],
        Duration::from_secs(60),
    );
    let line = finished.error_line();
    assert!(
        line.contains("cannot open access log /nonexistent-dir/access.log"),
        "{line}"
    );
}

#[test]
fn sigusr1_reopens_the_access_log_after_a_rotation() {
    let dir = wasmhost_tests::tempfile::TempDir::new().unwrap();
    let log = dir.path().join("access.log");
    let server = server(&["--access-log", log.to_str().unwrap()]);
    let wait_for_line = |file: &std::path::Path, needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{needle} not in {text}"
            );
            // The writer flushes every 100 ms.
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(
        client()
            .get(server.url("/hello/before"))
            .call()
            .unwrap()
            .status(),
        200
    );
    wait_for_line(&log, "GET /hello/before");
    // What logrotate does without copytruncate: rename, then signal.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal(wasmhost_tests::libc::SIGUSR1);
    assert!(
        server.wait_for_log("SIGUSR1: reopening the access log", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    assert_eq!(
        client()
            .get(server.url("/hello/after"))
            .call()
            .unwrap()
            .status(),
        200
    );
    let fresh = wait_for_line(&log, "GET /hello/after");
    assert!(!fresh.contains("/hello/before"), "{fresh}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("/hello/before") && !old.contains("/hello/after"),
        "{old}"
    );
}

#[test]
fn every_request_gets_an_x_request_id_kept_only_from_a_trusted_proxy() {
    let id_of = |server: &Server, headers: &[(&str, &str)]| {
        let mut request = client().get(server.url("/seen"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.call().unwrap();
        let answered = response
            .headers()
            .get("x-request-id")
            .expect("every response carries its request id")
            .to_str()
            .unwrap()
            .to_string();
        let seen = response.body_mut().read_to_string().unwrap();
        assert!(
            seen.contains(&format!("x-request-id: {answered}\n")),
            "{seen}"
        );
        answered
    };
    let open = server(&[]);
    let made = id_of(&open, &[]);
    assert!(
        made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made}"
    );
    assert_ne!(id_of(&open, &[]), made, "a new id per request");
    // A client's own id is not believed: it could collide on purpose.
    assert_ne!(
        id_of(&open, &[("X-Request-Id", "chosen-by-client")]),
        "chosen-by-client"
    );

    let behind_proxy = server(&["--trusted-proxy", "127.0.0.1"]);
    assert_eq!(
        id_of(&behind_proxy, &[("X-Request-Id", "nginx-7f3a")]),
        "nginx-7f3a"
    );
    for odd in ["two words", "a\"quote", "back\\slash"] {
        let id = id_of(&behind_proxy, &[("X-Request-Id", odd)]);
        assert_eq!(id.len(), 32, "{odd:?} is replaced: {id}");
    }
}
