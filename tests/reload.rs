//! Hot reload: a changed component file is compiled and swapped in while
//! requests keep flowing; a file that does not load never replaces the
//! version being served.

use crate::WASMHOST;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, Load, Server, client, expect, get, guest, rename_over};

/// What `/` answers with each version: the Rust hello, then the fault guest.
const V1: &str = "Hello from a WebAssembly component!\n";
const V2: &str = "hello\n";

/// Generous: the test profile compiles without Cranelift's full speed, and
/// tests run in parallel.
const DEADLINE: Duration = Duration::from_secs(60);

fn version_file(version: &str) -> &'static Path {
    match version {
        V1 => guest(Guest::RustHello),
        _ => guest(Guest::Fault),
    }
}

/// A directory with `app.wasm`, a copy of version 1.
fn app_dir() -> (TempDir, PathBuf) {
    let dir = TempDir::new().unwrap();
    let app = dir.path().join("app.wasm");
    std::fs::copy(version_file(V1), &app).unwrap();
    (dir, app)
}

/// Starts a GET of `path` (a `/sleep/1500` of the fault guest) and returns
/// once the guest is running it.
fn slow_request(
    server: &Server,
    path: &str,
) -> std::thread::JoinHandle<Result<(u16, String), wasmhost_tests::ureq::Error>> {
    let url = server.url(path);
    let slow = std::thread::spawn(move || get(&url).map(|r| (r.status, r.body)));
    assert!(server.wait_for_log("sleeping 1500 ms", DEADLINE));
    slow
}

/// GETs `/` until it answers `body`; false at the deadline.
fn serves(server: &Server, body: &str) -> bool {
    let agent = client();
    let started = Instant::now();
    while started.elapsed() < DEADLINE {
        let reply = agent.get(&server.url("/")).call();
        if let Ok(reply) = reply
            && reply.into_body().read_to_string().ok().as_deref() == Some(body)
        {
            return true;
        }
        // A poll with a deadline; the pause keeps it from taking a core
        // from the server it waits on.
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn swapping_versions_under_load_fails_no_request() {
    let (_dir, app) = app_dir();
    let server = Server::start(WASMHOST, &[app.to_str().unwrap()]);
    let url = server.url("/");
    // Four clients on keep-alive connections, requesting without pause.
    let load = {
        let url = url.clone();
        Load::start(4, move |agent, _, _| {
            expect(agent.get(&url).call(), |status, body| {
                status == 200 && (body == V1 || body == V2)
            })
        })
    };

    for (swap, version) in [V2, V1, V2, V1, V2].into_iter().enumerate() {
        rename_over(&app, &std::fs::read(version_file(version)).unwrap());
        assert!(
            server.wait_for_count("reloaded / (", swap + 1, DEADLINE),
            "swap {swap} was not reloaded:\n{}",
            server.log()
        );
        // Once the swap is logged, every new request gets the new version.
        let agent = client();
        for _ in 0..20 {
            let body = agent.get(&url).call().unwrap().into_body().read_to_string();
            assert_eq!(body.unwrap(), version, "after swap {swap}");
        }
    }

    load.finish().assert_clean(100);
    let log = server.log();
    assert_eq!(log.matches("reloaded / (").count(), 5, "{log}");
    assert!(!log.contains("not reloading"), "{log}");
}

#[test]
fn a_request_in_flight_finishes_on_the_version_it_started_on() {
    let dir = TempDir::new().unwrap();
    let app = dir.path().join("app.wasm");
    std::fs::copy(version_file(V2), &app).unwrap();
    let server = Server::start(WASMHOST, &[app.to_str().unwrap()]);
    let slow = slow_request(&server, "/sleep/1500");
    rename_over(&app, &std::fs::read(version_file(V1)).unwrap());
    assert!(
        server.wait_for_log("reloaded / (", DEADLINE),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.url("/")).unwrap().body, V1);
    let finished = slow.join().unwrap().unwrap();
    assert_eq!(finished, (200, "slept 1500 ms\n".to_string()));
}

#[test]
fn a_file_that_does_not_load_never_replaces_the_running_version() {
    let (_dir, app) = app_dir();
    let server = Server::start(WASMHOST, &[app.to_str().unwrap()]);
    let good = std::fs::read(version_file(V2)).unwrap();
    let name = app.display().to_string();

    // Each is written in place; waiting is for the message its complete
    // contents give, since a reader may also catch a write half done.
    std::fs::write(&app, b"<html>not a component</html>").unwrap();
    assert!(server.wait_for_log("is not a WebAssembly file", DEADLINE));
    assert_eq!(get(&server.url("/")).unwrap().body, V1);

    std::fs::write(&app, &good[..good.len() / 2]).unwrap();
    assert!(server.wait_for_log("is not a valid component", DEADLINE));
    assert_eq!(get(&server.url("/")).unwrap().body, V1);

    // A whole, valid component of the wrong world, renamed into place.
    rename_over(&app, &std::fs::read(guest(Guest::Command)).unwrap());
    assert!(server.wait_for_log("does not export wasi:http/incoming-handler", DEADLINE));
    assert_eq!(get(&server.url("/")).unwrap().body, V1);

    std::fs::remove_file(&app).unwrap();
    assert!(server.wait_for_log("cannot read", DEADLINE));
    assert_eq!(get(&server.url("/")).unwrap().body, V1);

    // Each refusal was one line naming the route, the file and the outcome.
    let log = server.log();
    for line in log.lines().filter(|line| line.contains("not reloading")) {
        assert!(line.contains("not reloading /: "), "{line}");
        assert!(line.contains(&name), "{line}");
        assert!(
            line.ends_with("still serving the previous version"),
            "{line}"
        );
    }
    assert!(!log.contains("reloaded"), "{log}");

    // The next good write is picked up.
    rename_over(&app, &good);
    assert!(serves(&server, V2), "{}", server.log());
}

#[test]
fn with_no_reload_the_startup_version_keeps_serving() {
    let (_dir, app) = app_dir();
    let path = app.to_str().unwrap();
    let fixed = Server::start(WASMHOST, &[path, "--no-reload"]);
    // A second server watches the same file: once it has reloaded, the
    // change has been visible long enough for the first to have acted.
    let watching = Server::start(WASMHOST, &[path]);
    rename_over(&app, &std::fs::read(version_file(V2)).unwrap());
    assert!(watching.wait_for_log("reloaded / (", DEADLINE));
    assert_eq!(get(&watching.url("/")).unwrap().body, V2);
    assert_eq!(get(&fixed.url("/")).unwrap().body, V1);
    assert!(!fixed.log().contains("reloaded"), "{}", fixed.log());
}

#[test]
fn rewriting_the_same_bytes_does_not_reload() {
    let (_dir, app) = app_dir();
    let server = Server::start(WASMHOST, &[app.to_str().unwrap()]);
    let same = std::fs::read(&app).unwrap();
    rename_over(&app, &same);
    rename_over(&app, &std::fs::read(version_file(V2)).unwrap());
    assert!(server.wait_for_log("reloaded / (", DEADLINE));
    assert!(serves(&server, V2));
    assert_eq!(
        server.log().matches("reloaded").count(),
        1,
        "{}",
        server.log()
    );
}

#[test]
fn only_the_mount_whose_file_changed_is_reloaded() {
    let (dir, app) = app_dir();
    let other = dir.path().join("other.wasm");
    std::fs::copy(version_file(V1), &other).unwrap();
    let server = Server::start(
        WASMHOST,
        &[
            &format!("--mount=/a={}", app.display()),
            &format!("--mount=/b={}", other.display()),
        ],
    );
    rename_over(&app, &std::fs::read(version_file(V2)).unwrap());
    assert!(
        server.wait_for_log("reloaded /a (", DEADLINE),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.url("/a/")).unwrap().body, V2);
    assert_eq!(get(&server.url("/b/")).unwrap().body, V1);
    assert!(!server.log().contains("reloaded /b"), "{}", server.log());
}

#[test]
fn a_config_edit_adds_and_removes_mounts_and_a_bad_one_changes_nothing() {
    let dir = TempDir::new().unwrap();
    std::fs::copy(version_file(V2), dir.path().join("a.wasm")).unwrap();
    std::fs::copy(version_file(V1), dir.path().join("b.wasm")).unwrap();
    let config = dir.path().join("wasmhost.toml");
    let a = "[[app]]\nroute = \"/a\"\ncomponent = \"a.wasm\"\n";
    let b = "[[app]]\nroute = \"/b\"\ncomponent = \"b.wasm\"\n";
    std::fs::write(&config, a).unwrap();
    let server = Server::start(WASMHOST, &["--config", config.to_str().unwrap()]);

    // A request to the untouched mount is in flight while the edit applies.
    let slow = slow_request(&server, "/a/sleep/1500");
    rename_over(&config, format!("{a}{b}").as_bytes());
    assert!(
        server.wait_for_log("configuration applied", DEADLINE),
        "{}",
        server.log()
    );
    assert!(
        server
            .log()
            .contains("1 app(s) added, 0 reloaded, 0 removed, 1 unchanged")
    );
    assert_eq!(get(&server.url("/b/")).unwrap().body, V1);
    assert_eq!(get(&server.url("/a/")).unwrap().body, V2);
    let finished = slow.join().unwrap().unwrap();
    assert_eq!(finished, (200, "slept 1500 ms\n".to_string()));

    // Invalid as a whole: the valid mount in it is not applied either.
    let c = "[[app]]\nroute = \"/c\"\ncomponent = \"b.wasm\"\n";
    rename_over(&config, format!("{b}{c}colour = \"red\"\n").as_bytes());
    assert!(server.wait_for_log("not applying the configuration", DEADLINE));
    let line = server
        .log()
        .lines()
        .find(|line| line.contains("not applying"))
        .unwrap()
        .to_string();
    assert!(line.contains("unknown field `colour`"), "{line}");
    assert!(line.ends_with("still serving the previous one"), "{line}");
    assert_eq!(get(&server.url("/a/")).unwrap().body, V2);
    assert_eq!(get(&server.url("/c/")).unwrap().status, 404);

    rename_over(&config, b.as_bytes());
    assert!(
        server.wait_for_count("configuration applied", 2, DEADLINE),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.url("/a/")).unwrap().status, 404);
    assert_eq!(get(&server.url("/b/")).unwrap().body, V1);
}

#[test]
fn sighup_reloads_every_app_even_without_watching() {
    let (_dir, app) = app_dir();
    let server = Server::start(WASMHOST, &[app.to_str().unwrap(), "--no-reload"]);
    std::fs::write(&app, std::fs::read(version_file(V2)).unwrap()).unwrap();
    assert_eq!(get(&server.url("/")).unwrap().body, V1);
    server.signal(wasmhost_tests::libc::SIGHUP);
    assert!(
        server.wait_for_log("configuration applied", DEADLINE),
        "{}",
        server.log()
    );
    assert!(
        server.log().contains("0 app(s) added, 1 reloaded"),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.url("/")).unwrap().body, V2);
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_large_component_serves_a_quick_build_then_cranelifts() {
    let dir = TempDir::new().unwrap();
    let cache = dir.path().join("cache");
    let python = guest(Guest::PythonHello).to_str().unwrap();
    let args = [python, "--cache-dir", cache.to_str().unwrap()];
    let hello = "Hello from a Python component!\n";

    let server = Server::start(WASMHOST, &args);
    let log = server.log();
    assert!(log.contains("compiled with Winch in"), "{log}");
    assert!(log.contains("Cranelift build to follow"), "{log}");
    assert_eq!(get(&server.url("/")).unwrap().body, hello);
    assert!(
        server.wait_for_log("optimised / (", Duration::from_secs(300)),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.url("/")).unwrap().body, hello);
    drop(server);

    // Cranelift's build was cached: the next start serves it at once.
    let again = Server::start(WASMHOST, &args);
    assert!(
        again.log().contains("loaded from cache in"),
        "{}",
        again.log()
    );
    assert!(!again.log().contains("Winch"), "{}", again.log());
}
