//! Per-app limits: a request over its app's memory, CPU time or timeout fails
//! alone with its own status and log line, and the apps keep serving.

use crate::WASMHOST;
use std::time::{Duration, Instant};
use wasmhost_tests::{Guest, Server, get, guest, post, raw_request};

fn fault() -> &'static str {
    guest(Guest::Fault).to_str().unwrap()
}

/// The fault guest at `/f` and the Rust hello at `/`, with `flags`.
fn two_apps(flags: &[&str]) -> Server {
    let fault_mount = format!("--mount=/f={}", fault());
    let hello = guest(Guest::RustHello).to_str().unwrap();
    let mut args = vec![fault_mount.as_str(), hello];
    args.extend_from_slice(flags);
    Server::start(WASMHOST, &args)
}

const HELLO: &str = "Hello from a WebAssembly component!\n";

#[test]
fn an_instance_over_the_memory_limit_gets_a_500_and_the_apps_serve_on() {
    let server = two_apps(&["--memory-limit", "32MiB"]);
    let reply = get(&server.url("/f/alloc/64")).unwrap();
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert!(
        server.wait_for_log(
            "guest ran out of memory: it asked for",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    let log = server.log();
    let line = log.lines().find(|l| l.contains("out of memory")).unwrap();
    assert!(line.contains("app=/f"), "{line}");
    assert!(line.contains("the limit is 32 MiB"), "{line}");
    // Under the limit the same route works, and so does the other app.
    let small = get(&server.url("/f/alloc/8")).unwrap();
    assert_eq!(small.status, 200, "{}", small.body);
    assert!(small.body.starts_with("allocated 8 MiB"), "{}", small.body);
    assert_eq!(get(&server.url("/")).unwrap().body, HELLO);
}

#[test]
fn a_guest_that_loops_is_stopped_at_the_cpu_limit_with_a_504() {
    let server = two_apps(&["--cpu-limit", "300ms"]);
    let started = Instant::now();
    let reply = get(&server.url("/f/loop")).unwrap();
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(
        reply.body,
        "504 Gateway Timeout: the application did not answer in time\n"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        server.wait_for_log(
            "guest used its CPU time limit of 300ms and was stopped",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.url("/")).unwrap().body, HELLO);
    assert_eq!(get(&server.url("/f/")).unwrap().body, "hello\n");
}

#[test]
fn waiting_in_host_calls_is_not_cpu_time() {
    // A guest that sleeps three times its CPU limit still answers: only
    // running counts.
    let server = two_apps(&["--cpu-limit", "200ms"]);
    let reply = get(&server.url("/f/sleep/600")).unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "slept 600 ms\n"));
}

#[test]
fn a_guest_that_does_not_answer_in_time_gets_a_504() {
    let server = two_apps(&["--timeout", "500ms"]);
    let started = Instant::now();
    let reply = get(&server.url("/f/sleep/30000")).unwrap();
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        server.wait_for_log(
            "guest did not answer within the 500ms timeout; stopped",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.url("/")).unwrap().body, HELLO);
}

#[test]
fn sixty_four_looping_requests_do_not_hold_up_another_app() {
    let server = two_apps(&["--cpu-limit", "100ms"]);
    // Connected and warm before the loops start.
    let agent = wasmhost_tests::client();
    let hello = || {
        agent
            .get(&server.url("/"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap()
    };
    assert_eq!(hello(), HELLO);

    let loops: Vec<_> = (0..64)
        .map(|_| {
            let url = server.url("/f/loop");
            std::thread::spawn(move || get(&url).map(|reply| reply.status))
        })
        .collect();
    assert!(
        server.wait_for_count("looping", 16, Duration::from_secs(30)),
        "{}",
        server.log()
    );
    // Not a time bound: the other app answers while every looping request
    // is still running (each needs ~3 s of wall time to use its 100 ms of
    // CPU on two threads shared by 64), so the loops hold no thread.
    assert_eq!(hello(), HELLO);
    assert!(
        loops.iter().all(|handle| !handle.is_finished()),
        "a looping request ended before the other app answered"
    );

    for handle in loops {
        assert_eq!(handle.join().unwrap().unwrap(), 504);
    }
    assert_eq!(hello(), HELLO);
}

#[test]
fn limits_are_set_per_app_in_the_config_file() {
    let dir = wasmhost_tests::tempfile::TempDir::new().unwrap();
    let config = dir.path().join("wasmhost.toml");
    std::fs::write(
        &config,
        format!(
            "[[app]]\nroute = \"/small\"\ncomponent = \"{f}\"\nmemory = \"16MiB\"\n\n\
             [[app]]\nroute = \"/big\"\ncomponent = \"{f}\"\nmemory = \"256MiB\"\n",
            f = fault()
        ),
    )
    .unwrap();
    let server = Server::start(WASMHOST, &["--config", config.to_str().unwrap()]);
    assert_eq!(get(&server.url("/small/alloc/32")).unwrap().status, 500);
    assert_eq!(get(&server.url("/big/alloc/32")).unwrap().status, 200);
}

#[test]
fn a_declared_body_over_the_limit_gets_a_413_before_the_guest_runs() {
    let server = two_apps(&["--body-limit", "1KiB"]);
    let reply = post(&server.url("/f/read-body"), &[b'x'; 2048]).unwrap();
    assert_eq!(reply.status, 413);
    assert_eq!(
        reply.body,
        "413 Payload Too Large: the request body is larger than this app accepts (1024 bytes)\n"
    );
    let fits = post(&server.url("/f/read-body"), &[b'x'; 1024]).unwrap();
    assert_eq!(
        (fits.status, fits.body.as_str()),
        (200, "read 1024 bytes\n")
    );
}

#[test]
fn a_chunked_body_that_grows_past_the_limit_gets_a_413() {
    let server = two_apps(&["--body-limit", "1KiB"]);
    let addr = server.addresses(1)[0];
    // No Content-Length: the limit is found while the guest reads, and the
    // guest never gets the chunk that crosses it.
    let chunk = "x".repeat(600);
    let chunked = |chunks: usize| {
        let mut request = String::from(
            "POST /f/read-body HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        for _ in 0..chunks {
            request += &format!("258\r\n{chunk}\r\n");
        }
        request + "0\r\n\r\n"
    };
    let over = raw_request(addr, &chunked(2));
    assert!(over.starts_with("HTTP/1.1 413 "), "{over}");
    let under = raw_request(addr, &chunked(1));
    assert!(under.starts_with("HTTP/1.1 200 "), "{under}");
    assert!(under.contains("\r\nread 600 bytes\n"), "{under}");
}

#[test]
fn past_its_concurrency_and_queue_an_app_answers_503_at_once() {
    let server = two_apps(&["--concurrency", "2", "--queue", "1"]);
    // Two run, one waits, one is turned away: which of the last two waits
    // depends on which reaches the server first.
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let url = server.url("/f/sleep/1500");
            std::thread::spawn(move || (get(&url).unwrap().status, Instant::now()))
        })
        .collect();
    assert!(
        server.wait_for_count("sleeping 1500 ms", 2, Duration::from_secs(30)),
        "{}",
        server.log()
    );
    let late: Vec<_> = (0..2)
        .map(|_| {
            let url = server.url("/f/sleep/10");
            std::thread::spawn(move || {
                let reply = get(&url).unwrap();
                (
                    reply.status,
                    reply.header("retry-after").map(str::to_owned),
                    Instant::now(),
                )
            })
        })
        .collect();
    // Another app is not held up meanwhile.
    assert_eq!(get(&server.url("/")).unwrap().body, HELLO);
    let mut late: Vec<_> = late.into_iter().map(|h| h.join().unwrap()).collect();
    late.sort_by_key(|(status, _, _)| *status);
    let (waited, turned_away) = (&late[0], &late[1]);
    assert_eq!(waited.0, 200);
    assert_eq!(turned_away.0, 503);
    assert_eq!(turned_away.1.as_deref(), Some("1"));
    // At once: before the requests holding the places are done, rather
    // than after waiting for one of them (an ordering, not a time bound).
    let sleepers: Vec<_> = sleepers.into_iter().map(|h| h.join().unwrap()).collect();
    for (status, done) in &sleepers {
        assert_eq!(*status, 200);
        assert!(
            turned_away.2 < *done,
            "the 503 came after a running request ended"
        );
    }
}

#[test]
fn past_the_guest_memory_budget_a_request_gets_503_and_the_budget_comes_back() {
    // 100 MiB for all guests: one request holding 60 MiB leaves too little
    // for a second one, which is refused rather than grown.
    let server = two_apps(&["--memory-budget", "100MiB"]);
    assert!(
        server.wait_for_log(
            "guest memory budget 0.1 GiB (--memory-budget)",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    let holder = {
        let url = server.url("/f/hold/60/3000");
        std::thread::spawn(move || get(&url).unwrap())
    };
    assert!(
        server.wait_for_log("holding 60 MiB", Duration::from_secs(30)),
        "{}",
        server.log()
    );
    let refused = get(&server.url("/f/alloc/60")).unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.body,
        "503 Service Unavailable: the server's memory for applications is in use; try again shortly\n"
    );
    // A small request still fits beside the holder.
    assert_eq!(get(&server.url("/")).unwrap().body, HELLO);
    let held = holder.join().unwrap();
    assert_eq!((held.status, held.body.as_str()), (200, "held 60 MiB\n"));
    // Given back when the holder's instance is dropped, which happens just
    // after its response: poll for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut again = get(&server.url("/f/alloc/60")).unwrap();
    while again.status == 503 && Instant::now() < deadline {
        again = get(&server.url("/f/alloc/60")).unwrap();
    }
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(
        server.wait_for_log(
            "the guest memory budget of 100 MiB is in use",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
}

#[test]
fn the_default_memory_budget_is_said_at_startup() {
    let server = two_apps(&[]);
    assert!(
        server.wait_for_log("guest memory budget ", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    assert!(server.log().contains("(3/4 of the"), "{}", server.log());
}
