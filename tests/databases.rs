//! The databases real Python apps use, through the WSGI bridge: Flask with
//! SQLAlchemy 2 and pg8000 on a real PostgreSQL over wasi:sockets, and
//! sqlite3 on a granted read-write directory written by many instances.

use crate::WASMHOST;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wasmhost_tests::{Guest, Server, free_port, get, guest, tempfile::TempDir};

/// A PostgreSQL server of its own (Debian's package; tests/run installs
/// it) on a free loopback port, with trust authentication for the role
/// `app` and a database `notes`; stopped on drop. As root, it runs as the
/// package's `postgres` user: initdb refuses root.
struct Postgres {
    child: Child,
    port: u16,
    data: PathBuf,
    _dir: TempDir,
}

fn postgres_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql (tests/run installs postgresql)")
        .map(|entry| entry.unwrap().path().join("bin").join(name))
        .filter(|path| path.is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server in /usr/lib/postgresql")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { wasmhost_tests::libc::geteuid() == 0 }
}

/// `program` with `args`, as the `postgres` user when this runs as root.
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

impl Postgres {
    fn start() -> Postgres {
        let dir = TempDir::new().unwrap();
        let home = dir.path().join("pg");
        std::fs::create_dir(&home).unwrap();
        if is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let uid = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .unwrap();
            let uid: u32 = String::from_utf8_lossy(&uid.stdout).trim().parse().unwrap();
            std::os::unix::fs::chown(&home, Some(uid), None).unwrap();
        }
        let data_dir = home.join("data");
        let (data, sockets) = (data_dir.to_str().unwrap(), home.to_str().unwrap());
        let initdb = as_postgres(
            &postgres_bin("initdb"),
            &["-D", data, "-A", "trust", "-U", "app", "--no-sync"],
        )
        .output()
        .unwrap();
        assert!(
            initdb.status.success(),
            "{}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port();
        let child = as_postgres(
            &postgres_bin("postgres"),
            &[
                "-D",
                data,
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-k",
                sockets,
                "-c",
                "fsync=off",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let server = Postgres {
            child,
            port,
            data: data_dir.clone(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let made = as_postgres(
                &postgres_bin("createdb"),
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "app",
                    "notes",
                ],
            )
            .stderr(Stdio::null())
            .status()
            .unwrap();
            if made.success() {
                return server;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The server's pid is in its data directory (under runuser, the
        // child is runuser): SIGINT is its fast shutdown.
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // SAFETY: kill(2) on the server this test started.
            unsafe {
                wasmhost_tests::libc::kill(pid, wasmhost_tests::libc::SIGINT);
            }
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn post_form(url: &str, body: &str) -> (u16, String) {
    let reply = wasmhost_tests::ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(url)
        .content_type("application/x-www-form-urlencoded")
        .send(body)
        .unwrap();
    let status = reply.status().as_u16();
    (status, reply.into_body().read_to_string().unwrap())
}

#[test]
#[ignore = "needs componentize-py and PostgreSQL; tests/run installs it and runs this"]
fn flask_with_sqlalchemy_and_pg8000_keeps_notes_in_postgresql() {
    let postgres = Postgres::start();
    let app = guest(Guest::WsgiSqlalchemy).to_str().unwrap();
    let url = format!(
        "DATABASE_URL=postgresql+pg8000://app@127.0.0.1:{}/notes",
        postgres.port
    );
    let grant = format!("tcp://127.0.0.1:{}", postgres.port);
    // A fresh instance per request: each connects anew, and what one wrote
    // the next reads. Then reused instances, which keep their connection.
    let fresh = Server::start(WASMHOST, &[app, "--env", &url, "--allow-outbound", &grant]);
    let (status, created) = post_form(&fresh.url("/notes"), "text=first");
    assert_eq!(
        (status, created.trim()),
        (201, "{\"id\":1}"),
        "{}",
        fresh.log()
    );
    assert_eq!(
        get(&fresh.url("/notes/1")).unwrap().body.trim(),
        "{\"id\":1,\"text\":\"first\"}"
    );
    let (status, updated) = post_form(&fresh.url("/notes/1"), "text=second");
    assert_eq!(
        (status, updated.trim()),
        (200, "{\"id\":1,\"text\":\"second\"}")
    );
    assert_eq!(get(&fresh.url("/notes/2")).unwrap().status, 404);
    drop(fresh);

    let reused = Server::start(
        WASMHOST,
        &[
            app,
            "--reuse",
            "50",
            "--env",
            &url,
            "--allow-outbound",
            &grant,
        ],
    );
    for n in 0..20 {
        let (status, _) = post_form(&reused.url("/notes"), &format!("text=note{n}"));
        assert_eq!(status, 201, "{}", reused.log());
    }
    assert_eq!(
        get(&reused.url("/notes/1")).unwrap().body.trim(),
        "{\"id\":1,\"text\":\"second\"}"
    );
    assert_eq!(
        get(&reused.url("/notes")).unwrap().body.trim(),
        "{\"count\":21}"
    );

    // Without the grant, the connection is refused inside the guest: the
    // app's own 500, not the server's.
    drop(reused);
    let ungranted = Server::start(WASMHOST, &[app, "--env", &url]);
    assert_eq!(get(&ungranted.url("/notes")).unwrap().status, 500);
    assert!(ungranted.wait_for_log("Can't create a connection", Duration::from_secs(10)));
}

/// WASI has no file locks; the guest's SQLite takes its write lock by
/// making a directory beside the database (`app.db.lock`, its dot-file
/// locking), which the instances of an app share. Writers from many
/// instances at once are serialised, nothing is lost and the file stays
/// whole, once the database exists. What it cannot survive is a writer
/// stopped while it holds the lock (its request's time limit): the
/// directory stays, and every write after it fails `database is locked`
/// until it is removed. (And a native process writing the same file takes
/// other locks, fcntl's: the two do not see each other.)
#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn sqlite_on_a_granted_directory_takes_concurrent_writers_but_not_a_stopped_one() {
    let data = TempDir::new().unwrap();
    let app = guest(Guest::WsgiSqlalchemy).to_str().unwrap();
    let grant = format!("{}:/data:rw", data.path().display());
    let serve = |flags: &[&str]| {
        let mut args = vec![app, "--dir", &grant, "--env", "SQLITE_PATH=/data/app.db"];
        args.extend_from_slice(flags);
        Server::start(WASMHOST, &args)
    };
    // The defaults: SQLite waits up to 30 s for the lock (its busy wait
    // sleeps whole seconds in the guest), the request up to 60 s.
    let server = serve(&[]);
    // The database made by one request first: instances creating it at
    // once see each other's half-written first page (`file is not a
    // database`, a few of 48 requests on 16 connections).
    assert_eq!(
        get(&server.url("/sqlite/check")).unwrap().body.trim(),
        "{\"hits\":0,\"integrity\":\"ok\"}"
    );
    let url = server.url("/sqlite/hit");
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| post_form(&url, "").0)
                    .filter(|status| *status != 200)
                    .count()
            })
        })
        .collect();
    let failed: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(failed, 0, "{}", server.log());
    assert_eq!(
        get(&server.url("/sqlite/check")).unwrap().body.trim(),
        "{\"hits\":200,\"integrity\":\"ok\"}"
    );

    // A writer stopped at its request's time limit, holding the lock; the
    // next waits a second for it before giving up.
    drop(server);
    let server = serve(&["--timeout", "5s", "--env", "SQLITE_TIMEOUT=1"]);
    let url = server.url("/sqlite/hit");
    let (status, _) = post_form(&server.url("/sqlite/hold"), "");
    assert_eq!(status, 504, "{}", server.log());
    assert!(data.path().join("app.db.lock").is_dir());
    let (status, _) = post_form(&url, "");
    assert_eq!(status, 500);
    assert!(server.wait_for_log("database is locked", Duration::from_secs(10)));

    // Removed by hand, with no writer running: the next one rolls the
    // stopped transaction back from its journal.
    std::fs::remove_dir(data.path().join("app.db.lock")).unwrap();
    assert_eq!(post_form(&url, "").0, 200);
    assert_eq!(
        get(&server.url("/sqlite/check")).unwrap().body.trim(),
        "{\"hits\":201,\"integrity\":\"ok\"}"
    );
}
