//! The counts the request path and the accept loops add to as things happen:
//! requests by app, method and status class, their durations, refusals,
//! connections per listener. Made once at startup, only when an admin
//! listener is configured (`metrics` registers them for scraping): with none,
//! [`get`] is `None` and the request path pays one load of a pointer.
//! Nothing here reads an app; the app holds its handles.

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static COUNTS: OnceLock<Counts> = OnceLock::new();

/// The counts, once [`install`]ed.
pub fn get() -> Option<&'static Counts> {
    COUNTS.get()
}

/// Counts a reload of the app at `route`, if counting (see [`Counts::reload`]).
pub fn reload(route: &Arc<str>, done: Option<(Duration, &str)>) {
    if let Some(counts) = get() {
        counts.reload(route, done);
    }
}

/// Counts a compile by `compiler` that took `took`, or a load from the
/// compile cache (`cached`), if counting.
pub fn compiled(compiler: &'static str, cached: bool, took: Duration) {
    if let Some(counts) = get() {
        let origin = if cached { "cache" } else { "compiled" };
        counts
            .compiles
            .get_or_create(&CompileLabels { compiler, origin })
            .inc();
        counts
            .compile_seconds
            .get_or_create(&CompilerLabel { compiler })
            .inc_by(took.as_secs_f64());
    }
}

/// Counts a guest fault of `kind` for the app at `route`, if counting.
pub fn fault(route: &Arc<str>, kind: &'static str) {
    if let Some(counts) = get() {
        counts.fault(route, kind);
    }
}

/// Makes the process's counts; later calls return the first ones.
pub fn install() -> &'static Counts {
    COUNTS.get_or_init(Counts::default)
}

/// Request durations, in seconds: 100 µs (a cached hello) to 60 s (a long
/// upload or a slow upstream).
pub(crate) const DURATION_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The request methods counted by name; any other is `other`, so a client
/// cannot make a series per made-up method.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Instantiation times, in seconds: 10 µs (a small Rust app from the pool)
/// to 1 s (a large interpreter copying its heap in).
pub(crate) const INSTANTIATE_BUCKETS: [f64; 14] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.25, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppLabel {
    pub(crate) app: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) app: Arc<str>,
    pub(crate) method: &'static str,
    pub(crate) status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    app: Arc<str>,
    outcome: &'static str,
}

/// Something an operator wants to see happened: a fault, a reload.
#[derive(Clone, Debug)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub app: Arc<str>,
    pub what: String,
}

/// Events kept for the status page.
const EVENTS: usize = 50;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FaultLabels {
    app: Arc<str>,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CompileLabels {
    compiler: &'static str,
    origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CompilerLabel {
    compiler: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutboundLabels {
    app: Arc<str>,
    grant: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KeyValueLabels {
    app: Arc<str>,
    bucket: Arc<str>,
    store: &'static str,
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KeyValueStoreLabels {
    app: Arc<str>,
    store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabel {
    listener: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    status: u16,
}

/// The families; `metrics` registers them under their names.
pub struct Counts {
    pub(crate) refused: Family<AppLabel, Counter>,
    pub(crate) faults: Family<FaultLabels, Counter>,
    pub(crate) reloads: Family<ReloadLabels, Counter>,
    pub(crate) reload_seconds: Family<AppLabel, Gauge<f64, AtomicU64>>,
    /// The last faults and reloads, newest last, for the status page.
    events: Mutex<VecDeque<Event>>,
    pub(crate) heads_refused: Family<StatusLabel, Counter>,
    pub(crate) connections_open: Family<ListenerLabel, Gauge>,
    pub(crate) connections_accepted: Family<ListenerLabel, Counter>,
    pub(crate) tls_failures: Family<ListenerLabel, Counter>,
    pub(crate) compiles: Family<CompileLabels, Counter>,
    pub(crate) compile_seconds: Family<CompilerLabel, Counter<f64, AtomicU64>>,
    pub(crate) outbound: Family<OutboundLabels, Counter>,
    pub(crate) outbound_denied: Family<AppLabel, Counter>,
    pub(crate) keyvalue: Family<KeyValueLabels, Counter>,
    pub(crate) keyvalue_seconds: Family<KeyValueStoreLabels, Counter<f64, AtomicU64>>,
    apps: Mutex<HashMap<Arc<str>, Arc<AppMetrics>>>,
    /// Requests that reach no app (`app="-"`).
    unrouted: OnceLock<Arc<AppMetrics>>,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            refused: Family::default(),
            faults: Family::default(),
            reloads: Family::default(),
            reload_seconds: Family::default(),
            events: Mutex::new(VecDeque::new()),
            heads_refused: Family::default(),
            connections_open: Family::default(),
            connections_accepted: Family::default(),
            tls_failures: Family::default(),
            compiles: Family::default(),
            compile_seconds: Family::default(),
            outbound: Family::default(),
            outbound_denied: Family::default(),
            keyvalue: Family::default(),
            keyvalue_seconds: Family::default(),
            apps: Mutex::new(HashMap::new()),
            unrouted: OnceLock::new(),
        }
    }
}

impl Counts {
    /// The handles of the app at `route`, shared by all its versions so its
    /// counts go on across reloads.
    pub fn app(&self, route: &Arc<str>) -> Arc<AppMetrics> {
        let mut apps = self.apps.lock();
        apps.entry(route.clone())
            .or_insert_with(|| {
                let label = AppLabel { app: route.clone() };
                Arc::new(AppMetrics {
                    route: route.clone(),
                    shards: Box::default(),
                    refused: self.refused.get_or_create_owned(&label),
                })
            })
            .clone()
    }

    /// The handles of the app at `route`, kept in `cell` (the app version's
    /// own) so a request finds them without a lookup.
    pub fn cached<'a>(
        &self,
        cell: &'a OnceLock<Arc<AppMetrics>>,
        route: &Arc<str>,
    ) -> &'a Arc<AppMetrics> {
        cell.get_or_init(|| self.app(route))
    }

    /// The handles requests that reach no app are counted with.
    pub fn unrouted(&self) -> &Arc<AppMetrics> {
        self.unrouted.get_or_init(|| self.app(&Arc::from("-")))
    }

    /// Every app's counts (and the unrouted requests'), for a scrape.
    pub fn apps(&self) -> Vec<Arc<AppMetrics>> {
        let apps = self.apps.lock();
        let mut apps: Vec<_> = apps.values().cloned().collect();
        apps.sort_by(|a, b| a.route.cmp(&b.route));
        apps
    }

    /// A guest fault of `kind` answered for the app at `route`.
    pub fn fault(&self, route: &Arc<str>, kind: &'static str) {
        self.faults
            .get_or_create(&FaultLabels {
                app: route.clone(),
                kind,
            })
            .inc();
        self.event(route, format!("fault: {kind}"));
    }

    /// A reload of the app at `route` (`-`: the configuration) was done in
    /// `took`, or refused.
    pub fn reload(&self, route: &Arc<str>, done: Option<(Duration, &str)>) {
        let outcome = if done.is_some() { "done" } else { "refused" };
        self.reloads
            .get_or_create(&ReloadLabels {
                app: route.clone(),
                outcome,
            })
            .inc();
        match done {
            Some((took, version)) => {
                self.reload_seconds
                    .get_or_create(&AppLabel { app: route.clone() })
                    .set(took.as_secs_f64());
                self.event(
                    route,
                    format!("reloaded {version} in {} ms", took.as_millis()),
                );
            }
            None => self.event(route, "reload refused; the previous version serves".into()),
        }
    }

    fn event(&self, route: &Arc<str>, what: String) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        let mut events = self.events.lock();
        if events.len() == EVENTS {
            events.pop_front();
        }
        events.push_back(Event {
            at,
            app: route.clone(),
            what,
        });
    }

    /// The last faults and reloads, newest last.
    pub fn events(&self) -> Vec<Event> {
        let events = self.events.lock();
        events.iter().cloned().collect()
    }

    /// A request refused for its head with `status` (400 or 431).
    pub fn head_refused(&self, status: u16) {
        self.heads_refused
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// The handles the outbound HTTP of the app at `route` counts with.
    pub fn outbound(&self, route: &Arc<str>) -> OutboundMetrics {
        OutboundMetrics {
            app: route.clone(),
            sent: self.outbound.clone(),
            denied: self
                .outbound_denied
                .get_or_create_owned(&AppLabel { app: route.clone() }),
        }
    }

    /// The handles one bucket of the app at `route` counts its operations with.
    pub fn keyvalue(&self, route: &str, bucket: &str, store: &'static str) -> KeyValueMetrics {
        KeyValueMetrics {
            app: Arc::from(route),
            bucket: Arc::from(bucket),
            store,
            ops: self.keyvalue.clone(),
            seconds: self
                .keyvalue_seconds
                .get_or_create_owned(&KeyValueStoreLabels {
                    app: Arc::from(route),
                    store,
                }),
        }
    }

    /// The handles one listener's accept loop counts its connections with.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        let label = ListenerLabel {
            listener: name.into(),
        };
        ListenerMetrics {
            open: self.connections_open.get_or_create_owned(&label),
            accepted: self.connections_accepted.get_or_create_owned(&label),
            tls_failures: self.tls_failures.get_or_create_owned(&label),
        }
    }
}

/// Shards of each app's counts: a worker thread adds to its own, so two
/// cores serving the same app never write the same cache line; a scrape
/// sums them. (Shared atomics cost the Rust hello 5-9% of its req/s.)
const SHARDS: usize = 8;

/// Where this thread adds.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// One thread's share of an app's counts, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    /// By method (the last row for any other) and status class.
    requests: [[AtomicU64; STATUS_CLASSES.len()]; METHODS.len() + 1],
    /// Requests ended per duration bucket (the last past 60 s).
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_nanos: AtomicU64,
    begun: AtomicU64,
    ended: AtomicU64,
    /// Instantiations per time bucket (the last past 1 s), and their time.
    instantiations: [AtomicU64; INSTANTIATE_BUCKETS.len() + 1],
    instantiate_nanos: AtomicU64,
}

/// One app's request counts, shared by all its versions.
pub struct AppMetrics {
    route: Arc<str>,
    shards: Box<[Shard; SHARDS]>,
    refused: Counter,
}

/// An app's counts summed over the shards, as a scrape reads them.
pub struct Snapshot {
    /// `(method, status class, count)` for every count above zero.
    pub requests: Vec<(&'static str, &'static str, u64)>,
    /// `(upper bound, requests in this bucket alone)`, `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub duration_seconds: f64,
    pub in_flight: u64,
    /// The same for instantiations.
    pub instantiations: Vec<(f64, u64)>,
    pub instantiated: u64,
    pub instantiate_seconds: f64,
}

impl AppMetrics {
    pub fn route(&self) -> &Arc<str> {
        &self.route
    }

    /// A request of this app begins: it is in flight until the returned
    /// measure is dropped, when it is counted with its status.
    pub fn begin(self: &Arc<Self>, method: &http::Method) -> Measure {
        self.shards[shard()].begun.fetch_add(1, Ordering::Relaxed);
        Measure {
            app: self.clone(),
            method: METHODS
                .iter()
                .position(|known| *known == method.as_str())
                .unwrap_or(METHODS.len()),
            status: 500,
            started: Instant::now(),
        }
    }

    /// A request turned away with 503: the app was at its limits.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// One of the app's instances was instantiated in `took`.
    pub fn instantiated(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = INSTANTIATE_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(INSTANTIATE_BUCKETS.len());
        let shard = &self.shards[shard()];
        shard.instantiations[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        shard.instantiate_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn count(&self, method: usize, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let seconds = took.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        let shard = &self.shards[shard()];
        shard.requests[method][class].fetch_add(1, Ordering::Relaxed);
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        shard.duration_nanos.fetch_add(nanos, Ordering::Relaxed);
        shard.ended.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now, summed over the shards.
    pub fn snapshot(&self) -> Snapshot {
        let sum = |field: &dyn Fn(&Shard) -> &AtomicU64| -> u64 {
            self.shards
                .iter()
                .map(|shard| field(shard).load(Ordering::Relaxed))
                .sum()
        };
        let mut requests = Vec::new();
        for (m, method) in METHODS.iter().copied().chain(["other"]).enumerate() {
            for (c, class) in STATUS_CLASSES.iter().copied().enumerate() {
                let n = sum(&|shard| &shard.requests[m][c]);
                if n > 0 {
                    requests.push((method, class, n));
                }
            }
        }
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(b, bound)| (bound, sum(&|shard| &shard.buckets[b])))
            .collect();
        let ended = sum(&|shard| &shard.ended);
        let instantiations: Vec<(f64, u64)> = INSTANTIATE_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(b, bound)| (bound, sum(&|shard| &shard.instantiations[b])))
            .collect();
        Snapshot {
            instantiated: instantiations.iter().map(|(_, n)| n).sum(),
            instantiations,
            instantiate_seconds: sum(&|shard| &shard.instantiate_nanos) as f64 / 1e9,
            requests,
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            duration_seconds: sum(&|shard| &shard.duration_nanos) as f64 / 1e9,
            // Ended before begun is a request that began on another shard
            // being read in between: never more ended than begun in all.
            in_flight: sum(&|shard| &shard.begun).saturating_sub(ended),
        }
    }
}

/// One request, from its head to the end of its response (kept with the
/// response body).
pub struct Measure {
    app: Arc<AppMetrics>,
    method: usize,
    status: u16,
    started: Instant,
}

impl Measure {
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for Measure {
    fn drop(&mut self) {
        self.app
            .count(self.method, self.status, self.started.elapsed());
    }
}

/// One listener's connection counts.
#[derive(Clone, Default)]
pub struct ListenerMetrics {
    open: Gauge,
    accepted: Counter,
    tls_failures: Counter,
}

impl ListenerMetrics {
    /// A connection was accepted: open until the returned guard drops.
    pub fn accepted(&self) -> OpenConnection {
        self.accepted.inc();
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    pub fn tls_failed(&self) {
        self.tls_failures.inc();
    }
}

pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What one app's outbound HTTP counts: each response by the grant that
/// allowed it and status class, and each request its grants refused.
/// Neither is counted by origin: a guest could make up any number of them.
#[derive(Clone)]
pub struct OutboundMetrics {
    app: Arc<str>,
    sent: Family<OutboundLabels, Counter>,
    denied: Counter,
}

impl OutboundMetrics {
    /// A request that `grant` (an `allowed_outbound_hosts` entry as
    /// written) allowed ended with `status`, or with no response (`None`).
    pub fn sent(&self, grant: &str, status: Option<u16>) {
        let status = match status {
            Some(status) => STATUS_CLASSES[usize::from(status / 100).clamp(1, 5) - 1],
            None => "error",
        };
        self.sent
            .get_or_create(&OutboundLabels {
                app: self.app.clone(),
                grant: grant.to_string(),
                status,
            })
            .inc();
    }

    pub fn denied(&self) {
        self.denied.inc();
    }
}

/// What one granted bucket counts: each operation by name and outcome, and
/// the time its store spent on them. Keys are never labels: a guest could
/// make up any number of them.
#[derive(Clone)]
pub struct KeyValueMetrics {
    app: Arc<str>,
    bucket: Arc<str>,
    store: &'static str,
    ops: Family<KeyValueLabels, Counter>,
    seconds: Counter<f64, AtomicU64>,
}

impl KeyValueMetrics {
    /// `op` (`get`, `set`, …) ended `ok` or not after `took`.
    pub fn done(&self, op: &'static str, ok: bool, took: Duration) {
        self.ops
            .get_or_create(&KeyValueLabels {
                app: self.app.clone(),
                bucket: self.bucket.clone(),
                store: self.store,
                op,
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
        self.seconds.inc_by(took.as_secs_f64());
    }
}
