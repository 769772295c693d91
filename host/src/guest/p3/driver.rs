//! A WASI 0.3 instance at work: the requests given to it and the one
//! future that runs them all in its store (`run_concurrent`), from the
//! first until it has nothing left to do; then the instance goes back to
//! `instances`, to be reused, or retired if it failed. Which requests it
//! takes while it serves others is `sharing`'s rule.
//!
//! - **Who drives it.** The request that started it, inline: in its own
//!   future until the guest answers, then in its response body as hyper
//!   polls that. A typical handler is done in those polls, with no task
//!   spawned and no thread woken; only a driver with work left when its
//!   request is over (other requests on the instance, or the guest's work
//!   after the response) moves to a task of its own ([`Driver::detach`]).
//! - **Limits.** Each request keeps its own deadline, here (its guest task
//!   is expired) and in `p3` (its client gets a `504` or a cut body
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

use super::sharing::{Inbox, Job};
use crate::guest::faults::{classify, log_fault};
use crate::guest::instances::{Instance, Instances, Leftovers, start_request};
use crate::guest::sandbox::Sandbox;
use futures::StreamExt;
use futures::channel::oneshot;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use tokio::time::{Instant, Sleep};
use wasmtime::component::Accessor;
use wasmtime::{AsContextMut, format_err};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{Prepared, Proxy};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

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
        route: Arc<str>,
        instance: Instance,
        job: Job,
    ) -> Self {
        let per_instance = instances.per_instance();
        let uses_left = instances.uses_left(&instance).saturating_sub(1);
        let inbox = Arc::new(Inbox::new(per_instance, uses_left));
        let listed = (per_instance > 1 && uses_left > 0).then(|| {
            instances.open().list(inbox.clone());
            Listed(instances.clone(), inbox.clone())
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
    /// left to do with the instance. Poll it within `wakes.poll`.
    ///
    /// A store that stopped with a request unanswered and without waking
    /// itself waits on I/O, which makes the instance worth sharing. One
    /// that woke itself only yielded (wit-bindgen's runtime does, once per
    /// request): its requests compute, and sharing their instance would
    /// only hand each one between tasks, and threads.
    pub fn poll(&mut self, cx: &mut Context<'_>, wakes: &LocalWakes) -> Poll<Leftovers> {
        let polled = self.run.as_mut().poll(cx);
        if polled.is_pending() && !wakes.woken() && self.inbox.unanswered_at_rest() {
            self.inbox.mark_waits();
        }
        polled
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
                wakes.poll(cx, |cx| self.poll(cx, &wakes))
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
    /// Whether what is being polled within [`Self::poll`] woke itself
    /// during this round, to be polled again at once.
    pub fn woken(&self) -> bool {
        self.state.state.load(Ordering::Acquire) == WOKEN
    }

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
struct Listed(Arc<Instances>, Arc<Inbox>);

impl Drop for Listed {
    fn drop(&mut self) {
        self.1.close();
        self.0.open().unlist(&self.1);
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
            error: format_err!("a wasi:http 0.2 guest is served through `p2`"),
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
                    inbox.set_unanswered_at_rest(unanswered.load(Ordering::Relaxed) > 0);
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
                    inbox.set_unanswered_at_rest(false);
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
        start_request(access.as_context_mut());
        Prepared::new(
            access.as_context_mut(),
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
