//! The container image (deploy/container), built and run with podman: under
//! 40 MB, not root, serving a mounted component with the image's default
//! configuration, `/readyz` on the admin port, the compile cache kept in a
//! volume across containers, and a drain on `podman stop` that lets the
//! request in flight finish.
//!
//! The static binary is the one `tests/run` builds (`WASMHOST_STATIC`);
//! without it the build script makes one, which takes minutes.

use std::process::Command;
use std::time::{Duration, Instant};
use wasmhost_tests::{Guest, free_port, get, guest, repo_root};

/// The image's size limit, in bytes.
const MAX_IMAGE: u64 = 40_000_000;

/// `podman ARGS`: stdout, or stdout and stderr if it failed.
fn podman(args: &[&str]) -> Result<String, String> {
    let output = Command::new("podman")
        .args(args)
        .output()
        .map_err(|error| format!("running podman (apt-get install podman): {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "podman {}: {stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// What one run made, removed on drop: containers, the cache volume, the
/// image.
struct Made {
    image: String,
    volume: String,
    containers: Vec<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        for name in &self.containers {
            if std::thread::panicking() {
                eprintln!(
                    "---- podman logs {name} ----\n{}",
                    podman(&["logs", name]).unwrap_or_else(|e| e)
                );
            }
            let _ = podman(&["rm", "--force", "--time", "0", name]);
        }
        let _ = podman(&["volume", "rm", "--force", &self.volume]);
        let _ = podman(&["rmi", "--force", &self.image]);
    }
}

/// A container of the image serving `app` with the default command, its
/// cache in `made`'s volume: (name, app URL, admin URL).
///
/// runc, not podman's default crun, which refuses a machine whose cgroup v2
/// hierarchy has controllers next to v1's (these CI machines); limits asked
/// for that any machine can give, as podman's defaults raise them past what
/// a root without CAP_SYS_RESOURCE may set.
fn run(made: &mut Made, app: &str) -> (String, String, String) {
    let name = format!("{}-{}", made.volume, made.containers.len());
    let (port, admin) = (free_port(), free_port());
    made.containers.push(name.clone());
    let app_volume = format!("{app}:/srv/app.wasm:ro");
    let cache_volume = format!("{}:/var/cache/wasmhost", made.volume);
    let published = format!("127.0.0.1:{port}:8080");
    let published_admin = format!("127.0.0.1:{admin}:9090");
    podman(&[
        "--runtime",
        "runc",
        "run",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        "--detach",
        "--name",
        &name,
        "--publish",
        &published,
        "--publish",
        &published_admin,
        "--volume",
        &app_volume,
        "--volume",
        &cache_volume,
        &made.image,
    ])
    .unwrap();
    (
        name,
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin}"),
    )
}

/// Waits for `/readyz` to say 200: how long it took.
fn wait_ready(name: &str, admin: &str) -> Duration {
    let started = Instant::now();
    loop {
        if get(&format!("{admin}/readyz")).is_ok_and(|reply| reply.status == 200) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not ready in time:\n{}",
            podman(&["logs", name]).unwrap_or_else(|e| e)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The container's output: podman gives its stdout (the access log) on
/// stdout and its stderr (the server's own lines) on stderr.
fn logs(name: &str) -> String {
    match Command::new("podman").args(["logs", name]).output() {
        Ok(output) => format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => format!("running podman logs: {error}"),
    }
}

fn inspect(name: &str, format: &str) -> String {
    podman(&["inspect", "--format", format, name])
        .unwrap()
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs podman and musl-tools; tests/run installs it and runs this"]
fn the_image_is_small_runs_as_non_root_serves_and_drains_on_podman_stop() {
    let tag = format!("localhost/wasmhost-test:{}", std::process::id());
    let mut made = Made {
        image: tag.clone(),
        volume: format!("wasmhost-test-cache-{}", std::process::id()),
        containers: Vec::new(),
    };
    let mut build = Command::new(repo_root().join("deploy/container/build"));
    build.args(["--tag", &tag]);
    if let Some(binary) = std::env::var_os("WASMHOST_STATIC") {
        build.arg("--binary").arg(binary);
    }
    let built = build.output().expect("running deploy/container/build");
    assert!(
        built.status.success(),
        "deploy/container/build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let size: u64 = String::from_utf8_lossy(&built.stdout)
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .expect("the build prints the image's size last");
    assert!(size < MAX_IMAGE, "the image is {size} bytes");
    eprintln!("image: {size} bytes");

    let app = guest(Guest::Fault).to_str().unwrap().to_string();
    let (first, url, admin) = run(&mut made, &app);
    let cold = wait_ready(&first, &admin);
    let hello = get(&format!("{url}/")).unwrap();
    assert_eq!((hello.status, hello.body.as_str()), (200, "hello\n"));
    assert_eq!(get(&format!("{admin}/healthz")).unwrap().status, 200);
    // Not root, inside or out: the process runs as the image's user.
    assert_eq!(inspect(&first, "{{.Config.User}}"), "65532:65532");
    let pid = inspect(&first, "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .unwrap();
    assert_eq!(uid, "65532", "{status}");

    // podman stop sends SIGTERM: the request in flight finishes, new
    // connections are refused, and the container exits 0 well inside the
    // 10 s podman waits before SIGKILL.
    let slow = std::thread::spawn({
        let url = format!("{url}/sleep/1500");
        move || get(&url).map(|reply| (reply.status, reply.body))
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs(&first).contains("sleeping 1500 ms") {
        assert!(Instant::now() < deadline, "{}", logs(&first));
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopping = Instant::now();
    podman(&["stop", "--time", "10", &first]).unwrap();
    let stopped_in = stopping.elapsed();
    let (status, body) = slow.join().unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "slept 1500 ms\n"));
    assert_eq!(
        inspect(&first, "{{.State.ExitCode}}"),
        "0",
        "{}",
        logs(&first)
    );
    assert!(
        stopped_in < Duration::from_secs(9),
        "stopped in {stopped_in:?}: SIGKILL, not a drain\n{}",
        logs(&first)
    );
    assert!(logs(&first).contains("stopped"), "{}", logs(&first));

    // A second container on the same cache volume loads the compiled
    // component instead of compiling it.
    let (second, url, admin) = run(&mut made, &app);
    let warm = wait_ready(&second, &admin);
    assert_eq!(get(&format!("{url}/")).unwrap().status, 200);
    let metrics = get(&format!("{admin}/metrics")).unwrap().body;
    assert!(
        metrics.contains(r#"wasmhost_compiles_total{compiler="cranelift",origin="cache"} 1"#),
        "{metrics}"
    );
    eprintln!("ready after {cold:?} cold, {warm:?} with a warm cache volume");
}
