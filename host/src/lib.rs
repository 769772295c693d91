//! wasmhost: an application server for WebAssembly components.
//!
//! One request's path, accept to response; each module is entered once, in
//! this order, and none calls back into one above it:
//!
//! ```text
//! server       accept (a permit per connection), TLS handshake (tls), hyper's
//!              HTTP/1.1 + HTTP/2 builder
//! connection   drive the connection: header and keep-alive timeouts, polite
//!              close on shutdown, the chores its requests left, between them
//! service      per request: head rules, one valid Host (request_head),
//!              forwarding headers (forwarded), route once (router),
//!              access-log record (access_log), a failed build's page under
//!              `wasmhost dev` (dev_errors), Connection: close when
//!              shutting down
//! handler      body-size check, a place to run (admission, which also
//!              bounds what one client address holds of an app), an instance
//!              (instances), the guest's call, its faults as statuses; request
//!              and response bodies cross the host through `bodies`; a WASI
//!              0.3 guest's request goes through `p3_request` instead, which
//!              gives it to an instance's `p3_driver` (one store running
//!              several requests at once); both answer faults through
//!              `guest_faults`
//! instances    take an instance (idle, spare or new from the pool), call
//!              wasi:http/incoming-handler.handle in its sandbox (sandbox,
//!              limits, guest_output), give it back, retire it, refill spares
//! ```
//!
//! Beside the path: `app` loads a component (read, validate, compile with an
//! engine from `engine`, through the `compile_cache`, link with `linker`,
//! which puts wasmhost's checks in front of some of wasmtime-wasi's host
//! functions); `reload` watches the
//! files and swaps new versions into the route table; `config` turns flags
//! and `wasmhost.toml` into one validated `Config`, plain data that the
//! runtime reads (`paths` holds the URL segment rules it shares with the
//! router); `commands` wires a `serve`, `dev` or `check` together, `dev`
//! runs the apps' builds when their sources change (its results reach the
//! route table through `reload`), `nginx` writes the nginx front,
//! `scaffold` the projects `wasmhost new` writes,
//! `signals` and `logging` belong to the binary, `systemd` takes the
//! sockets systemd passes and tells it when the server is ready, reloading
//! or stopping, `admin` serves `/healthz`, `/readyz`, `/metrics` and the
//! status page on a listener of its own, `metrics` encodes the counts
//! `request_metrics` keeps (the request path, the accept loops and `reload`
//! add to them) with what it reads from the route table at scrape time,
//! `status` samples those counts each second for the status page,
//! `log_rate` bounds the log lines a client can trigger, and `allocator`
//! holds the allocator and hands freed memory back from idle threads.
//! What a guest may reach outside: `granted_dirs` (its directories, opened
//! once per load), `descriptors` (the files and sockets it may hold open), `egress` (its grants of hosts, checked at run time), `outbound` (its HTTP requests) over `upstream_pool` and
//! `upstream` (connections), and `sockets` (wasi:sockets TCP).
//!
//! [`server::run`] is the entry point for an embedder or a test: listeners,
//! a route table and a shutdown future in, no signals.

pub mod admin;
pub mod allocator;
pub mod commands;
pub mod config;
pub mod grants;
pub mod guest;
pub mod http;
pub mod telemetry;

use anyhow::Result;
use config::cli::{Cli, Command};

/// Runs one command to completion; what it prints on standard output.
pub fn run(cli: Cli) -> Result<String> {
    match cli.command {
        Command::Serve(args) => commands::serve(args).map(|()| String::new()),
        Command::Check(source) => commands::check(source),
        Command::Nginx(args) => commands::nginx::run(args),
        Command::New(args) => commands::scaffold::write(&args),
        Command::Dev(args) => commands::dev(args).map(|()| String::new()),
    }
}
