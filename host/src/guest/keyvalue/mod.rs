//! `wasi:keyvalue` for guests, in the two versions toolchains emit:
//! 0.2.0-draft (`draft`), which `wasmtime serve -S keyvalue` links, and
//! 0.2.0-draft2 (`draft2`), the interface's latest, with compare-and-swap
//! and signed counters. Both reach the same buckets through one `view`: a
//! bucket is a handle in the instance's table, each call goes to the app's
//! `Buckets`, and one the app was not granted is `access-denied`, a value,
//! never a trap.

mod draft;
mod draft2;
pub mod view;

pub use view::KeyValue;

use anyhow::Result;
use wasmtime::component::Linker;

/// Links both versions' store, atomics and batch interfaces.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KeyValue<'_>,
) -> Result<()> {
    draft::add_to_linker(linker, view)?;
    draft2::add_to_linker(linker, view)
}
