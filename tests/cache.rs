//! The compile cache: a restart loads compiled components from disk instead
//! of compiling them; an entry that is not whole is ignored and replaced.

use crate::WASMHOST;
use std::path::{Path, PathBuf};
use std::process::Command;
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, Server, get, guest};

const HELLO: &str = "Hello from a WebAssembly component!\n";

fn serving_line(server: &Server) -> String {
    let log = server.log();
    let line = log.lines().find(|line| line.contains("serving on"));
    line.unwrap().to_string()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn start_cached(cache: &Path) -> Server {
    let app = guest(Guest::RustHello).to_str().unwrap();
    Server::start(WASMHOST, &[app, "--cache-dir", cache.to_str().unwrap()])
}

#[test]
fn a_restart_loads_the_component_from_the_cache() {
    let dir = TempDir::new().unwrap();
    let cache = dir.path().join("cache");
    let first = start_cached(&cache);
    assert!(
        serving_line(&first).contains("compiled in"),
        "{}",
        first.log()
    );
    drop(first);
    assert_eq!(entries(&cache).len(), 1, "{:?}", entries(&cache));

    let second = start_cached(&cache);
    let line = serving_line(&second);
    assert!(line.contains("loaded from cache in"), "{line}");
    assert_eq!(get(&second.url("/")).unwrap().body, HELLO);
    assert_eq!(entries(&cache).len(), 1);
}

#[test]
fn a_corrupt_cache_entry_is_ignored_and_replaced() {
    let dir = TempDir::new().unwrap();
    let cache = dir.path().join("cache");
    drop(start_cached(&cache));
    let [entry] = entries(&cache).try_into().unwrap();
    let mut contents = std::fs::read(&entry).unwrap();
    let middle = contents.len() / 2;
    contents[middle] ^= 0xff;
    std::fs::write(&entry, &contents).unwrap();

    let second = start_cached(&cache);
    assert!(
        serving_line(&second).contains("compiled in"),
        "{}",
        second.log()
    );
    assert!(
        second.log().contains("ignoring corrupt cache entry"),
        "{}",
        second.log()
    );
    assert_eq!(get(&second.url("/")).unwrap().body, HELLO);
    drop(second);

    // Cut short, as by a crash mid-write on a file system without rename.
    let contents = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, &contents[..contents.len() / 3]).unwrap();
    let third = start_cached(&cache);
    assert!(
        serving_line(&third).contains("compiled in"),
        "{}",
        third.log()
    );
    drop(third);

    let fourth = start_cached(&cache);
    assert!(
        serving_line(&fourth).contains("loaded from cache in"),
        "{}",
        fourth.log()
    );
}

#[test]
fn the_default_cache_is_under_the_user_cache_dir_and_no_cache_writes_nothing() {
    let app = guest(Guest::RustHello).to_str().unwrap();
    let home = TempDir::new().unwrap();
    let start = |extra: &[&str]| {
        let mut command = Command::new(WASMHOST);
        command
            .args(["serve", app, "--port", "0"])
            .args(extra)
            .env("XDG_CACHE_HOME", home.path());
        Server::spawn(command)
    };
    let compiled = home.path().join("wasmhost").join("compiled");

    drop(start(&["--no-cache"]));
    assert!(entries(&compiled).is_empty());
    drop(start(&[]));
    assert_eq!(entries(&compiled).len(), 1);
    let again = start(&[]);
    assert!(
        serving_line(&again).contains("loaded from cache"),
        "{}",
        again.log()
    );
}

#[test]
fn an_entry_renamed_to_another_components_name_is_not_loaded() {
    let dir = TempDir::new().unwrap();
    let cache = dir.path().join("cache");
    drop(start_cached(&cache));
    let [hello_entry] = entries(&cache).try_into().unwrap();
    let fault = guest(Guest::Fault).to_str().unwrap();
    drop(Server::start(
        WASMHOST,
        &[fault, "--cache-dir", cache.to_str().unwrap()],
    ));
    let fault_entry = entries(&cache)
        .into_iter()
        .find(|entry| entry != &hello_entry)
        .unwrap();
    std::fs::copy(&fault_entry, &hello_entry).unwrap();

    let server = start_cached(&cache);
    assert!(
        serving_line(&server).contains("compiled in"),
        "{}",
        server.log()
    );
    assert!(server.log().contains("ignoring corrupt cache entry"));
    assert_eq!(get(&server.url("/")).unwrap().body, HELLO);
}
