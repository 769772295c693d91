//! How many requests of one app may hold an instance at once, and how many
//! more may wait for one. Past both, a request is turned away at once with
//! `503` and `Retry-After` instead of piling up: under overload a client is
//! better served by a quick "try again" than by a queue that only grows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Admission {
    /// One permit per request allowed to run at once.
    running: Arc<Semaphore>,
    concurrency: u32,
    /// Requests waiting for a permit now.
    waiting: AtomicU32,
    /// How many may wait.
    queue: u32,
}

/// A request's place among the app's running ones, held until its guest is
/// done.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(concurrency: u32, queue: u32) -> Self {
        Self {
            running: Arc::new(Semaphore::new(concurrency as usize)),
            concurrency,
            waiting: AtomicU32::new(0),
            queue,
        }
    }

    /// Requests holding a place now.
    pub fn running(&self) -> u32 {
        self.concurrency
            .saturating_sub(self.running.available_permits() as u32)
    }

    /// Requests waiting for a place now.
    pub fn queued(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A place to run, waiting for one if the queue has room; `None` if it
    /// has none. `app` names the app in the log.
    pub async fn admit(&self, app: &str) -> Option<Admitted> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Some(Admitted { _permit: permit });
        }
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        if ahead >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        tracing::debug!(app = %app, "request queued: all places taken, {ahead} waiting ahead of it");
        // Counted out again however the wait ends, the request's future
        // dropped by a client that went away included.
        let _waiting = Waiting(&self.waiting);
        let permit = self.running.clone().acquire_owned().await.ok()?;
        Some(Admitted { _permit: permit })
    }
}

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_running_and_the_waiting_requests_one_is_turned_away() {
        let admission = Arc::new(Admission::new(1, 1));
        let first = admission.admit("/").await.expect("a free place");
        let waiter = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit("/").await.is_some() }
        });
        while admission.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(admission.admit("/").await.is_none(), "the queue is full");
        drop(first);
        assert!(waiter.await.unwrap(), "the waiting request runs next");
        assert_eq!(admission.waiting.load(Ordering::Acquire), 0);
    }
}
