//! Work a request leaves behind once its guest is done: dropping the spent
//! instance (which resets its pool slot) and instantiating spares. Neither
//! changes the response, so neither should delay it.
//!
//! A guest that finishes inside its request's future (a typical handler)
//! leaves this work to its connection, which does it on the same thread as
//! soon as hyper has written the response and is waiting for the next
//! request: no task is spawned and no other thread is woken. Spawning a task
//! per request for it cost the Rust hello ~5% at 16 connections, and doing it
//! inline put ~10 µs of pool-slot reset and instantiation in front of every
//! response (bench/NOTES.md). A guest that streams its body runs on a task of
//! its own and does the same work there when its handler returns.

use crate::app::App;
use crate::engine::Reset;
use crate::instances::Instance;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Context;
use tokio::sync::Semaphore;

/// What is left to do after one request.
pub struct Aftermath {
    app: Arc<App>,
    /// The instance, if it will not serve again.
    spent: Option<Instance>,
    /// Set when the app is short of spares and this request is the one to
    /// make them.
    refill: Option<RefillClaim>,
}

impl Aftermath {
    pub fn new(app: Arc<App>, slots: &Arc<Semaphore>, spent: Option<Instance>) -> Self {
        // Only a request that used its instance up makes a replacement: one
        // that checked it back in for reuse left the app as it found it, and
        // refilling then made more instances than the idle set keeps, each
        // dropped again at the next check-in (for CPython, a 12 MiB copy).
        let used_up = spent.is_some();
        let refill = (used_up && app.instances.claim_refill()).then(|| RefillClaim {
            app: app.clone(),
            slots: slots.clone(),
        });
        Self { app, spent, refill }
    }

    /// Does it all, now.
    pub async fn run(self) {
        if let Some(refill) = self.retire() {
            refill.run().await;
        }
    }

    /// Drops the spent instance and returns the refill still to run, if any.
    fn retire(mut self) -> Option<RefillClaim> {
        if let Some(spent) = self.spent.take() {
            retire(&self.app, spent);
        }
        self.refill
    }
}

/// The one refill an app may have under way. Dropping it, run or not, lets
/// the next request claim one, so a connection closed before it ran its
/// chores cannot leave an app without spares for good.
struct RefillClaim {
    app: Arc<App>,
    slots: Arc<Semaphore>,
}

impl RefillClaim {
    async fn run(self) {
        self.app.instances.fill(&self.app.pre, &self.slots).await;
    }
}

impl Drop for RefillClaim {
    fn drop(&mut self) {
        self.app.instances.release_refill();
    }
}

/// Drops an instance that will not serve again. Dropping resets its pool
/// slot; for an app whose memory is copied back whole (`Reset::Copy`, ~12 MiB
/// for CPython) that takes milliseconds, so it moves to a task of its own
/// where the other worker thread can take it, instead of holding up this
/// connection's next request. Small resets stay on this thread, where they
/// cost less than the hand-off.
fn retire(app: &App, instance: Instance) {
    if app.reset == Reset::Copy {
        tokio::spawn(async move { drop(instance) });
    } else {
        drop(instance);
    }
}

/// A refill under way, kept by the connection between polls.
pub type Refill = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The work requests on one connection left for it. The service pushes, the
/// connection's task runs them between requests (`connection::drive`).
#[derive(Default)]
pub struct Chores {
    pending: Mutex<Vec<Aftermath>>,
}

impl Chores {
    pub fn push(&self, aftermath: Aftermath) {
        self.lock().push(aftermath);
    }

    fn pop(&self) -> Option<Aftermath> {
        self.lock().pop()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Aftermath>> {
        // Nothing panics while holding this lock; a poisoned Vec is still valid.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs what is pending until done or until a refill has to wait; call
    /// it when the connection has nothing more to do for now (the response
    /// is written and it waits for the client).
    pub fn run(&self, refill: &mut Option<Refill>, cx: &mut Context<'_>) {
        loop {
            if let Some(running) = refill {
                if running.as_mut().poll(cx).is_pending() {
                    return;
                }
                *refill = None;
            }
            let Some(aftermath) = self.pop() else {
                return;
            };
            *refill = aftermath
                .retire()
                .map(|claim| Box::pin(claim.run()) as Refill);
        }
    }

    /// Runs everything left, once the connection is closed: nobody waits
    /// on its task any more.
    pub async fn finish(&self, refill: Option<Refill>) {
        if let Some(running) = refill {
            running.await;
        }
        while let Some(aftermath) = self.pop() {
            aftermath.run().await;
        }
    }
}
