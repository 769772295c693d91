//! Log output: one line per event a user cares about, to stderr, filtered by
//! `RUST_LOG` (default `info`, with rustls at `error`): text, or with
//! `--log-format json` one JSON object per line (`timestamp`, `level`,
//! `message` and the event's fields, `app` among them, at the top level).

use crate::config::cli::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat) {
    // rustls warns at every odd handshake (an unknown SNI name in full, a
    // renegotiation attempt): a line a client can write at will. Its
    // errors stay; a failed handshake is logged by the server at debug.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rustls=error,notify=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => {
            crate::guest::output::log_as_json();
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .init()
        }
    }
}
