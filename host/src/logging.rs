//! Log output: one line per event a user cares about, to stderr, filtered by
//! `RUST_LOG` (default `info`, with rustls at `error`).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init() {
    // rustls warns at every odd handshake (an unknown SNI name in full, a
    // renegotiation attempt): a line a client can write at will. Its
    // errors stay; a failed handshake is logged by the server at debug.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rustls=error,notify=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
