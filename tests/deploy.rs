//! What deploy/ ships besides the nginx config: the local-cluster script
//! starts wasmhost processes behind nginx and stops them all, and the
//! systemd unit is one systemd accepts without a warning.

use crate::WASMHOST;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, free_port, get, guest, repo_root};

/// Two consecutive free loopback ports (for processes on BASE, BASE+1).
fn free_pair() -> u16 {
    loop {
        let base = free_port();
        if base < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", base + 1)).is_ok() {
            return base;
        }
    }
}

fn local_cluster(args: &[&str]) -> (bool, String) {
    let output = Command::new(repo_root().join("deploy/local-cluster"))
        .args(args)
        .output()
        .expect("running deploy/local-cluster");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_local_cluster_serves_through_nginx_and_stops_cleanly() {
    let dir = TempDir::new().unwrap();
    let dir_arg = dir.path().join("cluster");
    let dir_arg = dir_arg.to_str().unwrap();
    let port = free_port().to_string();
    let base = free_pair();
    let (ok, text) = local_cluster(&[
        "start",
        "-n",
        "2",
        "--port",
        &port,
        "--base-port",
        &base.to_string(),
        "--dir",
        dir_arg,
        "--wasmhost",
        WASMHOST,
        "--",
        guest(Guest::Fault).to_str().unwrap(),
    ]);
    // Stop whatever started, whatever the assertions below find.
    struct Stop<'a>(&'a str);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = local_cluster(&["stop", "--dir", self.0]);
        }
    }
    let _stop = Stop(dir_arg);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("nginx on http://127.0.0.1:{port}/")),
        "{text}"
    );

    let seen = get(&format!("http://127.0.0.1:{port}/seen")).unwrap();
    assert_eq!(seen.status, 200);
    assert!(
        seen.body.contains("x-real-ip: 127.0.0.1\n"),
        "{}",
        seen.body
    );
    let file = get(&format!("http://127.0.0.1:{port}/static/hello.txt")).unwrap();
    assert_eq!(file.body, "Hello from nginx's static location.\n");

    let (ok, status) = local_cluster(&["status", "--dir", dir_arg]);
    assert!(ok, "{status}");
    assert_eq!(status.matches(": running").count(), 3, "{status}");

    let (ok, text) = local_cluster(&["stop", "--dir", dir_arg]);
    assert!(ok, "{text}");
    for p in [port.parse().unwrap(), base, base + 1] {
        assert!(
            TcpStream::connect_timeout(
                &format!("127.0.0.1:{p}").parse().unwrap(),
                Duration::from_secs(1)
            )
            .is_err(),
            "port {p} still open after stop"
        );
    }
    let (_, status) = local_cluster(&["status", "--dir", dir_arg]);
    assert!(status.contains("nothing started"), "{status}");
    // Each wasmhost drained and logged its exit.
    for p in [base, base + 1] {
        let log =
            std::fs::read_to_string(dir.path().join(format!("cluster/logs/wasmhost-{p}.log")))
                .unwrap();
        assert!(log.contains("INFO stopped"), "{log}");
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new().unwrap();
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/wasmhost@.service"))
        .unwrap()
        // verify checks that the binary exists.
        .replace("/usr/local/bin/wasmhost", WASMHOST);
    std::fs::write(dir.path().join("wasmhost@.service"), &unit).unwrap();
    let instance = dir.path().join("wasmhost@8080.service");
    std::fs::write(&instance, &unit).unwrap();
    let socket =
        std::fs::read_to_string(repo_root().join("deploy/systemd/wasmhost@.socket")).unwrap();
    std::fs::write(dir.path().join("wasmhost@.socket"), &socket).unwrap();
    let socket_instance = dir.path().join("wasmhost@8080.socket");
    std::fs::write(&socket_instance, &socket).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&instance)
        .arg(&socket_instance)
        .output()
        .expect("running systemd-analyze (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("DynamicUser=yes"));
    assert!(unit.contains("Type=notify"));
    assert!(socket.contains("ListenStream=127.0.0.1:%i"));
}
