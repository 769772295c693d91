//! The end-to-end suite: every test starts the real `wasmhost` binary and
//! talks HTTP to it over real sockets. One module per area; one test binary.

mod admin;
mod cache;
mod config;
mod connections;
mod container;
mod databases;
mod demo;
mod deploy;
mod descriptors;
mod dev;
mod errors;
mod fairness;
mod faults;
mod forwarding;
mod graft;
mod grants;
mod heads;
mod http2;
mod javascript;
mod keyvalue;
mod kubernetes;
mod limits;
mod netns;
mod new;
mod nginx;
mod outbound;
mod p3;
mod pool;
mod reload;
mod reuse;
mod serve;
mod shutdown;
mod stalls;
mod systemd;
mod timeouts;
mod tls;

/// The binary under test, built by cargo for this test target.
const WASMHOST: &str = env!("CARGO_BIN_EXE_wasmhost");
mod wsgi;
