//! deploy/kubernetes on a real engine: the manifests pass the Kubernetes
//! API's schemas (kubernetes-validate, offline, strict), and the Deployment
//! runs under `podman kube play` with the ConfigMap: the image of
//! deploy/container with an app layered on it, its probes' endpoints
//! answering, a request through the published port, and a drain within the
//! pod's grace period.
//!
//! What the test changes in the Deployment, and why: the image (an app
//! image built here instead of the registry's), one replica (podman runs one
//! pod), and `hostPort`s on 127.0.0.1 (podman publishes only those; a
//! cluster reaches the pod through its Service).

use std::process::Command;
use std::time::{Duration, Instant};
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, free_port, get, guest, repo_root};

/// `program ARGS`: stdout, or everything it said if it failed.
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .map_err(|error| format!("running {program}: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.success() {
        true => Ok(stdout),
        false => Err(format!("{program} {}: {stdout}{stderr}", args.join(" "))),
    }
}

fn manifest(name: &str) -> String {
    repo_root()
        .join("deploy/kubernetes")
        .join(name)
        .display()
        .to_string()
}

#[test]
#[ignore = "needs kubernetes-validate; tests/run installs it and runs this"]
fn the_manifests_pass_the_kubernetes_schemas_strictly() {
    let files = ["configmap.yaml", "deployment.yaml", "service.yaml"].map(manifest);
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let said = run("kubernetes-validate", &args, &[]).unwrap();
    assert_eq!(said.matches("passed for resource").count(), 3, "{said}");
    // The check can fail: a field of the wrong type, and one that is no
    // field at all.
    let scratch = TempDir::new().unwrap();
    let deployment = std::fs::read_to_string(manifest("deployment.yaml")).unwrap();
    for (from, to) in [
        ("replicas: 3", "replicas: three"),
        (
            "maxUnavailable: 0",
            "maxUnavailable: 0\n      maxUnavalable: 0",
        ),
    ] {
        let broken = scratch.path().join("broken.yaml");
        std::fs::write(&broken, deployment.replacen(from, to, 1)).unwrap();
        let refused = run(
            "kubernetes-validate",
            &["--strict", broken.to_str().unwrap()],
            &[],
        );
        assert!(refused.is_err(), "{to} passed: {refused:?}");
    }
}

/// What the test made in podman, removed on drop.
struct Played {
    dir: TempDir,
    images: Vec<String>,
    env: Vec<(String, String)>,
}

impl Played {
    fn podman(&self, args: &[&str]) -> Result<String, String> {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let mut all = vec!["--runtime", "runc"];
        all.extend_from_slice(args);
        run("podman", &all, &env)
    }

    fn deployment(&self) -> String {
        self.dir
            .path()
            .join("deployment.yaml")
            .display()
            .to_string()
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- podman logs ----\n{}",
                self.podman(&["logs", CONTAINER]).unwrap_or_else(|e| e)
            );
        }
        let _ = self.podman(&["kube", "down", &self.deployment()]);
        for image in &self.images {
            let _ = self.podman(&["rmi", "--force", image]);
        }
    }
}

/// The container podman names for the Deployment's one pod.
const CONTAINER: &str = "wasmhost-pod-0-wasmhost";

#[test]
#[ignore = "needs podman and musl-tools; tests/run installs it and runs this"]
fn the_deployment_runs_under_podman_kube_play_and_drains_in_its_grace_period() {
    let id = std::process::id();
    let base = format!("localhost/wasmhost-kube-base:{id}");
    let app_image = format!("localhost/wasmhost-kube-app:{id}");
    let dir = TempDir::new().unwrap();
    // podman's default limits are past what its runtime may set here; as
    // tests/container passes them with --ulimit.
    let conf = dir.path().join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n",
    )
    .unwrap();
    let played = Played {
        images: vec![app_image.clone(), base.clone()],
        env: vec![("CONTAINERS_CONF".into(), conf.display().to_string())],
        dir,
    };
    let mut build = vec!["--tag".to_string(), base.clone()];
    if let Ok(binary) = std::env::var("WASMHOST_STATIC") {
        build.extend(["--binary".to_string(), binary]);
    }
    let build: Vec<&str> = build.iter().map(String::as_str).collect();
    let script = repo_root().join("deploy/container/build");
    run(script.to_str().unwrap(), &build, &[]).unwrap();
    // The app image, as deployment.yaml's comment says to build it.
    let context = played.dir.path().join("app");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(guest(Guest::Fault), context.join("app.wasm")).unwrap();
    std::fs::write(
        context.join("Containerfile"),
        format!("FROM {base}\nCOPY app.wasm /srv/apps/app.wasm\n"),
    )
    .unwrap();
    played
        .podman(&[
            "build",
            "--quiet",
            "--tag",
            &app_image,
            context.to_str().unwrap(),
        ])
        .unwrap();

    let (http, admin) = (free_port(), free_port());
    let deployment = std::fs::read_to_string(manifest("deployment.yaml"))
        .unwrap()
        .replacen("image: registry.example.com/my-app:1.0.0", &format!("image: {app_image}"), 1)
        .replacen("replicas: 3", "replicas: 1", 1)
        .replacen(
            "containerPort: 8080",
            &format!("containerPort: 8080\n              hostPort: {http}\n              hostIP: 127.0.0.1"),
            1,
        )
        .replacen(
            "containerPort: 9090",
            &format!("containerPort: 9090\n              hostPort: {admin}\n              hostIP: 127.0.0.1"),
            1,
        );
    assert!(deployment.contains(&app_image) && deployment.contains(&format!("hostPort: {admin}")));
    std::fs::write(played.deployment(), deployment).unwrap();
    played
        .podman(&[
            "kube",
            "play",
            "--replace",
            "--configmap",
            &manifest("configmap.yaml"),
            &played.deployment(),
        ])
        .unwrap();

    // The startup and readiness probes' endpoint, then the liveness one.
    let (app, admin) = (
        format!("http://127.0.0.1:{http}"),
        format!("http://127.0.0.1:{admin}"),
    );
    let started = Instant::now();
    while !get(&format!("{admin}/readyz")).is_ok_and(|reply| reply.status == 200) {
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&format!("{admin}/healthz")).unwrap().body, "ok\n");
    let hello = get(&format!("{app}/")).unwrap();
    assert_eq!((hello.status, hello.body.as_str()), (200, "hello\n"));
    // The ConfigMap's wasmhost.toml and the pod's limits are the ones in
    // force: the access log on stdout, the guests' budget from the 1 GiB
    // memory limit, the image's non-root user.
    let logs = || {
        let output = Command::new("podman")
            .args(["logs", CONTAINER])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };
    // The access line is written once the response is out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs().contains("\"GET / HTTP/1.1\" 200") {
        assert!(Instant::now() < deadline, "no access log line: {}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = logs();
    assert!(
        logs.contains("guest memory budget 0.8 GiB (3/4 of the cgroup's"),
        "{logs}"
    );
    assert_eq!(
        played
            .podman(&["inspect", "--format", "{{.Config.User}}", CONTAINER])
            .unwrap()
            .trim(),
        "65532:65532"
    );

    // The kubelet's part of a pod's end: SIGTERM to the app's container,
    // the sandbox (and so the published ports) kept until it exits, SIGKILL
    // only after terminationGracePeriodSeconds (45). podman 4.3's `kube
    // down` removes the pod at once, and `pod stop` stops the sandbox with
    // it, so the container is stopped first.
    let slow = std::thread::spawn({
        let url = format!("{app}/sleep/1500");
        move || get(&url).map(|reply| (reply.status, reply.body))
    });
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    played.podman(&["stop", "--time", "45", CONTAINER]).unwrap();
    let stopped_in = stopping.elapsed();
    let (status, body) = slow.join().unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "slept 1500 ms\n"));
    assert_eq!(
        played
            .podman(&["inspect", "--format", "{{.State.ExitCode}}", CONTAINER])
            .unwrap()
            .trim(),
        "0"
    );
    assert!(stopped_in < Duration::from_secs(45), "{stopped_in:?}");
    played
        .podman(&["kube", "down", &played.deployment()])
        .unwrap();
}
