//! Where a request's instance comes from. In `fresh` mode (the default) every
//! request gets a new instance, the isolation of CGI. In `reuse` mode an
//! instance serves up to N requests one after another, like a WSGI worker
//! process, and waits in a small idle set between them; an instance that
//! trapped is never reused. In both modes an app keeps a few spare instances
//! instantiated ahead of time, so that a request does not wait for
//! instantiation (milliseconds for an interpreter-sized component).

use crate::admission::{Admission, Admitted};
use crate::limits::{self, Limits};
use crate::state::RequestState;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

/// How an app's instances are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A new instance for every request.
    #[default]
    Fresh,
    /// One instance serves up to this many requests in turn.
    Reuse(NonZeroU32),
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Fresh => f.write_str("fresh instance per request"),
            Mode::Reuse(uses) => write!(f, "instances reused for up to {uses} requests"),
        }
    }
}

/// A store and, once instantiated, the component instance in it.
pub struct Instance {
    pub store: Store<RequestState>,
    proxy: Option<Proxy>,
    /// Requests started on this instance.
    uses: u32,
    /// Its place in the process-wide instance budget, held while it lives,
    /// idle or busy.
    _slot: OwnedSemaphorePermit,
}

impl Instance {
    async fn instantiate(&mut self, pre: &ProxyPre<RequestState>) -> wasmtime::Result<()> {
        if self.proxy.is_none() {
            self.proxy = Some(pre.instantiate_async(&mut self.store).await?);
        }
        Ok(())
    }

    /// The store and the instance, instantiating it first if it is new.
    pub async fn ready(
        &mut self,
        pre: &ProxyPre<RequestState>,
    ) -> wasmtime::Result<(&mut Store<RequestState>, &Proxy)> {
        self.instantiate(pre).await?;
        self.uses += 1;
        // Each request starts with its own CPU budget, checked at every
        // epoch tick from now on.
        self.store.data_mut().as_mut().start_request();
        self.store.set_epoch_deadline(1);
        let proxy = self.proxy.as_ref().expect("instantiated just above");
        Ok((&mut self.store, proxy))
    }
}

/// The instances of one app.
pub struct Instances {
    mode: Mode,
    /// Instances waiting for their next request, most recently used last
    /// (its memory is the likeliest to still be in cache).
    idle: Mutex<Vec<Instance>>,
    /// How many idle instances to keep; more are dropped.
    max_idle: usize,
    /// How many idle instances to have ready, instantiated ahead of requests.
    spares: usize,
    /// A refill is running (see [`Instances::claim_refill`]).
    refilling: AtomicBool,
    /// What each request may use.
    limits: Limits,
    /// Places for its requests to run and wait.
    admission: Admission,
    stdout_prefix: Arc<str>,
    stderr_prefix: Arc<str>,
}

impl Instances {
    pub fn new(mode: Mode, spares: usize, limits: Limits, route: &str) -> Self {
        // Enough idle instances for every worker thread to find one, few
        // enough that idle memory stays small.
        let max_idle = std::thread::available_parallelism().map_or(4, |n| n.get() * 2);
        Self {
            mode,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(spares),
            spares,
            refilling: AtomicBool::new(false),
            limits,
            admission: Admission::new(limits.concurrency, limits.queue),
            stdout_prefix: format!("[{route}] ").into(),
            stderr_prefix: format!("[{route}] stderr: ").into(),
        }
    }

    /// An idle instance if there is one, else a new store that takes a slot
    /// of the budget (waiting for one if all are in use). None once the
    /// budget is closed for shutdown.
    pub async fn checkout(
        &self,
        engine: &wasmtime::Engine,
        slots: &Arc<Semaphore>,
    ) -> Option<Instance> {
        let idle = self.lock_idle().pop();
        match idle {
            Some(instance) => Some(instance),
            None => {
                let slot = slots.clone().acquire_owned().await.ok()?;
                Some(self.new_instance(engine, slot))
            }
        }
    }

    /// True if the caller must now run [`Instances::fill`], then
    /// [`Instances::release_refill`]: the app is short of spares and no
    /// refill is under way. Asked once a request is done with its instance,
    /// so the spares for the next requests are made after this one's
    /// response (see `chores`).
    pub fn claim_refill(&self) -> bool {
        self.idle() < self.spares && !self.refilling.swap(true, Ordering::AcqRel)
    }

    /// Instantiates spares until the idle set holds the app's number of
    /// them; at startup, after a reload, and after requests that took them
    /// (see [`Instances::claim_refill`]).
    /// Takes only free slots: a spare never makes a request wait for the pool.
    pub async fn refill(&self, pre: &ProxyPre<RequestState>, slots: &Arc<Semaphore>) {
        if self.claim_refill() {
            self.fill(pre, slots).await;
            self.release_refill();
        }
    }

    /// Ends the refill claimed with [`Instances::claim_refill`].
    pub fn release_refill(&self) {
        self.refilling.store(false, Ordering::Release);
    }

    /// Instantiates spares; only the holder of the refill claim calls it.
    /// Makes at most the app's number of them: under load other requests
    /// take spares as fast as they are made, and a connection doing this
    /// between its own requests must get back to them.
    pub async fn fill(&self, pre: &ProxyPre<RequestState>, slots: &Arc<Semaphore>) {
        for _ in 0..self.spares {
            if self.idle() >= self.spares {
                return;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                return;
            };
            let mut instance = self.new_instance(pre.engine(), slot);
            if let Err(error) = instance.instantiate(pre).await {
                // The request that next needs an instance reports it.
                tracing::debug!("instantiating a spare failed: {error:#}");
                return;
            }
            let mut idle = self.lock_idle();
            if idle.len() >= self.max_idle {
                return;
            }
            // Under the instances that served before, so those are reused first.
            idle.insert(0, instance);
        }
    }

    fn new_instance(&self, engine: &wasmtime::Engine, slot: OwnedSemaphorePermit) -> Instance {
        let mut store = Store::new(
            engine,
            RequestState::new(&self.stdout_prefix, &self.stderr_prefix, self.limits),
        );
        store.limiter(|state| state.as_mut());
        // At every epoch tick a running guest yields to the runtime, so that
        // one computing without host calls cannot hold a worker thread, and
        // is stopped once it has used its CPU time.
        store.epoch_deadline_callback(limits::on_epoch_tick);
        Instance {
            store,
            proxy: None,
            uses: 0,
            _slot: slot,
        }
    }

    /// Takes back an instance whose request finished without a fault; keeps
    /// it for another request if the mode and the idle bound allow, else
    /// returns it to be dropped.
    pub fn checkin(&self, instance: Instance) -> Option<Instance> {
        let Mode::Reuse(max_uses) = self.mode else {
            return Some(instance);
        };
        if instance.uses >= max_uses.get() {
            return Some(instance);
        }
        let mut idle = self.lock_idle();
        if idle.len() < self.max_idle {
            idle.push(instance);
            return None;
        }
        Some(instance)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A place for a request to run, if the app has one or room to wait.
    pub async fn admit(&self, app: &str) -> Option<Admitted> {
        self.admission.admit(app).await
    }

    pub fn spares(&self) -> usize {
        self.spares
    }

    /// Instances waiting for a request.
    pub fn idle(&self) -> usize {
        self.lock_idle().len()
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        // A panic while holding this lock leaves a valid Vec behind.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
