//! Descriptors: a guest that opens files or sockets without end gets the
//! interface's error past its instance's bound, all guests together stay
//! below the process's limit less the server's reserve, and the listeners
//! and the other apps go on meanwhile.

use crate::WASMHOST;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::Command;
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, Server, get, guest};

fn fault() -> &'static str {
    guest(Guest::Fault).to_str().unwrap()
}

/// A directory holding `a.txt`, to grant at `/data`.
fn data() -> (TempDir, String) {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a\n").unwrap();
    let grant = format!("{}:/data", dir.path().display());
    (dir, grant)
}

/// How many a `/hoard/…` reply says opened, and what stopped it.
fn hoarded(body: &str) -> (usize, String) {
    let opened = body
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("opened "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a hoard reply: {body}"));
    let then = body.lines().nth(1).unwrap_or("").to_string();
    (opened, then)
}

#[test]
fn an_instance_opening_files_without_end_gets_an_error_past_256() {
    let (_dir, grant) = data();
    let server = Server::start(WASMHOST, &[fault(), "--dir", &grant]);
    let reply = get(&server.url("/hoard/files/1000/0?at=/data/a.txt")).unwrap();
    let (opened, then) = hoarded(&reply.body);
    assert_eq!(opened, 256, "{}", reply.body);
    assert!(then.contains("Quota exceeded"), "{}", reply.body);
    // Closed with the instance: the next one gets its own 256.
    let reply = get(&server.url("/hoard/files/300/0?at=/data/a.txt")).unwrap();
    assert_eq!(hoarded(&reply.body).0, 256, "{}", reply.body);
    assert!(
        server.log().contains("open files and sockets: "),
        "{}",
        server.log()
    );
}

#[test]
fn an_instance_opening_sockets_without_end_gets_new_socket_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepted and held, so that no connect waits on a full backlog.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let grant = format!("tcp://{addr}");
    let server = Server::start(
        WASMHOST,
        &[
            fault(),
            "--allow-outbound",
            &grant,
            "--max-open-per-instance",
            "20",
        ],
    );
    let reply = get(&server.url(&format!("/hoard/sockets/100/0?at={addr}"))).unwrap();
    let (opened, then) = hoarded(&reply.body);
    assert_eq!(opened, 20, "{}", reply.body);
    assert_ne!(then, "then: none", "{}", reply.body);
}

/// With 2,048 descriptors the guests may hold 1,024 together: six
/// instances trying for 256 each get that many between them, and another
/// app answers every request meanwhile.
#[test]
fn guests_together_stay_below_the_process_limit_and_other_apps_answer() {
    let (_dir, grant) = data();
    let (_config_dir, config) = wasmhost_tests::config_file(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[app]]\nroute = \"/a\"\ncomponent = \"{fault}\"\ndirs = [\"{grant}\"]\n\
         [[app]]\nroute = \"/b\"\ncomponent = \"{fault}\"\n",
        fault = fault(),
    ));
    let mut command = Command::new(WASMHOST);
    command.args(["serve", "--config", &config]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2048,
                rlim_max: 2048,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let server = Server::spawn(command);
    assert!(
        server
            .log()
            .contains("open files and sockets: 2048 for the process, guests together up to 1024"),
        "{}",
        server.log()
    );
    let hoarders: Vec<_> = (0..6)
        .map(|_| {
            let url = server.url("/a/hoard/files/400/4000?at=/data/a.txt");
            std::thread::spawn(move || get(&url).map(|reply| reply.body))
        })
        .collect();
    // Wait until the guests hold their share, then ask the other app.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.open_descriptors() < 1024 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let peak = server.open_descriptors();
    assert!(peak >= 1024, "the guests never held their share: {peak}");
    assert!(peak < 2048, "{peak}");
    for _ in 0..3 {
        let reply = get(&server.url("/b/")).unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "hello\n"));
    }
    let opened: usize = hoarders
        .into_iter()
        .map(|hoarder| hoarded(&hoarder.join().unwrap().unwrap()).0)
        .sum();
    assert!(opened <= 1024, "{opened}");
    assert!(opened >= 1024 - 6, "{opened}");
    assert!(
        server.wait_for_log(
            "an open is refused so that the server keeps its own",
            std::time::Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
}
