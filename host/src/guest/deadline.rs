//! A deadline whose timer is made only when something first waits on it:
//! most requests and bodies are done before theirs, and arming a timer for
//! each cost ~2% of a hello's CPU (bench/NOTES.md).

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

pub struct LazyDeadline {
    at: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl LazyDeadline {
    pub fn new(at: Instant) -> Self {
        Self { at, timer: None }
    }

    /// Ready once the deadline has passed; the timer is made on the first
    /// call and wakes `cx` then.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.at;
        self.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)))
            .as_mut()
            .poll(cx)
    }

    /// Moves the deadline (and the timer, if there is one yet).
    pub fn reset(&mut self, at: Instant) {
        self.at = at;
        if let Some(timer) = &mut self.timer {
            timer.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn it_fires_at_its_deadline_and_a_reset_moves_it() {
        let mut cx = Context::from_waker(Waker::noop());
        let second = Duration::from_secs(1);
        let mut deadline = LazyDeadline::new(Instant::now() + second);
        assert!(deadline.timer.is_none());
        assert!(deadline.poll(&mut cx).is_pending());
        tokio::time::advance(second / 2).await;
        deadline.reset(Instant::now() + second);
        tokio::time::advance(second / 2).await;
        assert!(deadline.poll(&mut cx).is_pending());
        tokio::time::advance(second / 2).await;
        assert!(deadline.poll(&mut cx).is_ready());
    }
}
