//! Enforcing an app's limits on what one request may use inside its guest:
//! memory per instance and CPU time while its guest runs; and the
//! process-wide [`MemoryBudget`] that all guests' memory shares. (The wall-clock
//! timeout is the handler's, the body size `bodies`', and how many requests
//! run and wait at once `admission`'s.)
//! A request over a limit fails alone, with its own status code and one log
//! line naming the app and the limit; the instance that ran it is dropped.

use crate::config::Limits;
use crate::guest::engine::EPOCH_TICK;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{ResourceLimiter, StoreContextMut, UpdateDeadline};

/// The limit a guest ran into. Raised as the guest's trap, so the handler can
/// find it again in the error and answer for it.
#[derive(Debug, thiserror::Error)]
pub enum Exceeded {
    #[error("ran out of memory: it asked for {} MiB, the limit is {} MiB", mib(*.desired as u64), mib(*.limit))]
    Memory { desired: usize, limit: u64 },
    #[error("used its CPU time limit of {0:?} and was stopped")]
    CpuTime(Duration),
    #[error("could not grow its memory: the guest memory budget of {} MiB is in use", mib(*.0))]
    Budget(u64),
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// The linear memory all guests together may hold. An instance reserves
/// what it grows (its initial memory included) and gives it back when it
/// is dropped; growth past the budget fails the request that asked for it
/// (`503`), so the process is never taken past it by guests and killed for
/// it. It counts memory as guests size it, which bounds what they can touch.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One app's part of the [`MemoryBudget`]: what its instances hold now.
#[derive(Debug)]
pub struct MemoryShare {
    budget: Arc<MemoryBudget>,
    used: AtomicU64,
}

impl MemoryShare {
    pub fn new(budget: Arc<MemoryBudget>) -> Arc<Self> {
        Arc::new(Self {
            budget,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes the app's instances hold now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn reserve(&self, bytes: u64) -> bool {
        let reserved = self.budget.reserve(bytes);
        if reserved {
            self.used.fetch_add(bytes, Ordering::Relaxed);
        }
        reserved
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.budget.release(bytes);
    }
}

/// The default budget and what it was taken from: three quarters of the
/// memory this process may use, the machine's or its cgroup's limit if
/// lower, leaving the rest to wasmhost itself, connection buffers and the
/// kernel.
pub fn default_memory_budget() -> Option<(u64, &'static str, u64)> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let kib: u64 = text
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib << 10)
        });
    // cgroup v2, else v1 (runc on a hybrid hierarchy, older Kubernetes
    // nodes); "max", or v1's near-2^63 when unlimited, is no limit.
    let cgroup = [
        ("/sys/fs/cgroup/memory.max", "the cgroup's memory.max"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "the cgroup's memory.limit_in_bytes",
        ),
    ]
    .into_iter()
    .find_map(|(path, source)| {
        let limit = std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()?;
        Some((limit, source))
    });
    let (total, source) = match (machine, cgroup) {
        (Some(machine), Some((cgroup, source))) if cgroup < machine => (cgroup, source),
        (Some(machine), _) => (machine, "the machine's memory"),
        (None, Some((cgroup, source))) => (cgroup, source),
        (None, None) => return None,
    };
    Some((total / 4 * 3, source, total))
}

/// Enforces [`Limits`] on one store: its resource limiter for memory, and the
/// count of epoch ticks its current request has run for.
pub struct Meter {
    limits: Limits,
    /// Ticks the current request may run for.
    ticks_allowed: u64,
    /// Ticks it has run for so far.
    ticks_used: u64,
    /// When the guest came back from its last yield at a tick; none since
    /// the request started.
    resumed: Arc<Mutex<Option<Instant>>>,
    /// The app's share of the process-wide budget, and what this store
    /// holds of it.
    share: Arc<MemoryShare>,
    reserved: u64,
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.share.release(self.reserved);
    }
}

impl Meter {
    pub fn new(limits: Limits, share: Arc<MemoryShare>) -> Self {
        let tick = EPOCH_TICK.as_millis().max(1);
        let ticks_allowed = (limits.cpu_limit.as_millis() / tick).max(1) as u64;
        Self {
            limits,
            ticks_allowed,
            ticks_used: 0,
            resumed: Arc::new(Mutex::new(None)),
            share,
            reserved: 0,
        }
    }

    /// A new request starts with the whole CPU budget. Its first tick is
    /// charged however soon it comes (at most one tick too many), which
    /// spares every request a clock read.
    pub fn start_request(&mut self) {
        self.ticks_used = 0;
        *self.resumed.lock() = None;
    }

    /// Called when an epoch tick has passed while the guest ran: yield to
    /// the runtime so a computing guest cannot hold a worker thread, or stop
    /// it once its budget is spent.
    ///
    /// A guest that yielded at one tick and was parked while others ran
    /// finds the next tick already passed the moment it resumes; it has not
    /// run for that tick, so it carries on uncharged until the following
    /// one. Otherwise a guest sharing a thread with many others would pay a
    /// tick per turn for no work.
    pub fn tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        let resumed = *self.resumed.lock();
        if resumed.is_some_and(|at| at.elapsed() < EPOCH_TICK / 2) {
            return Ok(UpdateDeadline::Continue(1));
        }
        self.ticks_used += 1;
        if self.ticks_used >= self.ticks_allowed {
            return Err(wasmtime::Error::new(Exceeded::CpuTime(
                self.limits.cpu_limit,
            )));
        }
        let resumed = self.resumed.clone();
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                // To the back of the runtime's queue, behind other requests.
                tokio::task::yield_now().await;
                *resumed.lock() = Some(Instant::now());
            }),
        ))
    }
}

impl ResourceLimiter for Meter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A trap rather than a failed `memory.grow`: guests turn the latter
        // into an abort that reads like any other crash, and the log should
        // say what happened.
        if desired as u64 > self.limits.memory_limit {
            return Err(wasmtime::Error::new(Exceeded::Memory {
                desired,
                limit: self.limits.memory_limit,
            }));
        }
        // Called for a memory's first allocation too (from 0).
        let more = desired.saturating_sub(current) as u64;
        if !self.share.reserve(more) {
            return Err(wasmtime::Error::new(Exceeded::Budget(
                self.share.budget.limit,
            )));
        }
        self.reserved += more;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pool's table size.
        Ok(true)
    }
}

/// The store's epoch callback, for stores whose data holds a [`Meter`].
pub fn on_epoch_tick<T: AsMut<Meter>>(
    mut store: StoreContextMut<'_, T>,
) -> wasmtime::Result<UpdateDeadline> {
    store.data_mut().as_mut().tick()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_budget_is_counted_in_ticks_of_the_running_guest() {
        let mut meter = Meter::new(
            Limits {
                cpu_limit: EPOCH_TICK * 3,
                ..Limits::default()
            },
            MemoryShare::new(MemoryBudget::new(u64::MAX)),
        );
        let ran_a_tick = |meter: &mut Meter| {
            *meter.resumed.lock() = Some(Instant::now() - EPOCH_TICK);
        };
        ran_a_tick(&mut meter);
        assert!(matches!(
            meter.tick(),
            Ok(UpdateDeadline::YieldCustom(1, _))
        ));
        // Back from yielding with the next tick already passed: not charged.
        *meter.resumed.lock() = Some(Instant::now());
        assert!(matches!(meter.tick(), Ok(UpdateDeadline::Continue(1))));
        ran_a_tick(&mut meter);
        assert!(meter.tick().is_ok());
        ran_a_tick(&mut meter);
        assert!(meter.tick().is_err());
        // A new request's first tick is charged at once.
        meter.start_request();
        assert!(meter.tick().is_ok());
    }

    #[test]
    fn the_budget_is_shared_refused_past_its_limit_and_returned_on_drop() {
        let budget = MemoryBudget::new(100 << 20);
        let (app_a, app_b) = (
            MemoryShare::new(budget.clone()),
            MemoryShare::new(budget.clone()),
        );
        let meter = |share: &Arc<MemoryShare>| Meter::new(Limits::default(), share.clone());
        let (mut a, mut b) = (meter(&app_a), meter(&app_b));
        assert!(a.memory_growing(0, 60 << 20, None).unwrap());
        let refused = b.memory_growing(0, 60 << 20, None).unwrap_err();
        assert!(matches!(refused.downcast_ref(), Some(Exceeded::Budget(_))));
        assert_eq!(app_b.used(), 0);
        assert!(b.memory_growing(0, 40 << 20, None).unwrap());
        assert_eq!(budget.used(), 100 << 20);
        assert_eq!((app_a.used(), app_b.used()), (60 << 20, 40 << 20));
        drop(a);
        assert_eq!(budget.used(), 40 << 20);
        assert_eq!(app_a.used(), 0);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
