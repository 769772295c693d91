//! Enforcing an app's limits on what one request may use inside its guest:
//! memory per instance and CPU time while its guest runs. (The wall-clock
//! timeout is the handler's, the body size `bodies`', and how many requests
//! run and wait at once `admission`'s.)
//! A request over a limit fails alone, with its own status code and one log
//! line naming the app and the limit; the instance that ran it is dropped.

use crate::config::Limits;
use crate::engine::EPOCH_TICK;
use std::sync::{Arc, Mutex, PoisonError};
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
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
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
    /// the request started. (Only an `Instant` is kept under the lock: a
    /// poisoned one is still valid.)
    resumed: Arc<Mutex<Option<Instant>>>,
}

impl Meter {
    pub fn new(limits: Limits) -> Self {
        let tick = EPOCH_TICK.as_millis().max(1);
        let ticks_allowed = (limits.cpu_limit.as_millis() / tick).max(1) as u64;
        Self {
            limits,
            ticks_allowed,
            ticks_used: 0,
            resumed: Arc::new(Mutex::new(None)),
        }
    }

    /// A new request starts with the whole CPU budget. Its first tick is
    /// charged however soon it comes (at most one tick too many), which
    /// spares every request a clock read.
    pub fn start_request(&mut self) {
        self.ticks_used = 0;
        *self.resumed.lock().unwrap_or_else(PoisonError::into_inner) = None;
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
        let resumed = *self.resumed.lock().unwrap_or_else(PoisonError::into_inner);
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
                *resumed.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            }),
        ))
    }
}

impl ResourceLimiter for Meter {
    fn memory_growing(
        &mut self,
        _current: usize,
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
        let mut meter = Meter::new(Limits {
            cpu_limit: EPOCH_TICK * 3,
            ..Limits::default()
        });
        let ran_a_tick = |meter: &mut Meter| {
            *meter.resumed.lock().unwrap() = Some(Instant::now() - EPOCH_TICK);
        };
        ran_a_tick(&mut meter);
        assert!(matches!(
            meter.tick(),
            Ok(UpdateDeadline::YieldCustom(1, _))
        ));
        // Back from yielding with the next tick already passed: not charged.
        *meter.resumed.lock().unwrap() = Some(Instant::now());
        assert!(matches!(meter.tick(), Ok(UpdateDeadline::Continue(1))));
        ran_a_tick(&mut meter);
        assert!(meter.tick().is_ok());
        ran_a_tick(&mut meter);
        assert!(meter.tick().is_err());
        // A new request's first tick is charged at once.
        meter.start_request();
        assert!(meter.tick().is_ok());
    }
}
