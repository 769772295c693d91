//! The `wasmhost` binary: parse the command line, set up logging, hand over to
//! the library, and turn its result into an exit code.

use clap::Parser;
use std::process::ExitCode;

/// Why mimalloc, and how its freed memory goes back: `wasmhost::allocator`.
#[global_allocator]
static GLOBAL: wasmhost::allocator::Global = wasmhost::allocator::Global;

fn main() -> ExitCode {
    let cli = wasmhost::config::cli::Cli::parse();
    wasmhost::logging::init(cli.log_format());
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
