//! `wasmhost new LANG NAME`: the project it writes builds with the command
//! it prints, and the app serves with the other; it never writes over a
//! project that is there.

use crate::WASMHOST;
use std::process::Command;
use std::time::Duration;
use wasmhost_tests::{Server, get, run_to_exit, tempfile::TempDir};

/// Runs `new`, then its printed build command; the serve command's
/// arguments.
fn new_and_build(lang: &str, dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    let created = run_to_exit(WASMHOST, &["new", lang, dir], Duration::from_secs(30));
    assert!(created.status.success(), "{}", created.stderr);
    let line = |prefix: &str| {
        created
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {}", created.stdout))
            .to_string()
    };
    let build = line("build: ");
    let built = Command::new("sh")
        .args(["-c", &build])
        // The printed path is cargo's default target directory.
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("sh");
    assert!(
        built.status.success(),
        "{build}:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let serve = line("serve: ");
    let args = serve
        .strip_prefix("wasmhost serve ")
        .unwrap_or_else(|| panic!("{serve}"));
    args.split(' ').map(str::to_string).collect()
}

#[test]
fn a_new_rust_project_builds_and_serves_with_the_printed_commands() {
    let root = TempDir::new().unwrap();
    let dir = root.path().join("demo-app");
    let args = new_and_build("rust", &dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(WASMHOST, &args);
    assert_eq!(get(&server.url("/")).unwrap().body, "Hello from Rust!\n");
    // Never over a project that is there.
    let again = run_to_exit(
        WASMHOST,
        &["new", "rust", dir.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(!again.status.success());
    assert!(
        again
            .error_line()
            .contains("exists and is not an empty directory; choose a new NAME"),
        "{}",
        again.stderr
    );
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_new_python_project_builds_and_serves_with_the_printed_commands() {
    let root = TempDir::new().unwrap();
    let args = new_and_build("python", &root.path().join("pyapp"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(WASMHOST, &args);
    assert_eq!(get(&server.url("/")).unwrap().body, "Hello from Python!\n");
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_new_python_wsgi_project_builds_and_serves_with_the_printed_commands() {
    let root = TempDir::new().unwrap();
    let args = new_and_build("python-wsgi", &root.path().join("wsgiapp"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(WASMHOST, &args);
    assert_eq!(
        get(&server.url("/")).unwrap().body,
        "Hello from Python (WSGI)!\n"
    );
    assert_eq!(
        get(&server.url("/hello/you")).unwrap().body,
        "{\"hello\": \"you\"}\n"
    );
}

#[test]
#[ignore = "needs Node.js; tests/run installs it and runs this"]
fn a_new_javascript_project_builds_and_serves_with_the_printed_commands() {
    let root = TempDir::new().unwrap();
    let dir = root.path().join("jsapp");
    let args = new_and_build("javascript", &dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Served with reuse, as its wasmhost.toml says.
    assert!(
        args.windows(2).any(|pair| pair == ["--reuse", "1000"]),
        "{args:?}"
    );
    let config = std::fs::read_to_string(dir.join("wasmhost.toml")).unwrap();
    assert!(config.contains("\nreuse = 1000\n"), "{config}");
    let server = Server::start(WASMHOST, &args);
    for _ in 0..3 {
        assert_eq!(
            get(&server.url("/hello/you")).unwrap().body,
            "{\"hello\":\"you\"}\n"
        );
    }
    assert!(!server.log().contains("WARN"), "{}", server.log());
}

#[test]
fn a_bad_name_is_refused_with_what_a_name_is() {
    let root = TempDir::new().unwrap();
    let dir = root.path().join("My App");
    let refused = run_to_exit(
        WASMHOST,
        &["new", "python", dir.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(!refused.status.success());
    assert!(
        refused
            .error_line()
            .contains("lowercase letters, digits, - and _, starting with a letter"),
        "{}",
        refused.stderr
    );
    assert!(!dir.exists());
}
