//! A small HTTP/1.1 upstream for the outbound tests: keep-alive, plain or
//! TLS, counting the connections it accepts so a test can tell a pooled
//! client from one that connects per request. `GET /stall` is never
//! answered (its connection is held until the client gives up); any other
//! path gets 200 `upstream PATH`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Upstream {
    /// Plain HTTP on a free loopback port.
    pub fn start() -> Upstream {
        Self::serve(None)
    }

    /// HTTPS with `config`'s certificate.
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> Upstream {
        Self::serve(Some(config))
    }

    fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        // Lives as long as the test process; its port is never reused
        // while it does.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => answer(stream),
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        answer(rustls::StreamOwned::new(connection, stream));
                    }
                });
            }
        });
        Upstream { addr, accepted }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Answers the requests of one connection until the client closes it.
fn answer<S: Read + Write>(mut stream: S) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&pending[..end]).to_string();
        pending.drain(..end + 4);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        if path == "/stall" {
            // Held, unanswered, until the client closes.
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            return;
        }
        let body = format!("upstream {path}\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).is_err() || stream.flush().is_err() {
            return;
        }
    }
}
