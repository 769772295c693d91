//! What the admin listener's `/metrics` shows, in the OpenMetrics text
//! format Prometheus scrapes: the counts of `request_metrics`, registered
//! under their names, and states read at scrape time by collectors that look
//! at the route table and `/proc` then (each app's instances, places and
//! queue, its version; the pool; the process's CPU, memory and files), so
//! keeping them costs the request path nothing.

use crate::config::Mode;
use crate::guest::app::App;
use crate::guest::engine::Engines;
use crate::http::router::Routes;
use crate::telemetry::request_metrics::{AppLabel, Counts, RequestLabels};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// The registry `/metrics` encodes.
pub struct Metrics {
    registry: Registry,
    serving: Arc<Serving>,
}

impl Metrics {
    /// Registers `counts` and the collectors.
    pub fn new(counts: &'static Counts) -> Self {
        // `process_*` keeps the name every Prometheus client gives it; the
        // rest is under `wasmhost_`.
        let mut root = Registry::default();
        root.register_collector(Box::new(Process));
        let registry = root.sub_registry_with_prefix("wasmhost");
        registry.register_collector(Box::new(AppCounts(counts)));
        registry.register(
            "requests_refused",
            "Requests turned away with 503 because the app's places and queue were full",
            counts.refused.clone(),
        );
        registry.register(
            "guest_faults",
            "Requests a guest failed, by app and kind (trap, out_of_memory, cpu_limit, timeout, no_response, …)",
            counts.faults.clone(),
        );
        registry.register(
            "reloads",
            "Hot reloads by app (`-`: the configuration) and outcome (done, refused)",
            counts.reloads.clone(),
        );
        registry.register_with_unit(
            "last_reload_duration",
            "How long the app's last reload took, from the change seen to the new version serving",
            Unit::Seconds,
            counts.reload_seconds.clone(),
        );
        registry.register(
            "request_heads_refused",
            "Requests refused for their head (400: Host; 431: too many fields), by status",
            counts.heads_refused.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open, by listener",
            counts.connections_open.clone(),
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted, by listener",
            counts.connections_accepted.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out (plain HTTP to a TLS port included), by listener",
            counts.tls_failures.clone(),
        );
        registry.register(
            "compiles",
            "Components made ready to serve, by compiler (cranelift, winch) and origin (compiled now, or loaded from the compile cache)",
            counts.compiles.clone(),
        );
        registry.register_with_unit(
            "compile",
            "Time spent compiling components or loading them from the cache, by compiler",
            Unit::Seconds,
            counts.compile_seconds.clone(),
        );
        registry.register(
            "outbound_requests",
            "Guests' outbound HTTP requests, by app, the grant that allowed them and status class (`error`: no response)",
            counts.outbound.clone(),
        );
        registry.register(
            "outbound_denied",
            "Guests' outbound HTTP requests refused because no grant of the app allows them, by app",
            counts.outbound_denied.clone(),
        );
        registry.register(
            "keyvalue_operations",
            "Guests' wasi:keyvalue operations, by app, bucket, store (memory, redis), operation and outcome",
            counts.keyvalue.clone(),
        );
        registry.register_with_unit(
            "keyvalue",
            "Time the app's keyvalue stores spent on its operations, by app and store",
            Unit::Seconds,
            counts.keyvalue_seconds.clone(),
        );
        let serving = Arc::new(Serving::default());
        registry.register_collector(Box::new(serving.clone()));
        Self {
            registry: root,
            serving,
        }
    }

    /// From now on, scrapes show the apps of `routes` and the pool.
    pub fn serve(&self, routes: Arc<Routes>, pool: PoolUse) {
        let _ = self.serving.routes.set(routes);
        let _ = self.serving.pool.set(pool);
    }

    /// The whole registry as OpenMetrics text, what Prometheus asks for.
    pub fn openmetrics(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The same in Prometheus's older text format (0.0.4), for every other
    /// reader (`promtool check metrics`, curl, scrapers that predate
    /// OpenMetrics). The two differ only where this registry uses them: a
    /// counter's family is named with its `_total` there, and there are no
    /// `# UNIT` or `# EOF` lines.
    pub fn text(&self) -> String {
        let openmetrics = self.openmetrics();
        let mut text = String::with_capacity(openmetrics.len());
        let mut counters = Vec::new();
        for line in openmetrics.lines() {
            if let Some(family) = line
                .strip_prefix("# TYPE ")
                .and_then(|rest| rest.strip_suffix(" counter"))
            {
                counters.push(family);
            }
        }
        for line in openmetrics.lines() {
            if line.starts_with("# UNIT ") || line == "# EOF" {
                continue;
            }
            let described = ["# HELP ", "# TYPE "]
                .into_iter()
                .find_map(|tag| Some((tag, line.strip_prefix(tag)?)));
            match described {
                Some((tag, rest))
                    if counters.contains(&rest.split(' ').next().unwrap_or_default()) =>
                {
                    let (family, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    text.push_str(&format!("{tag}{family}_total {tail}\n"));
                }
                _ => {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }
}

/// Each app's request counts, summed over their shards when scraped.
struct AppCounts(&'static Counts);

impl std::fmt::Debug for AppCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppCounts")
    }
}

impl Collector for AppCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let apps: Vec<_> = self
            .0
            .apps()
            .into_iter()
            .map(|app| (app.route().clone(), app.snapshot()))
            .collect();
        let mut requests = encoder.encode_descriptor(
            "requests",
            "Requests answered, by app (its route; `-` for none), method and status class.",
            None,
            MetricType::Counter,
        )?;
        for (app, snapshot) in &apps {
            for &(method, status, count) in &snapshot.requests {
                let labels = RequestLabels {
                    app: app.clone(),
                    method,
                    status,
                };
                ConstCounter::new(count).encode(requests.encode_family(&labels)?)?;
            }
        }
        let mut durations = encoder.encode_descriptor(
            "request_duration",
            "Time from the request's head to the end of its response, by app.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (app, snapshot) in &apps {
            let label = AppLabel { app: app.clone() };
            durations
                .encode_family(&label)?
                .encode_histogram::<NoLabelSet>(
                    snapshot.duration_seconds,
                    snapshot.count,
                    &snapshot.buckets,
                    None,
                )?;
        }
        let mut instantiations = encoder.encode_descriptor(
            "instantiation_duration",
            "Time to instantiate one of the app's instances (for a request or as a spare), by app.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (app, snapshot) in &apps {
            let label = AppLabel { app: app.clone() };
            instantiations
                .encode_family(&label)?
                .encode_histogram::<NoLabelSet>(
                    snapshot.instantiate_seconds,
                    snapshot.instantiated,
                    &snapshot.instantiations,
                    None,
                )?;
        }
        let mut in_flight = encoder.encode_descriptor(
            "requests_in_flight",
            "Requests whose response is not yet sent in full, by app.",
            None,
            MetricType::Gauge,
        )?;
        for (app, snapshot) in &apps {
            let label = AppLabel { app: app.clone() };
            ConstGauge::new(snapshot.in_flight as i64).encode(in_flight.encode_family(&label)?)?;
        }
        Ok(())
    }
}

/// How the instance pool is used, read at scrape time.
pub struct PoolUse {
    pub total: u64,
    pub in_use: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Whose pooling allocators say what they hold.
    pub engines: Arc<Engines>,
}

/// The apps served now and the pool: read when scraped.
#[derive(Default)]
struct Serving {
    routes: OnceLock<Arc<Routes>>,
    pool: OnceLock<PoolUse>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Serving")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    app: Arc<str>,
    sha256: String,
    mode: &'static str,
    compiler: &'static str,
}

impl Collector for Serving {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(pool) = self.pool.get() {
            encode_pool(pool, &mut encoder)?;
        }
        let Some(routes) = self.routes.get() else {
            return Ok(());
        };
        let table = routes.load();
        let apps: Vec<&Arc<App>> = table.mounts().map(|(_, app)| app).collect();
        for (name, help, value) in PER_APP {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for app in &apps {
                let label = AppLabel {
                    app: app.route.clone(),
                };
                ConstGauge::new(value(app) as i64).encode(family.encode_family(&label)?)?;
            }
        }
        encode_held_back(&apps, &mut encoder)?;
        encode_versions(&apps, &mut encoder)
    }
}

/// The gauges read from each app at scrape time: name, help, reading.
type PerApp = (&'static str, &'static str, fn(&App) -> u64);

const PER_APP: &[PerApp] = &[
    (
        "instances_live",
        "Instances alive (idle, spare or serving), by app.",
        |app| app.instances.live() as u64,
    ),
    (
        "instance_memory_bytes",
        "Guest linear memory the app's live instances hold, in bytes.",
        |app| app.instances.memory_used(),
    ),
    (
        "instances_idle",
        "Instances instantiated and waiting for a request (spares included), by app.",
        |app| app.instances.idle() as u64,
    ),
    (
        "instances_spares_target",
        "How many idle instances the app keeps ready ahead of requests.",
        |app| app.instances.spares() as u64,
    ),
    (
        "requests_running",
        "Requests holding one of the app's places to run (in a guest now).",
        |app| u64::from(app.admission.running()),
    ),
    (
        "requests_queued",
        "Requests waiting for one of the app's places to run.",
        |app| u64::from(app.admission.queued()),
    ),
    (
        "request_clients",
        "Client addresses with a request running or waiting in the app.",
        |app| app.admission.clients() as u64,
    ),
];

/// The pooling allocator's slots and what wasmtime's pools hold.
fn encode_pool(pool: &PoolUse, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    gauge(
        encoder,
        "pool_slots",
        "Instance slots of the pooling allocator, all apps together.",
        pool.total,
    )?;
    gauge(
        encoder,
        "pool_slots_in_use",
        "Instance slots held by live instances (idle, spare or serving).",
        (pool.in_use)(),
    )?;
    let totals = pool.engines.pool_totals();
    gauge(
        encoder,
        "pool_component_instances",
        "Component instances wasmtime's pooling allocators hold, all apps together.",
        totals.component_instances,
    )?;
    gauge(
        encoder,
        "pool_memories",
        "Linear memories wasmtime's pooling allocators hold, all apps together.",
        totals.memories,
    )?;
    gauge(
        encoder,
        "pool_warm_memories",
        "Memory slots kept warm for reuse, not yet returned to the kernel.",
        totals.warm_memories,
    )?;
    let warm = ConstGauge::new(totals.warm_memory_bytes as i64);
    warm.encode(encoder.encode_descriptor(
        "pool_warm_memory",
        "Resident bytes in the memory slots kept warm for reuse.",
        Some(&Unit::Bytes),
        warm.metric_type(),
    )?)
}

/// Requests held back by the per-client bound, by app.
fn encode_held_back(
    apps: &[&Arc<App>],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let mut held_back = encoder.encode_descriptor(
        "requests_held_back",
        "Requests that waited because their client address had its share of the app \
         (max_per_client) in already, by app; counted from the app's last reload.",
        None,
        MetricType::Counter,
    )?;
    for app in apps {
        let label = AppLabel {
            app: app.route.clone(),
        };
        let count = app.admission.held_back.load(Ordering::Relaxed);
        ConstCounter::new(count).encode(held_back.encode_family(&label)?)?;
    }
    Ok(())
}

/// The version each app serves, as labels of a constant 1.
fn encode_versions(
    apps: &[&Arc<App>],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let mut version = encoder.encode_descriptor(
        "app_version",
        "The version each app serves: its component's SHA-256, mode and compiler (value 1).",
        None,
        MetricType::Gauge,
    )?;
    for app in apps {
        let labels = VersionLabels {
            app: app.route.clone(),
            sha256: app.digest.hex(),
            mode: match app.instances.mode() {
                Mode::Fresh => "fresh",
                Mode::Reuse(_) => "reuse",
            },
            compiler: app.compiler.name(),
        };
        ConstGauge::new(1i64).encode(version.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value as i64);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// The process's own numbers, named as Prometheus's client libraries name
/// them (`process_*`), read from `/proc/self` when scraped.
#[derive(Debug, Default)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stat) = ProcessStat::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stat.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time spent.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size.",
                stat.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size (the instance pool reserves much of it).",
                stat.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch.",
                stat.start_time,
            ),
            (
                "process_open_fds",
                "Open file descriptors.",
                stat.open_fds as f64,
            ),
            (
                "process_max_fds",
                "The limit on open file descriptors.",
                stat.max_fds as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

struct ProcessStat {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time: f64,
    open_fds: usize,
    max_fds: u64,
}

impl ProcessStat {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which is in parentheses and may
        // hold spaces: field 3 (state) is the first here.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            0
        };
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            resident_bytes: field(24)? * page,
            virtual_bytes: field(23)?,
            start_time: boot as f64 + field(22)? as f64 / ticks,
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count()),
            max_fds,
        })
    }
}
