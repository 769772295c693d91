//! The nginx front, with real nginx: the config `wasmhost nginx` prints
//! passes `nginx -t` and is the one shipped in deploy/nginx; requests
//! through it reach the right app with the real client address; static
//! files and gzip come from nginx; a killed process costs at most its
//! requests in flight, and a rolling restart costs none.

use crate::WASMHOST;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use wasmhost_tests::socket2::{Domain, Socket, Type};
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{
    Guest, Load, Nginx, Server, expect, free_port, guest, nginx_binary, run_to_exit,
};

/// `wasmhost nginx ARGS`' output.
pub(crate) fn wasmhost_nginx(args: &[&str]) -> String {
    let mut all = vec!["nginx"];
    all.extend_from_slice(args);
    let finished = run_to_exit(WASMHOST, &all, Duration::from_secs(60));
    assert!(finished.status.success(), "{}", finished.stderr);
    finished.stdout
}

/// `nginx -t` on a config; its output if it fails.
fn nginx_t(dir: &Path, config: &str) -> Result<(), String> {
    for sub in ["logs", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let path = dir.join("test.conf");
    std::fs::write(&path, config).unwrap();
    let output = std::process::Command::new(nginx_binary())
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .args(["-e", "logs/error.log"])
        .output()
        .expect("running nginx -t (apt-get install nginx)");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
#[ignore = "needs nginx; tests/run installs it and runs this"]
fn the_printed_configs_pass_nginx_t_and_the_bundled_one_is_current() {
    let dir = TempDir::new().unwrap();
    let include = wasmhost_nginx(&["--upstream", "4"]);
    let bundled =
        std::fs::read_to_string(wasmhost_tests::repo_root().join("deploy/nginx/wasmhost.conf"))
            .unwrap();
    assert_eq!(
        bundled, include,
        "deploy/nginx/wasmhost.conf is out of date: regenerate it with `wasmhost nginx --upstream 4`"
    );
    for server in ["8080", "8081", "8082", "8083"] {
        assert!(include.contains(&format!("server 127.0.0.1:{server} ")));
    }
    let wrapped = format!("events {{}}\nhttp {{\n{include}}}\n");
    nginx_t(dir.path(), &wrapped).unwrap();

    // From the example config: its two listeners, its apps as locations
    // with their own limits.
    let example = wasmhost_tests::repo_root().join("deploy/wasmhost.toml");
    let standalone = wasmhost_nginx(&[
        "--config",
        example.to_str().unwrap(),
        "--standalone",
        "--nginx-listen",
        "127.0.0.1:8000",
    ]);
    nginx_t(dir.path(), &standalone).unwrap();
    assert!(
        standalone.contains("server 127.0.0.1:8081 "),
        "{standalone}"
    );
    assert!(standalone.contains("location /hello/ {"), "{standalone}");
    assert!(
        standalone.contains("client_max_body_size 1m;"),
        "{standalone}"
    );
    assert!(
        standalone.contains("proxy_read_timeout 35s;"),
        "{standalone}"
    );
}

#[test]
fn wasmhost_nginx_refuses_what_nginx_cannot_use() {
    let cases: [(&[&str], &str); 3] = [
        (&["--port", "0"], "has no fixed port"),
        (
            &["--nginx-listen", "eighty"],
            "--nginx-listen `eighty` is not PORT or IP:PORT",
        ),
        (
            &["--port", "65535", "--upstream", "2"],
            "runs past port 65535",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["nginx"];
        all.extend_from_slice(args);
        let finished = run_to_exit(WASMHOST, &all, Duration::from_secs(60));
        let line = finished.error_line();
        assert!(line.contains(expected), "{args:?}: {line}");
    }
}

/// wasmhost processes behind one nginx: the fault guest at `/` (its /seen
/// reports what it was told), the hello at `/hello`.
struct Cluster {
    servers: Vec<Server>,
    ports: Vec<u16>,
    nginx: Nginx,
    _dir: TempDir,
}

fn app_args(listen: &str) -> Vec<String> {
    vec![
        guest(Guest::Fault).display().to_string(),
        format!("--mount=/hello={}", guest(Guest::RustHello).display()),
        "--listen".into(),
        listen.into(),
        "--trusted-proxy".into(),
        "127.0.0.1".into(),
        "--access-log".into(),
        "-".into(),
    ]
}

fn start_wasmhost(listen: &str) -> Server {
    let args = app_args(listen);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_exact(WASMHOST, &args)
}

impl Cluster {
    fn start(processes: usize) -> Cluster {
        let servers: Vec<Server> = (0..processes)
            .map(|_| start_wasmhost("127.0.0.1:0"))
            .collect();
        let ports: Vec<u16> = servers.iter().map(|s| s.addr.port()).collect();

        let dir = TempDir::new().unwrap();
        let static_root = dir.path().join("static");
        std::fs::create_dir_all(&static_root).unwrap();
        std::fs::write(
            static_root.join("app.css"),
            "body { margin: 0 }\n".repeat(100),
        )
        .unwrap();
        std::fs::write(static_root.join("favicon.ico"), b"\x00\x00\x01\x00icon").unwrap();
        // nginx's workers drop root for an unprivileged user, who must be
        // able to reach the static files.
        for path in [dir.path(), static_root.as_path()] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        let nginx_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen = nginx_addr.to_string();
        let mut args = app_args("127.0.0.1:1");
        args.truncate(2);
        for port in &ports {
            args.push("--listen".into());
            args.push(format!("127.0.0.1:{port}"));
        }
        args.extend([
            "--standalone".into(),
            "--nginx-listen".into(),
            listen,
            "--static-root".into(),
            static_root.display().to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let config = wasmhost_nginx(&args);
        let nginx = Nginx::start(dir.path(), &config, nginx_addr);
        Cluster {
            servers,
            ports,
            nginx,
            _dir: dir,
        }
    }
}

/// A request through nginx from `source` (a loopback address other than
/// nginx's own): (status, head lower-cased, body as sent). Ask with
/// HTTP/1.0 for a body that is not chunked.
fn request_from(source: &str, to: SocketAddr, head: &str) -> (u16, String, Vec<u8>) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&reply[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, reply[split + 4..].to_vec())
}

#[test]
#[ignore = "needs nginx; tests/run installs it and runs this"]
fn through_nginx_each_app_sees_the_real_client_scheme_and_host() {
    let cluster = Cluster::start(2);
    let (status, _, body) = request_from(
        "127.0.0.2",
        cluster.nginx.addr,
        "GET /seen HTTP/1.0\r\nHost: shop.example:8443\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
    );
    let seen = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{seen}");
    for line in [
        "path=/seen\n",
        "scheme=Some(Scheme::Http)\n",
        "x-real-ip: 127.0.0.2\n",
        "x-forwarded-for: 127.0.0.2\n",
        "x-forwarded-proto: http\n",
        "x-forwarded-host: shop.example:8443\n",
    ] {
        assert!(seen.contains(line), "{line:?} not in:\n{seen}");
    }
    assert!(!seen.contains("6.6.6.6"), "{seen}");

    let (status, _, body) = request_from(
        "127.0.0.2",
        cluster.nginx.addr,
        "GET /hello/ HTTP/1.0\r\nHost: shop.example\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(body, b"Hello from a WebAssembly component!\n");
    let (status, _, _) = request_from(
        "127.0.0.2",
        cluster.nginx.addr,
        "GET /hello HTTP/1.0\r\nHost: shop.example\r\n\r\n",
    );
    assert_eq!(status, 200);
}

/// guest-examples/python-django behind the front `wasmhost nginx` writes:
/// Django's pages from the component, its collected static files (the
/// app's `static/`, which is what `collectstatic` gathers for this
/// project) from disk.
#[test]
#[ignore = "needs componentize-py and nginx; tests/run installs it and runs this"]
fn a_django_project_behind_nginx_gets_its_static_files_from_disk() {
    let app = guest(Guest::PythonDjango).to_str().unwrap();
    let server = Server::start(
        WASMHOST,
        &[
            app,
            "--reuse",
            "100",
            "--env",
            "DJANGO_SECRET_KEY=k",
            "--access-log",
            "-",
        ],
    );
    let dir = TempDir::new().unwrap();
    let static_root = dir.path().join("staticfiles");
    let collected = static_root.join("polls");
    std::fs::create_dir_all(&collected).unwrap();
    let css = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../guest-examples/python-django/polls/static/polls/style.css"),
    )
    .unwrap();
    std::fs::write(collected.join("style.css"), &css).unwrap();
    for path in [dir.path(), static_root.as_path(), collected.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let nginx_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = server.addr.to_string();
    let config = wasmhost_nginx(&[
        app,
        "--listen",
        &listen,
        "--standalone",
        "--nginx-listen",
        &nginx_addr.to_string(),
        "--static-root",
        static_root.to_str().unwrap(),
    ]);
    let nginx = Nginx::start(dir.path(), &config, nginx_addr);

    let (status, head, body) = request_from(
        "127.0.0.2",
        nginx.addr,
        "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n",
    );
    let page = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{head}{page}\n{}", server.log());
    assert!(
        page.contains("href=\"/static/polls/style.css\"") && page.contains("csrfmiddlewaretoken"),
        "{page}"
    );
    let (status, head, body) = request_from(
        "127.0.0.2",
        nginx.addr,
        "GET /static/polls/style.css HTTP/1.0\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!((status, body), (200, css), "{head}");
    assert!(head.contains("\r\ncontent-type: text/css"), "{head}");
    // nginx asks its upstream in HTTP/1.1.
    assert!(server.wait_for_log("\"GET / HTTP/1.1\" 200", Duration::from_secs(10)));
    assert!(!server.log().contains("/static/"), "{}", server.log());
}

#[test]
#[ignore = "needs nginx; tests/run installs it and runs this"]
fn static_files_and_gzip_come_from_nginx() {
    let cluster = Cluster::start(1);
    // nginx compresses for HTTP/1.1 clients (gzip_http_version).
    let gzip = "Accept-Encoding: gzip\r\nConnection: close\r\n";
    let (status, head, _) = request_from(
        "127.0.0.2",
        cluster.nginx.addr,
        &format!("GET /static/app.css HTTP/1.1\r\nHost: t\r\n{gzip}\r\n"),
    );
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("\r\nserver: nginx"), "{head}");
    assert!(head.contains("\r\ncontent-encoding: gzip"), "{head}");
    assert!(head.contains("\r\ncontent-type: text/css"), "{head}");

    let (status, _, body) = request_from(
        "127.0.0.2",
        cluster.nginx.addr,
        "GET /favicon.ico HTTP/1.0\r\nHost: t\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(body, b"\x00\x00\x01\x00icon");

    // A text response from an app is compressed by nginx too.
    let (status, head, _) = request_from(
        "127.0.0.2",
        cluster.nginx.addr,
        &format!("GET /drip/100/0 HTTP/1.1\r\nHost: t\r\n{gzip}\r\n"),
    );
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("\r\ncontent-encoding: gzip"), "{head}");

    // Only the app's request reached wasmhost.
    let server = &cluster.servers[0];
    assert!(server.wait_for_log("\"GET /drip/100/0 HTTP/1.1\" 200", Duration::from_secs(10)));
    assert!(!server.log().contains("GET /static/"), "{}", server.log());
    assert!(
        !server.log().contains("GET /favicon.ico"),
        "{}",
        server.log()
    );
}

/// Requests through nginx from four threads until finished. With `posts`,
/// a third of them are POSTs, which nginx does not retry once sent;
/// without, only GETs, which it does.
pub(crate) fn nginx_load(url: String, posts: bool) -> Load {
    Load::start(4, move |agent, sent, thread| {
        // nginx retries a GET elsewhere when its server fails, but not a
        // POST it has sent: the POSTs are what a shutdown that drops
        // requests would fail.
        let reply = match (sent + thread) % if posts { 3 } else { 2 } {
            0 => agent.get(format!("{url}/")).call(),
            1 => agent.get(format!("{url}/hello/")).call(),
            _ => agent.post(format!("{url}/read-body")).send(&[7u8; 100][..]),
        };
        expect(reply, |status, _| status == 200)
    })
}

/// Waits until `server` has answered `count` requests (access-log lines)
/// more than `before`.
pub(crate) fn wait_for_traffic(server: &Server, before: usize, count: usize) {
    assert!(
        server.wait_for_count("\" 200 ", before + count, Duration::from_secs(60)),
        "no traffic reached {}:\n{}",
        server.addr,
        server.log()
    );
}

/// Restarts `servers` one at a time as a rolling deploy does: each drains
/// on SIGTERM and exits 0, then `start(index)` brings up its successor,
/// which must see traffic before the next one goes.
pub(crate) fn restart_each(servers: &mut Vec<Server>, mut start: impl FnMut(usize) -> Server) {
    for index in 0..servers.len() {
        let mut old = servers.remove(index);
        old.signal(wasmhost_tests::libc::SIGTERM);
        let status = old.wait_exit(Duration::from_secs(30)).expect("exits");
        assert_eq!(status.code(), Some(0), "{}", old.log());
        drop(old);
        let new = start(index);
        wait_for_traffic(&new, 0, 20);
        servers.insert(index, new);
    }
}

pub(crate) fn served(server: &Server) -> usize {
    server.log().matches("\" 200 ").count()
}

#[test]
#[ignore = "needs nginx; tests/run installs it and runs this"]
fn a_killed_process_costs_at_most_its_requests_in_flight_and_rejoins_when_restarted() {
    let mut cluster = Cluster::start(3);
    let load = nginx_load(cluster.nginx.url(""), true);
    for server in &cluster.servers {
        wait_for_traffic(server, 0, 20);
    }
    let killed_at = Instant::now();
    drop(cluster.servers.remove(1)); // SIGKILL
    // Traffic carries on through the others.
    let before: Vec<usize> = cluster.servers.iter().map(served).collect();
    for (server, before) in cluster.servers.iter().zip(&before) {
        wait_for_traffic(server, *before, 200);
    }
    let restarted = start_wasmhost(&format!("127.0.0.1:{}", cluster.ports[1]));
    wait_for_traffic(&restarted, 0, 20);
    let tally = load.finish();
    let (sent, failures) = (tally.sent(), tally.failures);
    // nginx retries an idempotent request whose server died, so even the
    // requests in flight rarely fail; none may fail once it knows. It knows
    // at its first failed attempt, so failures cluster at the kill; the
    // bound is generous for a loaded machine and well inside the 5 s
    // fail_timeout after which nginx would try the dead server again.
    assert!(failures.len() <= 4, "{failures:?}");
    for (at, error) in &failures {
        assert!(
            at.duration_since(killed_at) < Duration::from_secs(3),
            "failed {:?} after the kill: {error}",
            at.duration_since(killed_at)
        );
    }
    assert!(sent > 400, "{sent}");
}

#[test]
#[ignore = "needs nginx; tests/run installs it and runs this"]
fn a_rolling_restart_under_load_fails_no_request() {
    let mut cluster = Cluster::start(3);
    let load = nginx_load(cluster.nginx.url(""), true);
    for server in &cluster.servers {
        wait_for_traffic(server, 0, 20);
    }
    restart_each(&mut cluster.servers, |index| {
        start_wasmhost(&format!("127.0.0.1:{}", cluster.ports[index]))
    });
    let tally = load.finish();
    let (sent, failures) = (tally.sent(), tally.failures);
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    assert!(sent > 400, "{sent}");
    assert!(
        !cluster.nginx.error_log().contains("no live upstreams"),
        "{}",
        cluster.nginx.error_log()
    );
}
