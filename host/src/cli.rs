//! The command line: clap types only. Validation that needs more than one flag
//! or the file system happens in `config`.

use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// An application server for WebAssembly components.
///
/// wasmhost serves `wasi:http/proxy` components over HTTP the way a WSGI
/// server serves Python callables: every request runs in a fresh, sandboxed
/// instance of the component.
#[derive(Debug, Parser)]
#[command(name = "wasmhost", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a component over HTTP/1.1 and HTTP/2 (cleartext).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The component to serve: a `.wasm` file exporting `wasi:http/incoming-handler`.
    #[arg(value_name = "APP.wasm")]
    pub app: PathBuf,

    /// TCP port to listen on; 0 picks a free port and prints it.
    #[arg(long, short, default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on. The default answers only this machine; use
    /// 0.0.0.0 (or ::) to accept connections from other hosts.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Worker threads for the async runtime [default: one per CPU].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// On SIGINT/SIGTERM, how long requests in flight may run before they are
    /// cut, e.g. `30s`, `500ms`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Parses `250ms`, `30s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 500ms, 30s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(format!("unknown unit `{unit}` in `{text}`; use ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        let cases = [
            ("250ms", Some(Duration::from_millis(250))),
            ("30s", Some(Duration::from_secs(30))),
            ("30", Some(Duration::from_secs(30))),
            ("2m", Some(Duration::from_secs(120))),
            ("", None),
            ("s", None),
            ("5h", None),
            ("-1s", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text).ok(), expected, "{text:?}");
        }
    }
}
