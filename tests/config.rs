//! `wasmhost.toml` and `wasmhost check`: a config file serves listeners and
//! apps, flags override it, and every mistake in it is reported with the
//! file, the line and the key.

use crate::WASMHOST;
use std::path::Path;
use std::time::Duration;
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Finished, Guest, Server, get, guest, run_to_exit};

/// A directory holding `wasmhost.toml` with `text`, and the hello component
/// copied in as `hello.wasm` so relative paths can be tested.
fn config_dir(text: &str) -> (TempDir, String) {
    let dir = TempDir::new().unwrap();
    std::fs::copy(guest(Guest::RustHello), dir.path().join("hello.wasm")).unwrap();
    let path = dir.path().join("wasmhost.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

fn check(args: &[&str]) -> Finished {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    run_to_exit(WASMHOST, &all, Duration::from_secs(180))
}

/// The single error line of a failed run.
fn error_line(finished: &Finished) -> String {
    finished.error_line().to_string()
}

const HELLO: &str = "Hello from a WebAssembly component!\n";

#[test]
fn a_config_file_serves_its_listeners_and_apps() {
    let fault = guest(Guest::Fault).display();
    let (_dir, config) = config_dir(&format!(
        "# two listeners, two apps\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\n\
         [[app]]\nroute = \"/fault\"\ncomponent = \"{fault}\"\n"
    ));
    let server = Server::start_exact(WASMHOST, &["--config", &config]);
    for addr in server.addresses(2) {
        assert_eq!(get(&format!("http://{addr}/")).unwrap().body, HELLO);
        let seen = get(&format!("http://{addr}/fault/seen")).unwrap().body;
        assert!(seen.contains("x-forwarded-prefix: /fault\n"), "{seen}");
    }
}

#[test]
fn flags_override_the_file() {
    // Port 1 is privileged: if the file's listener were used, startup fails.
    let (_dir, config) = config_dir(
        "[[listen]]\naddress = \"127.0.0.1:1\"\n[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\n",
    );
    let fault = format!("--mount=/={}", guest(Guest::Fault).display());
    let server = Server::start(WASMHOST, &["--config", &config, &fault]);
    assert_eq!(get(&server.url("/")).unwrap().body, "hello\n");
}

#[test]
fn config_mistakes_name_the_file_the_line_and_the_key() {
    let cases = [
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\ncolour = \"red\"\n",
            ":4: unknown field `colour`",
        ),
        ("workers = 4\n", ":1: unknown field `workers`"),
        (
            "[[app]]\nroute = \"/api\"\ncomponent = \"hello.wasm\"\n\n[[app]]\nroute = \"/api/\"\ncomponent = \"hello.wasm\"\n",
            ":6: route /api is mounted twice (also at ",
        ),
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"missing.wasm\"\n",
            ":3: cannot read ",
        ),
        (
            "[[listen]]\naddress = \"localhost:80\"\n[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\n",
            ":2: address `localhost:80` is not IP:PORT",
        ),
        (
            "[[app]]\nroute = \"api\"\ncomponent = \"hello.wasm\"\n",
            ":2: route `api` must start with `/`",
        ),
        ("[[app]]\nroute = \"/\"\n", "missing field `component`"),
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\nreuse = 0\n",
            ":4: reuse must be at least 1",
        ),
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\nspares = 65\n",
            ":4: spares must be at most 64",
        ),
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\nmemory = \"lots\"\n",
            ":4: memory: `lots` is not a size; write e.g. 64MiB or 1GiB",
        ),
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\ncpu_time = \"0s\"\n",
            ":4: cpu_time must be more than 0",
        ),
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\ntimeout = \"1h\"\n",
            ":4: timeout: unknown unit `h` in `1h`; use ms, s or m",
        ),
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\nbody_limit = \"2TB\"\n",
            ":4: body_limit: unknown unit `TB` in `2TB`; use KiB, MiB or GiB",
        ),
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\nconcurrency = 0\n",
            ":4: concurrency must be at least 1",
        ),
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\nconcurrency_per_instance = 8\n",
            ":4: concurrency_per_instance = 8 needs reuse: a fresh instance serves one request; add reuse = N",
        ),
        (
            "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\nreuse = 9\nconcurrency_per_instance = 0\n",
            ":5: concurrency_per_instance must be at least 1",
        ),
        (
            "header_timeout = \"0s\"\n",
            ":1: header_timeout must be more than 0",
        ),
        (
            "keep_alive_timeout = \"soon\"\n",
            ":1: keep_alive_timeout: `soon` is not a duration",
        ),
        ("[[app]\n", ":1: "),
    ];
    for (text, expected) in cases {
        let (_dir, config) = config_dir(text);
        let line = error_line(&check(&["--config", &config]));
        assert!(
            line.starts_with(&format!("wasmhost: error: {config}")),
            "{text:?} -> {line}"
        );
        assert!(line.contains(expected), "{text:?} -> {line}");
    }
}

#[test]
fn serve_refuses_a_bad_config_too() {
    let (_dir, config) =
        config_dir("[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\ncolour = 1\n");
    let finished = run_to_exit(
        WASMHOST,
        &["serve", "--config", &config],
        Duration::from_secs(60),
    );
    assert!(error_line(&finished).contains(":4: unknown field `colour`"));
}

#[test]
fn check_prints_the_route_table_and_serves_nothing() {
    let fault = guest(Guest::Fault).display();
    let (dir, config) = config_dir(&format!(
        "[[app]]\nroute = \"/\"\ncomponent = \"hello.wasm\"\n[[app]]\nroute = \"/fault\"\ncomponent = \"{fault}\"\n"
    ));
    let finished = check(&["--config", &config]);
    assert!(finished.status.success(), "{}", finished.stderr);
    let hello = dir.path().join("hello.wasm");
    assert!(
        finished
            .stdout
            .contains(&format!("route / -> {} (", hello.display())),
        "{}",
        finished.stdout
    );
    assert!(
        finished
            .stdout
            .contains(&format!("route /fault -> {fault} ("))
    );
    assert!(
        finished.stdout.ends_with("ok: 2 app(s) valid\n"),
        "{}",
        finished.stdout
    );
}

#[test]
fn check_fails_on_a_component_that_does_not_serve_http() {
    let command = guest(Guest::Command).to_str().unwrap();
    let line = error_line(&check(&[&format!("--mount=/cli={command}")]));
    assert!(
        line.contains("does not export wasi:http/incoming-handler"),
        "{line}"
    );
}

#[test]
fn check_with_nothing_to_check_says_what_to_give() {
    let line = error_line(&check(&[]));
    assert!(line.contains("nothing to serve"), "{line}");
    assert!(Path::new(WASMHOST).exists());
}

#[test]
fn the_example_config_in_deploy_is_valid() {
    let example = wasmhost_tests::repo_root().join("deploy/wasmhost.toml");
    let finished = check(&["--config", example.to_str().unwrap()]);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.stdout.contains("route /hello -> "),
        "{}",
        finished.stdout
    );
}
