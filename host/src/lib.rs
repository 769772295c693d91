//! wasmhost: an application server for WebAssembly components.
//!
//! The request path:
//!
//! ```text
//! TCP accept (server)  ->  hyper HTTP/1.1 + HTTP/2 connection (server)
//!   -> handler: take an instance slot, new Store (state), instantiate the
//!      app's ProxyPre (app), call wasi:http/incoming-handler.handle
//!   -> the response streams back while the guest writes it; the instance is
//!      dropped and its pool slot recycled when the handler returns
//! ```
//!
//! One `Engine` (engine) with the pooling allocator serves every request; an
//! epoch ticker keeps busy guests from pinning runtime threads.

pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod guest_body;
pub mod guest_output;
pub mod handler;
pub mod logging;
pub mod router;
pub mod serve;
pub mod server;
pub mod signals;
pub mod state;

use anyhow::Result;
use cli::{Cli, Command};

/// Runs one command to completion.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check(source) => serve::check(source),
    }
}
