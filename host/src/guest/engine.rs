//! The wasmtime engines of the process: Cranelift, async calls, epoch
//! interruption and the pooling instance allocator, tuned so that a fresh
//! instance per request is cheap. There is one engine per way of resetting a
//! pool slot's memory (see [`Reset`]), built the first time an app needs it.

use crate::allocator;
use crate::guest::compile_cache::{Built, Cache, Digest};
use anyhow::{Context, Result};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy,
};

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

/// How a pool slot's linear memory goes back to the component's initial
/// image when a request's instance ends. wasmtime sets this per engine, and
/// no one choice suits every guest, so each choice gets its own engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reset {
    /// Ask the kernel (PAGEMAP_SCAN) which pages the instance wrote and copy
    /// back only those. Cheapest for compiled guests, which write a handful
    /// of pages per request.
    Scan,
    /// Copy the whole memory back. For interpreters shipped with a snapshot
    /// of their heap (componentize-py, componentize-js): a request writes
    /// hundreds of pages scattered over the snapshot, more regions than
    /// wasmtime's scan tracks (32), so the rest went back to copy-on-write and
    /// every request re-took ~200 page faults, each flushing the TLB of every
    /// core. Measured on the Python hello, 16 connections: 390 → 686 req/s.
    Copy,
}

/// Initial memory images at least this large get [`Reset::Copy`]. CPython's
/// snapshot is ~11 MiB; compiled guests carry kilobytes.
const COPY_RESET_FROM: usize = 4 << 20;

/// Bytes of memory kept resident (and copied back) per slot with
/// [`Reset::Copy`]; memory beyond it is released to the kernel after each
/// request.
const COPY_KEEP_RESIDENT: usize = 64 << 20;

impl Reset {
    /// Chooses by the size of the component's data segments, the initial
    /// contents of its memories. Bytes that do not parse get `Scan`; the
    /// compiler reports what is wrong with them.
    pub fn for_component(bytes: &[u8]) -> Reset {
        let mut data = 0usize;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload {
                Ok(wasmparser::Payload::DataSection(section)) => {
                    for segment in section.into_iter().flatten() {
                        data += segment.data.len();
                    }
                }
                Ok(_) => {}
                Err(_) => return Reset::Scan,
            }
        }
        if data >= COPY_RESET_FROM {
            Reset::Copy
        } else {
            Reset::Scan
        }
    }
}

/// Which compiler an engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compiler {
    /// Optimising: the code every app serves with in the end.
    Cranelift,
    /// Baseline: compiles an 18 MB componentize-py guest in ~1.8 s where
    /// Cranelift takes ~6-8 s on this 2-core machine, into slower code. A
    /// large component serves with it first, then with Cranelift's build
    /// (see `reload::optimise`).
    Winch,
}

impl Compiler {
    /// As metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Compiler::Cranelift => "cranelift",
            Compiler::Winch => "winch",
        }
    }
}

/// Components at least this large are compiled with Winch first when no
/// Cranelift build of them is cached. Smaller ones compile with Cranelift
/// in well under a second (the Rust hello: ~60 ms).
pub const QUICK_FIRST_FROM: usize = 4 << 20;

/// Which wasi:http a component serves, read from its exports before it is
/// compiled: a WASI 0.3 one needs an engine with the component model's
/// async features, which a 0.2 one is better off without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// `wasi:http/incoming-handler@0.2`
    Http02,
    /// `wasi:http/handler@0.3`
    Http03,
}

impl World {
    /// The world of the component in `bytes`: 0.3 if its top level exports
    /// `wasi:http/handler@0.3.*`, else 0.2 (whose check, and its error,
    /// come once it is compiled). Reads the export names only, without
    /// validating: a 0.3 component does not validate without the async
    /// features, and telling is what picks them.
    pub fn of_component(bytes: &[u8]) -> World {
        let mut depth = 0usize;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload {
                Ok(wasmparser::Payload::Version { .. }) => depth += 1,
                Ok(wasmparser::Payload::End(_)) => depth = depth.saturating_sub(1),
                Ok(wasmparser::Payload::ComponentExportSection(exports)) if depth == 1 => {
                    let p3 = exports
                        .into_iter()
                        .flatten()
                        .any(|export| export.name.name.starts_with(HANDLER_03));
                    if p3 {
                        return World::Http03;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        World::Http02
    }
}

/// The export a WASI 0.3 HTTP component serves from.
pub const HANDLER_03: &str = "wasi:http/handler@0.3";

/// What wasmtime's pooling allocators report, over all engines.
#[derive(Debug, Default, Clone, Copy)]
pub struct PoolTotals {
    /// Component instances allocated now.
    pub component_instances: u64,
    /// Linear memories allocated now.
    pub memories: u64,
    /// Memory slots left warm (not returned to the kernel) for reuse.
    pub warm_memories: u64,
    /// Resident bytes in those slots.
    pub warm_memory_bytes: u64,
}

/// The process's engines, one per `Reset`, `Compiler` and `World`,
/// each built on first use. They share nothing but the pool sizes: a component compiled
/// by one cannot be instantiated by another.
pub struct Engines {
    pool: PoolSize,
    cache: Option<Cache>,
    built: Mutex<HashMap<(Reset, Compiler, World), Engine>>,
    /// The fallback warning is printed once, not once per engine.
    warned: AtomicBool,
}

impl Engines {
    pub fn new(pool: PoolSize, cache: Option<Cache>) -> Self {
        Self {
            pool,
            cache,
            built: Mutex::new(HashMap::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// The engine for `reset`, `compiler` and `world`, building it if no
    /// app has needed it yet.
    pub fn get(&self, reset: Reset, compiler: Compiler, world: World) -> Result<Engine> {
        let mut built = self.built.lock();
        if let Some(engine) = built.get(&(reset, compiler, world)) {
            return Ok(engine.clone());
        }
        let (engine, allocation) = self.build(reset, compiler, world)?;
        tracing::debug!(
            ?reset,
            ?compiler,
            ?world,
            ?allocation,
            instances = self.pool.instances,
            "engine built"
        );
        built.insert((reset, compiler, world), engine.clone());
        Ok(engine)
    }

    /// Compiles `bytes` for `engine`, through the compile cache if there is
    /// one. Winch builds are not cached: they serve only until Cranelift's
    /// build, which is, is ready.
    pub fn compile(
        &self,
        engine: &Engine,
        compiler: Compiler,
        bytes: &[u8],
        digest: &Digest,
    ) -> wasmtime::Result<(Component, Built)> {
        match (&self.cache, compiler) {
            (Some(cache), Compiler::Cranelift) => cache.component(engine, bytes, digest),
            _ => Ok((Component::new(engine, bytes)?, Built::Compiled)),
        }
    }

    /// Whether the cache holds a build of `digest` for `engine`.
    pub fn cached(&self, engine: &Engine, digest: &Digest) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|cache| cache.contains(engine, digest))
    }

    /// What the pooling allocators of every engine hold now, summed.
    pub fn pool_totals(&self) -> PoolTotals {
        let mut totals = PoolTotals::default();
        for metrics in self
            .built()
            .iter()
            .filter_map(Engine::pooling_allocator_metrics)
        {
            totals.component_instances += metrics.component_instances();
            totals.memories += metrics.memories() as u64;
            totals.warm_memories += u64::from(metrics.unused_warm_memories());
            totals.warm_memory_bytes += metrics.unused_memory_bytes_resident() as u64;
        }
        totals
    }

    /// Every engine built so far.
    fn built(&self) -> Vec<Engine> {
        self.built.lock().values().cloned().collect()
    }

    /// Prefers the pooling allocator and falls back to on-demand allocation
    /// with one warning.
    fn build(
        &self,
        reset: Reset,
        compiler: Compiler,
        world: World,
    ) -> Result<(Engine, Allocation)> {
        match Engine::new(&config(compiler, world, Some((self.pool, reset)))) {
            Ok(engine) => Ok((engine, Allocation::Pooling)),
            Err(error) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "cannot reserve address space for the instance pool ({error:#}); \
                         falling back to on-demand allocation, which is slower per request. \
                         Raise `ulimit -v` to get pooling back"
                    );
                }
                let engine = Engine::new(&config(compiler, world, None))
                    .map_err(anyhow::Error::from)
                    .context("creating the WebAssembly engine")?;
                Ok((engine, Allocation::OnDemand))
            }
        }
    }
}

fn config(compiler: Compiler, world: World, pool: Option<(PoolSize, Reset)>) -> Config {
    let mut config = Config::new();
    config.strategy(match compiler {
        Compiler::Cranelift => Strategy::Cranelift,
        Compiler::Winch => Strategy::Winch,
    });
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // A 0.2 call goes through `call_async` on a fresh store; the concurrent
    // (component-model-async) machinery would only add per-store setup
    // cost. A 0.3 component is made of it.
    match world {
        World::Http02 => {
            config.concurrency_support(false);
        }
        World::Http03 => {
            config.wasm_component_model_async(true);
            config.concurrency_support(true);
        }
    }
    if let Some((size, reset)) = pool {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(size, reset)));
    }
    config
}

fn pooling(size: PoolSize, reset: Reset) -> PoolingAllocationConfig {
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
        .max_core_instance_size(16 << 20);
    match reset {
        Reset::Scan => {
            // Resetting the written pages with memcpy instead of madvise
            // keeps them resident, so the next request on the slot takes no
            // page faults; PAGEMAP_SCAN (Linux 6.7+) finds those pages.
            pool.linear_memory_keep_resident(1 << 20)
                .table_keep_resident(1 << 20)
                .pagemap_scan(Enabled::Auto);
        }
        Reset::Copy => {
            // Without the scan, wasmtime copies back the first
            // keep-resident bytes whole.
            pool.linear_memory_keep_resident(COPY_KEEP_RESIDENT)
                .table_keep_resident(COPY_KEEP_RESIDENT)
                .pagemap_scan(Enabled::No);
        }
    }
    pool
}

/// Runs `compile` on the background compiler threads: as many as the
/// machine has cores, at the lowest CPU priority (`SCHED_IDLE`), so they
/// take only time nothing else wants. wasmtime compiles a component's
/// functions in parallel on the rayon pool it is called from, so a
/// Cranelift build started here stays here. A reload's quick build, a
/// startup's, and requests, all at normal priority, go first: a newer
/// version never waits for the optimised build of the one it replaces
/// (an 18 MB guest's Cranelift build takes both cores for ~8 s).
pub fn in_background<T: Send>(compile: impl FnOnce() -> T + Send) -> T {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|n| format!("wasmhost-background-compile-{n}"))
            .start_handler(|_| lowest_priority())
            .build()
            .inspect_err(|error| {
                tracing::warn!(
                    "no background compiler threads ({error}); compiling at normal priority"
                )
            })
            .ok()
    });
    match pool {
        Some(pool) => {
            let built = pool.install(compile);
            // Its threads may now sleep until the next build, holding what
            // the build allocated.
            pool.broadcast(|_| allocator::give_back_all());
            built
        }
        None => compile(),
    }
}

/// Puts the calling thread at the lowest CPU priority.
fn lowest_priority() {
    // SAFETY: an all-zero sched_param is valid (priority 0, as SCHED_IDLE
    // requires; musl's has more fields than glibc's).
    let param: libc::sched_param = unsafe { std::mem::zeroed() };
    // SAFETY: plain system calls on the calling thread (pid 0) with a valid
    // parameter; they change nothing but its scheduling. The system call
    // itself, not libc's wrapper: musl's refuses with ENOSYS by design.
    unsafe {
        let set = libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_IDLE,
            &param as *const libc::sched_param,
        );
        if set != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
    }
}

/// Advances the epoch of every built engine every [`EPOCH_TICK`] on a plain
/// thread, until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engines: Arc<Engines>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in engines.built() {
                            engine.increment_epoch();
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A core module with one memory and one data segment of `len` bytes.
    fn module_with_data(len: usize) -> Vec<u8> {
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend([5, 3, 1, 0, 64]); // memory section: one memory, 64 pages
        let mut data = vec![1, 0, 0x41, 0, 0x0b]; // one active segment at 0
        leb(len, &mut data);
        data.resize(data.len() + len, 0xaa);
        wasm.push(11);
        leb(data.len(), &mut wasm);
        wasm.extend(data);
        wasm
    }

    #[test]
    fn large_memory_images_are_reset_by_copying() {
        assert_eq!(
            Reset::for_component(&module_with_data(4 << 20)),
            Reset::Copy
        );
        assert_eq!(
            Reset::for_component(&module_with_data(64 << 10)),
            Reset::Scan
        );
    }

    #[test]
    fn the_rust_hello_component_is_reset_by_scanning() {
        let hello = include_bytes!("../../../guest-examples/rust-hello/hello.wasm");
        assert_eq!(Reset::for_component(hello), Reset::Scan);
    }

    #[test]
    fn unparsable_bytes_get_the_default() {
        assert_eq!(Reset::for_component(b"not wasm"), Reset::Scan);
    }
}
