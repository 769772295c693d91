//! HTTPS and HTTP/2: TLS listeners with certificates made here by a test CA,
//! HTTP/2 by ALPN and as h2c, many streams on one connection, certificate
//! renewal without a restart, SNI, clear startup errors, and a bad
//! handshake or plain HTTP costing only its own connection.

use crate::WASMHOST;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmhost_tests::rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};
use wasmhost_tests::rustls::pki_types::{CertificateDer, ServerName};
use wasmhost_tests::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, Server, assert_fires_at, guest, run_to_exit, until_answer_or_close};

/// A CA and the files the tests give wasmhost.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: TempDir,
}

/// A leaf certificate's files and DER.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "wasmhost test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki {
            ca,
            dir: TempDir::new().unwrap(),
        };
        std::fs::write(pki.ca_path(), pki.ca.pem()).unwrap();
        pki
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf for `names` (DNS names or addresses), written as
    /// `<file>.pem` and `<file>.key`.
    fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        self.leaf_with(file, names, |_| {})
    }

    fn leaf_with(
        &self,
        file: &str,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let leaf = Leaf {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
            der: cert.der().clone(),
        };
        // Chain: leaf, then the CA (as a real chain file would have its
        // intermediates).
        std::fs::write(&leaf.cert, format!("{}{}", cert.pem(), self.ca.pem())).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }
}

fn tls_server(leaf: &Leaf, extra: &[&str]) -> Server {
    let mut args = vec![
        guest(Guest::Fault).to_str().unwrap(),
        "--tls-cert",
        leaf.cert.to_str().unwrap(),
        "--tls-key",
        leaf.key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start(WASMHOST, &args)
}

/// A GET over HTTPS from a Rust client (rustls, verifying against the test
/// CA, offering `name` by SNI): the reply and the certificate presented.
fn rust_get(
    pki: &Pki,
    addr: SocketAddr,
    name: &str,
    path: &str,
) -> Result<(String, CertificateDer<'static>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let connection =
        ClientConnection::new(Arc::new(config), server_name).map_err(|e| e.to_string())?;
    let socket = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = StreamOwned::new(connection, socket);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    match tls.read_to_end(&mut reply) {
        Ok(_) => {}
        // A server may close without TLS's close_notify once it has said
        // `Connection: close`; the reply is complete either way.
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => {}
        Err(error) => return Err(error.to_string()),
    }
    let presented = tls.conn.peer_certificates().ok_or("no certificate")?[0].clone();
    Ok((String::from_utf8_lossy(&reply).into_owned(), presented))
}

/// curl's reply and the HTTP version it used.
fn curl(args: &[&str]) -> (String, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_version}"])
        .args(args)
        .output()
        .expect("running curl");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').unwrap();
    (body.to_string(), version.to_string())
}

fn resolve(addr: SocketAddr) -> String {
    format!("localhost:{}:127.0.0.1", addr.port())
}

#[test]
#[ignore = "needs curl; tests/run installs it and runs this"]
fn https_with_curl_and_a_rust_client_and_http2_by_alpn() {
    let pki = Pki::new();
    let leaf = pki.leaf("localhost", &["localhost", "127.0.0.1"]);
    let server = tls_server(&leaf, &[]);
    assert!(
        server.log().contains("serving on https://"),
        "{}",
        server.log()
    );
    let url = format!("https://localhost:{}/", server.addr.port());
    let ca = pki.ca_path();
    let ca = ca.to_str().unwrap();
    for (flag, expected) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (body, version) = curl(&[
            flag,
            "--cacert",
            ca,
            "--resolve",
            &resolve(server.addr),
            &url,
        ]);
        assert_eq!(
            (body.as_str(), version.as_str()),
            ("hello\n", expected),
            "{flag}"
        );
    }

    let (reply, presented) = rust_get(&pki, server.addr, "localhost", "/seen").unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(presented, leaf.der);
    // The guest is told the request came over HTTPS.
    assert!(reply.contains("scheme=Some(Scheme::Https)\n"), "{reply}");
    assert!(reply.contains("x-forwarded-proto: https\n"), "{reply}");
}

/// h2load's summary line for `args`, checked to show `count` successes.
fn h2load(args: &[&str], count: usize) -> String {
    let output = Command::new("h2load")
        .args(args)
        .output()
        .expect("running h2load (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = text
        .lines()
        .find(|line| line.starts_with("requests:"))
        .unwrap_or_else(|| panic!("h2load {args:?}:\n{text}"))
        .to_string();
    assert!(
        line.contains(&format!("{count} succeeded, 0 failed, 0 errored")),
        "{line}\n{text}"
    );
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap();
    assert!(codes.contains(&format!("{count} 2xx")), "{codes}");
    line
}

#[test]
#[ignore = "needs h2load; tests/run installs it and runs this"]
fn http2_cleartext_and_many_streams_on_one_connection() {
    let plain = Server::start(WASMHOST, &[guest(Guest::Fault).to_str().unwrap()]);
    let (body, version) = curl(&["--http2-prior-knowledge", &plain.url("/")]);
    assert_eq!((body.as_str(), version.as_str()), ("hello\n", "2"));
    // One connection, 100 streams at a time.
    h2load(
        &["-n", "3000", "-c", "1", "-m", "100", &plain.url("/")],
        3000,
    );

    let pki = Pki::new();
    let leaf = pki.leaf("localhost", &["localhost", "127.0.0.1"]);
    let tls = tls_server(&leaf, &[]);
    let url = format!("https://127.0.0.1:{}/", tls.addr.port());
    h2load(&["-n", "3000", "-c", "1", "-m", "100", &url], 3000);
}

#[test]
#[ignore = "needs curl; tests/run installs it and runs this"]
fn tls_and_plain_listeners_mix_in_one_config() {
    let pki = Pki::new();
    // Written as localhost.pem and localhost.key, beside the config.
    pki.leaf("localhost", &["localhost"]);
    let config = pki.dir.path().join("wasmhost.toml");
    std::fs::write(
        &config,
        format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = {{ cert = \"localhost.pem\", key = \"localhost.key\" }}\n\
             [[listen]]\naddress = \"127.0.0.1:0\"\n\
             [[app]]\nroute = \"/\"\ncomponent = {:?}\n",
            guest(Guest::Fault)
        ),
    )
    .unwrap();
    let server = Server::start_exact(WASMHOST, &["--config", config.to_str().unwrap()]);
    let addrs = server.addresses(2);
    let log = server.log();
    let https = addrs
        .iter()
        .find(|a| log.contains(&format!("https://{a}/")))
        .unwrap();
    let http = addrs.iter().find(|a| *a != https).unwrap();
    let (reply, _) = rust_get(&pki, *https, "localhost", "/").unwrap();
    assert!(
        reply.ends_with("hello\n0\r\n\r\n") || reply.contains("hello\n"),
        "{reply}"
    );
    let (body, _) = curl(&[&format!("http://{http}/")]);
    assert_eq!(body, "hello\n");
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart_and_a_bad_one_is_ignored() {
    let pki = Pki::new();
    let first = pki.leaf("localhost", &["localhost"]);
    let server = tls_server(&first, &[]);
    let presented = || rust_get(&pki, server.addr, "localhost", "/").map(|(_, cert)| cert);
    assert_eq!(presented().unwrap(), first.der);

    // Renewal the way certbot does it: new files, moved over the old.
    let renewed = pki.leaf("renewed", &["localhost"]);
    std::fs::rename(&renewed.key, &first.key).unwrap();
    std::fs::rename(&renewed.cert, &first.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while presented().unwrap() != renewed.der {
        assert!(
            Instant::now() < deadline,
            "renewal not served:\n{}",
            server.log()
        );
        // Polling what new connections are served: nothing else tells.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server
            .log()
            .contains("loaded renewed TLS certificate: localhost")
    );

    // A broken renewal keeps the working certificate.
    std::fs::write(&first.cert, "not a certificate\n").unwrap();
    assert!(
        server.wait_for_log(
            "keeping the current TLS certificate",
            Duration::from_secs(20)
        ),
        "{}",
        server.log()
    );
    assert_eq!(presented().unwrap(), renewed.der);
}

#[test]
fn sni_chooses_the_certificate_by_name() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test", "127.0.0.1"]);
    let b = pki.leaf("b", &["*.b.test"]);
    let server = Server::start(
        WASMHOST,
        &[
            guest(Guest::Fault).to_str().unwrap(),
            "--tls-cert",
            a.cert.to_str().unwrap(),
            "--tls-key",
            a.key.to_str().unwrap(),
            "--tls-cert",
            b.cert.to_str().unwrap(),
            "--tls-key",
            b.key.to_str().unwrap(),
        ],
    );
    let cert_for = |name: &str| rust_get(&pki, server.addr, name, "/").unwrap().1;
    assert_eq!(cert_for("a.test"), a.der);
    assert_eq!(cert_for("www.b.test"), b.der);
    // No name (an address sends none): the first certificate.
    assert_eq!(cert_for("127.0.0.1"), a.der);
}

/// `serve` with these TLS flags: its one error line.
fn startup_error(args: &[&str]) -> String {
    let mut all = vec![
        "serve",
        guest(Guest::Fault).to_str().unwrap(),
        "--port",
        "0",
    ];
    all.extend_from_slice(args);
    run_to_exit(WASMHOST, &all, Duration::from_secs(60))
        .error_line()
        .to_string()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn tls_startup_errors_name_the_file_and_what_to_do() {
    let pki = Pki::new();
    let good = pki.leaf("good", &["localhost"]);
    let other = pki.leaf("other", &["localhost"]);
    let dir = pki.dir.path();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let encrypted = dir.join("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = dir.join("missing.pem");
    let cases: [(&Path, &Path, String); 4] = [
        (
            &missing,
            &good.key,
            format!("cannot read TLS certificate {}", path_str(&missing)),
        ),
        (
            &not_pem,
            &good.key,
            format!("{}: no PEM certificate in it", path_str(&not_pem)),
        ),
        (
            &good.cert,
            &other.key,
            format!(
                "{} does not match the certificate in {}",
                path_str(&other.key),
                path_str(&good.cert)
            ),
        ),
        (
            &good.cert,
            &encrypted,
            format!("{}: the private key is encrypted", path_str(&encrypted)),
        ),
    ];
    for (cert, key, expected) in cases {
        let line = startup_error(&["--tls-cert", path_str(cert), "--tls-key", path_str(key)]);
        assert!(line.contains(&expected), "{line}\nexpected: {expected}");
    }
    let line = startup_error(&[
        "--tls-cert",
        path_str(&good.cert),
        "--tls-key",
        path_str(&good.key),
        "--tls-cert",
        path_str(&other.cert),
    ]);
    assert!(line.contains("--tls-key"), "{line}");
}

#[test]
fn an_expired_certificate_is_served_with_a_warning() {
    let pki = Pki::new();
    let expired = pki.leaf_with("expired", &["localhost"], |params| {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    });
    let server = tls_server(&expired, &[]);
    assert!(
        server.log().contains("expired on 2021-01-01"),
        "{}",
        server.log()
    );
}

#[test]
#[ignore = "needs curl; tests/run installs it and runs this"]
fn a_failed_handshake_or_plain_http_costs_only_that_connection() {
    let pki = Pki::new();
    let leaf = pki.leaf("localhost", &["localhost"]);
    let server = tls_server(&leaf, &[]);

    // A TLS record that is not a ClientHello.
    let mut garbage = TcpStream::connect(server.addr).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    garbage.write_all(b"\x16\x03\x01\x00\x05hello").unwrap();
    let mut sink = Vec::new();
    let _ = garbage.read_to_end(&mut sink);

    // Plain HTTP to the TLS port is told what to do.
    let reply = wasmhost_tests::raw_request(server.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request"), "{reply}");
    assert!(reply.contains("this port speaks HTTPS"), "{reply}");

    // A client that does not trust the certificate gives up; nothing else
    // is affected.
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "--resolve",
            &resolve(server.addr),
        ])
        .arg(format!("https://localhost:{}/", server.addr.port()))
        .output()
        .unwrap();
    assert!(!output.status.success());

    let (reply, _) = rust_get(&pki, server.addr, "localhost", "/").unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// A TLS connection to `addr` from a client trusting the test CA, its
/// handshake done.
fn tls_connect(pki: &Pki, addr: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    let name = ServerName::try_from("localhost".to_string()).unwrap();
    let connection = ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = StreamOwned::new(connection, socket);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// Over TLS, each timeout fires at its value: the header (a head begun and
/// not finished, and a connection that never starts its handshake), the
/// request body, sending, keep-alive and the guest's.
#[test]
fn every_timeout_fires_at_its_value_over_tls() {
    let pki = Pki::new();
    let leaf = pki.leaf("localhost", &["localhost", "127.0.0.1"]);
    let server = tls_server(
        &leaf,
        &[
            "--header-timeout",
            "2s",
            "--body-timeout",
            "2s",
            "--send-timeout",
            "2s",
            "--keep-alive-timeout",
            "2s",
            // Apart from the body's, so that each is told from the other.
            "--timeout",
            "3s",
        ],
    );
    let two = Duration::from_secs(2);
    let addr = server.addr;

    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (waited, _) = until_answer_or_close(&mut silent);
    assert_fires_at("no handshake", waited, two);

    let mut partial = tls_connect(&pki, addr);
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let (waited, sent) = until_answer_or_close(&mut partial);
    assert!(sent.is_empty(), "{sent}");
    assert_fires_at("header", waited, two);

    let mut idle = tls_connect(&pki, addr);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (_, sent) = until_answer_or_close(&mut idle);
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    let (waited, sent) = until_answer_or_close(&mut idle);
    assert!(sent.is_empty(), "{sent}");
    assert_fires_at("keep-alive", waited, two);

    for length in [1000, 1_000_000] {
        let mut body = tls_connect(&pki, addr);
        write!(
            body,
            "POST /read-body HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n\r\n"
        )
        .unwrap();
        let (waited, sent) = until_answer_or_close(&mut body);
        assert!(sent.starts_with("HTTP/1.1 408"), "{length}: {sent}");
        assert_fires_at("body", waited, two);
    }

    let mut slow_guest = tls_connect(&pki, addr);
    slow_guest
        .write_all(b"GET /sleep/10000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (waited, sent) = until_answer_or_close(&mut slow_guest);
    assert!(sent.starts_with("HTTP/1.1 504"), "{sent}");
    assert_fires_at("guest", waited, Duration::from_secs(3));

    let mut not_reading = tls_connect(&pki, addr);
    let start = Instant::now();
    not_reading
        .write_all(b"GET /big/200 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(
        server.wait_for_log(
            "took nothing of its response for 2s",
            Duration::from_secs(30)
        ),
        "{}",
        server.log()
    );
    assert_fires_at("send", start.elapsed(), two);
}
