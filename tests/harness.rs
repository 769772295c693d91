//! End-to-end harness: builds the guest components once per test run, starts
//! the real `wasmhost` binary on an ephemeral port, reads the address it bound
//! from its log, and talks real HTTP to it. On drop a server is killed and its
//! log printed, so a failing test shows what the server said.

pub use {libc, rcgen, rustls, serde_json, socket2, tempfile, ureq};

mod load;
mod upstream_server;
pub use load::{Judged, Load, Tally, expect};
pub use upstream_server::Upstream;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to print its address: a debug build compiling
/// the 18 MB Python component on a loaded 2-core machine needs tens of seconds.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(180);

/// The repository root: the parent of the package whose tests are running
/// (`host/`, or this crate's own `tests/`). Read when the tests run, not
/// when this crate is compiled: cargo reuses a build of it from a clone at
/// another path that shares the target dir (as CI's clones do), and the
/// guests must be built from the checkout under test.
pub fn repo_root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    package
        .parent()
        .expect("a package directory has a parent")
        .to_path_buf()
}

/// Where guest builds go: beside the test binary's target dir, in a target
/// dir of their own so their cargo never waits on the one running the tests.
fn guest_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/e2e-<hash>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lives in target/<profile>/deps");
    target.join("wasm-guests")
}

/// The components the tests serve.
#[derive(Clone, Copy, Debug)]
pub enum Guest {
    /// guest-examples/rust-hello, built from source.
    RustHello,
    /// guest-examples/python-hello, built with componentize-py.
    PythonHello,
    /// tests/guests/fault: misbehaves on request.
    Fault,
    /// tests/guests/command: a `wasi:cli/run` command, not an HTTP handler.
    Command,
    /// guest-examples/rust-redis-counter: a counter in Redis, over wasi:sockets.
    RedisCounter,
    /// guest-examples/rust-kv-counter: a counter in a wasi:keyvalue
    /// bucket, greeting with a wasi:config variable.
    KvCounter,
    /// tests/guests/kv: every wasi:keyvalue and wasi:config call, on request.
    Kv,
    /// guest-examples/rust-p3: a WASI 0.3 app (`wasi:http/handler@0.3.0`).
    RustP3,
    /// guest-examples/python-p3: a WASI 0.3 app in Python (componentize-py).
    PythonP3,
    /// guest-examples/python-wsgi's `wsgi:application`, built by the WSGI
    /// bridge in python/wasmhost-wsgi.
    PythonWsgi,
    /// guest-examples/python-flask: a Flask app through the same bridge.
    PythonFlask,
    /// tests/guests/wsgi-bottle: a Bottle app through the same bridge.
    WsgiBottle,
    WsgiPyramid,
    WsgiCherryPy,
    WsgiLazy,
    WsgiDjango,
    WsgiFalcon,
    /// tests/guests/wsgi-sqlalchemy: Flask, SQLAlchemy 2 and pg8000 on
    /// PostgreSQL, and sqlite3 on a granted directory.
    WsgiSqlalchemy,
    /// tests/guests/wsgi-flask: the framework checks' Flask app.
    WsgiFlask,
    /// guest-examples/python-django: a Django project with static files.
    PythonDjango,
    /// guest-examples/rust-demo: the demo app in Rust (the `wasi` crate).
    RustDemo,
    /// guest-examples/python-demo: the demo app in Python (componentize-py).
    PythonDemo,
    /// guest-examples/javascript-demo: the demo app in JavaScript, a Hono
    /// app built by wasmhost-js.
    JavascriptDemo,
    /// tests/guests/js-hono: its Hono app default-exported (the
    /// module-worker style), built by wasmhost-js.
    JsHonoWorker,
    /// The same app behind a `fetch` event listener.
    JsHonoListener,
    /// tests/guests/js-hono/fetch-event.js: componentize-js's own fetch
    /// event, without wasmhost-js; answers once per instance.
    JsFetchEvent,
    /// guest-examples/c-demo: the demo app in C (clang, wasi-libc,
    /// wit-bindgen, wasm-tools).
    CDemo,
    /// guest-examples/go-demo: the demo app in Go (Go's wasip1 port,
    /// wit-bindgen, wasm-tools).
    GoDemo,
    /// guest-examples/python-wsgi-demo: the demo app as a WSGI app, through
    /// the bridge.
    PythonWsgiDemo,
}

/// Builds `guest` once per test run and returns the component's path.
pub fn guest(guest: Guest) -> &'static Path {
    const COUNT: usize = Guest::PythonWsgiDemo as usize + 1;
    static BUILT: [OnceLock<PathBuf>; COUNT] = [const { OnceLock::new() }; COUNT];
    let root = repo_root();
    BUILT[guest as usize].get_or_init(|| match recipe(guest) {
        Recipe::Cargo(dir, package, file) => cargo_wasm(&root.join(dir), package, file),
        Recipe::Script(dir, file) => build_script(&root, dir, file),
        Recipe::Wsgi(dir, args, file) => wsgi_bridge(&root, dir, args, file),
        Recipe::Js(app, file) => js_test_app(&root, app, file),
    })
}

/// How a guest is built, from the repository's root.
enum Recipe {
    /// `cargo build` of a package in a folder, for wasm32-wasip2; the file
    /// it makes.
    Cargo(&'static str, &'static str, &'static str),
    /// The folder's pinned `build.sh`, and the file to build.
    Script(&'static str, &'static str),
    /// `wasmhost-wsgi build` in a folder with these arguments.
    Wsgi(&'static str, &'static [&'static str], &'static str),
    /// tests/guests/js-hono's app of this name, through wasmhost-js.
    Js(&'static str, &'static str),
}

fn recipe(guest: Guest) -> Recipe {
    use Recipe::{Cargo, Js, Script, Wsgi};
    const APP: &[&str] = &["app:app", "-r", "requirements.txt"];
    const WSGI: &[&str] = &["wsgi:application"];
    match guest {
        Guest::RustHello => Cargo("guest-examples/rust-hello", "rust-hello", "rust_hello.wasm"),
        Guest::Fault => Cargo("tests/guests", "fault", "fault.wasm"),
        Guest::Command => Cargo("tests/guests", "command", "command.wasm"),
        Guest::RustP3 => Cargo("guest-examples/rust-p3", "rust-p3", "rust_p3.wasm"),
        Guest::RedisCounter => Cargo(
            "guest-examples/rust-redis-counter",
            "rust-redis-counter",
            "rust_redis_counter.wasm",
        ),
        Guest::KvCounter => Cargo(
            "guest-examples/rust-kv-counter",
            "rust-kv-counter",
            "rust_kv_counter.wasm",
        ),
        Guest::Kv => Cargo("tests/guests", "kv", "kv.wasm"),
        Guest::RustDemo => Cargo("guest-examples/rust-demo", "rust-demo", "rust_demo.wasm"),
        Guest::PythonHello => Script("guest-examples/python-hello", "python-hello.wasm"),
        Guest::PythonP3 => Script("guest-examples/python-p3", "python-p3.wasm"),
        Guest::PythonFlask => Script("guest-examples/python-flask", "python-flask.wasm"),
        Guest::PythonDjango => Script("guest-examples/python-django", "python-django.wasm"),
        Guest::PythonDemo => Script("guest-examples/python-demo", "python-demo.wasm"),
        Guest::JavascriptDemo => Script("guest-examples/javascript-demo", "javascript-demo.wasm"),
        Guest::CDemo => Script("guest-examples/c-demo", "c-demo.wasm"),
        Guest::GoDemo => Script("guest-examples/go-demo", "go-demo.wasm"),
        Guest::PythonWsgi => Wsgi("guest-examples/python-wsgi", WSGI, "python-wsgi.wasm"),
        Guest::PythonWsgiDemo => Wsgi(
            "guest-examples/python-wsgi-demo",
            WSGI,
            "python-wsgi-demo.wasm",
        ),
        Guest::WsgiBottle => Wsgi("tests/guests/wsgi-bottle", APP, "wsgi-bottle.wasm"),
        Guest::WsgiPyramid => Wsgi("tests/guests/wsgi-pyramid", APP, "wsgi-pyramid.wasm"),
        Guest::WsgiCherryPy => Wsgi("tests/guests/wsgi-cherrypy", APP, "wsgi-cherrypy.wasm"),
        Guest::WsgiFalcon => Wsgi("tests/guests/wsgi-falcon", APP, "wsgi-falcon.wasm"),
        Guest::WsgiFlask => Wsgi("tests/guests/wsgi-flask", APP, "wsgi-flask.wasm"),
        Guest::WsgiLazy => Wsgi(
            "tests/guests/wsgi-lazy",
            &["app:application", "--include", "colorsys"],
            "wsgi-lazy.wasm",
        ),
        Guest::WsgiDjango => Wsgi(
            "tests/guests/wsgi-django",
            &["mysite.wsgi:application", "-r", "requirements.txt"],
            "wsgi-django.wasm",
        ),
        Guest::WsgiSqlalchemy => Wsgi(
            "tests/guests/wsgi-sqlalchemy",
            &["app:application", "-r", "requirements.txt"],
            "wsgi-sqlalchemy.wasm",
        ),
        Guest::JsHonoWorker => Js("worker", "js-hono-worker.wasm"),
        Guest::JsHonoListener => Js("listener", "js-hono-listener.wasm"),
        Guest::JsFetchEvent => Js("fetch-event", "js-fetch-event.wasm"),
    }
}

/// Replaces `app` the way `cargo build` and deploy scripts do: write a new
/// file beside it, then rename it over the old one.
pub fn rename_over(app: &Path, contents: &[u8]) {
    let staging = app.with_extension("wasm.new");
    std::fs::write(&staging, contents).unwrap();
    std::fs::rename(&staging, app).unwrap();
}

/// Runs `dir/build.sh OUT`, the example's own pinned build.
fn build_script(root: &Path, dir: &str, file: &str) -> PathBuf {
    let out = guest_target_dir().join(file);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let script = format!("{dir}/build.sh");
    run_build(Command::new(root.join(&script)).arg(&out), &script);
    out
}

/// Builds one of tests/guests/js-hono's apps with its `build.sh APP OUT`.
fn js_test_app(root: &Path, app: &str, file: &str) -> PathBuf {
    let out = guest_target_dir().join(file);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let script = "tests/guests/js-hono/build.sh";
    run_build(
        Command::new(root.join(script)).arg(app).arg(&out),
        &format!("{script} {app}"),
    );
    out
}

/// Builds the WSGI app in `dir` with `wasmhost-wsgi build ARGS`, run from
/// the checkout as `pip install python/wasmhost-wsgi` would install it.
fn wsgi_bridge(root: &Path, dir: &str, args: &[&str], file: &str) -> PathBuf {
    let out = guest_target_dir().join(file);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    run_build(
        Command::new("python3")
            .env("PYTHONPATH", root.join("python/wasmhost-wsgi"))
            .current_dir(root.join(dir))
            .args(["-m", "wasmhost_wsgi", "build"])
            .args(args)
            .arg("-o")
            .arg(&out),
        &format!("wasmhost-wsgi build ({dir})"),
    );
    out
}

fn cargo_wasm(dir: &Path, package: &str, file: &str) -> PathBuf {
    let target_dir = guest_target_dir().join(package);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_build(
        Command::new(cargo)
            .current_dir(dir)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                package,
            ])
            .arg("--target-dir")
            .arg(&target_dir),
        &format!("cargo build of {}", dir.display()),
    );
    target_dir.join("wasm32-wasip2/release").join(file)
}

fn run_build(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Everything a process has written to stderr so far, shared with the thread
/// that reads it.
struct Log {
    text: Mutex<String>,
    grew: Condvar,
    /// Streams that reached end of file: at 2 the process has closed both,
    /// so waiting for more output is pointless.
    closed: std::sync::atomic::AtomicUsize,
    /// How many streams feed this log.
    streams: usize,
}

impl Log {
    fn new(streams: usize) -> Arc<Self> {
        Arc::new(Log {
            text: Mutex::default(),
            grew: Condvar::new(),
            closed: Default::default(),
            streams,
        })
    }

    fn drain(self: &Arc<Self>, stream: impl Read + Send + 'static) {
        let log = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let mut text = log.text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
                log.grew.notify_all();
            }
            let _text = log.text.lock().unwrap();
            log.closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            log.grew.notify_all();
        });
    }

    /// Everything, once the stream has closed.
    fn all(&self) -> String {
        self.wait_for(STARTUP_DEADLINE, |_| None::<()>);
        self.text.lock().unwrap().clone()
    }

    /// Waits until `find` returns something for the text so far.
    fn wait_for<T>(&self, deadline: Duration, find: impl Fn(&str) -> Option<T>) -> Option<T> {
        let end = Instant::now() + deadline;
        let mut text = self.text.lock().unwrap();
        loop {
            if let Some(found) = find(&text) {
                return Some(found);
            }
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) >= self.streams {
                return None;
            }
            let left = end.checked_duration_since(Instant::now())?;
            text = self.grew.wait_timeout(text, left).unwrap().0;
        }
    }
}

/// A running `wasmhost serve`.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Log>,
}

impl Server {
    /// The server's resident memory now, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server is running");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .expect("/proc/PID/status has VmRSS")
    }

    /// The descriptors the server has open now (Linux).
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the server is running")
            .count()
    }

    /// Starts `bin serve <args> --port 0` and waits for its `serving on` line.
    pub fn start(bin: &str, args: &[&str]) -> Server {
        let mut command = Command::new(bin);
        command.arg("serve").args(args).args(["--port", "0"]);
        Self::spawn(command)
    }

    /// Starts `bin serve <args>` as given: the args choose the listeners.
    pub fn start_exact(bin: &str, args: &[&str]) -> Server {
        let mut command = Command::new(bin);
        command.arg("serve").args(args);
        Self::spawn(command)
    }

    /// Starts a prepared command (which must make the server print its
    /// address) and waits for its `serving on` line.
    pub fn spawn(command: Command) -> Server {
        let mut server = Self::spawn_unready(command);
        server.wait_until_serving();
        server
    }

    /// Starts a prepared command without waiting for it to serve: `addr` is
    /// known once [`Server::wait_until_serving`] returns.
    pub fn spawn_unready(mut command: Command) -> Server {
        // The log level is the test's choice, not the environment's.
        if command.get_envs().all(|(name, _)| name != "RUST_LOG") {
            command.env_remove("RUST_LOG");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning wasmhost");
        let log = Log::new(2);
        log.drain(child.stdout.take().unwrap());
        log.drain(child.stderr.take().unwrap());
        Server {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        }
    }

    /// Waits for the `serving on` line and takes the address from it.
    pub fn wait_until_serving(&mut self) {
        let addr = self.log.wait_for(STARTUP_DEADLINE, |text| {
            let rest = text.split("serving on ").nth(1)?;
            listening_address(rest)
        });
        match addr {
            Some(addr) => self.addr = addr,
            None => panic!(
                "wasmhost exited or did not print its address in time:\n{}",
                self.log()
            ),
        }
    }

    /// The addresses of the first `count` `serving on` lines (one per
    /// listener), waiting for them to be printed.
    pub fn addresses(&self, count: usize) -> Vec<SocketAddr> {
        self.log
            .wait_for(STARTUP_DEADLINE, |text| {
                let found: Vec<SocketAddr> = text
                    .split("serving on ")
                    .skip(1)
                    .filter_map(listening_address)
                    .collect();
                (found.len() >= count).then_some(found)
            })
            .unwrap_or_else(|| panic!("wasmhost did not print {count} listeners:\n{}", self.log()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's output (stdout and stderr interleaved) so far.
    pub fn log(&self) -> String {
        self.log.text.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`; false at the deadline.
    pub fn wait_for_log(&self, needle: &str, deadline: Duration) -> bool {
        self.log
            .wait_for(deadline, |text| text.contains(needle).then_some(()))
            .is_some()
    }

    /// Waits until `needle` occurs at least `count` times in the log; false
    /// at the deadline.
    pub fn wait_for_count(&self, needle: &str, count: usize, deadline: Duration) -> bool {
        self.log
            .wait_for(deadline, |text| {
                (text.matches(needle).count() >= count).then_some(())
            })
            .is_some()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}) failed", self.child.id());
    }

    /// Waits for the server to exit; None at the deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, deadline)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- wasmhost log ----\n{}----", self.log());
        }
    }
}

fn wait_child(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for wasmhost") {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        // Polling the child's state with a short pause; nothing else can tell
        // us it has exited without blocking without a deadline.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a process that was expected to exit printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The error of a run that was to fail: checked to have failed and to
    /// have said one line, `wasmhost: error: …`, and nothing else.
    pub fn error_line(&self) -> &str {
        assert!(
            !self.status.success(),
            "expected failure:\n{}{}",
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line expected:\n{}", self.stderr);
        assert!(lines[0].starts_with("wasmhost: error: "), "{}", lines[0]);
        assert!(!lines[0].contains("panicked"), "{}", lines[0]);
        lines[0]
    }
}

/// Runs `bin args…` to completion (killed after `deadline`).
pub fn run_to_exit(bin: &str, args: &[&str], deadline: Duration) -> Finished {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        // Errors must print as one clean line even where backtraces are on.
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning wasmhost");
    let stdout = Log::new(1);
    stdout.drain(child.stdout.take().unwrap());
    let stderr = Log::new(1);
    stderr.drain(child.stderr.take().unwrap());
    let status = match wait_child(&mut child, deadline) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            panic!("wasmhost {args:?} did not exit within {deadline:?}");
        }
    };
    Finished {
        status,
        stdout: stdout.all(),
        stderr: stderr.all(),
    }
}

/// Sends `request` byte for byte (clients normalise paths; this does not)
/// and returns everything the server wrote before closing.
pub fn raw_request(addr: SocketAddr, request: &str) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// A response read completely.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client that reports every status as data (not as an error) and gives
/// up on a request after 60 s.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn read(response: ureq::http::Response<ureq::Body>) -> Result<Reply, ureq::Error> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.into_body().read_to_string()?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub fn get(url: &str) -> Result<Reply, ureq::Error> {
    read(client().get(url).call()?)
}

/// GETs `url` from `count` threads at once; each reply's (status, body).
pub fn get_concurrently(url: &str, count: usize) -> Vec<Result<(u16, String), String>> {
    let threads: Vec<_> = (0..count)
        .map(|_| {
            let url = url.to_string();
            std::thread::spawn(move || {
                get(&url)
                    .map(|r| (r.status, r.body))
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|thread| thread.join().expect("request thread panicked"))
        .collect()
}

pub fn post(url: &str, body: &[u8]) -> Result<Reply, ureq::Error> {
    read(client().post(url).send(body)?)
}

/// The address in what follows `serving on `: `http://127.0.0.1:8080/ …`
/// or `https://…`.
fn listening_address(rest: &str) -> Option<SocketAddr> {
    let rest = rest
        .strip_prefix("http://")
        .or_else(|| rest.strip_prefix("https://"))?;
    rest.split('/').next()?.parse().ok()
}

/// A real nginx, run in the foreground from a config `wasmhost nginx
/// --standalone` wrote, with everything under its own directory. Stopped
/// (SIGTERM, so its workers go too) on drop, its error log printed if the
/// test failed.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    /// Writes `config` to `dir/nginx.conf` and runs nginx from `dir` until
    /// it accepts connections on `addr`.
    pub fn start(dir: &Path, config: &str, addr: SocketAddr) -> Nginx {
        Self::start_with(&[], dir, config, addr)
    }

    /// As [`Nginx::start`], with nginx run by the command `wrapper` (such
    /// as `ip netns exec NAME`), which must exec it in its place.
    pub fn start_with(wrapper: &[&str], dir: &Path, config: &str, addr: SocketAddr) -> Nginx {
        for sub in ["logs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(nginx_binary());
                command
            }
            None => Command::new(nginx_binary()),
        };
        let child = command
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(["-e", "logs/error.log", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("running nginx (apt-get install nginx)");
        let nginx = Nginx {
            child,
            addr,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {addr}:\n{}",
                nginx.error_log()
            );
            // Polling the port: nginx has no other way to say it is up.
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if wait_child(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- nginx error log ----\n{}----", self.error_log());
        }
    }
}

/// nginx from PATH, or where Debian puts it (/usr/sbin is not on every PATH).
pub fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

/// A loopback port free now, for a server that cannot report the one it
/// bound (nginx).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads `stream` until the server closes it (or resets it, or the
/// stream's read timeout passes) or a response head has come, a whole
/// chunked body for a 200: how long that took, and what came.
pub fn until_answer_or_close(stream: &mut impl std::io::Read) -> (Duration, String) {
    let start = Instant::now();
    let mut sent = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buffer) {
        sent.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&sent);
        let head = text.contains("\r\n\r\n") && !text.starts_with("HTTP/1.1 200");
        if head || text.ends_with("\r\n0\r\n\r\n") {
            break;
        }
    }
    (start.elapsed(), String::from_utf8_lossy(&sent).into_owned())
}

/// Asserts that a timeout of `value` fired after `waited`: at its value,
/// within 2 s past it.
pub fn assert_fires_at(what: &str, waited: Duration, value: Duration) {
    assert!(
        waited + Duration::from_millis(50) >= value && waited <= value + Duration::from_secs(2),
        "{what}: {waited:?} for a timeout of {value:?}"
    );
}

/// A `wasmhost.toml` holding `text` in a directory of its own: the
/// directory (removed on drop) and the file's path.
pub fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("wasmhost.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

/// A Redis server of its own on a free loopback port, stopped on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (tests/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
