//! systemd's side of a deployment, as systemd does it: the readiness
//! datagrams on `NOTIFY_SOCKET`, and socket activation (`LISTEN_FDS`) with a
//! restart under load that refuses and fails nothing.

use crate::WASMHOST;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, Load, Server, guest, libc};

/// The next datagram's lines.
fn next_state(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let n = socket
        .recv(&mut buffer)
        .expect("a datagram on NOTIFY_SOCKET within the deadline");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[test]
fn systemd_is_told_ready_reloading_and_stopping() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let hello = guest(Guest::RustHello);
    let mut command = Command::new(WASMHOST);
    command
        .arg("serve")
        .arg(hello)
        .args(["--port", "0"])
        .env("NOTIFY_SOCKET", &path);
    let mut server = Server::spawn(command);
    let ready = next_state(&socket);
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready}");
    assert!(ready.contains("STATUS=serving 1 app(s)"), "{ready}");

    server.signal(libc::SIGHUP);
    let reloading = next_state(&socket);
    assert!(
        reloading.lines().any(|line| line == "RELOADING=1")
            && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    let reloaded = next_state(&socket);
    assert!(reloaded.lines().any(|line| line == "READY=1"), "{reloaded}");

    server.signal(libc::SIGTERM);
    let stopping = next_state(&socket);
    assert!(
        stopping.lines().any(|line| line == "STOPPING=1"),
        "{stopping}"
    );
    let status = server.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.log());
}

/// `wasmhost serve` given `listener` as systemd gives it: descriptor 3,
/// `LISTEN_FDS=1`, and `LISTEN_PID` naming the process itself (the shell
/// sets it to its own pid, which `exec` keeps).
fn activated(listener: &TcpListener, addr: SocketAddr) -> Server {
    let hello = guest(Guest::RustHello).display().to_string();
    let fd = listener.as_raw_fd();
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec {WASMHOST} serve {hello} --listen {addr}"
    ));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                // dup2 onto itself would keep close-on-exec set.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Server::spawn(command)
}

/// One request on a new connection: whether it got a 200.
fn one_request(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.starts_with("HTTP/1.1 200"))
    };
    attempt().unwrap_or(false)
}

#[test]
fn a_restart_under_socket_activation_refuses_and_fails_nothing() {
    // The test holds the socket, as systemd does across a restart.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut first = activated(&listener, addr);
    assert_eq!(first.addr, addr, "{}", first.log());

    // Each request on a connection of its own: a restart is seen by new
    // connections, which wait in the socket's backlog.
    let load = Load::start(4, move |_, _, _| {
        if one_request(addr) {
            Ok(())
        } else {
            Err("no 200".to_string())
        }
    });
    let wait_for_ok = |at_least: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while load.served() < at_least {
            assert!(Instant::now() < deadline, "requests stopped being served");
            // Polling, bounded by the deadline; a yield here spun a core
            // the server needed.
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for_ok(100);

    first.signal(libc::SIGTERM);
    let status = first
        .wait_exit(Duration::from_secs(20))
        .expect("drains and exits");
    assert_eq!(status.code(), Some(0), "{}", first.log());
    let served_by_first = load.served();
    // Connections made now wait in the socket's backlog for the next process.
    let second = activated(&listener, addr);
    wait_for_ok(served_by_first + 100);
    let tally = load.finish();
    assert!(
        tally.failures.is_empty(),
        "{} of {} failed; first:\n{}\nsecond:\n{}",
        tally.failures.len(),
        tally.sent(),
        first.log(),
        second.log()
    );
}
