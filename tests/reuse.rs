//! Serving modes: a fresh instance per request by default; with `reuse` one
//! instance serves several requests in turn, and one that trapped is dropped.
//! In both, spare instances are instantiated before requests need them.

use crate::WASMHOST;
use std::time::Duration;
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, Server, client, get, get_concurrently, guest, ureq};

/// What `/count` answered at `url`, on a connection the agent keeps alive.
fn count(agent: &ureq::Agent, url: &str) -> u32 {
    let body = agent.get(url).call().unwrap().into_body().read_to_string();
    body.unwrap().trim().parse().unwrap()
}

fn counts(server: &Server, requests: usize) -> Vec<u32> {
    let agent = client();
    let url = server.url("/count");
    (0..requests).map(|_| count(&agent, &url)).collect()
}

#[test]
fn by_default_every_request_gets_a_fresh_instance() {
    let server = Server::start(WASMHOST, &[guest(Guest::Fault).to_str().unwrap()]);
    assert_eq!(counts(&server, 20), vec![1; 20]);
}

#[test]
fn with_reuse_an_instance_serves_up_to_n_requests() {
    let server = Server::start(
        WASMHOST,
        &[guest(Guest::Fault).to_str().unwrap(), "--reuse", "3"],
    );
    let seen = counts(&server, 30);
    assert!(seen.iter().all(|&n| (1..=3).contains(&n)), "{seen:?}");
    assert!(seen.contains(&3), "instances were not reused: {seen:?}");
}

/// Serves the fault guest at two routes, each with its own extra line of
/// config (`key = value`).
fn two_routes(first: (&str, &str), second: (&str, &str)) -> (TempDir, Server) {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("wasmhost.toml");
    let fault = guest(Guest::Fault).display();
    let text: String = [first, second]
        .iter()
        .map(|(route, line)| {
            format!("[[app]]\nroute = \"{route}\"\ncomponent = \"{fault}\"\n{line}\n")
        })
        .collect();
    std::fs::write(&config, text).unwrap();
    let server = Server::start(WASMHOST, &["--config", config.to_str().unwrap()]);
    (dir, server)
}

#[test]
fn reuse_is_set_per_app_in_the_config_file() {
    let (_dir, server) = two_routes(("/reused", "reuse = 1000"), ("/fresh", ""));
    let agent = client();
    let reused: Vec<u32> = (0..10)
        .map(|_| count(&agent, &server.url("/reused/count")))
        .collect();
    let fresh: Vec<u32> = (0..10)
        .map(|_| count(&agent, &server.url("/fresh/count")))
        .collect();
    assert!(reused.iter().any(|&n| n > 1), "{reused:?}");
    assert_eq!(fresh, vec![1; 10]);
}

#[test]
fn an_instance_that_trapped_is_never_reused() {
    let server = Server::start(
        WASMHOST,
        &[guest(Guest::Fault).to_str().unwrap(), "--reuse", "1000"],
    );
    let before = counts(&server, 5);
    assert!(before.iter().any(|&n| n > 1), "{before:?}");
    assert_eq!(get(&server.url("/trap")).unwrap().status, 500);
    // Calling into a trapped instance fails; every request after the trap
    // must land on a healthy instance.
    for _ in 0..20 {
        assert_eq!(get(&server.url("/count")).unwrap().status, 200);
    }
    assert!(server.wait_for_log("guest trapped", Duration::from_secs(10)));
    assert_eq!(
        server.log().matches("guest trapped").count(),
        1,
        "{}",
        server.log()
    );
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn the_python_component_serves_concurrent_requests_with_reuse() {
    let server = Server::start(
        WASMHOST,
        &[
            guest(Guest::PythonHello).to_str().unwrap(),
            "--reuse",
            "100",
        ],
    );
    for _ in 0..3 {
        let expected = Ok((200, "Hello from a Python component!\n".to_string()));
        for reply in get_concurrently(&server.url("/"), 16) {
            assert_eq!(reply, expected);
        }
    }
}

/// The startup line of a server with one app at the root.
fn serving_line(server: &Server) -> String {
    let log = server.log();
    log.lines()
        .find(|line| line.contains("serving on"))
        .unwrap()
        .to_string()
}

#[test]
fn spares_are_instantiated_before_the_first_request() {
    let fault = guest(Guest::Fault);
    let fault = fault.to_str().unwrap();
    let default = Server::start(WASMHOST, &[fault]);
    let line = serving_line(&default);
    assert!(
        line.contains("fresh instance per request, 2 spares ready"),
        "{line}"
    );
    // A spare is a fresh instance: it has served nothing before.
    assert_eq!(counts(&default, 10), vec![1; 10]);

    let none = Server::start(WASMHOST, &[fault, "--spares", "0"]);
    let line = serving_line(&none);
    assert!(!line.contains("spare"), "{line}");
    assert_eq!(counts(&none, 3), vec![1; 3]);

    let reused = Server::start(WASMHOST, &[fault, "--spares", "5", "--reuse", "10"]);
    let line = serving_line(&reused);
    assert!(
        line.contains("reused for up to 10 requests, 5 spares ready"),
        "{line}"
    );
}

#[test]
fn spares_are_set_per_app_in_the_config_file() {
    let (_dir, server) = two_routes(("/three", "spares = 3"), ("/none", "spares = 0"));
    let log = server.log();
    let route = |name: &str| {
        log.lines()
            .find(|line| line.contains(&format!("route {name} ->")))
            .unwrap_or_else(|| panic!("no route line for {name}:\n{log}"))
            .to_string()
    };
    assert!(route("/three").contains("3 spares ready"), "{log}");
    assert!(!route("/none").contains("spare"), "{log}");
    assert_eq!(count(&client(), &server.url("/three/count")), 1);
}
