//! The live status page's data (`/status.json` on the admin listener): each
//! app's version and mode, its request rate, p50 and p99, errors and
//! instances now, its requests per second over the last minutes (the
//! sparkline), and the last faults and reloads. A task samples every app's
//! counts once a second; rates and percentiles are differences between
//! samples, the same numbers Prometheus would compute from `/metrics`.

use crate::config::Mode;
use crate::http::router::Routes;
use crate::telemetry::request_metrics::{Counts, DURATION_BUCKETS};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Samples kept per app: one a second, five minutes.
const KEPT: usize = 300;
/// The window of the rate, the percentiles and the error count.
const WINDOW: usize = 60;

/// One app's counts at one second.
#[derive(Default)]
struct Sample {
    requests: u64,
    errors: u64,
    /// Requests per duration bucket, cumulative since the start.
    buckets: Vec<u64>,
}

/// The samples of every app, and what they are read with.
pub struct Status {
    counts: &'static Counts,
    routes: OnceLock<Arc<Routes>>,
    started: Instant,
    samples: Mutex<HashMap<Arc<str>, VecDeque<Sample>>>,
}

impl Status {
    /// Starts sampling `counts` on a task that ends with the runtime.
    pub fn start(counts: &'static Counts) -> Arc<Status> {
        let status = Arc::new(Status {
            counts,
            routes: OnceLock::new(),
            started: Instant::now(),
            samples: Mutex::new(HashMap::new()),
        });
        let sampler = status.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                sampler.sample();
            }
        });
        status
    }

    /// From now on, the page shows the apps of `routes`.
    pub fn serve(&self, routes: Arc<Routes>) {
        let _ = self.routes.set(routes);
    }

    fn sample(&self) {
        let apps = self.counts.apps();
        let mut samples = self.samples.lock();
        for app in apps {
            let snapshot = app.snapshot();
            let sample = Sample {
                requests: snapshot.count,
                errors: snapshot
                    .requests
                    .iter()
                    .filter(|(_, class, _)| *class == "5xx")
                    .map(|(_, _, n)| n)
                    .sum(),
                buckets: snapshot.buckets.iter().map(|(_, n)| *n).collect(),
            };
            let kept = samples.entry(app.route().clone()).or_default();
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(sample);
        }
    }

    /// The page's data now.
    pub fn json(&self) -> String {
        let samples = self.samples.lock();
        let mut apps = Vec::new();
        if let Some(routes) = self.routes.get() {
            for (route, app) in routes.load().mounts() {
                let kept = samples.get(route);
                let mut entry = window(kept);
                entry["app"] = json!(&**route);
                entry["version"] = json!(app.digest.to_string());
                entry["mode"] = json!(match app.instances.mode() {
                    Mode::Fresh => "fresh".to_string(),
                    Mode::Reuse(uses) => format!("reuse ≤ {uses}"),
                });
                entry["compiler"] = json!(format!("{:?}", app.compiler).to_lowercase());
                entry["instances_idle"] = json!(app.instances.idle());
                entry["running"] = json!(app.admission.running());
                entry["queued"] = json!(app.admission.queued());
                apps.push(entry);
            }
        }
        let events: Vec<Value> = self
            .counts
            .events()
            .into_iter()
            .rev()
            .map(|event| json!({"at": event.at, "app": &*event.app, "what": event.what}))
            .collect();
        json!({
            "uptime_seconds": self.started.elapsed().as_secs(),
            "apps": apps,
            "events": events,
        })
        .to_string()
    }
}

/// Rate, percentiles and errors over the last [`WINDOW`] seconds, and the
/// requests of each second kept (oldest first).
fn window(kept: Option<&VecDeque<Sample>>) -> Value {
    let empty = VecDeque::new();
    let kept = kept.unwrap_or(&empty);
    let per_second: Vec<u64> = kept
        .iter()
        .zip(kept.iter().skip(1))
        .map(|(before, after)| after.requests.saturating_sub(before.requests))
        .collect();
    let none = Sample::default();
    // The sample a window back (or the oldest kept), and the newest.
    let first = kept
        .get(kept.len().saturating_sub(WINDOW + 1))
        .unwrap_or(&none);
    let last = kept.back().unwrap_or(&none);
    let seconds = (kept.len().saturating_sub(1)).clamp(1, WINDOW) as f64;
    // The rate of the last five seconds: what "now" means on the page.
    let recent = per_second.iter().rev().take(5);
    let recent_seconds = per_second.len().clamp(1, 5) as f64;
    let in_window: Vec<u64> = last
        .buckets
        .iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(first.buckets.get(i).copied().unwrap_or(0)))
        .collect();
    json!({
        "requests_total": last.requests,
        "rate": recent.sum::<u64>() as f64 / recent_seconds,
        "window_seconds": seconds,
        "errors": last.errors.saturating_sub(first.errors),
        "p50_ms": quantile(&in_window, 0.5),
        "p99_ms": quantile(&in_window, 0.99),
        "per_second": per_second,
    })
}

/// The upper bound of the bucket holding quantile `q`, in milliseconds (as
/// coarse as `/metrics`' buckets: 0.1, 0.25, 0.5, 1 ms, …), or null with no
/// requests; past the last bound, the last bound.
fn quantile(buckets: &[u64], q: f64) -> Value {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return Value::Null;
    }
    let rank = (q * total as f64).ceil() as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let bound = DURATION_BUCKETS
                .get(i)
                .or(DURATION_BUCKETS.last())
                .copied()
                .unwrap_or_default();
            return json!(bound * 1000.0);
        }
    }
    Value::Null
}
