//! A plain `wasi:cli/run` command: a valid component that does not export
//! `wasi:http/incoming-handler`, for the "wrong world" startup error.

fn main() {
    println!("I am a command, not an HTTP handler");
}
