//! Several apps in one process: mounted at prefixes, the longest prefix
//! winning, the prefix stripped and passed on, on several listeners.

use crate::WASMHOST;
use wasmhost_tests::{Guest, Server, get, guest, raw_request};

fn path(which: Guest) -> &'static str {
    guest(which).to_str().unwrap()
}

fn mount(prefix: &str, which: Guest) -> String {
    format!("--mount={prefix}={}", path(which))
}

/// `fault` at /a (it reports what it saw at /seen) and `rust-hello` at /.
fn two_apps() -> Server {
    Server::start(
        WASMHOST,
        &[&mount("/a", Guest::Fault), path(Guest::RustHello)],
    )
}

const HELLO: &str = "Hello from a WebAssembly component!\n";

#[test]
fn the_app_sees_the_path_without_its_prefix_and_the_prefix_in_a_header() {
    let server = two_apps();
    let seen = get(&server.url("/a/seen?q=1&r=/x")).unwrap().body;
    assert!(seen.contains("path=/seen?q=1&r=/x\n"), "{seen}");
    assert!(seen.contains("x-forwarded-prefix: /a\n"), "{seen}");
    // The mount point itself is the app's root.
    assert_eq!(get(&server.url("/a")).unwrap().body, "hello\n");
    assert_eq!(get(&server.url("/a/")).unwrap().body, "hello\n");
}

#[test]
fn prefixes_match_on_segment_boundaries_only() {
    let server = two_apps();
    for path in ["/", "/ab", "/apple/a", "/b"] {
        let reply = get(&server.url(path)).unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, HELLO), "{path}");
    }
}

#[test]
fn the_longest_prefix_wins() {
    let server = Server::start(
        WASMHOST,
        &[&mount("/a", Guest::Fault), &mount("/a/b", Guest::RustHello)],
    );
    assert_eq!(get(&server.url("/a/b")).unwrap().body, HELLO);
    assert_eq!(get(&server.url("/a/b/c")).unwrap().body, HELLO);
    let seen = get(&server.url("/a/bc/../seen")).unwrap();
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert!(seen.body.contains("path=/seen\n"), "{}", seen.body);
}

#[test]
fn a_path_no_app_is_mounted_at_is_a_404_from_the_host() {
    let server = Server::start(WASMHOST, &[&mount("/a", Guest::Fault)]);
    for path in ["/", "/b", "/ab"] {
        let reply = get(&server.url(path)).unwrap();
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(
            reply.body,
            "404 Not Found: no app is mounted at this path\n"
        );
    }
}

#[test]
fn dot_dot_out_of_a_mount_is_a_400() {
    let server = two_apps();
    for target in [
        "/a/../etc/passwd",
        "/../a/seen",
        "/a/%2e%2e/x",
        "/x/../a/seen",
    ] {
        let reply = raw_request(
            server.addr,
            &format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        );
        assert!(reply.starts_with("HTTP/1.1 400 "), "{target}: {reply}");
        assert!(
            reply.ends_with("the path leaves its app with `..` or is not a path\n"),
            "{reply}"
        );
    }
    // Inside the app `..` is fine; empty and `.` segments are normalised.
    let reply = raw_request(
        server.addr,
        "GET //a/./x/../seen HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.contains("path=/seen\n"), "{reply}");
}

#[test]
fn a_client_cannot_forge_the_forwarded_prefix() {
    let server = Server::start(
        WASMHOST,
        &[&mount("/a", Guest::Fault), &mount("/", Guest::Fault)],
    );
    let forged = |path: &str| {
        raw_request(
            server.addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nX-Forwarded-Prefix: /admin\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let at_a = forged("/a/seen");
    assert!(at_a.contains("x-forwarded-prefix: /a\n"), "{at_a}");
    assert!(!at_a.contains("/admin"), "{at_a}");
    let at_root = forged("/seen");
    assert!(!at_root.contains("x-forwarded-prefix"), "{at_root}");
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn rust_python_and_root_apps_answer_on_two_listeners() {
    let server = Server::start_exact(
        WASMHOST,
        &[
            &mount("/rust", Guest::RustHello),
            &mount("/py", Guest::PythonHello),
            &mount("/", Guest::Fault),
            "--listen=127.0.0.1:0",
            "--listen=127.0.0.1:0",
        ],
    );
    let addrs = server.addresses(2);
    assert_ne!(addrs[0], addrs[1]);
    for addr in addrs {
        let url = |p: &str| format!("http://{addr}{p}");
        assert_eq!(get(&url("/rust")).unwrap().body, HELLO);
        assert_eq!(
            get(&url("/py/x")).unwrap().body,
            "Hello from a Python component!\n"
        );
        assert_eq!(get(&url("/")).unwrap().body, "hello\n");
        let seen = get(&url("/seen")).unwrap().body;
        assert!(seen.contains("path=/seen\n"), "{seen}");
    }
    // The route table is printed once, with every mount.
    let log = server.log();
    for route in ["route /rust -> ", "route /py -> ", "route / -> "] {
        assert_eq!(log.matches(route).count(), 1, "{route} in:\n{log}");
    }
}
