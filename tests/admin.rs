//! The admin listener (`--admin`): `/healthz`, `/readyz` through startup and
//! drain, and `/metrics` as a real Prometheus scrapes it and `promtool`
//! checks it.

use crate::WASMHOST;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, Load, Server, expect, free_port, get, guest, libc, post, ureq};

/// Starts the apps of `mounts` with the admin listener on a free port.
fn with_admin(mounts: &[String], extra: &[&str]) -> (Server, String) {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<&str> = Vec::new();
    for mount in mounts {
        args.extend(["--mount", mount]);
    }
    args.extend(["--admin", &admin]);
    args.extend_from_slice(extra);
    let server = Server::start(WASMHOST, &args);
    assert!(
        server.log().contains(&format!("admin on http://{admin}/")),
        "{}",
        server.log()
    );
    (server, format!("http://{admin}"))
}

/// `/metrics` as a plain client gets it (Prometheus's text format 0.0.4).
fn metrics(admin: &str) -> String {
    get(&format!("{admin}/metrics")).unwrap().body
}

/// `/metrics` once `series` has reached `at_least`: a request is counted
/// when its response body is dropped, which can come just after the client
/// has read it.
fn metrics_once(admin: &str, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(admin);
        if sample(&text, series).is_some_and(|n| n >= at_least) || Instant::now() >= deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The value of the sample `series` (name and labels, as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
#[ignore = "needs Prometheus; tests/run installs it and runs this"]
fn the_admin_listener_answers_health_readiness_and_metrics_apart_from_the_apps() {
    let hello = format!("/={}", guest(Guest::RustHello).display());
    let (server, admin) = with_admin(&[hello], &[]);
    let healthz = get(&format!("{admin}/healthz")).unwrap();
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"));
    let readyz = get(&format!("{admin}/readyz")).unwrap();
    assert_eq!((readyz.status, readyz.body.as_str()), (200, "ready\n"));
    for _ in 0..3 {
        assert_eq!(get(&server.url("/")).unwrap().status, 200);
    }
    // The app's own listener never answers with the admin's pages.
    assert!(
        !get(&server.url("/metrics"))
            .unwrap()
            .body
            .contains("wasmhost_")
    );
    assert_eq!(get(&format!("{admin}/nope")).unwrap().status, 404);
    assert_eq!(post(&format!("{admin}/metrics"), b"").unwrap().status, 405);

    let requests = r#"wasmhost_requests_total{app="/",method="GET",status="2xx"}"#;
    let text = metrics_once(&admin, requests, 4.0);
    assert!(
        sample(&text, requests).is_some_and(|n| n >= 4.0),
        "three requests and the app's /metrics: {text}"
    );
    assert_eq!(
        sample(&text, r#"wasmhost_request_duration_seconds_count{app="/"}"#),
        sample(&text, requests)
    );
    assert_eq!(
        sample(&text, r#"wasmhost_requests_in_flight{app="/"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"wasmhost_instances_spares_target{app="/"}"#),
        Some(2.0)
    );
    let listener = format!("{}", server.addr);
    assert!(
        sample(
            &text,
            &format!(r#"wasmhost_connections_accepted_total{{listener="{listener}"}}"#)
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        text.contains(r#"wasmhost_app_version{app="/",sha256=""#),
        "{text}"
    );
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|n| n > 0.0));
    // The app's instances: its two spares at least, their memory, how long
    // they took to make, and the compile that came before. A spare used by
    // a request is made again after its response, so this waits for it.
    let text = metrics_once(&admin, r#"wasmhost_instances_live{app="/"}"#, 2.0);
    let at_least = |series: &str, n: f64| {
        assert!(
            sample(&text, series).is_some_and(|value| value >= n),
            "{series} >= {n}: {text}"
        );
    };
    at_least(r#"wasmhost_instances_live{app="/"}"#, 2.0);
    at_least(r#"wasmhost_instance_memory_bytes{app="/"}"#, 65536.0);
    at_least(
        r#"wasmhost_instantiation_duration_seconds_count{app="/"}"#,
        2.0,
    );
    at_least("wasmhost_pool_component_instances", 2.0);
    at_least("wasmhost_pool_memories", 2.0);
    let compiles: f64 = ["compiled", "cache"]
        .iter()
        .filter_map(|origin| {
            sample(
                &text,
                &format!(r#"wasmhost_compiles_total{{compiler="cranelift",origin="{origin}"}}"#),
            )
        })
        .sum();
    assert_eq!(compiles, 1.0, "{text}");
    assert!(
        sample(
            &text,
            r#"wasmhost_compile_seconds_total{compiler="cranelift"}"#
        )
        .is_some_and(|seconds| seconds > 0.0),
        "{text}"
    );

    // A request with no Host header is refused for its head, and counted.
    let _ = wasmhost_tests::raw_request(server.addr, "GET / HTTP/1.1\r\n\r\n");
    let text = metrics(&admin);
    assert_eq!(
        sample(
            &text,
            r#"wasmhost_request_heads_refused_total{status="400"}"#
        ),
        Some(1.0),
        "{text}"
    );

    // promtool, Prometheus's own checker, finds nothing to object to.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by tests/run (Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Prometheus itself asks for OpenMetrics, and gets it.
    let openmetrics = ureq::get(&format!("{admin}/metrics"))
        .header("Accept", "application/openmetrics-text;version=1.0.0")
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
}

#[test]
fn the_admin_address_must_be_port_or_ip_and_port() {
    let hello = guest(Guest::RustHello).to_str().unwrap();
    let flag = wasmhost_tests::run_to_exit(
        WASMHOST,
        &["serve", hello, "--admin", "localhost:9090"],
        Duration::from_secs(30),
    );
    assert!(!flag.status.success());
    assert!(
        flag.stderr.contains("--admin") && flag.stderr.contains("127.0.0.1:9090"),
        "{}",
        flag.stderr
    );
    let (_dir, config) = wasmhost_tests::config_file(&format!(
        "admin = \"all\"\n[[app]]\nroute = \"/\"\ncomponent = \"{hello}\"\n"
    ));
    let file = wasmhost_tests::run_to_exit(
        WASMHOST,
        &["serve", "--config", &config],
        Duration::from_secs(30),
    );
    let line = file.error_line();
    assert!(
        line.contains("wasmhost.toml:1") && line.contains("admin: `all` is not PORT or IP:PORT"),
        "{line}"
    );
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn readyz_is_503_while_the_apps_compile_and_while_draining() {
    let cache = TempDir::new().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let python = format!("/py={}", guest(Guest::PythonHello).display());
    let fault = format!("/={}", guest(Guest::Fault).display());
    let mut command = Command::new(WASMHOST);
    // An empty compile cache: the Python app compiles for a second or more
    // before anything is served.
    command.args([
        "serve", "--port", "0", "--admin", &admin, "--mount", &python,
    ]);
    command.args(["--mount", &fault, "--cache-dir"]);
    command.arg(cache.path());
    let readyz = format!("http://{admin}/readyz");
    let mut server = Server::spawn_unready(command);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Ok(reply) = get(&readyz) {
            break reply;
        }
        assert!(Instant::now() < deadline, "{}", server.log());
        // Polling for the admin listener to come up; a failed connect
        // returns at once.
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(first.status, 503, "{}", first.body);
    assert!(first.body.starts_with("starting:"), "{}", first.body);
    assert_eq!(get(&format!("http://{admin}/healthz")).unwrap().status, 200);
    server.wait_until_serving();
    let ready = get(&readyz).unwrap();
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    let url = server.url("/sleep/1500");
    let slow = std::thread::spawn(move || get(&url).map(|reply| reply.status).ok());
    assert!(
        server.wait_for_log("[/] sleeping 1500 ms", Duration::from_secs(30)),
        "{}",
        server.log()
    );
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_for_log("shutting down", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let draining = get(&readyz).unwrap();
    assert_eq!(draining.status, 503);
    assert!(draining.body.starts_with("draining:"), "{}", draining.body);
    assert_eq!(slow.join().unwrap(), Some(200));
    let status = server.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.log());
}

#[test]
#[ignore = "needs Prometheus; tests/run installs it and runs this"]
fn prometheus_scrapes_the_request_counts_of_each_app() {
    let hello = format!("/a={}", guest(Guest::RustHello).display());
    let other = format!("/b={}", guest(Guest::RustHello).display());
    let (server, admin) = with_admin(&[hello, other], &[]);
    for _ in 0..5 {
        assert_eq!(get(&server.url("/a/")).unwrap().status, 200);
    }
    assert_eq!(get(&server.url("/b/")).unwrap().status, 200);

    let dir = TempDir::new().unwrap();
    let config = dir.path().join("prometheus.yml");
    let target = admin.trim_start_matches("http://");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wasmhost\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed by tests/run (Debian's prometheus package)");
    let query = |expr: &str| -> Option<String> {
        let reply = ureq::get(&format!("http://{web}/api/v1/query"))
            .query("query", expr)
            .call()
            .ok()?
            .into_body()
            .read_to_string()
            .ok()?;
        Some(reply)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let found = loop {
        let answer = query(r#"sum(wasmhost_requests_total{app="/a"})"#).unwrap_or_default();
        // The vector's value is `[<time>, "5"]` once a scrape is in.
        if answer.contains(r#","5"]"#) {
            break answer;
        }
        if Instant::now() >= deadline {
            let _ = prometheus.kill();
            panic!("Prometheus never saw 5 requests of /a: {answer}");
        }
        // Waiting for the next scrape (every second).
        std::thread::sleep(Duration::from_millis(200));
    };
    let b = query(r#"sum(wasmhost_requests_total{app="/b"})"#).unwrap_or_default();
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(found.contains(r#""status":"success""#), "{found}");
    assert!(b.contains(r#","1"]"#), "{b}");
}

#[test]
fn guest_faults_are_counted_by_app_and_kind() {
    let fault = format!("/f={}", guest(Guest::Fault).display());
    let (server, admin) = with_admin(&[fault], &["--timeout", "300ms"]);
    assert_eq!(get(&server.url("/f/trap")).unwrap().status, 500);
    assert_eq!(get(&server.url("/f/trap")).unwrap().status, 500);
    assert_eq!(get(&server.url("/f/no-response")).unwrap().status, 502);
    assert_eq!(get(&server.url("/f/sleep/5000")).unwrap().status, 504);
    assert_eq!(get(&server.url("/f/")).unwrap().status, 200);
    let text = metrics_once(
        &admin,
        r#"wasmhost_requests_total{app="/f",method="GET",status="2xx"}"#,
        1.0,
    );
    for (kind, count) in [("trap", 2.0), ("no_response", 1.0), ("timeout", 1.0)] {
        assert_eq!(
            sample(
                &text,
                &format!(r#"wasmhost_guest_faults_total{{app="/f",kind="{kind}"}}"#)
            ),
            Some(count),
            "{text}"
        );
    }
    let requests = |status: &str| {
        sample(
            &text,
            &format!(r#"wasmhost_requests_total{{app="/f",method="GET",status="{status}"}}"#),
        )
    };
    assert_eq!((requests("5xx"), requests("2xx")), (Some(4.0), Some(1.0)));
}

/// The text of the cell of class `class` in the row of `app`, from the DOM
/// Chromium printed.
fn cell_text(dom: &str, app: &str, class: &str) -> Option<String> {
    let row = dom.split(&format!(r#"<tr data-app="{app}">"#)).nth(1)?;
    let row = row.split("</tr>").next()?;
    let cell = row.split(&format!(r#"<td class="{class}">"#)).nth(1)?;
    Some(cell.split("</td>").next()?.to_string())
}

#[test]
#[ignore = "needs Chromium; tests/run installs it and runs this"]
fn the_status_page_shows_live_numbers_for_two_apps_in_chromium() {
    let hello = format!("/a={}", guest(Guest::RustHello).display());
    let fault = format!("/b={}", guest(Guest::Fault).display());
    let (server, admin) = with_admin(&[hello, fault], &[]);
    assert_eq!(get(&server.url("/b/trap")).unwrap().status, 500);
    // Traffic on both apps while the page is read; only its numbers count.
    let load = {
        let (a, b) = (server.url("/a/"), server.url("/b/"));
        Load::start(1, move |agent, _, _| {
            for url in [&a, &b] {
                let _ = expect(agent.get(url).call(), |_, _| true);
            }
            Ok(())
        })
    };
    // The page shows rates once the server has sampled two seconds of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = get(&format!("{admin}/status.json")).unwrap().body;
        let parsed: wasmhost_tests::serde_json::Value =
            wasmhost_tests::serde_json::from_str(&status).unwrap();
        let rates: Vec<f64> = parsed["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|app| app["rate"].as_f64().unwrap_or(0.0))
            .collect();
        if rates.len() == 2 && rates.iter().all(|rate| *rate > 0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no rates in {status}");
        // The server samples once a second.
        std::thread::sleep(Duration::from_millis(200));
    }
    let profile = TempDir::new().unwrap();
    let chromium = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg("--virtual-time-budget=3000")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{admin}/"))
        .output()
        .expect("chromium is installed by tests/run (Debian's chromium package)");
    load.finish();
    let dom = String::from_utf8_lossy(&chromium.stdout);
    assert!(
        chromium.status.success(),
        "{}",
        String::from_utf8_lossy(&chromium.stderr)
    );
    for app in ["/a", "/b"] {
        let rate =
            cell_text(&dom, app, "rate").unwrap_or_else(|| panic!("no row for {app}: {dom}"));
        let rate: f64 = rate.replace(',', "").parse().unwrap_or(0.0);
        assert!(rate > 0.0, "{app} shows {rate} req/s: {dom}");
        let p50 = cell_text(&dom, app, "p50").unwrap();
        assert!(p50.ends_with(" ms"), "{app} p50 {p50}");
        let version = cell_text(&dom, app, "version").unwrap();
        assert_eq!(version.len(), 12, "a short SHA-256: {version}");
    }
    assert!(dom.contains("<polyline"), "a sparkline per app: {dom}");
    assert!(
        dom.contains("/b  fault: trap"),
        "the trap in the recent events: {dom}"
    );
    assert!(dom.contains("2 app(s) · up"), "{dom}");
}

#[test]
fn reloads_are_counted_with_their_duration() {
    let dir = TempDir::new().unwrap();
    let app = dir.path().join("app.wasm");
    std::fs::copy(guest(Guest::RustHello), &app).unwrap();
    let (server, admin) = with_admin(&[format!("/={}", app.display())], &[]);
    let demo = std::fs::read(guest(Guest::RustDemo)).unwrap();
    wasmhost_tests::rename_over(&app, &demo);
    assert!(
        server.wait_for_log("reloaded / (", Duration::from_secs(60)),
        "{}",
        server.log()
    );
    let text = metrics(&admin);
    assert_eq!(
        sample(&text, r#"wasmhost_reloads_total{app="/",outcome="done"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, r#"wasmhost_last_reload_duration_seconds{app="/"}"#).is_some_and(|s| s > 0.0),
        "{text}"
    );
    let status = get(&format!("{admin}/status.json")).unwrap().body;
    assert!(status.contains("reloaded "), "{status}");
}

#[test]
fn outbound_requests_are_counted_by_app_grant_and_status_and_denials_by_app() {
    let upstream = wasmhost_tests::Upstream::start();
    let origin = format!("http://127.0.0.1:{}", upstream.port());
    let fault = guest(Guest::Fault).to_str().unwrap().to_string();
    let (server, admin) = with_admin(&[format!("/f={fault}")], &["--allow-outbound", &origin]);
    for n in 0..3 {
        let reply = get(&server.url(&format!("/f/fetch?url={origin}/{n}"))).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // Another port of the same address: no grant.
    let other = format!("http://127.0.0.1:{}/", free_port());
    let denied = get(&server.url(&format!("/f/fetch?url={other}"))).unwrap();
    assert_eq!(denied.status, 502, "{}", denied.body);

    let sent =
        format!(r#"wasmhost_outbound_requests_total{{app="/f",grant="{origin}",status="2xx"}}"#);
    let text = metrics_once(&admin, &sent, 3.0);
    assert_eq!(sample(&text, &sent), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, r#"wasmhost_outbound_denied_total{app="/f"}"#),
        Some(1.0),
        "{text}"
    );
    // The denied origin is not a label anywhere: guests cannot make series.
    assert!(
        !text.contains(&other.trim_end_matches('/').to_string()),
        "{text}"
    );
}

/// One address holding 300 half-sent requests (the head never finished)
/// takes 16 of the admin listener's connections; a probe from another
/// address is answered every time.
#[test]
fn one_address_with_many_half_sent_requests_does_not_starve_the_probes() {
    let hello = format!("/={}", guest(Guest::RustHello).display());
    let (_server, admin) = with_admin(&[hello], &[]);
    let addr: std::net::SocketAddr = admin.trim_start_matches("http://").parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..300 {
        let socket = wasmhost_tests::socket2::Socket::new(
            wasmhost_tests::socket2::Domain::IPV4,
            wasmhost_tests::socket2::Type::STREAM,
            None,
        )
        .unwrap();
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
            .unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n");
        held.push(stream);
    }
    // Within Kubernetes' default probe timeout of 1 s, every time: before,
    // the probes waited for half-sent requests to time out.
    for _ in 0..20 {
        let start = Instant::now();
        let healthz = get(&format!("{admin}/healthz")).unwrap();
        assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
    drop(held);
}
