//! WASI 0.3 apps (`wasi:http/handler@0.3.0`, guest-examples/rust-p3):
//! served next to 0.2 ones, with streaming bodies both ways, trailers, the
//! per-request timeout and a trap costing only its request.

use crate::WASMHOST;
use std::process::Command;
use std::time::Duration;
use wasmhost_tests::{Guest, Server, get, get_concurrently, guest, post, run_to_exit};

fn p3() -> &'static str {
    guest(Guest::RustP3).to_str().unwrap()
}

#[test]
fn a_p3_app_is_served_and_named_as_such() {
    let server = Server::start(WASMHOST, &[p3()]);
    let reply = get(&server.url("/")).unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "Hello from a WASI 0.3 component!\n")
    );
    assert!(
        server.log().contains("KiB, wasi:http 0.3, "),
        "{}",
        server.log()
    );
    let check = run_to_exit(WASMHOST, &["check", p3()], Duration::from_secs(180));
    assert!(check.status.success(), "{}", check.stderr);
    assert!(check.stdout.contains("wasi:http 0.3"), "{}", check.stdout);
}

#[test]
fn a_p3_app_streams_a_large_body_back() {
    let server = Server::start(WASMHOST, &[p3(), "--body-limit", "4MiB"]);
    let body: Vec<u8> = (0..(1 << 20)).map(|i| b'a' + (i % 26) as u8).collect();
    let reply = post(&server.url("/echo"), &body).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body.as_bytes() == body.as_slice(), "the echo differs");
}

#[test]
fn p2_and_p3_apps_are_mounted_side_by_side() {
    let p2 = guest(Guest::Fault).to_str().unwrap();
    let server = Server::start(
        WASMHOST,
        &[
            "--mount",
            &format!("/p2={p2}"),
            "--mount",
            &format!("/p3={}", p3()),
        ],
    );
    assert_eq!(get(&server.url("/p2/")).unwrap().body, "hello\n");
    // The prefix is stripped for a 0.3 guest as for a 0.2 one.
    assert_eq!(get(&server.url("/p3/count")).unwrap().body, "1\n");
    assert_eq!(
        get(&server.url("/p3/")).unwrap().body,
        "Hello from a WASI 0.3 component!\n"
    );
}

#[test]
fn a_trap_or_a_timeout_costs_only_its_own_request() {
    let server = Server::start(WASMHOST, &[p3(), "--timeout", "1s"]);
    let trapped = get(&server.url("/trap")).unwrap();
    assert_eq!(trapped.status, 500);
    assert!(
        server.wait_for_log("guest trapped: wasm trap", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let slow = {
        let url = server.url("/sleep/5000");
        std::thread::spawn(move || get(&url).unwrap().status)
    };
    // Others are answered meanwhile, and after.
    assert_eq!(get(&server.url("/sleep/10")).unwrap().body, "slept 10 ms\n");
    assert_eq!(slow.join().unwrap(), 504);
    assert_eq!(get(&server.url("/")).unwrap().status, 200);
}

#[test]
fn concurrent_waits_do_not_wait_for_each_other() {
    let server = Server::start(WASMHOST, &[p3()]);
    let replies = get_concurrently(&server.url("/sleep/300"), 20);
    for reply in &replies {
        assert_eq!(
            reply.as_ref().map(|(s, b)| (*s, b.as_str())),
            Ok((200, "slept 300 ms\n"))
        );
    }
}

#[test]
fn a_p3_app_sends_trailers() {
    let server = Server::start(WASMHOST, &[p3()]);
    let out = Command::new("curl")
        .args([
            "-s",
            "-v",
            "--http2-prior-knowledge",
            &server.url("/trailers"),
        ])
        .output()
        .expect("curl (tests/run installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, "with trailers\n", "{stderr}");
    assert!(stderr.contains("< x-checksum: done"), "{stderr}");
}
