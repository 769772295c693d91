//! The end-to-end suite: every test starts the real `wasmhost` binary and
//! talks HTTP to it over real sockets. One module per area; one test binary.

mod cache;
mod config;
mod connections;
mod deploy;
mod errors;
mod faults;
mod forwarding;
mod graft;
mod grants;
mod heads;
mod http2;
mod limits;
mod new;
mod nginx;
mod outbound;
mod p3;
mod pool;
mod reload;
mod reuse;
mod serve;
mod shutdown;
mod stalls;
mod timeouts;
mod tls;

/// The binary under test, built by cargo for this test target.
const WASMHOST: &str = env!("CARGO_BIN_EXE_wasmhost");
mod wsgi;

/// `component`, with its Cranelift build in the compile cache the servers
/// use, made once by `wasmhost check`. A large component is otherwise
/// served from a quick Winch build while each server compiles it again
/// with Cranelift in the background: for the ~20 MB Python components,
/// minutes of CPU on a 2-core machine, contended by every test at once.
fn precompiled(component: &std::path::Path) -> &str {
    static DONE: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    let path = component.to_str().unwrap();
    if !done.iter().any(|p| p == component) {
        let checked = wasmhost_tests::run_to_exit(
            WASMHOST,
            &["check", path],
            std::time::Duration::from_secs(900),
        );
        assert!(
            checked.status.success(),
            "wasmhost check {path}: {}",
            checked.stderr
        );
        done.push(component.to_path_buf());
    }
    path
}
