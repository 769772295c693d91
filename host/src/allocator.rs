//! The process's memory allocator, and when freed memory goes back to the
//! system.
//!
//! mimalloc, because requests allocate on one worker thread and often free
//! on the other (a spare made on one serves a request on the other): glibc's
//! malloc then takes the other arena's lock, and its futex waits showed up
//! in profiles, while mimalloc frees across threads without a lock
//! (fresh-instance throughput +11-15% on the Rust hello for ~18 MiB more
//! RSS, bench/NOTES.md).
//!
//! mimalloc's pages belong to a thread, and memory freed from another
//! thread is only counted free when the owner next looks: a worker that
//! goes idle after a burst keeps every page its connections used. 600
//! clients that stalled and were dropped left 147 MiB held that way, for
//! good. So a thread that runs out of work takes stock first
//! ([`give_back_freed`]); a page found empty goes back to mimalloc's arena.
//! The arena returns it to the system a second later (so that a page freed
//! and wanted again at once costs no system call), but only when some
//! thread next calls into mimalloc: on a server gone idle none may, so
//! [`every_second`] does.

pub use mimalloc::MiMalloc as Global;

/// Collects what other threads freed into this thread's pages and hands
/// empty pages back. Called when a runtime worker parks: measured on the
/// Rust hello at 16 connections it costs nothing visible in CPU time per
/// request, fresh or reused (a forced collect, which also purges the arena
/// at once, cost 10-13 µs a request).
pub fn give_back_freed() {
    // SAFETY: mi_collect only walks the calling thread's own heap; it is
    // safe from any thread at any time, also when mimalloc is not the
    // global allocator (it then has nothing to collect).
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// Hands back, once a second, what idle threads left for the arena to
/// return. One timer wake a second is all it costs when nothing runs.
pub async fn every_second() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        give_back_freed();
    }
}

/// As [`give_back_freed`], and purges the arena now: for a thread that is
/// done with a large job (a Cranelift build allocates hundreds of MiB) and
/// may sleep for a long time.
pub fn give_back_all() {
    // SAFETY: as above.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
