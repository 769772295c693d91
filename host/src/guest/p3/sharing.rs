//! Sharing a WASI 0.3 instance among requests: the rules for when a
//! request may join an instance already serving some ([`Inbox::offer`]),
//! the app's list of instances open to more ([`Open`], kept by
//! `instances`), and how a request learns that its instance ended.
//!
//! An app in reuse mode lets one instance serve up to
//! `concurrency_per_instance` requests at once. A request joins an open
//! instance only once a request on it has waited on I/O before answering:
//! one store runs on one thread, so a guest that only computes gains
//! nothing from sharing and would hold its neighbours up, where an idle
//! instance serves them in parallel (wasmtime's `serve` holds back the same
//! way: its worker takes a second request only while its requests are all
//! blocked). An instance takes no more once it is spent (its uses), full,
//! closed (a request on it expired) or ending.

use crate::guest::faults::{Body, Fault};
use futures::channel::oneshot;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the guest answered a request with, or why it did not.
pub type Answer = Result<http::Response<Body>, wasmtime::Error>;

/// A request for a 0.3 instance, and where its answer goes.
pub struct Job {
    pub request: http::Request<Body>,
    pub answer: oneshot::Sender<Answer>,
    /// Fires (or is dropped) when the response body is done with.
    pub done: oneshot::Receiver<()>,
    pub deadline: Instant,
}

/// The instances of one app that take more requests while they serve some.
#[derive(Default)]
pub struct Open {
    inboxes: Mutex<Vec<Arc<Inbox>>>,
}

impl Open {
    /// Gives the job to an open instance with room, taking it out of
    /// `job`; none if no instance takes it.
    pub fn offer(&self, job: &mut Option<Job>) -> Option<Arc<Inbox>> {
        let inboxes = self.inboxes.lock();
        inboxes.iter().find(|inbox| inbox.offer(job)).cloned()
    }

    /// Lists an instance that takes more requests.
    pub(super) fn list(&self, inbox: Arc<Inbox>) {
        self.inboxes.lock().push(inbox);
    }

    pub(super) fn unlist(&self, inbox: &Arc<Inbox>) {
        self.inboxes.lock().retain(|open| !Arc::ptr_eq(open, inbox));
    }
}

/// Said (at debug level) when an instance is first marked as waiting.
pub const WAITS: &str = "an instance waits with a request unanswered";

/// What a request on a 0.3 instance shares with its driver: the requests
/// waiting to be taken, and how the instance ended.
pub struct Inbox {
    state: Mutex<State>,
    /// The store last stopped with a request on it unanswered.
    unanswered_at_rest: AtomicBool,
    ended: Mutex<EndState>,
    ended_notify: Notify,
}

struct State {
    queue: VecDeque<Job>,
    /// The driver's, while it waits for a job.
    waker: Option<Waker>,
    /// Requests given to the instance and not yet done, queued ones included.
    in_flight: usize,
    /// At most this many at once.
    per_instance: usize,
    /// Requests it may still take before it is spent.
    uses_left: u32,
    /// A request on it has waited on I/O before answering: worth sharing.
    waits: bool,
    /// It takes no more.
    closed: bool,
}

/// How an instance ended, as a request it never answered sees it.
pub enum InstanceEnd {
    /// A fault ended it, and every request on it.
    Fault(Fault),
    /// It ended cleanly without taking the request from its queue.
    NotTaken,
    /// It has not ended by the request's deadline.
    StillRunning,
}

#[derive(Clone, Copy)]
enum EndState {
    Running,
    /// The store is gone; the fault that ended it, if one did.
    With(Option<Fault>),
}

impl Inbox {
    pub(super) fn new(per_instance: usize, uses_left: u32) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                waker: None,
                in_flight: 1,
                per_instance,
                uses_left,
                waits: false,
                closed: false,
            }),
            unanswered_at_rest: AtomicBool::new(false),
            ended: Mutex::new(EndState::Running),
            ended_notify: Notify::new(),
        }
    }

    /// Takes the job if the instance has room and is worth sharing.
    pub(super) fn offer(&self, job: &mut Option<Job>) -> bool {
        let mut state = self.state.lock();
        let worth_it = state.waits || !state.queue.is_empty();
        if state.closed
            || !worth_it
            || state.in_flight >= state.per_instance
            || state.uses_left == 0
        {
            return false;
        }
        let Some(job) = job.take() else {
            return false;
        };
        state.queue.push_back(job);
        state.in_flight += 1;
        state.uses_left -= 1;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// The next queued job, or none and the driver woken when one comes.
    pub(super) fn pop(&self, cx: &mut Context<'_>) -> Option<Job> {
        let mut state = self.state.lock();
        let job = state.queue.pop_front();
        if job.is_none() {
            state.waker = Some(cx.waker().clone());
        }
        job
    }

    pub(super) fn finished_one(&self) {
        let mut state = self.state.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }

    pub fn in_flight(&self) -> usize {
        self.state.lock().in_flight
    }

    /// A request on it waited on I/O before answering: it takes more.
    pub(super) fn mark_waits(&self) {
        let mut state = self.state.lock();
        if !state.waits && !state.closed && state.per_instance > 1 {
            // Tests wait for this line before sending the requests they
            // expect to join.
            tracing::debug!(
                "{WAITS}: it takes up to {} requests at once",
                state.per_instance
            );
        }
        state.waits = true;
    }

    /// Whether the store, as it stops, leaves a request unanswered: if it
    /// also did not wake itself, that request waits (`Driver::poll`).
    pub(super) fn set_unanswered_at_rest(&self, unanswered: bool) {
        self.unanswered_at_rest.store(unanswered, Ordering::Relaxed);
    }

    pub(super) fn unanswered_at_rest(&self) -> bool {
        self.unanswered_at_rest.load(Ordering::Relaxed)
    }

    /// Takes no more; what is queued is still served.
    pub(super) fn close(&self) {
        self.state.lock().closed = true;
    }

    pub(super) fn take_queued(&self) -> VecDeque<Job> {
        std::mem::take(&mut self.state.lock().queue)
    }

    /// A request on the instance passed its deadline: it takes no more.
    pub fn expire(&self) {
        self.close();
    }

    /// Closes it if nothing is queued; false if a job came meanwhile.
    pub(super) fn close_if_idle(&self) -> bool {
        let mut state = self.state.lock();
        if state.queue.is_empty() {
            state.closed = true;
        }
        state.closed && state.queue.is_empty()
    }

    pub(super) fn end(&self, fault: Option<Fault>) {
        let mut ended = self.ended.lock();
        if let EndState::Running = *ended {
            *ended = EndState::With(fault);
        }
        drop(ended);
        self.ended_notify.notify_waiters();
    }

    /// How the instance ended, for a request whose answer never came;
    /// waits for its end until `deadline`.
    pub async fn ended(&self, deadline: Instant) -> InstanceEnd {
        loop {
            let notified = self.ended_notify.notified();
            match *self.ended.lock() {
                EndState::With(Some(fault)) => return InstanceEnd::Fault(fault),
                EndState::With(None) => return InstanceEnd::NotTaken,
                EndState::Running => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return InstanceEnd::StillRunning;
            }
        }
    }

    /// The fault that ended the instance, if it has ended with one.
    pub fn fault_now(&self) -> Option<Fault> {
        match *self.ended.lock() {
            EndState::With(fault) => fault,
            EndState::Running => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::faults::plain;
    use http::StatusCode;
    use std::time::Duration;

    fn job() -> Job {
        let body = plain(StatusCode::OK, "").into_body();
        Job {
            request: http::Request::new(body),
            answer: oneshot::channel().0,
            done: oneshot::channel().1,
            deadline: Instant::now() + Duration::from_secs(10),
        }
    }

    /// Offers one job; whether the instance took it.
    fn takes(inbox: &Inbox) -> bool {
        let mut offered = Some(job());
        let taken = inbox.offer(&mut offered);
        assert_eq!(taken, offered.is_none());
        taken
    }

    #[test]
    fn an_instance_is_shared_only_once_a_request_on_it_waited() {
        // Its first request is on it already.
        let inbox = Inbox::new(4, 100);
        assert!(!takes(&inbox));
        inbox.mark_waits();
        assert!(takes(&inbox));
    }

    #[test]
    fn it_takes_up_to_its_share_and_room_comes_back_as_requests_finish() {
        let inbox = Inbox::new(3, 100);
        inbox.mark_waits();
        assert!(takes(&inbox));
        assert!(takes(&inbox));
        assert!(!takes(&inbox), "three at once");
        inbox.finished_one();
        assert!(takes(&inbox));
        assert_eq!(inbox.in_flight(), 3);
    }

    #[test]
    fn a_spent_closed_or_expired_instance_takes_no_more() {
        let spent = Inbox::new(8, 1);
        spent.mark_waits();
        assert!(takes(&spent));
        assert!(!takes(&spent), "its uses are over");

        let expired = Inbox::new(8, 100);
        expired.mark_waits();
        expired.expire();
        assert!(!takes(&expired));

        let listed = Open::default();
        let inbox = Arc::new(Inbox::new(8, 100));
        inbox.mark_waits();
        listed.list(inbox.clone());
        assert!(listed.offer(&mut Some(job())).is_some());
        listed.unlist(&inbox);
        assert!(listed.offer(&mut Some(job())).is_none());
    }

    #[test]
    fn queued_jobs_are_taken_in_order_and_keep_an_idle_close_from_closing() {
        let inbox = Inbox::new(4, 100);
        inbox.mark_waits();
        let deadlines: Vec<Instant> = (0..2)
            .map(|n| {
                let mut next = job();
                next.deadline += Duration::from_secs(n);
                let deadline = next.deadline;
                assert!(inbox.offer(&mut Some(next)));
                deadline
            })
            .collect();
        assert!(!inbox.close_if_idle(), "jobs are queued");
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(
            inbox.pop(&mut cx).map(|job| job.deadline),
            Some(deadlines[0])
        );
        assert_eq!(
            inbox.pop(&mut cx).map(|job| job.deadline),
            Some(deadlines[1])
        );
        assert!(inbox.pop(&mut cx).is_none());
        assert!(inbox.close_if_idle());
        assert!(!takes(&inbox), "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_learns_how_its_instance_ended_or_that_it_still_runs() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let running = Inbox::new(2, 10);
        assert!(matches!(
            running.ended(deadline).await,
            InstanceEnd::StillRunning
        ));

        let trapped = Inbox::new(2, 10);
        trapped.end(Some(Fault::Trapped));
        // Only the first end counts.
        trapped.end(None);
        assert!(matches!(
            trapped.ended(deadline).await,
            InstanceEnd::Fault(Fault::Trapped)
        ));
        assert_eq!(trapped.fault_now(), Some(Fault::Trapped));

        let clean = Inbox::new(2, 10);
        clean.end(None);
        assert!(matches!(clean.ended(deadline).await, InstanceEnd::NotTaken));
    }
}
