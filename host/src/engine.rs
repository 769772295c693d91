//! The one wasmtime `Engine` of the process: Cranelift, async calls, epoch
//! interruption and the pooling instance allocator, tuned so that a fresh
//! instance per request is cheap.

use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A request that computes without calling the
/// host yields back to the runtime at this interval, so one busy guest cannot
/// pin a worker thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Sizes of the instance pool. The defaults fit both a 75 KB Rust component
/// and an 18 MB componentize-py one (about ten core instances, large tables).
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    /// Component instances alive at once, across all apps: the most requests
    /// that can be inside guests at the same moment.
    pub instances: u32,
    /// Core instances (and so memories and tables) one component may contain.
    pub core_per_component: u32,
    /// Elements in one table; libpython's function table needs tens of thousands.
    pub table_elements: usize,
}

impl Default for PoolSize {
    fn default() -> Self {
        Self {
            instances: 1000,
            core_per_component: 32,
            table_elements: 100_000,
        }
    }
}

/// How instances get their memory. `OnDemand` is the fallback when the
/// pool's address-space reservation fails (e.g. under `ulimit -v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    Pooling,
    OnDemand,
}

/// Builds the engine, preferring the pooling allocator and falling back to
/// on-demand allocation with one warning.
pub fn build(pool: PoolSize) -> Result<(Engine, Allocation)> {
    match Engine::new(&config(Some(pool))) {
        Ok(engine) => Ok((engine, Allocation::Pooling)),
        Err(error) => {
            tracing::warn!(
                "cannot reserve address space for the instance pool ({error:#}); \
                 falling back to on-demand allocation, which is slower per request. \
                 Raise `ulimit -v` to get pooling back"
            );
            let engine = Engine::new(&config(None))
                .map_err(anyhow::Error::from)
                .context("creating the WebAssembly engine")?;
            Ok((engine, Allocation::OnDemand))
        }
    }
}

fn config(pool: Option<PoolSize>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Every call goes through `call_async` on a fresh store; the concurrent
    // (component-model-async) machinery would only add per-store setup cost.
    config.concurrency_support(false);
    if let Some(pool) = pool {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(pool)));
    }
    config
}

fn pooling(size: PoolSize) -> PoolingAllocationConfig {
    let per_component = size.core_per_component;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(size.instances)
        .total_core_instances(size.instances.saturating_mul(per_component))
        .total_memories(size.instances.saturating_mul(2))
        .total_tables(size.instances.saturating_mul(per_component))
        .total_stacks(size.instances)
        .max_core_instances_per_component(per_component)
        .max_memories_per_component(per_component)
        .max_tables_per_component(per_component)
        .max_tables_per_module(4)
        .table_elements(size.table_elements)
        // The VM contexts are heap allocations checked against these caps,
        // not reservations: generous caps cost nothing.
        .max_component_instance_size(16 << 20)
        .max_core_instance_size(16 << 20)
        // Resetting a slot with memset instead of madvise keeps its pages
        // resident, so the next request on the slot takes no page faults.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 20)
        // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), reset only the
        // pages the last instance actually touched.
        .pagemap_scan(Enabled::Auto);
    pool
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a plain thread, until
/// dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawning a thread at startup succeeds");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
