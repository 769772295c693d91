//! Work a request leaves for after its response (retiring a spent
//! instance, making new spares), queued on the request's connection. The
//! connection runs it once hyper has written the response and waits for
//! the client, on the same thread, with no task spawned and no other thread
//! woken: spawning a task per request for it cost the Rust hello ~5% at 16
//! connections, and doing it before the response put ~10 µs in front of
//! every one (bench/NOTES.md). The queue holds [`Chore`]s, so the
//! connection knows nothing of what they do; a chore's quick part runs when
//! it is started, and only what must wait becomes a future (boxing every
//! request's leftovers as one future, instantiation included, cost a fresh
//! request ~4 µs of CPU, 13%).

use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;

/// What is left of a chore once started: work that has to wait.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One piece of deferred work.
pub trait Chore: Send {
    /// Does what can be done now; what has to wait, if anything.
    fn start(self: Box<Self>) -> Option<Task>;
}

/// One connection's deferred work: requests push, the connection's task
/// runs (`http::connection::drive`).
#[derive(Default)]
pub struct Deferred {
    pending: Mutex<Vec<Box<dyn Chore>>>,
}

impl Deferred {
    pub fn push(&self, chore: Box<dyn Chore>) {
        self.pending.lock().push(chore);
    }

    fn pop(&self) -> Option<Box<dyn Chore>> {
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
            *current = next.start();
        }
    }

    /// Runs everything left, once the connection is closed: nobody waits
    /// on its task any more.
    pub async fn finish(&self, current: Option<Task>) {
        if let Some(task) = current {
            task.await;
        }
        while let Some(chore) = self.pop() {
            if let Some(task) = chore.start() {
                task.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Poll, Waker};

    /// Counts one when started, then leaves its task, if any.
    struct Counted(Arc<AtomicUsize>, Option<Task>);

    impl Chore for Counted {
        fn start(self: Box<Self>) -> Option<Task> {
            self.0.fetch_add(1, Ordering::Relaxed);
            self.1
        }
    }

    #[test]
    fn chores_run_in_turn_and_one_that_waits_is_kept_for_the_next_call() {
        let deferred = Deferred::default();
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        deferred.push(Box::new(Counted(done.clone(), None)));
        let waits = done.clone();
        let task: Task = Box::pin(async move {
            rx.await.unwrap();
            waits.fetch_add(10, Ordering::Relaxed);
        });
        deferred.push(Box::new(Counted(done.clone(), Some(task))));
        let mut cx = Context::from_waker(Waker::noop());
        let mut current = None;
        deferred.run(&mut current, &mut cx);
        // The waiting chore (pushed last, popped first) was started and
        // holds the rest back.
        assert!(current.is_some());
        assert_eq!(done.load(Ordering::Relaxed), 1);
        tx.send(()).unwrap();
        deferred.run(&mut current, &mut cx);
        assert!(current.is_none());
        assert_eq!(done.load(Ordering::Relaxed), 12);
        assert!(matches!(
            std::pin::pin!(deferred.finish(None)).poll(&mut cx),
            Poll::Ready(())
        ));
    }
}
