//! The instance pool: the defaults serve both small and large components, and
//! a machine that cannot reserve the pool's address space still serves, on
//! on-demand allocation, after one clear warning.

use crate::WASMHOST;
use std::os::unix::process::CommandExt;
use std::process::Command;
use wasmhost_tests::{Guest, Server, get, get_concurrently, guest, libc};

/// Far below the terabytes of address space the default pool reserves, far
/// above what on-demand allocation needs for one instance at a time.
const ADDRESS_SPACE_LIMIT: u64 = 16 << 30;

#[test]
fn without_address_space_for_the_pool_it_warns_once_and_serves_on_demand() {
    let mut command = Command::new(WASMHOST);
    command.args([
        "serve",
        guest(Guest::RustHello).to_str().unwrap(),
        "--port",
        "0",
    ]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE_LIMIT,
                rlim_max: ADDRESS_SPACE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::spawn(command);
    for _ in 0..20 {
        let reply = get(&server.url("/")).unwrap();
        assert_eq!(reply.body, "Hello from a WebAssembly component!\n");
    }
    let log = server.log();
    assert_eq!(
        log.matches("falling back to on-demand allocation").count(),
        1,
        "{log}"
    );
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn the_default_pool_serves_the_python_component_concurrently() {
    let server = Server::start(WASMHOST, &[guest(Guest::PythonHello).to_str().unwrap()]);
    assert!(!server.log().contains("falling back"), "{}", server.log());
    let expected = Ok((200, "Hello from a Python component!\n".to_string()));
    for reply in get_concurrently(&server.url("/"), 16) {
        assert_eq!(reply, expected);
    }
}
