//! A WASI 0.3 instance at work: the requests given to it and the one
//! future that runs them all in its store (`run_concurrent`), from the
//! first until it has nothing left to do; then the instance goes back to
//! `instances`, to be reused, or retired if it failed.
//!
//! - **Who drives it.** The request that started it, inline: in its own
//!   future until the guest answers, then in its response body as hyper
//!   polls that. A typical handler is done in those polls, with no task
//!   spawned and no thread woken; only a driver with work left when its
//!   request is over (other requests on the instance, or the guest's work
//!   after the response) moves to a task of its own ([`Driver::detach`]).
//! - **Who shares it.** An app in reuse mode lets one instance serve up to
//!   `concurrency_per_instance` requests at once. A request joins an open
//!   instance ([`Open::offer`]) only once a request on it has waited on I/O
//!   before answering: one store runs on one thread, so a guest that only
//!   computes gains nothing from sharing and would hold its neighbours up,
//!   where an idle instance serves them in parallel (wasmtime's `serve`
//!   holds back the same way: its worker takes a second request only while
//!   its requests are all blocked).
//! - **Limits.** Each request keeps its own deadline, here (its guest task
//!   is expired) and in `p3_request` (its client gets a `504` or a cut body
//!   whatever the store is doing). An expired request may leave guest work
//!   running, so its instance takes no more requests and is retired once
//!   the others are done. A trap ends the whole store: every request on it
//!   ends with it, the fault is logged once with their count, and each
//!   learns it from the [`Inbox`]. Memory is the instance's; the CPU budget
//!   restarts with every request it takes (a guest computing without a
//!   pause holds the store, so it cannot take another and is stopped).
//!
//! Modelled on wasmtime-wasi-http 48's `handler` worker loop; it is not
//! used as is for the reasons in `instances`.

use crate::guest::faults::{Body, Fault, classify, log_fault};
use crate::guest::instances::{Instance, Instances, Leftovers};
use crate::guest::sandbox::Sandbox;
use futures::StreamExt;
use futures::channel::oneshot;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use wasmtime::component::Accessor;
use wasmtime::{AsContextMut, format_err};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{Prepared, Proxy};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

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

    fn unlist(&self, inbox: &Arc<Inbox>) {
        self.inboxes.lock().retain(|open| !Arc::ptr_eq(open, inbox));
    }
}

/// What a request on a 0.3 instance shares with its driver: the requests
/// waiting to be taken, and how the instance ended.
pub struct Inbox {
    state: Mutex<State>,
    ended: Mutex<Ended>,
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
pub enum Ending {
    /// A fault ended it, and every request on it.
    Fault(Fault),
    /// It ended cleanly without taking the request from its queue.
    NotTaken,
    /// It has not ended by the request's deadline.
    StillRunning,
}

#[derive(Clone, Copy)]
enum Ended {
    Running,
    /// The store is gone; the fault that ended it, if one did.
    With(Option<Fault>),
}

impl Inbox {
    fn new(per_instance: usize, uses_left: u32) -> Self {
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
            ended: Mutex::new(Ended::Running),
            ended_notify: Notify::new(),
        }
    }

    /// Takes the job if the instance has room and is worth sharing.
    fn offer(&self, job: &mut Option<Job>) -> bool {
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
    fn pop(&self, cx: &mut Context<'_>) -> Option<Job> {
        let mut state = self.state.lock();
        let job = state.queue.pop_front();
        if job.is_none() {
            state.waker = Some(cx.waker().clone());
        }
        job
    }

    fn finished_one(&self) {
        let mut state = self.state.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }

    fn in_flight(&self) -> usize {
        self.state.lock().in_flight
    }

    fn mark_waits(&self) {
        self.state.lock().waits = true;
    }

    /// Takes no more; what is queued is still served.
    fn close(&self) {
        self.state.lock().closed = true;
    }

    fn take_queued(&self) -> VecDeque<Job> {
        std::mem::take(&mut self.state.lock().queue)
    }

    /// A request on the instance passed its deadline: it takes no more.
    pub fn expire(&self) {
        self.close();
    }

    /// Closes it if nothing is queued; false if a job came meanwhile.
    fn close_if_idle(&self) -> bool {
        let mut state = self.state.lock();
        if state.queue.is_empty() {
            state.closed = true;
        }
        state.closed && state.queue.is_empty()
    }

    fn end(&self, fault: Option<Fault>) {
        let mut ended = self.ended.lock();
        if let Ended::Running = *ended {
            *ended = Ended::With(fault);
        }
        drop(ended);
        self.ended_notify.notify_waiters();
    }

    /// How the instance ended, for a request whose answer never came;
    /// waits for its end until `deadline`.
    pub async fn ended(&self, deadline: Instant) -> Ending {
        loop {
            let notified = self.ended_notify.notified();
            match *self.ended.lock() {
                Ended::With(Some(fault)) => return Ending::Fault(fault),
                Ended::With(None) => return Ending::NotTaken,
                Ended::Running => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ending::StillRunning;
            }
        }
    }

    /// The fault that ended the instance, if it has ended with one.
    pub fn fault_now(&self) -> Option<Fault> {
        match *self.ended.lock() {
            Ended::With(fault) => fault,
            Ended::Running => None,
        }
    }
}

/// One instance's requests, run in its store until it has none left.
pub struct Driver {
    inbox: Arc<Inbox>,
    run: Pin<Box<dyn Future<Output = Leftovers> + Send>>,
}

/// Polls again at once, up to this many times, a store that woke itself
/// while polled.
const REPOLLS: usize = 8;

impl Driver {
    /// Starts `job` on `instance`; the caller polls the driver.
    pub fn start(
        instances: &Arc<Instances>,
        open: &Arc<Open>,
        route: Arc<str>,
        instance: Instance,
        job: Job,
    ) -> Self {
        let per_instance = instances.per_instance();
        let uses_left = instances.uses_left(&instance).saturating_sub(1);
        let inbox = Arc::new(Inbox::new(per_instance, uses_left));
        let listed = (per_instance > 1 && uses_left > 0).then(|| {
            open.inboxes.lock().push(inbox.clone());
            Listed(open.clone(), inbox.clone())
        });
        let run = Box::pin(drive(
            instances.clone(),
            instance,
            inbox.clone(),
            route,
            job,
            listed,
        ));
        Self { inbox, run }
    }

    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// Runs the store as far as it goes now; once all is done, what is
    /// left to do with the instance. Poll it within [`LocalWakes::poll`].
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Leftovers> {
        self.run.as_mut().poll(cx)
    }

    /// Lets it carry on on a task of its own: its request is over, but the
    /// instance still has work (other requests, the guest's own) that ends
    /// within their deadlines.
    ///
    /// `polled_with` is what it was polled within until now: wakers the
    /// store took then still point there, so they are sent on to the task.
    pub fn detach(mut self, polled_with: &LocalWakes) {
        let earlier = polled_with.clone();
        tokio::spawn(async move {
            let wakes = LocalWakes::default();
            let leftovers = std::future::poll_fn(|cx| {
                earlier.state.task.register(cx.waker());
                wakes.poll(cx, |cx| self.poll(cx))
            })
            .await;
            leftovers.run().await;
        });
    }
}

/// Polls the store, and what talks to it on the same task (the response
/// body, the answer), so that a wake-up from within that poll is run at
/// once instead of going to the runtime.
///
/// The store's event loop yields after each guest task that asks to
/// (wit-bindgen's runtime does, once per request) by waking itself and
/// returning; the guest's body reaches hyper through a channel whose send
/// wakes the receiver, the same task. To tokio either is a task woken
/// while it runs, to reschedule, and it wakes a parked thread for it: a
/// futex and an eventfd write per request, more than the guest's own work.
/// Here such a wake-up only marks the poll, and the poll runs again, a few
/// times; any other wake-up goes to the task.
#[derive(Clone)]
pub struct LocalWakes {
    state: Arc<Rewake>,
    waker: Waker,
}

impl Default for LocalWakes {
    fn default() -> Self {
        let state = Arc::new(Rewake::default());
        Self {
            waker: Waker::from(state.clone()),
            state,
        }
    }
}

impl LocalWakes {
    /// Polls `f` until it is ready or was not woken while it ran.
    pub fn poll<R>(
        &self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        self.state.task.register(cx.waker());
        for _ in 0..REPOLLS {
            self.state.state.store(POLLING, Ordering::Release);
            let polled = f(&mut Context::from_waker(&self.waker));
            let woken = self.state.state.swap(IDLE, Ordering::AcqRel) == WOKEN;
            if polled.is_ready() || !woken {
                return polled;
            }
        }
        // Still waking itself: the runtime runs the others first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[derive(Default)]
struct Rewake {
    state: AtomicU8,
    task: AtomicWaker,
}

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;

impl Wake for Rewake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let marked =
            self.state
                .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire);
        match marked {
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

/// An inbox in its app's open list, taken off it when dropped.
struct Listed(Arc<Open>, Arc<Inbox>);

impl Drop for Listed {
    fn drop(&mut self) {
        self.1.close();
        self.0.unlist(&self.1);
    }
}

async fn drive(
    instances: Arc<Instances>,
    mut instance: Instance,
    inbox: Arc<Inbox>,
    route: Arc<str>,
    first: Job,
    listed: Option<Listed>,
) -> Leftovers {
    let mut taken = 0;
    let outcome = serve_all(&instances, &mut instance, &inbox, &route, first, &mut taken).await;
    instance.count_uses(taken);
    drop(listed);
    inbox.close();
    let (healthy, fault) = match outcome {
        Ok(healthy) => (healthy, None),
        Err(failure) => {
            if !failure.logged {
                log_fault(&route, &failure.error, inbox.in_flight());
            }
            (false, Some(classify(&failure.error)))
        }
    };
    inbox.end(fault);
    // Jobs still queued (the guest held off new calls until the end) were
    // never taken: their requests learn it from the end just recorded.
    drop(inbox.take_queued());
    instances.give_back(instance, healthy)
}

/// How a store's run failed, and whether that is logged already.
struct Failure {
    error: wasmtime::Error,
    logged: bool,
}

/// What became of one request in the store.
enum Outcome {
    /// Answered, and its body done with.
    Done,
    /// Its deadline passed; its guest task may still be running.
    Expired,
    /// It could not be started in the store.
    Failed,
}

/// Runs `first` and every job the inbox takes, until none is left: true if
/// the instance may serve again.
async fn serve_all(
    instances: &Instances,
    instance: &mut Instance,
    inbox: &Inbox,
    route: &str,
    first: Job,
    taken: &mut u32,
) -> Result<bool, Failure> {
    if let Err(error) = instances.instantiate(instance).await {
        return Err(Failure {
            error,
            logged: false,
        });
    }
    let Instance { store, proxy, .. } = instance;
    let Some(proxy @ Proxy::P3(service)) = proxy.as_ref() else {
        return Err(Failure {
            error: format_err!("a wasi:http 0.2 guest is called through `handler`"),
            logged: false,
        });
    };
    let func = *service.wasi_http_handler().func_handle().func();
    let run = store.run_concurrent(async |accessor| {
        // Requests on the instance that have not answered yet.
        let unanswered = AtomicUsize::new(0);
        let mut running = FuturesUnordered::new();
        let mut next = Some(first);
        let mut healthy = true;
        let mut last_deadline = Instant::now();
        let mut linger: Option<Pin<Box<Sleep>>> = None;
        std::future::poll_fn(|cx| {
            loop {
                while let Poll::Ready(Some(outcome)) = running.poll_next_unpin(cx) {
                    match outcome {
                        Ok(Outcome::Done) => {}
                        Ok(Outcome::Expired | Outcome::Failed) => {
                            healthy = false;
                            inbox.close();
                        }
                        Err(error) => {
                            log_fault(route, &error, inbox.in_flight());
                            inbox.end(Some(classify(&error)));
                            return Poll::Ready(Err(Failure {
                                error,
                                logged: true,
                            }));
                        }
                    }
                    inbox.finished_one();
                }
                if accessor.poll_ready_for_concurrent_call(func, cx).is_ready()
                    && let Some(job) = next.take().or_else(|| inbox.pop(cx))
                {
                    *taken += 1;
                    last_deadline = last_deadline.max(job.deadline);
                    linger = None;
                    running.push(serve_one(accessor, proxy, job, &unanswered, route));
                    continue;
                }
                if !running.is_empty() {
                    if unanswered.load(Ordering::Relaxed) > 0 {
                        inbox.mark_waits();
                    }
                    return Poll::Pending;
                }
                if !healthy {
                    return Poll::Ready(Ok(false));
                }
                if accessor.poll_no_interesting_tasks(cx).is_pending() {
                    // The guest's work after its responses: given as long
                    // as its requests could have run, then the instance is
                    // retired with it.
                    let linger = linger
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last_deadline)));
                    if linger.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Ok(false));
                    }
                    return Poll::Pending;
                }
                if inbox.close_if_idle() {
                    return Poll::Ready(Ok(true));
                }
            }
        })
        .await
    });
    match run.await {
        Ok(outcome) => outcome,
        Err(error) => Err(Failure {
            error,
            logged: false,
        }),
    }
}

/// One request in the store: started, answered (or expired), and followed
/// until its response body is done with.
async fn serve_one(
    accessor: &Accessor<Sandbox>,
    proxy: &Proxy,
    job: Job,
    unanswered: &AtomicUsize,
    route: &str,
) -> wasmtime::Result<Outcome> {
    let Job {
        request,
        answer,
        done,
        deadline,
    } = job;
    let (guest_tx, guest_rx) = oneshot::channel();
    let prepared = accessor.with(|mut access| {
        let mut store = access.as_context_mut();
        store.data_mut().meter().start_request();
        store.set_epoch_deadline(1);
        Prepared::new(
            store,
            proxy,
            request,
            <Sandbox as WasiHttpView>::http,
            guest_tx,
        )
    });
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            log_fault(route, &error, 1);
            let _ = answer.send(Err(error));
            return Ok(Outcome::Failed);
        }
    };
    let answered = {
        let _waiting = Unanswered::new(unanswered);
        prepared
            .run(accessor, tokio::time::sleep_until(deadline))
            .await?
    };
    let reply = match guest_rx.await {
        Ok(reply) => reply,
        Err(_) => Err(format_err!("the guest returned no response")),
    };
    match reply {
        Ok(response) => {
            let _ = answer.send(Ok(response));
        }
        // The guest's own answer: the instance is fine.
        Err(error) if error.downcast_ref::<ErrorCode>().is_some() => {
            let _ = answer.send(Err(error));
            return Ok(Outcome::Done);
        }
        Err(error) if !answered => {
            let _ = answer.send(Err(error));
            return Ok(Outcome::Expired);
        }
        // A trap: it ends the store, and every request on it.
        Err(error) => return Err(error),
    }
    if !answered {
        return Ok(Outcome::Expired);
    }
    // The guest writes the body from tasks that run as long as the store
    // is driven.
    match tokio::time::timeout_at(deadline, done).await {
        Ok(_) => Ok(Outcome::Done),
        Err(_) => Ok(Outcome::Expired),
    }
}

/// Counts a request as unanswered while it lives.
struct Unanswered<'a>(&'a AtomicUsize);

impl<'a> Unanswered<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
