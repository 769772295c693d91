//! The counts the request path and the accept loops add to as things happen:
//! requests by app, method and status class, their durations, refusals,
//! connections per listener. Made once at startup, only when an admin
//! listener is configured (`metrics` registers them for scraping): with none,
//! [`get`] is `None` and the request path pays one load of a pointer.
//! Nothing here reads an app; the app holds its handles.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

static COUNTS: OnceLock<Counts> = OnceLock::new();

/// The counts, once [`install`]ed.
pub fn get() -> Option<&'static Counts> {
    COUNTS.get()
}

/// Makes the process's counts; later calls return the first ones.
pub fn install() -> &'static Counts {
    COUNTS.get_or_init(Counts::default)
}

/// Request durations, in seconds: 100 µs (a cached hello) to 60 s (a long
/// upload or a slow upstream).
const DURATION_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The request methods counted by name; any other is `other`, so a client
/// cannot make a series per made-up method.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppLabel {
    pub(crate) app: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) app: Arc<str>,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabel {
    listener: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    status: u16,
}

type Histograms = Family<AppLabel, Histogram, fn() -> Histogram>;

/// The families; `metrics` registers them under their names.
pub struct Counts {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) durations: Histograms,
    pub(crate) in_flight: Family<AppLabel, Gauge>,
    pub(crate) refused: Family<AppLabel, Counter>,
    pub(crate) heads_refused: Family<StatusLabel, Counter>,
    pub(crate) connections_open: Family<ListenerLabel, Gauge>,
    pub(crate) connections_accepted: Family<ListenerLabel, Counter>,
    pub(crate) tls_failures: Family<ListenerLabel, Counter>,
    apps: Mutex<HashMap<Arc<str>, Arc<AppMetrics>>>,
    /// Requests that reach no app (`app="-"`).
    unrouted: OnceLock<Arc<AppMetrics>>,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            in_flight: Family::default(),
            refused: Family::default(),
            heads_refused: Family::default(),
            connections_open: Family::default(),
            connections_accepted: Family::default(),
            tls_failures: Family::default(),
            apps: Mutex::new(HashMap::new()),
            unrouted: OnceLock::new(),
        }
    }
}

impl Counts {
    /// The handles of the app at `route`, shared by all its versions so its
    /// counts go on across reloads.
    pub fn app(&self, route: &Arc<str>) -> Arc<AppMetrics> {
        let mut apps = self
            .apps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        apps.entry(route.clone())
            .or_insert_with(|| {
                let label = AppLabel { app: route.clone() };
                Arc::new(AppMetrics {
                    route: route.clone(),
                    requests: Default::default(),
                    duration: self.durations.get_or_create_owned(&label),
                    in_flight: self.in_flight.get_or_create_owned(&label),
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

    /// A request refused for its head with `status` (400 or 431).
    pub fn head_refused(&self, status: u16) {
        self.heads_refused
            .get_or_create(&StatusLabel { status })
            .inc();
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

/// One app's request counts.
pub struct AppMetrics {
    route: Arc<str>,
    /// By method (the last row for any other) and status class, made on
    /// first use so a scrape lists only what happened.
    requests: [[OnceLock<Counter>; STATUS_CLASSES.len()]; METHODS.len() + 1],
    duration: Histogram,
    in_flight: Gauge,
    refused: Counter,
}

impl AppMetrics {
    /// A request of this app begins: it is in flight until the returned
    /// measure is dropped, when it is counted with its status.
    pub fn begin(self: &Arc<Self>, method: &http::Method) -> Measure {
        self.in_flight.inc();
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

    fn count(&self, method: usize, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[method][class]
            .get_or_init(|| {
                let Some(metrics) = get() else {
                    return Counter::default();
                };
                metrics.requests.get_or_create_owned(&RequestLabels {
                    app: self.route.clone(),
                    method: METHODS.get(method).copied().unwrap_or("other"),
                    status: STATUS_CLASSES[class],
                })
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
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
        self.app.in_flight.dec();
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
