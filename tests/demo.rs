//! The demo app of guest-examples/*-demo, one per language, each built from
//! source with its own toolchain and checked the same way, fresh and reused.
//! A toolchain that is missing fails its build with what to install.

use crate::WASMHOST;
use wasmhost_tests::{Guest, Server, client, get, guest, serde_json};

/// The variable the demo's `GET /env/NAME` is granted.
const GRANTED: (&str, &str) = ("DEMO_GREETING", "hello, grant");

const FRESH_AND_REUSED: &[&[&str]] = &[&[], &["--reuse", "100"]];

fn check_demo(demo: Guest, language: &str) {
    check_demo_in(demo, language, FRESH_AND_REUSED);
}

fn check_demo_in(demo: Guest, language: &str, modes: &[&[&str]]) {
    let app = guest(demo).display().to_string();
    let env = format!("{}={}", GRANTED.0, GRANTED.1);
    for &mode in modes {
        let mut args = vec![app.as_str(), "--env", &env];
        args.extend_from_slice(mode);
        let server = Server::start(WASMHOST, &args);
        // Twice: in reuse mode the second round runs on a used instance.
        for _ in 0..2 {
            checks(&server, language, mode);
        }
    }
}

fn checks(server: &Server, language: &str, mode: &[&str]) {
    let home = get(&server.url("/")).unwrap();
    assert_eq!(home.status, 200, "{language} {mode:?}: GET /");
    assert_eq!(home.body, format!("Hello from {language}!\n"), "{mode:?}");

    let hello = get(&server.url("/hello/W%C3%A4sm%20%22x%22")).unwrap();
    assert_eq!(hello.status, 200, "{language} {mode:?}: GET /hello");
    assert_eq!(hello.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&hello.body)
        .unwrap_or_else(|e| panic!("{language}: /hello is not JSON ({e}): {}", hello.body));
    assert_eq!(
        json,
        serde_json::json!({ "hello": "Wäsm \"x\"" }),
        "{language}"
    );

    // Large enough to take many stream reads: the echo is streamed.
    let body: String = (0..200_000u32)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let echoed = client()
        .post(&server.url("/echo"))
        .header("content-type", "application/x-demo")
        .send(body.as_bytes())
        .unwrap();
    assert_eq!(echoed.status(), 200, "{language} {mode:?}: POST /echo");
    let content_type = echoed.headers().get("content-type").cloned();
    let echoed = echoed
        .into_body()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .unwrap();
    assert!(
        echoed == body,
        "{language} {mode:?}: the echo differs ({} bytes)",
        echoed.len()
    );
    assert_eq!(content_type.unwrap(), "application/x-demo", "{language}");

    let granted = get(&server.url(&format!("/env/{}", GRANTED.0))).unwrap();
    assert_eq!(
        (granted.status, granted.body.as_str()),
        (200, "hello, grant\n"),
        "{language}"
    );
    // wasmhost's own environment is not the guest's.
    assert_eq!(
        get(&server.url("/env/PATH")).unwrap().status,
        404,
        "{language}: /env/PATH"
    );
    assert_eq!(
        get(&server.url("/elsewhere")).unwrap().status,
        404,
        "{language}: /elsewhere"
    );
}

#[test]
fn the_rust_demo_answers_the_demo_checks() {
    check_demo(Guest::RustDemo, "Rust");
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn the_python_demo_answers_the_demo_checks() {
    check_demo(Guest::PythonDemo, "Python");
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn the_python_wsgi_demo_answers_the_demo_checks() {
    check_demo(Guest::PythonWsgiDemo, "Python (WSGI)");
}

#[test]
#[ignore = "needs Node.js; tests/run installs it and runs this"]
fn the_javascript_demo_answers_the_demo_checks() {
    check_demo(Guest::JavascriptDemo, "JavaScript");
}

#[test]
#[ignore = "needs clang and wasi-libc; tests/run installs it and runs this"]
fn the_c_demo_answers_the_demo_checks() {
    check_demo(Guest::CDemo, "C");
}

#[test]
#[ignore = "needs Go; tests/run installs it and runs this"]
fn the_go_demo_answers_the_demo_checks() {
    check_demo(Guest::GoDemo, "Go");
}
