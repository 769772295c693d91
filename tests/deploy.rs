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
#[ignore = "needs nginx; tests/run installs it and runs this"]
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
#[ignore = "needs systemd; tests/run installs it and runs this"]
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

/// `wasmhost check --config` on `toml` with its component path made a real
/// component: success, or the error line.
fn check_config(toml: &str, component: &str) -> Result<(), String> {
    let real = toml.replace(component, guest(Guest::RustHello).to_str().unwrap());
    assert_ne!(real, toml, "{component} is not in the configuration");
    let (_dir, path) = wasmhost_tests::config_file(&real);
    let finished = wasmhost_tests::run_to_exit(
        WASMHOST,
        &["check", "--config", &path],
        Duration::from_secs(60),
    );
    if finished.status.success() {
        Ok(())
    } else {
        Err(finished.stderr)
    }
}

/// A number after `key` in `text` (`key: 45`, `key = "30s"`).
fn number_after(text: &str, key: &str) -> u64 {
    let rest = &text[text.find(key).unwrap_or_else(|| panic!("no {key}")) + key.len()..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn the_container_and_kubernetes_configurations_pass_check_and_fit_the_grace_period() {
    let image =
        std::fs::read_to_string(repo_root().join("deploy/container/wasmhost.toml")).unwrap();
    check_config(&image, "/srv/app.wasm").unwrap();
    // Less than podman stop's default 10 s.
    assert!(number_after(&image, "shutdown_timeout =") < 10);

    let kubernetes = repo_root().join("deploy/kubernetes");
    let configmap = std::fs::read_to_string(kubernetes.join("configmap.yaml")).unwrap();
    // The block scalar under `wasmhost.toml: |`, its indentation removed.
    let toml: String = configmap
        .split_once("wasmhost.toml: |\n")
        .unwrap()
        .1
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    check_config(&toml, "/srv/apps/app.wasm").unwrap();

    let deployment = std::fs::read_to_string(kubernetes.join("deployment.yaml")).unwrap();
    for probe in ["readinessProbe:", "livenessProbe:", "startupProbe:"] {
        assert!(deployment.contains(probe), "{probe}");
    }
    assert!(deployment.contains("path: /readyz") && deployment.contains("path: /healthz"));
    assert!(deployment.contains("runAsNonRoot: true"));
    // The kubelet's SIGKILL comes after preStop and the whole drain.
    let grace = number_after(&deployment, "terminationGracePeriodSeconds:");
    let pause = number_after(&deployment, "sleep:");
    let shutdown = number_after(&toml, "shutdown_timeout =");
    assert!(grace > pause + shutdown, "{grace} <= {pause} + {shutdown}");
    let service = std::fs::read_to_string(kubernetes.join("service.yaml")).unwrap();
    assert!(service.contains("targetPort: http") && service.contains("targetPort: admin"));
}
