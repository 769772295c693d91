//! The async runtimes `serve` runs on: one for the server's own work
//! (accepting, signals, reloads, the admin listener, compiling on its
//! blocking threads) and one single-threaded runtime per worker thread for
//! connections, each connection on one worker from accept to close, as
//! nginx's and Granian's workers keep theirs.
//!
//! One work-stealing runtime for everything cost a reused hello about a
//! third more CPU per request: its idle workers were woken to steal about
//! every other request (0.49 context switches a request against 0.025 for
//! native hyper, bench/NOTES.md). A worker here never wakes another; a
//! guest computing long still yields at every epoch tick to the other
//! connections of its worker.

use crate::allocator;
use anyhow::{Context, Result};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

/// The runtime for the server's own work, with few threads: connections
/// run on [`Workers`].
pub fn main_runtime() -> Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("wasmhost-main")
        .on_thread_park(allocator::give_back_freed)
        .build()
        .context("starting the async runtime")
}

/// The worker threads, each with its runtime; they stop when this is
/// dropped, dropping the tasks still on them.
pub struct Workers {
    handles: Vec<Handle>,
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// `threads` workers, or one per CPU.
    pub fn start(threads: Option<u16>) -> Result<Workers> {
        let count = threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        );
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .on_thread_park(allocator::give_back_freed)
                .build()
                .context("starting a worker's async runtime")?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("wasmhost-worker-{index}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                    // A guest's blocking work (a file read) may still run;
                    // the process is ending, it is not waited for.
                    runtime.shutdown_background();
                })
                .context("starting a worker thread")?;
        }
        Ok(Workers {
            handles,
            _stops: stops,
        })
    }

    pub fn handles(&self) -> Vec<Handle> {
        self.handles.clone()
    }
}
