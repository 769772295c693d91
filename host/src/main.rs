//! The `wasmhost` binary: parse the command line, set up logging, hand over to
//! the library, and turn its result into an exit code.

use clap::Parser;
use std::process::ExitCode;

/// Requests allocate on one worker thread and often free on the other (a
/// spare made on one serves a request on the other); glibc's malloc then
/// takes the other arena's lock, and its futex waits showed up in profiles.
/// mimalloc frees across threads without a lock: fresh-instance throughput
/// +11-15% on the Rust hello for ~18 MiB more RSS (bench/NOTES.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = wasmhost::config::cli::Cli::parse();
    wasmhost::logging::init();
    match wasmhost::run(cli) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            // `{:#}` prints the whole context chain on one line and never a
            // backtrace, even with RUST_BACKTRACE set.
            eprintln!("wasmhost: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
