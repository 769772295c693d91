//! wasmhost: an application server for WebAssembly components.
//!
//! The request path:
//!
//! ```text
//! TCP accept, one loop per listener (server)
//!   -> hyper HTTP/1.1 + HTTP/2 connection; header and keep-alive timeouts,
//!      work left by requests done between them (connection, chores)
//!   -> route: longest mounted prefix, path rewritten, X-Forwarded-Prefix (router)
//!   -> take a spare or idle instance, or a pool slot, a new Store (state) and
//!      instantiate the app's ProxyPre (instances, app); call
//!      wasi:http/incoming-handler.handle (handler)
//!   -> the response streams back while the guest writes it (guest_body); the
//!      instance is dropped and its pool slot recycled when the handler returns
//! ```
//!
//! Engines with the pooling allocator (engine; one per way of resetting
//! memory) serve every app; an epoch ticker keeps busy guests from pinning
//! runtime threads. `reload` watches the component files and swaps new
//! versions into the route table. `config` turns flags and `wasmhost.toml`
//! into one validated `Config`; `serve` wires it all together.

pub mod access_log;
pub mod admission;
pub mod app;
pub mod cache;
pub mod chores;
pub mod cli;
pub mod config;
pub mod connection;
pub mod engine;
pub mod forwarded;
pub mod guest_body;
pub mod guest_output;
pub mod handler;
pub mod instances;
pub mod limits;
pub mod logging;
pub mod nginx;
pub mod reload;
pub mod request_body;
pub mod router;
pub mod serve;
pub mod server;
pub mod signals;
pub mod state;
pub mod tls;

use anyhow::Result;
use cli::{Cli, Command};

/// Runs one command to completion.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check(source) => serve::check(source),
        Command::Nginx(args) => nginx::run(args),
    }
}
