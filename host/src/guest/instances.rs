//! The life of an app's instances, from one owner: taking one for a request
//! (an idle or spare one, else a new one from the pool), calling the guest's
//! handler on it, giving it back, retiring it (dropping it resets its pool
//! slot) and refilling the app's spares. Requests, reloads and startup all go
//! through [`Instances`]; nothing else touches a store's life.
//!
//! - In `fresh` mode (the default) every request gets a new instance, the
//!   isolation of CGI. In `reuse` mode an instance serves up to N requests
//!   one after another, like a WSGI worker process, and waits in a small
//!   idle set between them; an instance that trapped is never reused.
//! - In both modes an app keeps a few spares instantiated ahead of requests,
//!   so that a request does not wait for instantiation (milliseconds for an
//!   interpreter-sized component).
//! - The process's [`Pool`] bounds the instances alive at once to what the
//!   pooling allocator holds, so a burst waits for a slot instead of failing
//!   to instantiate.
//! - What a request leaves once its guest is done (retiring the spent
//!   instance, making replacement spares) never delays its response: it
//!   becomes [`Leftovers`], a task the connection runs after the response
//!   (`crate::deferred`). A guest that streams its body runs on a task of
//!   its own and does the same work there when its handler returns.
//!
//! ## Why not wasmtime-wasi-http's `handler::ProxyHandler`
//!
//! wasmtime 48's `ProxyHandler` serves p2 and p3 guests with instance reuse
//! (`WorkerState::should_accept_request`) and per-request expiry. It runs
//! every instance on a worker task of its own and hands requests to it
//! through a queue and a oneshot: every request crosses tasks, and usually
//! threads. Here a typical guest runs inside its request's future and is
//! done in its first poll, which is where fresh-mode throughput comes from.
//! It also has no spares made ahead of requests, no reset after the
//! response, no process-wide slot bound and no backpressure of its own. So
//! this owner does not wrap it; it borrows its shape instead.
//!
//! WASI 0.3 guests (`wasi:http/handler@0.3.0`) serve several requests at
//! once on one instance. They take, give back, retire and refill through
//! the same owner; what is theirs alone is kept here too: the app's list of
//! 0.3 instances open to more requests ([`Instances::open`], whose rules
//! are `p3::sharing`'s). Each request starts in its store the same way in
//! both worlds ([`start_request`]); driving a store that serves several is
//! `p3::driver`'s.

use crate::config::{Grants, Limits, Mode, Mount};
use crate::deferred::{Chore, Task};
use crate::guest::engine::Reset;
use crate::guest::limits::{self, MemoryBudget, MemoryShare};
use crate::guest::output::AppOutput;
use crate::guest::p3::sharing::Open;
use crate::guest::sandbox::{Reach, Sandbox};
use crate::telemetry::request_metrics::{self, AppMetrics};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Engine;
use wasmtime::component::Resource;
use wasmtime::{AsContextMut, Store, StoreContextMut};
use wasmtime_wasi_http::handler::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

/// What all apps' instances share: the slots of the pooling allocator (one
/// permit each) and the guest memory budget.
#[derive(Clone)]
pub struct Pool {
    slots: Arc<Semaphore>,
    memory: Arc<MemoryBudget>,
}

impl Pool {
    pub fn new(slots: u32, memory: Arc<MemoryBudget>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots as usize)),
            memory,
        }
    }

    /// Slots no instance holds now.
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }
}

/// A store and, once instantiated, the component instance in it.
pub struct Instance {
    pub store: Store<Sandbox>,
    /// Once instantiated ([`Instances::start`]).
    pub proxy: Option<Proxy>,
    /// Requests started on this instance.
    uses: u32,
    /// Its place in the pool, held while it lives, idle or busy.
    _slot: OwnedSemaphorePermit,
    _live: Live,
}

/// Counted among its app's live instances until dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Instance {
    /// Counts `n` more requests started on it (a 0.3 instance starts them
    /// inside its store's run, where `Instances::start` cannot reach).
    pub fn count_uses(&mut self, n: u32) {
        self.uses += n;
    }
}

/// The instances of one app.
pub struct Instances {
    /// A wasi:http 0.2 or 0.3 component, ready to instantiate.
    pre: ProxyPre<Sandbox>,
    engine: Engine,
    /// How a retired instance's pool slot is reset, which says where
    /// dropping it is cheap.
    reset: Reset,
    pool: Pool,
    mode: Mode,
    /// Requests one instance serves at once: more than one only for a
    /// WASI 0.3 app in reuse mode.
    per_instance: usize,
    /// Instances waiting for their next request, most recently used last
    /// (its memory is the likeliest to still be in cache).
    idle: Mutex<Vec<Instance>>,
    /// How many idle instances to keep; more are dropped.
    max_idle: usize,
    /// How many idle instances to have ready, instantiated ahead of requests.
    spares: usize,
    /// A refill is under way: at most one per app, so requests finishing
    /// together do not all instantiate spares.
    refilling: AtomicBool,
    /// The line about guests that return without a response was said.
    said_no_response: AtomicBool,
    /// Its instances serve one request each, whatever the mode: one
    /// answered, then returned without a response.
    single_use: AtomicBool,
    /// Its WASI 0.3 instances that take more requests while they serve
    /// some (`p3::sharing`).
    open: Open,
    /// What each request may use.
    limits: Limits,
    /// What each instance is given.
    access: Reach,
    /// Where its guests' stdout and stderr go.
    output: Arc<AppOutput>,
    /// The guest memory its instances hold.
    memory: Arc<MemoryShare>,
    /// Its instances alive now: idle, spare or serving.
    live: Arc<AtomicUsize>,
    /// With an admin listener: where instantiations are counted.
    metrics: Option<Arc<AppMetrics>>,
}

impl Instances {
    pub fn new(
        pre: ProxyPre<Sandbox>,
        engine: Engine,
        reset: Reset,
        mount: &Mount,
        pool: Pool,
    ) -> anyhow::Result<Self> {
        // Enough idle instances for every worker thread to find one, few
        // enough that idle memory stays small.
        let max_idle = std::thread::available_parallelism().map_or(4, |n| n.get() * 2);
        let spares = mount.spares as usize;
        let route = &mount.route;
        let per_instance = match (&pre, mount.mode) {
            (ProxyPre::P3(_), Mode::Reuse(_)) => mount.concurrency_per_instance.get() as usize,
            _ => 1,
        };
        Ok(Self {
            pre,
            engine,
            reset,
            mode: mount.mode,
            per_instance,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(spares),
            spares,
            refilling: AtomicBool::new(false),
            said_no_response: AtomicBool::new(false),
            single_use: AtomicBool::new(false),
            open: Open::default(),
            limits: mount.limits,
            access: Reach::new(route, &mount.grants, &mount.limits)?,
            output: AppOutput::new(route),
            memory: MemoryShare::new(pool.memory.clone()),
            live: Arc::default(),
            metrics: request_metrics::get().map(|counts| counts.app(route)),
            pool,
        })
    }

    /// New instances of the same compiled component, with `mount`'s
    /// settings: what `wasmhost dev` serves when what instances read as
    /// they start may have changed.
    pub fn renewed(&self, mount: &Mount) -> anyhow::Result<Self> {
        let pre = match &self.pre {
            ProxyPre::P2(pre) => ProxyPre::P2(pre.clone()),
            ProxyPre::P3(pre) => ProxyPre::P3(pre.clone()),
        };
        Self::new(
            pre,
            self.engine.clone(),
            self.reset,
            mount,
            self.pool.clone(),
        )
    }

    /// An idle instance if there is one, else a new store that takes a slot
    /// of the pool, waiting for one if all are in use. It is instantiated
    /// by [`Instances::call`], within the request's limits.
    pub async fn take(&self) -> Instance {
        loop {
            // Popped in a statement of its own: a `while let` would hold the
            // lock while a passed-over instance is dropped.
            let idle = self.idle.lock().pop();
            let Some(instance) = idle else { break };
            // Idle before the app turned single-use: not served again.
            if instance.uses == 0 || !self.single_use.load(Ordering::Relaxed) {
                return instance;
            }
        }
        let slot = self
            .pool
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        self.new_instance(slot)
    }

    /// Calls the guest's handler on `instance`, instantiating it first if it
    /// is new. Each request starts with its own CPU budget.
    pub async fn call(
        &self,
        instance: &mut Instance,
        request: Resource<HostIncomingRequest>,
        outparam: Resource<HostResponseOutparam>,
    ) -> wasmtime::Result<()> {
        self.start(instance).await?;
        let Some(Proxy::P2(proxy)) = &instance.proxy else {
            wasmtime::bail!("a wasi:http 0.3 guest is served through `p3`");
        };
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut instance.store, request, outparam)
            .await
    }

    /// Readies `instance` for a request: instantiated if it is new, its
    /// CPU budget started afresh.
    pub async fn start(&self, instance: &mut Instance) -> wasmtime::Result<()> {
        self.instantiate(instance).await?;
        instance.uses += 1;
        start_request(instance.store.as_context_mut());
        Ok(())
    }

    /// Its WASI 0.3 instances open to more requests.
    pub fn open(&self) -> &Open {
        &self.open
    }

    /// Instantiates `instance` if it is new.
    pub async fn instantiate(&self, instance: &mut Instance) -> wasmtime::Result<()> {
        if instance.proxy.is_none() {
            instance.proxy = Some(self.instantiate_new(instance).await?);
        }
        Ok(())
    }

    async fn instantiate_new(&self, instance: &mut Instance) -> wasmtime::Result<Proxy> {
        let started = self.metrics.as_ref().map(|_| Instant::now());
        let proxy = self.pre.instantiate_async(&mut instance.store).await?;
        if let (Some(metrics), Some(started)) = (&self.metrics, started) {
            metrics.instantiated(started.elapsed());
        }
        Ok(proxy)
    }

    /// Requests `instance` may still start before it is spent.
    pub fn uses_left(&self, instance: &Instance) -> u32 {
        let allowed = match self.mode {
            Mode::Fresh => 1,
            Mode::Reuse(uses) => uses.get(),
        };
        allowed.saturating_sub(instance.uses)
    }

    /// Requests one instance serves at once.
    pub fn per_instance(&self) -> usize {
        self.per_instance
    }

    /// Whether the app serves wasi:http 0.3 (`wasi:http/handler`).
    pub fn is_p3(&self) -> bool {
        matches!(self.pre, ProxyPre::P3(_))
    }

    /// Takes back the instance of a request whose guest is done: kept for
    /// another request if it is `healthy` and the mode and the idle bound
    /// allow, else spent. What is left to do is in the returned leftovers.
    pub fn give_back(self: &Arc<Self>, instance: Instance, healthy: bool) -> Leftovers {
        let spent = if healthy && !self.single_use.load(Ordering::Relaxed) {
            self.keep(instance)
        } else {
            Some(instance)
        };
        // Only a request that used its instance up makes a replacement: one
        // that checked it back in for reuse left the app as it found it, and
        // refilling then made more instances than the idle set keeps, each
        // dropped again at the next check-in (for CPython, a 12 MiB copy).
        let refill = spent.is_some() && self.claim_refill();
        Leftovers {
            instances: self.clone(),
            spent,
            refill: refill.then(|| RefillClaim(self.clone())),
        }
    }

    /// Its guest returned without a response on `instance`, which is spent,
    /// not reused. If it had answered before (componentize-js's fetch event
    /// answers once per instance, then fails every later request on it),
    /// every instance of this version serves one request from now on, as
    /// in fresh mode. Each is said once per version, in reuse mode.
    pub fn returned_without_response(&self, route: &str, instance: &Instance) {
        if !matches!(self.mode, Mode::Reuse(_)) {
            return;
        }
        if instance.uses > 1 {
            if !self.single_use.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    app = %route,
                    "an instance answered {} request(s), then returned without a response: \
                     this app cannot serve more than one request per instance, so each instance \
                     of this version now serves one, as in fresh mode (a componentize-js \
                     fetch-event app answers once per instance: build it with `wasmhost-js \
                     build`, whose components export wasi:http/incoming-handler themselves)",
                    instance.uses - 1
                );
            }
        } else if !self.said_no_response.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                app = %route,
                "its guest returned without a response; each instance that does is retired, \
                 not reused"
            );
        }
    }

    /// Instantiates spares until the app has its number of them, unless a
    /// refill is already under way: at startup and after a reload.
    pub async fn refill(self: &Arc<Self>) {
        if self.claim_refill() {
            RefillClaim(self.clone()).run().await;
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn grants(&self) -> &Grants {
        &self.access.grants
    }

    pub fn spares(&self) -> usize {
        self.spares
    }

    /// Bytes of guest memory its instances hold now, idle ones included.
    pub fn memory_used(&self) -> u64 {
        self.memory.used()
    }

    /// Instances alive now: idle, spare or serving a request.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Instances waiting for a request.
    pub fn idle(&self) -> usize {
        self.idle.lock().len()
    }

    /// The instance kept idle for its next request, or returned if it will
    /// not serve again.
    fn keep(&self, instance: Instance) -> Option<Instance> {
        let Mode::Reuse(max_uses) = self.mode else {
            return Some(instance);
        };
        if instance.uses >= max_uses.get() {
            return Some(instance);
        }
        let mut idle = self.idle.lock();
        if idle.len() < self.max_idle {
            idle.push(instance);
            return None;
        }
        Some(instance)
    }

    /// True if the caller now holds the app's one refill: it is short of
    /// spares and no refill is under way.
    fn claim_refill(&self) -> bool {
        self.idle() < self.spares && !self.refilling.swap(true, Ordering::AcqRel)
    }

    /// Makes at most the app's number of spares: under load other requests
    /// take spares as fast as they are made, and a connection doing this
    /// between its own requests must get back to them. Takes only free
    /// slots: a spare never makes a request wait for the pool.
    async fn fill(&self) {
        for _ in 0..self.spares {
            if self.idle() >= self.spares {
                return;
            }
            let Ok(slot) = self.pool.slots.clone().try_acquire_owned() else {
                return;
            };
            let mut instance = self.new_instance(slot);
            match self.instantiate_new(&mut instance).await {
                Ok(proxy) => instance.proxy = Some(proxy),
                Err(error) => {
                    // The request that next needs an instance reports it.
                    tracing::debug!("instantiating a spare failed: {error:#}");
                    return;
                }
            }
            let mut idle = self.idle.lock();
            if idle.len() >= self.max_idle {
                return;
            }
            // Under the instances that served before, so those are reused first.
            idle.insert(0, instance);
        }
    }

    fn new_instance(&self, slot: OwnedSemaphorePermit) -> Instance {
        let sandbox = Sandbox::new(&self.output, self.limits, &self.access, self.memory.clone());
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|sandbox| sandbox.meter());
        // At every epoch tick a running guest yields to the runtime, so that
        // one computing without host calls cannot hold a worker thread, and
        // is stopped once it has used its CPU time.
        store.epoch_deadline_callback(limits::on_epoch_tick);
        Instance {
            store,
            proxy: None,
            uses: 0,
            _slot: slot,
            _live: {
                self.live.fetch_add(1, Ordering::Relaxed);
                Live(self.live.clone())
            },
        }
    }

    /// Drops an instance that will not serve again. Dropping resets its pool
    /// slot; for an app whose memory is copied back whole (`Reset::Copy`,
    /// ~12 MiB for CPython) that takes milliseconds, so it moves to a task
    /// of its own where another worker thread can take it, instead of
    /// holding up this connection's next request. Small resets stay on this
    /// thread, where they cost less than the hand-off.
    fn retire(&self, instance: Instance) {
        if self.reset == Reset::Copy {
            tokio::spawn(async move { drop(instance) });
        } else {
            drop(instance);
        }
    }
}

impl Chore for Leftovers {
    fn start(self: Box<Self>) -> Option<Task> {
        self.retire().map(|claim| Box::pin(claim.run()) as Task)
    }
}

/// What every request starts with in its store, 0.2 or 0.3 (where several
/// share one): its own CPU budget, and the epoch deadline that checks it.
pub fn start_request(mut store: StoreContextMut<'_, Sandbox>) {
    store.data_mut().meter().start_request();
    store.set_epoch_deadline(1);
}

/// The one refill an app may have under way. Dropping it, run or not, lets
/// the next request claim one, so a connection closed before it ran its
/// deferred work cannot leave an app without spares for good.
struct RefillClaim(Arc<Instances>);

impl RefillClaim {
    async fn run(self) {
        self.0.fill().await;
    }
}

impl Drop for RefillClaim {
    fn drop(&mut self) {
        self.0.refilling.store(false, Ordering::Release);
    }
}

/// What is left to do after one request: the instance to retire, if it
/// will not serve again, and the refill to run, if this request is the one
/// to make the app's spares.
pub struct Leftovers {
    instances: Arc<Instances>,
    spent: Option<Instance>,
    refill: Option<RefillClaim>,
}

impl Leftovers {
    /// Does it all, now.
    pub async fn run(self) {
        if let Some(refill) = self.retire() {
            refill.run().await;
        }
    }

    /// Retires the spent instance and returns the refill still to run.
    fn retire(mut self) -> Option<RefillClaim> {
        if let Some(spent) = self.spent.take() {
            self.instances.retire(spent);
        }
        self.refill
    }

    /// All of it, for the connection to do after the response
    /// (`deferred`).
    pub fn later(self) -> Box<dyn Chore> {
        Box::new(self)
    }
}
