//! An app's `wasi:keyvalue` buckets: the ones its grant names, each on its
//! store (`memory_store`, `redis_store`), opened by name; a name it was not
//! granted is refused, and the refusal logged once with the grant to add.
//! Every operation is counted for `/metrics` by bucket, never by key.

use crate::config::stores::DEFAULT_BUCKET;
use crate::config::{KeyValueGrant, StoreTarget};
use crate::grants::egress::Egress;
use crate::grants::memory_store::MemoryStore;
use crate::grants::redis_store::RedisStore;
use crate::grants::store::{Store, StoreError};
use crate::telemetry::request_metrics::{self, KeyValueMetrics};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// A bucket an instance opened: its store, and what counts its use.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn Store>,
    metrics: Option<KeyValueMetrics>,
}

impl Bucket {
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Awaits `op`, an operation on this bucket's store, counting it in
    /// `/metrics` as `name`.
    pub async fn run<T>(
        &self,
        name: &'static str,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = op.await;
        if let Some(metrics) = &self.metrics {
            metrics.done(name, result.is_ok(), started.elapsed());
        }
        result
    }
}

/// The buckets of one app.
pub struct Buckets {
    route: String,
    granted: BTreeMap<String, Bucket>,
    /// Names already logged as refused, so each is logged once.
    told: Mutex<HashSet<String>>,
}

/// Refusals remembered per app; past this, each is logged at the rate
/// `limited!` allows.
const REMEMBERED: usize = 256;

impl Buckets {
    /// The app's granted buckets on their stores: its own memory stores are
    /// found again by route, so a reload keeps their keys.
    pub fn new(route: &str, grant: &KeyValueGrant, egress: &Arc<Egress>) -> Self {
        let counts = request_metrics::get();
        let granted = grant
            .buckets
            .iter()
            .map(|(name, target)| {
                let (store, kind): (Arc<dyn Store>, &'static str) = match target {
                    StoreTarget::Memory { shared } => (
                        MemoryStore::find(route, name, shared.as_deref(), grant.memory_limit),
                        "memory",
                    ),
                    StoreTarget::Redis(redis) => (
                        Arc::new(RedisStore::new(route, name, redis, egress.clone())),
                        "redis",
                    ),
                };
                let metrics = counts.map(|counts| counts.keyvalue(route, name, kind));
                (name.clone(), Bucket { store, metrics })
            })
            .collect();
        Self {
            route: route.to_string(),
            granted,
            told: Mutex::new(HashSet::new()),
        }
    }

    /// The bucket a guest opens as `name`; `""` is the default one, as
    /// `wasmtime serve` names it.
    pub fn open(&self, name: &str) -> Result<Bucket, StoreError> {
        let name = if name.is_empty() {
            DEFAULT_BUCKET
        } else {
            name
        };
        if let Some(bucket) = self.granted.get(name) {
            return Ok(bucket.clone());
        }
        self.tell_once(name);
        Err(StoreError::Denied)
    }

    fn tell_once(&self, name: &str) {
        let first = {
            let mut told = self.told.lock();
            if told.len() < REMEMBERED {
                told.insert(name.to_string())
            } else {
                !told.contains(name)
            }
        };
        if first {
            let shown = crate::telemetry::log_rate::clip(name);
            let entry = if self.granted.is_empty() {
                format!(
                    "keyvalue = {{ {shown} = \"memory\" }} to its [[app]] (or --keyvalue {shown}=memory)"
                )
            } else {
                format!("{shown} = \"memory\" to its keyvalue table (or --keyvalue {shown}=memory)")
            };
            crate::limited!(
                warn,
                "[{}] keyvalue bucket {shown:?} denied: the app is not granted it; to allow it add {entry}",
                self.route
            );
        }
    }
}
