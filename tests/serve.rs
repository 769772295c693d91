//! Serving the example components: bodies, headers, streaming, concurrency
//! and the sandbox.

use crate::WASMHOST;
use std::time::{Duration, Instant};
use wasmhost_tests::{Guest, Server, get, get_concurrently, guest, post};

fn serve(which: Guest) -> Server {
    Server::start(WASMHOST, &[guest(which).to_str().unwrap()])
}

#[test]
fn rust_hello_answers_with_its_greeting() {
    let server = serve(Guest::RustHello);
    let reply = get(&server.url("/")).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "Hello from a WebAssembly component!\n");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn python_hello_answers_with_its_greeting() {
    let server = serve(Guest::PythonHello);
    for path in ["/", "/any/path?q=1"] {
        let reply = get(&server.url(path)).unwrap();
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body, "Hello from a Python component!\n", "{path}");
    }
}

#[test]
fn the_committed_rust_hello_serves_without_a_wasm_toolchain() {
    let prebuilt = wasmhost_tests::repo_root().join("guest-examples/rust-hello/hello.wasm");
    let server = Server::start(WASMHOST, &[prebuilt.to_str().unwrap()]);
    let reply = get(&server.url("/")).unwrap();
    assert_eq!(reply.body, "Hello from a WebAssembly component!\n");
}

#[test]
fn startup_line_names_the_url_and_the_component() {
    let server = serve(Guest::RustHello);
    let log = server.log();
    let line = log.lines().find(|l| l.contains("serving on")).unwrap();
    assert!(line.contains(&format!("http://{}/", server.addr)), "{line}");
    assert!(line.contains("rust_hello.wasm"), "{line}");
    assert!(
        server.addr.ip().is_loopback(),
        "default address must be loopback"
    );
}

#[test]
fn sixty_four_concurrent_requests_all_succeed() {
    let server = serve(Guest::Fault);
    // Each request sleeps in the guest, so all 64 are in flight together.
    let expected = Ok((200, "slept 200 ms\n".to_string()));
    for reply in get_concurrently(&server.url("/sleep/200"), 64) {
        assert_eq!(reply, expected);
    }
}

#[test]
fn request_body_streams_through_the_guest_and_back() {
    let server = serve(Guest::Fault);
    let body: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let reply = post(&server.url("/echo"), &body).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body.as_bytes() == body.as_slice());
}

#[test]
fn guest_output_is_prefixed_with_the_app() {
    let server = serve(Guest::Fault);
    assert_eq!(get(&server.url("/print")).unwrap().body, "printed\n");
    assert!(
        server.wait_for_log("[/] line to stdout", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    assert!(server.wait_for_log("[/] stderr: line to stderr", Duration::from_secs(10)));
}

/// wasmtime's `cli_serve_with_print`: a line written in pieces, through a
/// handle per piece, is one line; an empty line is kept. Before, each
/// handle flushed its piece as a line of its own when it was dropped.
#[test]
fn a_line_printed_in_pieces_is_one_line_and_an_empty_line_is_kept() {
    let server = serve(Guest::Fault);
    assert_eq!(get(&server.url("/print-pieces")).unwrap().body, "printed\n");
    for (prefix, stream) in [("[/] ", "stdout"), ("[/] stderr: ", "stderr")] {
        let last = format!("{prefix}after empty");
        assert!(
            server.wait_for_log(&last, Duration::from_secs(10)),
            "{}",
            server.log()
        );
        let lines: Vec<String> = server
            .log()
            .lines()
            .filter(|line| {
                line.starts_with(prefix) && line.contains("stderr: ") != (stream == "stdout")
            })
            .map(str::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                format!("{prefix}this is half a print to {stream}"),
                prefix.to_string(),
                last,
            ],
            "{}",
            server.log()
        );
    }
}

#[test]
fn guests_get_no_environment_files_or_outbound_http() {
    let server = serve(Guest::Fault);
    let reply = get(&server.url("/sandbox")).unwrap();
    assert_eq!(
        reply.body,
        "env=0 preopens=0 outbound=ErrorCode::HttpRequestDenied\n"
    );
}

#[test]
fn guest_sees_method_path_query_and_headers() {
    let server = serve(Guest::Fault);
    let reply = wasmhost_tests::client()
        .get(&server.url("/seen?x=1&y=2"))
        .header("x-custom", "value 1")
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(
        reply.starts_with("method=Method::Get\nscheme=Some(Scheme::Http)\npath=/seen?x=1&y=2\n"),
        "{reply}"
    );
    assert!(reply.contains("x-custom: value 1\n"), "{reply}");
}

#[test]
fn keep_alive_connection_serves_many_requests() {
    let server = serve(Guest::RustHello);
    // One agent reuses its connection; every request still gets a fresh
    // instance. More requests than the pool has instances (1000): each spent
    // instance must be given back by its connection between requests.
    let agent = wasmhost_tests::client();
    for _ in 0..1100 {
        let body = agent
            .get(&server.url("/"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        assert_eq!(body, "Hello from a WebAssembly component!\n");
    }
}

#[test]
#[ignore = "needs curl; tests/run installs it and runs this"]
fn cleartext_http2_with_prior_knowledge_is_served() {
    let server = serve(Guest::RustHello);
    let output = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(server.url("/"))
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Hello from a WebAssembly component!\n2 200"
    );
}

#[test]
fn log_format_json_writes_one_object_per_line_with_the_app() {
    let fault = format!("/f={}", guest(Guest::Fault).display());
    let server = Server::start(WASMHOST, &["--mount", &fault, "--log-format", "json"]);
    assert_eq!(get(&server.url("/f/trap")).unwrap().status, 500);
    assert!(
        server.wait_for_log("guest trapped", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let lines: Vec<wasmhost_tests::serde_json::Value> = server
        .log()
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| {
            wasmhost_tests::serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
        })
        .collect();
    let serving = lines
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("serving on "))
        })
        .unwrap_or_else(|| panic!("{}", server.log()));
    assert_eq!(serving["level"], "INFO");
    assert!(
        serving["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{serving}"
    );
    let trapped = lines
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.contains("guest trapped"))
        })
        .unwrap_or_else(|| panic!("{}", server.log()));
    assert_eq!(
        (trapped["level"].as_str(), trapped["app"].as_str()),
        (Some("WARN"), Some("/f"))
    );
}

/// A guest's lines reach the log escaped (no terminal escape or carriage
/// return gets through), cut at 4 KiB, and at most 1,000 at once and 100 a
/// second per app after that; what was dropped is counted on the next line.
#[test]
fn guest_output_is_escaped_cut_and_rate_bounded() {
    let server = serve(Guest::Fault);
    assert_eq!(get(&server.url("/spam/1/10000")).unwrap().body, "spammed\n");
    assert!(
        server.wait_for_log("more bytes cut)", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("[/] \\u{1b}[2J\\rxxx"), "{log}");
    assert!(log.contains("xxx … (5909 more bytes cut)"), "{log}");
    assert!(!log.contains('\u{1b}') && !log.contains('\r'), "{log}");

    assert_eq!(get(&server.url("/spam/3000/10")).unwrap().body, "spammed\n");
    // The count is said on the next line the budget admits, which may take
    // a few hundredths of a second to refill: print until one is.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("lines of guest output dropped") {
        assert!(Instant::now() < deadline, "{}", server.log());
        assert_eq!(get(&server.url("/print")).unwrap().body, "printed\n");
        server.wait_for_log("lines of guest output dropped", Duration::from_millis(50));
    }
    let printed = server
        .log()
        .matches("[/] \\u{1b}[2J\\rxxxxxxxxxx\n")
        .count();
    assert!((990..1100).contains(&printed), "{printed}");
}

#[test]
fn guest_output_is_json_under_log_format_json() {
    let fault = guest(Guest::Fault);
    let server = Server::start(WASMHOST, &[fault.to_str().unwrap(), "--log-format", "json"]);
    assert_eq!(get(&server.url("/spam/2/5")).unwrap().body, "spammed\n");
    assert!(
        server.wait_for_count("\\u001b[2J\\rxxxxx", 2, Duration::from_secs(10)),
        "{}",
        server.log()
    );
    for line in server.log().lines() {
        let event: wasmhost_tests::serde_json::Value = wasmhost_tests::serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["message"] == "\u{1b}[2J\rxxxxx" {
            assert_eq!(
                (event["app"].as_str(), event["stream"].as_str()),
                (Some("/"), Some("stdout"))
            );
        }
    }
}
