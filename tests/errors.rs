//! Bad input at startup: one clear line on stderr that names the file or
//! address and says what to do, a non-zero exit, never a panic or backtrace.

use crate::WASMHOST;
use std::time::Duration;
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Finished, Guest, guest, run_to_exit};

fn serve_fails(app: &str, extra: &[&str]) -> Finished {
    let mut args = vec!["serve", app, "--port", "0"];
    args.extend_from_slice(extra);
    let finished = run_to_exit(WASMHOST, &args, Duration::from_secs(120));
    assert!(
        !finished.status.success(),
        "expected failure: {}",
        finished.stderr
    );
    finished
}

/// The one line of the error, checked to be the whole of stderr.
fn only_line(finished: &Finished) -> &str {
    finished.error_line()
}

fn scratch_file(name: &str, bytes: &[u8]) -> (TempDir, String) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn a_missing_file_is_named() {
    let finished = serve_fails("/nonexistent/app.wasm", &[]);
    assert_eq!(
        only_line(&finished),
        "wasmhost: error: cannot read /nonexistent/app.wasm: No such file or directory (os error 2)"
    );
}

#[test]
fn a_file_that_is_not_wasm_is_named() {
    let (_dir, path) = scratch_file("index.html", b"<html>not wasm</html>");
    let line = only_line(&serve_fails(&path, &[])).to_string();
    assert!(
        line.contains(&format!("{path} is not a WebAssembly file")),
        "{line}"
    );
}

#[test]
fn a_core_module_says_how_to_make_a_component() {
    // The smallest valid core module: magic and version 1.
    let (_dir, path) = scratch_file("module.wasm", b"\0asm\x01\0\0\0");
    let line = only_line(&serve_fails(&path, &[])).to_string();
    assert!(
        line.contains(&format!(
            "{path} is a core WebAssembly module, not a component"
        )),
        "{line}"
    );
    assert!(line.contains("wasm32-wasip2"), "{line}");
    assert!(line.contains("wasm-tools component new"), "{line}");
}

#[test]
fn a_component_without_the_http_handler_says_what_it_exports() {
    let command = guest(Guest::Command).to_str().unwrap();
    let line = only_line(&serve_fails(command, &[])).to_string();
    assert!(
        line.contains(&format!(
            "{command} does not export wasi:http/incoming-handler (it exports wasi:cli/run@0.2."
        )),
        "{line}"
    );
    assert!(line.contains("wasi:http/proxy world"), "{line}");
}

#[test]
fn a_truncated_component_is_named() {
    let bytes = std::fs::read(guest(Guest::RustHello)).unwrap();
    let (_dir, path) = scratch_file("truncated.wasm", &bytes[..bytes.len() / 2]);
    let line = only_line(&serve_fails(&path, &[])).to_string();
    assert!(
        line.contains(&format!("{path} is not a valid component")),
        "{line}"
    );
}

#[test]
fn an_address_in_use_says_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let app = guest(Guest::RustHello).to_str().unwrap();
    let finished = run_to_exit(
        WASMHOST,
        &["serve", app, "--port", &port],
        Duration::from_secs(120),
    );
    assert!(!finished.status.success());
    assert_eq!(
        only_line(&finished),
        format!(
            "wasmhost: error: 127.0.0.1:{port} is already in use; pick another --port or stop the process holding it"
        )
    );
}

#[test]
fn a_bad_flag_value_names_the_flag() {
    let app = guest(Guest::RustHello).to_str().unwrap();
    let finished = run_to_exit(
        WASMHOST,
        &["serve", app, "--shutdown-timeout", "soon"],
        Duration::from_secs(30),
    );
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("--shutdown-timeout"),
        "{}",
        finished.stderr
    );
    assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
}

/// A route is a path: one that would be nginx config (`wasmhost nginx`
/// writes routes into `location` lines) is refused, naming it.
#[test]
fn a_route_holding_config_syntax_is_refused() {
    let hello = guest(Guest::RustHello).to_str().unwrap().to_string();
    let mount = format!("/a {{ return 200 pwned; }} location /b={hello}");
    for command in ["nginx", "serve"] {
        let finished = run_to_exit(
            WASMHOST,
            &[command, "--mount", &mount, "--port", "0"],
            Duration::from_secs(120),
        );
        let line = finished.error_line();
        assert!(
            line.contains("route `/a { return 200 pwned; } location /b` holds ' '"),
            "{line}"
        );
        assert!(!finished.stdout.contains("pwned"), "{}", finished.stdout);
    }
}
