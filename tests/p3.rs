//! WASI 0.3 apps (`wasi:http/handler@0.3.0`, guest-examples/rust-p3):
//! served next to 0.2 ones, with streaming bodies both ways, trailers, the
//! per-request timeout and a trap costing only its request; and requests
//! sharing an instance (`--concurrency-per-instance`), each with its own
//! timeout, all ended by a trap.

use crate::WASMHOST;
use std::process::Command;
use std::time::{Duration, Instant};
use wasmhost_tests::{
    Guest, Load, Reply, Server, expect, get, get_concurrently, guest, post, run_to_exit,
};

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
    // Fresh instances are the default; the startup says what sharing gives.
    assert!(
        server
            .log()
            .contains("[/] is a WASI 0.3 app with a fresh instance per request, which keeps its requests apart; with --reuse N"),
        "{}",
        server.log()
    );
    let shared = Server::start(WASMHOST, &[p3(), "--reuse", "100"]);
    assert!(
        !shared
            .log()
            .contains("is a WASI 0.3 app with a fresh instance")
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
    let started = Instant::now();
    let replies = get_concurrently(&server.url("/sleep/300"), 20);
    let took = started.elapsed();
    for reply in &replies {
        assert_eq!(
            reply.as_ref().map(|(s, b)| (*s, b.as_str())),
            Ok((200, "slept 300 ms\n"))
        );
    }
    // One after another, the 20 waits take 6 s; they overlapped if all
    // were answered in half of that (at once, it is about 0.3 s).
    assert!(
        took < Duration::from_secs(3),
        "20 waits of 300 ms took {took:?}: they did not overlap"
    );
}

#[test]
#[ignore = "needs curl; tests/run installs it and runs this"]
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

#[test]
fn swapping_between_p2_and_p3_versions_under_load_fails_no_request() {
    const P2: &str = "Hello from a WebAssembly component!\n";
    const P3: &str = "Hello from a WASI 0.3 component!\n";
    let file = |body: &str| match body {
        P2 => guest(Guest::RustHello),
        _ => guest(Guest::RustP3),
    };
    let dir = wasmhost_tests::tempfile::TempDir::new().unwrap();
    let app = dir.path().join("app.wasm");
    std::fs::copy(file(P3), &app).unwrap();
    let server = Server::start(WASMHOST, &[app.to_str().unwrap()]);
    let url = server.url("/");
    let load = {
        let url = url.clone();
        Load::start(4, move |agent, _, _| {
            expect(agent.get(&url).call(), |status, body| {
                status == 200 && (body == P2 || body == P3)
            })
        })
    };
    for (swap, version) in [P2, P3, P2, P3].into_iter().enumerate() {
        wasmhost_tests::rename_over(&app, &std::fs::read(file(version)).unwrap());
        assert!(
            server.wait_for_count("reloaded / (", swap + 1, Duration::from_secs(60)),
            "swap {swap}:\n{}",
            server.log()
        );
        assert_eq!(get(&url).unwrap().body, version, "after swap {swap}");
    }
    load.finish().assert_clean(100);
}

#[test]
fn a_p3_request_in_flight_is_answered_across_a_graceful_shutdown() {
    let mut server = Server::start(WASMHOST, &[p3()]);
    let slow = {
        let url = server.url("/sleep/1000");
        std::thread::spawn(move || get(&url).map(|r| (r.status, r.body)))
    };
    assert!(server.wait_for_log("sleeping 1000 ms", Duration::from_secs(30)));
    server.signal(wasmhost_tests::libc::SIGTERM);
    let reply = slow.join().unwrap().unwrap();
    assert_eq!(reply, (200, "slept 1000 ms\n".to_string()));
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("wasmhost exits");
    assert!(status.success(), "{status:?}\n{}", server.log());
}

/// `get` on `count` threads at once, each reply with its headers.
fn get_on_threads(url: &str, count: usize) -> Vec<std::thread::JoinHandle<Reply>> {
    (0..count)
        .map(|_| {
            let url = url.to_string();
            std::thread::spawn(move || get(&url).expect("a reply"))
        })
        .collect()
}

/// Which request of its instance a reply answered (the guest counts).
fn instance_request(reply: &Reply) -> u32 {
    reply
        .header("x-instance-request")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no x-instance-request in {:?}", reply.headers))
}

const SHARED: &[&str] = &[
    "--reuse",
    "1000",
    "--concurrency-per-instance",
    "20",
    "--spares",
    "0",
];

/// Said at debug level each time a request joins a busy instance.
const JOINED: &str = "request given to an instance serving";

/// Said at debug level when an instance is first found waiting with a
/// request unanswered: from then on it takes more. The guest's own line
/// comes a moment before, while its store still runs.
const WAITS: &str = "an instance waits with a request unanswered";

/// A server with `args`, logging at debug level.
fn debug_server(args: &[&str]) -> Server {
    let mut command = Command::new(WASMHOST);
    command
        .arg("serve")
        .args(args)
        .args(["--port", "0"])
        .env("RUST_LOG", "wasmhost=debug");
    Server::spawn(command)
}

/// Waits until `count` instances in all have been found waiting.
fn wait_until_shared(server: &Server, count: usize) {
    assert!(
        server.wait_for_count(WAITS, count, Duration::from_secs(30)),
        "{}",
        server.log()
    );
}

#[test]
fn twenty_concurrent_waits_share_one_instance() {
    let server = debug_server(&[&[p3()][..], SHARED].concat());
    let url = server.url("/sleep/500");
    let first = get_on_threads(&url, 1);
    // Once a request on it waits, the instance takes more.
    wait_until_shared(&server, 1);
    let started = std::time::Instant::now();
    let rest = get_on_threads(&url, 19);
    let mut seen = Vec::new();
    for thread in rest {
        let reply = thread.join().unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "slept 500 ms\n"));
        seen.push(instance_request(&reply));
    }
    // One after another, 19 waits of 500 ms would take 9.5 s.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    seen.push(instance_request(
        &first.into_iter().next().unwrap().join().unwrap(),
    ));
    seen.sort();
    assert_eq!(
        seen,
        (1..=20).collect::<Vec<_>>(),
        "not all on one instance"
    );
}

/// With one place and no spares, each request waits for the place the
/// last one held, and by then its instance is idle again: no request makes
/// an instance of its own, even when it runs on the other connection
/// worker.
#[test]
fn a_request_freed_its_place_only_once_its_instance_was_idle() {
    let server = Server::start(
        WASMHOST,
        &[
            p3(),
            "--reuse",
            "100",
            "--spares",
            "0",
            "--concurrency",
            "1",
        ],
    );
    for served in 1..=6 {
        let reply = get(&server.url("/")).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(instance_request(&reply), served, "{}", server.log());
    }
}

#[test]
fn requests_that_only_compute_do_not_share_an_instance() {
    // The hello yields once per request (wit-bindgen's runtime) but waits
    // on nothing: on an instance of their own, requests run in parallel
    // and each is done in its own task, with no hand-off.
    let server = debug_server(&[&[p3()][..], SHARED].concat());
    let url = server.url("/");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let reply = get(&url).expect("a reply");
                    assert_eq!(reply.status, 200);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(
        server.log().matches(WAITS).count(),
        0,
        "a hello made its instance take more"
    );
    // A request that waits makes its instance take more.
    let waiting = get_on_threads(&server.url("/sleep/1000"), 1);
    wait_until_shared(&server, 1);
    let joined = get_on_threads(&server.url("/sleep/10"), 1);
    for thread in waiting.into_iter().chain(joined) {
        assert_eq!(thread.join().unwrap().status, 200);
    }
    let log = server.log();
    assert_eq!(
        log.matches(JOINED).count(),
        1,
        "only the request beside a waiting one joined it:\n{log}"
    );
}

#[test]
fn a_timeout_in_a_shared_instance_ends_only_its_request() {
    let server = debug_server(&[&[p3(), "--timeout", "1s"][..], SHARED].concat());
    let long = get_on_threads(&server.url("/sleep/5000"), 1);
    wait_until_shared(&server, 1);
    for thread in get_on_threads(&server.url("/sleep/200"), 3) {
        let reply = thread.join().unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "slept 200 ms\n"));
        assert!(
            instance_request(&reply) > 1,
            "not on the long request's instance"
        );
    }
    let long = long.into_iter().next().unwrap().join().unwrap();
    assert_eq!(long.status, 504, "{}", long.body);
    assert!(server.wait_for_log(
        "guest did not answer within the 1s timeout",
        Duration::from_secs(10)
    ));
    // Its guest task may still run: that instance serves no more.
    let after = get(&server.url("/")).unwrap();
    assert_eq!((after.status, instance_request(&after)), (200, 1));
}

#[test]
fn a_trap_in_a_shared_instance_ends_every_request_on_it_and_is_logged_once() {
    let server = debug_server(&[&[p3()][..], SHARED].concat());
    let url = server.url("/sleep/20000");
    let mut waiting = get_on_threads(&url, 1);
    wait_until_shared(&server, 1);
    waiting.extend(get_on_threads(&url, 2));
    assert!(server.wait_for_count("sleeping 20000 ms", 3, Duration::from_secs(30)));
    let trapped = get(&server.url("/trap")).unwrap();
    assert_eq!(trapped.status, 500, "{}", trapped.body);
    for thread in waiting {
        let reply = thread.join().unwrap();
        assert_eq!(reply.status, 500, "{}", reply.body);
    }
    assert!(
        server.wait_for_log(
            "it ended the 4 requests on its instance",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    assert_eq!(
        server.log().matches("guest trapped").count(),
        1,
        "{}",
        server.log()
    );
    // The instance is gone; a new one serves.
    let after = get(&server.url("/")).unwrap();
    assert_eq!((after.status, instance_request(&after)), (200, 1));
}

#[test]
fn shared_instances_finish_their_requests_across_a_reload_and_a_shutdown() {
    const P2: &str = "Hello from a WebAssembly component!\n";
    let dir = wasmhost_tests::tempfile::TempDir::new().unwrap();
    let app = dir.path().join("app.wasm");
    let install =
        |from: &std::path::Path| wasmhost_tests::rename_over(&app, &std::fs::read(from).unwrap());
    install(guest(Guest::RustP3));
    let mut server = debug_server(&[&[app.to_str().unwrap()][..], SHARED].concat());
    let hold = |server: &Server, ms: u32, count: usize| {
        let url = server.url(&format!("/sleep/{ms}"));
        let line = format!("sleeping {ms} ms");
        let before = server.log().matches(&line).count();
        let shared = server.log().matches(WAITS).count();
        let mut held = get_on_threads(&url, 1);
        wait_until_shared(server, shared + 1);
        held.extend(get_on_threads(&url, count - 1));
        assert!(server.wait_for_count(&line, before + count, Duration::from_secs(30)));
        held
    };
    let check = |held: Vec<std::thread::JoinHandle<Reply>>, ms: u32| {
        let mut seen: Vec<u32> = held
            .into_iter()
            .map(|thread| {
                let reply = thread.join().unwrap();
                assert_eq!(reply.status, 200, "{}", reply.body);
                assert_eq!(reply.body, format!("slept {ms} ms\n"));
                instance_request(&reply)
            })
            .collect();
        seen.sort();
        seen
    };
    // A reload while one old instance holds five requests: they finish on
    // it, new requests get the new version.
    let held = hold(&server, 5000, 5);
    install(guest(Guest::RustHello));
    assert!(
        server.wait_for_log("reloaded / (", Duration::from_secs(60)),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.url("/")).unwrap().body, P2);
    assert!(
        held.iter().all(|thread| !thread.is_finished()),
        "the requests ended before the reload: the test shows nothing"
    );
    assert_eq!(check(held, 5000), vec![1, 2, 3, 4, 5]);
    // A graceful shutdown while one instance holds three.
    install(guest(Guest::RustP3));
    assert!(server.wait_for_count("reloaded / (", 2, Duration::from_secs(60)));
    let held = hold(&server, 1000, 3);
    server.signal(wasmhost_tests::libc::SIGTERM);
    assert_eq!(check(held, 1000), vec![1, 2, 3]);
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("wasmhost exits");
    assert!(status.success(), "{status:?}\n{}", server.log());
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_python_p3_app_serves_waiting_requests_on_one_instance() {
    let python = guest(Guest::PythonP3).to_str().unwrap();
    let server = debug_server(&[
        python,
        "--reuse",
        "1000",
        "--concurrency-per-instance",
        "10",
        "--spares",
        "0",
    ]);
    let hello = get(&server.url("/")).unwrap();
    assert_eq!(
        (hello.status, hello.body.as_str(), instance_request(&hello)),
        (200, "Hello from a WASI 0.3 Python component!\n", 1)
    );
    let url = server.url("/sleep/500");
    let mut held = get_on_threads(&url, 1);
    wait_until_shared(&server, 1);
    held.extend(get_on_threads(&url, 9));
    let mut seen: Vec<u32> = held
        .into_iter()
        .map(|thread| {
            let reply = thread.join().unwrap();
            assert_eq!((reply.status, reply.body.as_str()), (200, "slept 500 ms\n"));
            instance_request(&reply)
        })
        .collect();
    seen.sort();
    // All ten on the instance that answered the hello: one CPython.
    assert_eq!(seen, (2..=11).collect::<Vec<_>>());
}
