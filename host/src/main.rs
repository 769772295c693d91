//! The `wasmhost` binary: parse the command line, set up logging, hand over to
//! the library, and turn its result into an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = wasmhost::cli::Cli::parse();
    wasmhost::logging::init();
    match wasmhost::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line and never a
            // backtrace, even with RUST_BACKTRACE set.
            eprintln!("wasmhost: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
