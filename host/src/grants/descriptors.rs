//! The descriptors guests hold. Every file a guest opens and every socket
//! it creates is a descriptor of this one process, which listeners,
//! connections, the admin port and every other app share. A guest opening
//! them in a loop used to run the process out of them (`EMFILE`), after
//! which no listener could accept. So each instance may hold at most
//! `max_open_per_instance` at once, all guests together stay below the
//! process's limit less a reserve kept for the server, and past either an
//! open fails with the interface's own error value.
//!
//! What an instance holds is counted where it is opened (`linker` puts
//! [`Held`] in front of wasmtime-wasi's `open-at` and `create-tcp-socket`)
//! and found closed again when the guest has dropped it: a file through a
//! weak reference to wasmtime-wasi's shared handle (its streams hold the
//! same one), a socket by its entry in the store's resource table.

use std::fs::File;
use std::sync::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sockets::tcp::TcpSocket;
use wasmtime_wasi::sockets::TcpSocket as P3TcpSocket;

/// Descriptors the server keeps for itself beyond what guests may take:
/// listeners, connections, the admin port, compile-cache and log files.
/// A fifth of the limit, at least 1,024 where the limit leaves guests as
/// many, half of it where it is that low.
fn reserve(limit: usize) -> usize {
    (limit / 5).max(1024.min(limit / 2))
}

/// What all guests together may hold; set once at start.
static GUEST_BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);
/// What they hold now (found closed at their instance's next open or end).
static GUEST_HELD: AtomicUsize = AtomicUsize::new(0);

/// Raises the soft limit on open descriptors to the hard one and sets the
/// guests' budget from it; what it found, for the startup log.
pub fn raise_limit() -> Limit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Limit::default();
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if limit.rlim_cur < limit.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            limit.rlim_max
        } else {
            limit.rlim_cur
        }
    };
    let descriptors = usize::try_from(soft).unwrap_or(usize::MAX);
    let guests = descriptors.saturating_sub(reserve(descriptors));
    GUEST_BUDGET.store(guests, Ordering::Relaxed);
    Limit {
        descriptors,
        guests,
    }
}

/// The process's descriptor limit and the guests' share of it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Limit {
    pub descriptors: usize,
    pub guests: usize,
}

/// What one instance holds open.
pub struct Held {
    /// Its files and directories, alive while wasmtime-wasi holds them.
    files: Vec<Weak<File>>,
    /// Its sockets, by their place in the store's resource table.
    sockets: Vec<Socket>,
    /// How many it may hold.
    cap: usize,
    /// What it has added to [`GUEST_HELD`].
    counted: usize,
}

impl Held {
    pub fn new(cap: u32) -> Self {
        Self {
            files: Vec::new(),
            sockets: Vec::new(),
            cap: cap as usize,
            counted: 0,
        }
    }

    /// Takes a place for one more descriptor if the instance and all guests
    /// are under their bounds. The caller then reports what was opened, or
    /// gives the place back.
    pub fn reserve(&mut self, table: &ResourceTable) -> bool {
        self.forget_closed(table);
        if self.counted >= self.cap {
            return false;
        }
        let budget = GUEST_BUDGET.load(Ordering::Relaxed);
        let taken = GUEST_HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            (held < budget).then_some(held + 1)
        });
        if taken.is_err() {
            crate::limited!(
                warn,
                "guests hold {budget} descriptors, all they may: an open is refused so that the server keeps its own"
            );
            return false;
        }
        self.counted += 1;
        true
    }

    /// The reserved place now holds `file`.
    pub fn opened_file(&mut self, file: Weak<File>) {
        self.files.push(file);
    }

    /// The reserved place now holds a 0.2 guest's socket.
    pub fn opened_p2_socket(&mut self, socket: &Resource<TcpSocket>) {
        self.sockets.push(Socket::P2(socket.rep()));
    }

    /// The reserved place now holds a 0.3 guest's socket.
    pub fn opened_p3_socket(&mut self, socket: &Resource<P3TcpSocket>) {
        self.sockets.push(Socket::P3(socket.rep()));
    }

    /// The open failed: its place is free again.
    pub fn release(&mut self) {
        self.counted -= 1;
        GUEST_HELD.fetch_sub(1, Ordering::Relaxed);
    }

    /// Drops what the guest has closed since the last look.
    fn forget_closed(&mut self, table: &ResourceTable) {
        self.files.retain(|file| file.strong_count() > 0);
        self.sockets.retain(|socket| socket.is_open(table));
        let now = self.files.len() + self.sockets.len();
        if now < self.counted {
            GUEST_HELD.fetch_sub(self.counted - now, Ordering::Relaxed);
            self.counted = now;
        }
    }
}

/// A socket's place in the table, as the interface that made it types it
/// (a place freed and taken by a resource of another type is not it).
enum Socket {
    P2(u32),
    P3(u32),
}

impl Socket {
    fn is_open(&self, table: &ResourceTable) -> bool {
        match *self {
            Socket::P2(rep) => table.get(&Resource::<TcpSocket>::new_borrow(rep)).is_ok(),
            Socket::P3(rep) => table.get(&Resource::<P3TcpSocket>::new_borrow(rep)).is_ok(),
        }
    }
}

impl Drop for Held {
    /// The store is going, and its table with every descriptor in it.
    fn drop(&mut self) {
        GUEST_HELD.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_instance_holds_its_cap_and_gets_places_back_as_files_close() {
        let table = ResourceTable::new();
        let mut held = Held::new(2);
        let files: Vec<Arc<File>> = (0..2)
            .map(|_| Arc::new(File::open("/dev/null").unwrap()))
            .collect();
        for file in &files {
            assert!(held.reserve(&table));
            held.opened_file(Arc::downgrade(file));
        }
        assert!(!held.reserve(&table));
        drop(files);
        assert!(held.reserve(&table));
        held.release();
        assert_eq!(held.counted, 0);
    }

    #[test]
    fn the_reserve_is_a_fifth_and_at_least_1024_or_half() {
        assert_eq!(reserve(20_000), 4_000);
        assert_eq!(reserve(4_096), 1_024);
        assert_eq!(reserve(1_024), 512);
        assert_eq!(reserve(524_288), 104_857);
    }
}
