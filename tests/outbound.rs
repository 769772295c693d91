//! Outbound grants: HTTP and HTTPS to upstreams (real ones, started here),
//! TCP to a real Redis, and what is refused: no grant, another port,
//! another app's grant, a name that resolves inside, a lookup of an
//! ungranted name. Also the pool (connections reused across requests),
//! the timeout, the log line with the entry to add, and bad grants.

use crate::WASMHOST;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmhost_tests::rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
};
use wasmhost_tests::rustls;
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, Redis, Server, Upstream, get, guest, run_to_exit};

/// How long a log line may take to reach the test: it is written after
/// the guest's answer.
const LOG_DEADLINE: Duration = Duration::from_secs(10);

fn fault() -> &'static str {
    guest(Guest::Fault).to_str().unwrap()
}

/// What the fault guest's `/fetch` of `url` answered: status and body.
fn fetch(server: &Server, route: &str, url: &str) -> (u16, String) {
    let reply = get(&server.url(&format!("{route}/fetch?url={url}"))).unwrap();
    (reply.status, reply.body.trim_end().to_string())
}

#[test]
fn without_a_grant_a_request_is_denied_and_logged_once_with_the_entry_to_add() {
    let upstream = Upstream::start();
    let server = Server::start(WASMHOST, &[fault()]);
    let url = format!("http://127.0.0.1:{}/x", upstream.port());
    for _ in 0..3 {
        assert_eq!(
            fetch(&server, "", &url),
            (502, "ErrorCode::HttpRequestDenied".to_string())
        );
    }
    let line = format!(
        "WARN [/] outbound request to http://127.0.0.1:{port} denied; to allow it add \
         \"http://127.0.0.1:{port}\" to allowed_outbound_hosts",
        port = upstream.port()
    );
    assert!(server.wait_for_log(&line, LOG_DEADLINE), "{line}");
    let log = server.log();
    assert_eq!(log.matches(&line).count(), 1, "{log}");
    assert_eq!(upstream.accepted(), 0);
}

#[test]
fn a_granted_upstream_is_reached_over_pooled_connections() {
    let upstream = Upstream::start();
    let origin = format!("http://127.0.0.1:{}", upstream.port());
    let server = Server::start(WASMHOST, &[fault(), "--allow-outbound", &origin]);
    for n in 0..100 {
        assert_eq!(
            fetch(&server, "", &format!("{origin}/{n}")),
            (200, format!("upstream /{n}"))
        );
    }
    // One request at a time: one connection, kept alive and back in the
    // pool before the guest answers. A sender that connects per request
    // (wasmtime-wasi-http's own) makes 100.
    assert_eq!(upstream.accepted(), 1, "connections for 100 requests");
    assert!(server.log().contains(&format!(", outbound {origin})")));
}

#[test]
fn grants_are_per_app_and_per_port() {
    let (a, b) = (Upstream::start(), Upstream::start());
    let (_dir, config) = wasmhost_tests::config_file(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[app]]\nroute = \"/a\"\ncomponent = \"{fault}\"\n\
         allowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n\
         [[app]]\nroute = \"/b\"\ncomponent = \"{fault}\"\n",
        fault = fault(),
        port = a.port()
    ));
    let server = Server::start_exact(WASMHOST, &["--config", &config]);
    let url_a = format!("http://127.0.0.1:{}/", a.port());
    let url_b = format!("http://127.0.0.1:{}/", b.port());
    assert_eq!(fetch(&server, "/a", &url_a), (200, "upstream /".into()));
    let denied = (502, "ErrorCode::HttpRequestDenied".to_string());
    assert_eq!(fetch(&server, "/a", &url_b), denied);
    assert_eq!(fetch(&server, "/b", &url_a), denied);
    for (route, port) in [("/a", b.port()), ("/b", a.port())] {
        let line = format!(
            "[{route}] outbound request to http://127.0.0.1:{port} denied; to allow it add \
             \"http://127.0.0.1:{port}\" to allowed_outbound_hosts"
        );
        assert!(server.wait_for_log(&line, LOG_DEADLINE), "{line}");
    }
    assert_eq!(b.accepted(), 0);
}

#[test]
fn a_granted_name_that_resolves_inside_is_refused_unless_the_address_is_granted() {
    let upstream = Upstream::start();
    let port = upstream.port();
    let by_name = format!("http://localhost:{port}");
    let server = Server::start(WASMHOST, &[fault(), "--allow-outbound", &by_name]);
    assert_eq!(
        fetch(&server, "", &format!("{by_name}/")),
        (502, "ErrorCode::DestinationIpProhibited".to_string())
    );
    let line = format!(
        "[/] outbound request to http://localhost:{port} refused: localhost is 127.0.0.1, \
         an internal address, which only an entry naming it reaches; to allow it add \
         \"http://127.0.0.1:{port}\" to allowed_outbound_hosts"
    );
    assert!(server.wait_for_log(&line, LOG_DEADLINE), "{line}");
    assert_eq!(upstream.accepted(), 0);
    drop(server);

    let by_address = format!("http://127.0.0.1:{port}");
    let server = Server::start(
        WASMHOST,
        &[
            fault(),
            "--allow-outbound",
            &by_name,
            "--allow-outbound",
            &by_address,
        ],
    );
    assert_eq!(
        fetch(&server, "", &format!("{by_name}/")),
        (200, "upstream /".into())
    );
}

#[test]
fn a_wide_grant_warns_and_still_does_not_reach_internal_addresses() {
    let upstream = Upstream::start();
    let server = Server::start(WASMHOST, &[fault(), "--allow-outbound", "http://*:*"]);
    assert!(
        server.log().contains(
            "--allow-outbound: allowed_outbound_hosts entry \"http://*:*\" lets the guest reach any host"
        ),
        "{}",
        server.log()
    );
    let prohibited = (502, "ErrorCode::DestinationIpProhibited".to_string());
    for url in [
        format!("http://127.0.0.1:{}/", upstream.port()),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]:9/".to_string(),
        "http://10.0.0.1:8080/".to_string(),
    ] {
        assert_eq!(fetch(&server, "", &url), prohibited, "{url}");
    }
    assert_eq!(upstream.accepted(), 0);
}

#[test]
fn a_wildcard_grant_covers_subdomains_only() {
    // `.invalid` never resolves (RFC 6761): a request past the grant check
    // fails at the lookup, one refused by it never gets there.
    let server = Server::start(
        WASMHOST,
        &[fault(), "--allow-outbound", "http://*.wasmhost.invalid"],
    );
    let (status, body) = fetch(&server, "", "http://api.wasmhost.invalid/");
    assert_eq!(status, 502);
    assert!(body.starts_with("ErrorCode::DnsError"), "{body}");
    assert_eq!(
        fetch(&server, "", "http://wasmhost.invalid/"),
        (502, "ErrorCode::HttpRequestDenied".to_string())
    );
    assert_eq!(
        fetch(&server, "", "http://api.wasmhost.invalid:8080/"),
        (502, "ErrorCode::HttpRequestDenied".to_string())
    );
}

/// A CA (its PEM at `ca.pem` in `dir`) and an upstream server config with
/// a certificate for 127.0.0.1 signed by it (also written, as `leaf.pem`
/// and `leaf.key`, for a wasmhost upstream).
fn test_ca(dir: &Path) -> Arc<rustls::ServerConfig> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "wasmhost outbound test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("leaf.key"), key.serialize_pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
    .unwrap();
    Arc::new(config)
}

#[test]
fn https_upstreams_are_verified_against_the_public_roots_and_the_apps_ca() {
    let dir = TempDir::new().unwrap();
    let upstream = Upstream::start_tls(test_ca(dir.path()));
    let origin = format!("https://127.0.0.1:{}", upstream.port());
    let url = format!("{origin}/secure");

    let trusting = Server::start(
        WASMHOST,
        &[
            fault(),
            "--allow-outbound",
            &origin,
            "--outbound-ca",
            dir.path().join("ca.pem").to_str().unwrap(),
        ],
    );
    for _ in 0..5 {
        assert_eq!(fetch(&trusting, "", &url), (200, "upstream /secure".into()));
    }
    assert_eq!(upstream.accepted(), 1, "TLS connections are pooled too");

    let public_roots_only = Server::start(WASMHOST, &[fault(), "--allow-outbound", &origin]);
    assert_eq!(
        fetch(&public_roots_only, "", &url),
        (502, "ErrorCode::TlsCertificateError".to_string())
    );
}

#[test]
#[ignore = "needs ss; tests/run installs it and runs this"]
fn an_upstream_that_offers_http2_gets_concurrent_requests_on_one_connection() {
    // The upstream is a wasmhost too: TLS, ALPN h2, its access log saying
    // which protocol each request came by.
    let dir = TempDir::new().unwrap();
    test_ca(dir.path());
    let path = |file: &str| dir.path().join(file).to_str().unwrap().to_string();
    let upstream = Server::start(
        WASMHOST,
        &[
            fault(),
            "--tls-cert",
            &path("leaf.pem"),
            "--tls-key",
            &path("leaf.key"),
            "--access-log",
            "-",
        ],
    );
    let origin = format!("https://127.0.0.1:{}", upstream.addr.port());
    let server = Server::start(
        WASMHOST,
        &[
            fault(),
            "--allow-outbound",
            &origin,
            "--outbound-ca",
            &path("ca.pem"),
        ],
    );
    let replies =
        wasmhost_tests::get_concurrently(&server.url(&format!("/fetch?url={origin}/count")), 8);
    for reply in &replies {
        assert_eq!(
            reply.as_ref().map(|(status, _)| *status),
            Ok(200),
            "{replies:?}"
        );
    }
    assert!(
        upstream.wait_for_count("\"GET /count HTTP/2.0\" 200 ", 8, LOG_DEADLINE),
        "{}",
        upstream.log()
    );
    // Kept alive for the next request: what is open now is what was made.
    let ss = Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!("( dport = :{} )", upstream.addr.port()))
        .output()
        .expect("ss (tests/run installs iproute2)");
    let open = String::from_utf8_lossy(&ss.stdout).lines().count();
    assert_eq!(open, 1, "{}", String::from_utf8_lossy(&ss.stdout));
}

#[test]
fn an_upstream_that_does_not_answer_times_out_and_costs_only_its_request() {
    let upstream = Upstream::start();
    let origin = format!("http://127.0.0.1:{}", upstream.port());
    let server = Server::start(
        WASMHOST,
        &[
            fault(),
            "--allow-outbound",
            &origin,
            "--outbound-timeout",
            "1s",
        ],
    );
    let stalled = {
        let url = server.url(&format!("/fetch?url={origin}/stall"));
        std::thread::spawn(move || get(&url).unwrap())
    };
    // The stalled call holds no place that another request needs.
    assert_eq!(
        fetch(&server, "", &format!("{origin}/other")),
        (200, "upstream /other".into())
    );
    let stalled = stalled.join().unwrap();
    assert_eq!(
        (stalled.status, stalled.body.trim_end()),
        (502, "ErrorCode::ConnectionReadTimeout")
    );
}

#[test]
fn check_prints_each_apps_outbound_grants() {
    let (_dir, config) = wasmhost_tests::config_file(&format!(
        "[[app]]\nroute = \"/api\"\ncomponent = \"{}\"\n\
         allowed_outbound_hosts = [\"https://api.example.com\", \"tcp://db.internal:5432\"]\n",
        fault()
    ));
    let finished = run_to_exit(
        WASMHOST,
        &["check", "--config", &config],
        Duration::from_secs(180),
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished
            .stdout
            .contains(", outbound https://api.example.com, outbound tcp://db.internal:5432)"),
        "{}",
        finished.stdout
    );
}

#[test]
fn bad_outbound_grants_are_one_line_errors_naming_the_line() {
    let error = |rest: &str| {
        let (_dir, config) = wasmhost_tests::config_file(&format!(
            "[[app]]\nroute = \"/\"\ncomponent = \"{}\"\n{rest}",
            fault()
        ));
        run_to_exit(
            WASMHOST,
            &["check", "--config", &config],
            Duration::from_secs(180),
        )
        .error_line()
        .to_string()
    };
    let line = error("allowed_outbound_hosts = [\"api.example.com\"]\n");
    assert!(
        line.contains(
            "wasmhost.toml:4: allowed_outbound_hosts: `api.example.com` is not SCHEME://HOST[:PORT]"
        ),
        "{line}"
    );
    let line = error("\nallowed_outbound_hosts = [\"ftp://files.example.com\"]\n");
    assert!(
        line.contains("wasmhost.toml:5: allowed_outbound_hosts: `ftp://files.example.com`: unknown scheme `ftp`"),
        "{line}"
    );
    let line = error("allowed_outbound_hosts = [\"tcp://db.internal\"]\n");
    assert!(
        line.contains("wasmhost.toml:4: allowed_outbound_hosts: `tcp://db.internal` needs a port"),
        "{line}"
    );
    let line = error("outbound_ca = \"missing.pem\"\n");
    assert!(
        line.contains("wasmhost.toml:4: outbound_ca: cannot read "),
        "{line}"
    );
    assert!(line.contains("missing.pem"), "{line}");
    let line = error("allowed_outbound_host = [\"https://api.example.com\"]\n");
    assert!(
        line.contains("wasmhost.toml:4") && line.contains("unknown field `allowed_outbound_host`"),
        "{line}"
    );

    let flag = run_to_exit(
        WASMHOST,
        &["check", fault(), "--allow-outbound", "example.com"],
        Duration::from_secs(60),
    );
    assert_eq!(flag.status.code(), Some(2), "{}", flag.stderr);
    assert!(flag.stderr.contains("--allow-outbound"), "{}", flag.stderr);
    assert!(!flag.stderr.contains("panicked"), "{}", flag.stderr);
}

fn counter() -> &'static str {
    guest(Guest::RedisCounter).to_str().unwrap()
}

#[test]
#[ignore = "needs redis-server; tests/run installs it and runs this"]
fn the_redis_counter_counts_with_its_grant_and_gets_its_own_error_without() {
    let redis = Redis::start();
    let port = redis.port;
    let env = format!("REDIS_URL=redis://127.0.0.1:{port}");
    let grant = format!("tcp://127.0.0.1:{port}");

    let granted = Server::start(
        WASMHOST,
        &[counter(), "--env", &env, "--allow-outbound", &grant],
    );
    for n in 1..=3 {
        let reply = get(&granted.url("/")).unwrap();
        assert_eq!((reply.status, reply.body), (200, format!("count {n}\n")));
    }
    drop(granted);

    // Without any tcp entry the guest has no sockets at all.
    let denied = Server::start(WASMHOST, &[counter(), "--env", &env]);
    let reply = get(&denied.url("/")).unwrap();
    assert_eq!(reply.status, 503);
    assert!(
        reply
            .body
            .starts_with(&format!("cannot reach Redis at 127.0.0.1:{port}: ")),
        "{}",
        reply.body
    );
    drop(denied);

    // Another port of the same host is another grant; the refusal names
    // the entry to add.
    let other = format!("tcp://127.0.0.1:{}", port + 1);
    let wrong_port = Server::start(
        WASMHOST,
        &[counter(), "--env", &env, "--allow-outbound", &other],
    );
    assert_eq!(get(&wrong_port.url("/")).unwrap().status, 503);
    let line = format!(
        "[/] outbound connection to tcp://127.0.0.1:{port} denied; to allow it add \
         \"tcp://127.0.0.1:{port}\" to allowed_outbound_hosts"
    );
    assert!(wrong_port.wait_for_log(&line, LOG_DEADLINE), "{line}");
    drop(wrong_port);

    // The count went on in Redis, not in the guest.
    let reused = Server::start(
        WASMHOST,
        &[
            counter(),
            "--env",
            &env,
            "--allow-outbound",
            &grant,
            "--reuse",
            "10",
        ],
    );
    assert_eq!(get(&reused.url("/")).unwrap().body, "count 4\n");
    assert_eq!(get(&reused.url("/")).unwrap().body, "count 5\n");
}

#[test]
#[ignore = "needs redis-server; tests/run installs it and runs this"]
fn tcp_by_name_needs_the_name_granted_and_an_internal_address_named_too() {
    let redis = Redis::start();
    let port = redis.port;
    let env = format!("REDIS_URL=redis://localhost:{port}");
    let by_name = format!("tcp://localhost:{port}");

    let name_only = Server::start(
        WASMHOST,
        &[counter(), "--env", &env, "--allow-outbound", &by_name],
    );
    assert_eq!(get(&name_only.url("/")).unwrap().status, 503);
    let line = format!(
        "[/] outbound connection to tcp://localhost:{port} refused: localhost is 127.0.0.1, \
         an internal address, which only an entry naming it reaches; to allow it add \
         \"tcp://127.0.0.1:{port}\" to allowed_outbound_hosts"
    );
    assert!(name_only.wait_for_log(&line, LOG_DEADLINE), "{line}");
    drop(name_only);

    let both = Server::start(
        WASMHOST,
        &[
            counter(),
            "--env",
            &env,
            "--allow-outbound",
            &by_name,
            "--allow-outbound",
            &format!("tcp://127.0.0.1:{port}"),
        ],
    );
    assert_eq!(get(&both.url("/")).unwrap().body, "count 1\n");
}

#[test]
fn a_lookup_of_an_ungranted_name_is_refused_before_any_query() {
    let server = Server::start(
        WASMHOST,
        &[
            fault(),
            "--allow-outbound",
            "tcp://db.wasmhost.invalid:5432",
        ],
    );
    let reply = get(&server.url("/connect?to=cache.wasmhost.invalid:6379")).unwrap();
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(server.wait_for_log(
        "[/] name lookup of cache.wasmhost.invalid denied; to allow it add \
         \"tcp://cache.wasmhost.invalid:PORT\"",
        LOG_DEADLINE
    ));
    // The granted name is looked up (and, being .invalid, not found).
    let reply = get(&server.url("/connect?to=db.wasmhost.invalid:5432")).unwrap();
    assert_eq!(reply.status, 502);
    assert!(
        !server
            .log()
            .contains("lookup of db.wasmhost.invalid denied")
    );
}

#[test]
fn an_outbound_grant_added_to_the_file_applies_at_the_reload() {
    let upstream = Upstream::start();
    let app = |grant: &str| {
        format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\n\
             [[app]]\nroute = \"/\"\ncomponent = \"{}\"\n{grant}",
            fault()
        )
    };
    let (_dir, config) = wasmhost_tests::config_file(&app(""));
    let server = Server::start_exact(WASMHOST, &["--config", &config]);
    let url = format!("http://127.0.0.1:{}/", upstream.port());
    assert_eq!(
        fetch(&server, "", &url),
        (502, "ErrorCode::HttpRequestDenied".to_string())
    );
    // Renamed over, as an editor saves.
    let staged = Path::new(&config).with_extension("staged");
    let grant = format!(
        "allowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
        upstream.port()
    );
    std::fs::write(&staged, app(&grant)).unwrap();
    std::fs::rename(&staged, &config).unwrap();
    assert!(
        server.wait_for_log("configuration applied", Duration::from_secs(60)),
        "{}",
        server.log()
    );
    assert_eq!(fetch(&server, "", &url), (200, "upstream /".into()));
}

#[test]
fn past_outbound_concurrency_a_request_waits_for_one_to_finish() {
    let upstream = Upstream::start();
    let origin = format!("http://127.0.0.1:{}", upstream.port());
    let server = Server::start(
        WASMHOST,
        &[
            fault(),
            "--allow-outbound",
            &origin,
            "--outbound-concurrency",
            "1",
            "--outbound-timeout",
            "2s",
        ],
    );
    let stalled = {
        let url = server.url(&format!("/fetch?url={origin}/stall"));
        std::thread::spawn(move || {
            let reply = get(&url).unwrap();
            (reply.status, reply.body)
        })
    };
    // The stalled call holds the one place; the next waits for it to time
    // out (2 s), then has its own 2 s to get its answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while upstream.accepted() == 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled call never connected"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let waited = fetch(&server, "", &format!("{origin}/after"));
    // A lower bound only: a loaded machine makes it longer, never shorter.
    let took = started.elapsed();
    let (status, body) = stalled.join().unwrap();
    assert_eq!(
        (status, body.trim_end()),
        (502, "ErrorCode::ConnectionReadTimeout")
    );
    assert_eq!(waited, (200, "upstream /after".into()));
    assert!(
        took >= Duration::from_secs(1),
        "answered after {took:?}: it did not wait"
    );
}
