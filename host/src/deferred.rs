//! Work a request leaves for after its response (retiring a spent
//! instance, making new spares), queued on the request's connection. The
//! connection runs it once hyper has written the response and waits for
//! the client, on the same thread, with no task spawned and no other thread
//! woken: spawning a task per request for it cost the Rust hello ~5% at 16
//! connections, and doing it before the response put ~10 µs in front of
//! every one (bench/NOTES.md). The queue holds plain futures, so the
//! connection knows nothing of what they do.

use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;

/// One piece of deferred work.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One connection's deferred work: requests push, the connection's task
/// runs (`http::connection::drive`).
#[derive(Default)]
pub struct Deferred {
    pending: Mutex<Vec<Task>>,
}

impl Deferred {
    pub fn push(&self, task: Task) {
        self.pending.lock().push(task);
    }

    fn pop(&self) -> Option<Task> {
        self.pending.lock().pop()
    }

    /// Runs what is pending until done or until a task has to wait; call it
    /// when the connection has nothing more to do for now. `current` keeps
    /// the task under way between calls.
    pub fn run(&self, current: &mut Option<Task>, cx: &mut Context<'_>) {
        loop {
            if let Some(task) = current {
                if task.as_mut().poll(cx).is_pending() {
                    return;
                }
                *current = None;
            }
            let Some(next) = self.pop() else {
                return;
            };
            *current = Some(next);
        }
    }

    /// Runs everything left, once the connection is closed: nobody waits
    /// on its task any more.
    pub async fn finish(&self, current: Option<Task>) {
        if let Some(task) = current {
            task.await;
        }
        while let Some(task) = self.pop() {
            task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Poll, Waker};

    #[test]
    fn tasks_run_in_turn_and_one_that_waits_is_kept_for_the_next_call() {
        let deferred = Deferred::default();
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let counted = |done: &Arc<AtomicUsize>| {
            let done = done.clone();
            Box::pin(async move {
                done.fetch_add(1, Ordering::Relaxed);
            }) as Task
        };
        deferred.push(counted(&done));
        let waits = done.clone();
        deferred.push(Box::pin(async move {
            rx.await.unwrap();
            waits.fetch_add(10, Ordering::Relaxed);
        }));
        let mut cx = Context::from_waker(Waker::noop());
        let mut current = None;
        deferred.run(&mut current, &mut cx);
        // The waiting task (pushed last, popped first) holds the rest back.
        assert!(current.is_some());
        assert_eq!(done.load(Ordering::Relaxed), 0);
        tx.send(()).unwrap();
        deferred.run(&mut current, &mut cx);
        assert!(current.is_none());
        assert_eq!(done.load(Ordering::Relaxed), 11);
        assert!(matches!(
            std::pin::pin!(deferred.finish(None)).poll(&mut cx),
            Poll::Ready(())
        ));
    }
}
