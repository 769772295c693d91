//! Loading an app: read a `.wasm` file, make sure it is a component that
//! exports `wasi:http/incoming-handler`, compile it and pre-instantiate it
//! against the host's linker. Every failure names the file and says what to do.

use crate::config::Mount;
use crate::guest::admission::Admission;
use crate::guest::compile_cache::{Built, Digest};
use crate::guest::engine::{Compiler, Engines, QUICK_FIRST_FROM, Reset, World};
use crate::guest::instances::{Instances, Pool};
use crate::telemetry::request_metrics::{self, AppMetrics};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime_wasi_http::handler::ProxyPre;

/// The interface every app must export, without its version: any 0.2.x
/// release is accepted.
const HANDLER_EXPORT: &str = "wasi:http/incoming-handler@0.2";

/// A component ready to serve: compiled, linked and pre-instantiated.
pub struct App {
    /// The URL prefix the app is mounted at; names the app in logs.
    pub route: Arc<str>,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Where each request's instance comes from, and where it goes after.
    pub instances: Arc<Instances>,
    /// Places for its requests to run and to wait.
    pub admission: Admission,
    /// Size of the file, for the startup report.
    pub size: u64,
    /// SHA-256 of the file: tells a real change from a rewrite of the same
    /// bytes, and names the version in logs.
    pub digest: Digest,
    /// How long compiling (or loading from the cache) and linking took, for
    /// the startup report.
    pub compile_time: Duration,
    /// Compiled now, or loaded from the compile cache.
    pub built: Built,
    /// Which compiler built the code it runs.
    pub compiler: Compiler,
    /// Its request counts, found on its first request when metrics are on.
    pub metrics: OnceLock<Arc<AppMetrics>>,
}

impl App {
    /// The same compiled component with new instances (none of this one's)
    /// and `mount`'s settings: nothing is compiled.
    pub fn renewed(&self, mount: &Mount) -> Result<App> {
        let limits = mount.limits;
        Ok(App {
            route: mount.route.clone(),
            path: mount.component.clone(),
            instances: Arc::new(self.instances.renewed(mount)?),
            admission: admission(&limits),
            size: self.size,
            digest: self.digest,
            compile_time: Duration::ZERO,
            built: self.built,
            compiler: self.compiler,
            metrics: OnceLock::new(),
        })
    }
}

/// Where an app's requests run and wait.
fn admission(limits: &crate::config::Limits) -> Admission {
    Admission::new(
        limits.concurrency,
        limits.queue,
        limits
            .max_per_client
            .unwrap_or_else(|| crate::guest::admission::default_share(limits.concurrency)),
    )
}

/// What the first eight bytes of a file say it is.
#[derive(Debug, PartialEq, Eq)]
enum WasmKind {
    Component,
    CoreModule,
    NotWasm,
}

fn sniff(bytes: &[u8]) -> WasmKind {
    match bytes {
        [0x00, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00, ..] => WasmKind::CoreModule,
        [0x00, b'a', b's', b'm', _, _, 0x01, 0x00, ..] => WasmKind::Component,
        _ => WasmKind::NotWasm,
    }
}

/// Reads, validates and compiles the component mounted by `mount`.
/// Blocking: compiling takes from tens of milliseconds to seconds, so call it
/// off the async runtime's threads.
pub fn load(engines: &Engines, mount: &Mount, tier: Tier, pool: &Pool) -> Result<App> {
    let started = Instant::now();
    let bytes = read(&mount.component)?;
    let version = Version {
        digest: Digest::of(&bytes),
        bytes: &bytes,
        started,
    };
    compile(engines, mount, version, tier, pool)
}

/// The contents of a component file, read since `started`.
pub struct Version<'a> {
    pub bytes: &'a [u8],
    pub digest: Digest,
    pub started: Instant,
}

/// The bytes of a component file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Which compiler `compile` may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Winch for a large component with no Cranelift build cached, so it
    /// serves within seconds; the caller then runs `reload::optimise`.
    QuickFirst,
    /// Cranelift.
    Final,
}

/// Refuses what is not a component, saying what it is instead.
fn require_component(bytes: &[u8], path: &Path) -> Result<()> {
    let shown = path.display();
    match sniff(bytes) {
        WasmKind::Component => Ok(()),
        WasmKind::CoreModule => bail!(
            "{shown} is a core WebAssembly module, not a component; build it for the \
             wasm32-wasip2 target (`cargo build --target wasm32-wasip2`) or wrap it with \
             `wasm-tools component new`"
        ),
        WasmKind::NotWasm => bail!(
            "{shown} is not a WebAssembly file (it does not start with the `\\0asm` magic \
             bytes); pass the .wasm component your toolchain built"
        ),
    }
}

/// Refuses a component that does not export the HTTP handler, naming what
/// it exports instead.
fn require_handler_export(component: &Component, engine: &Engine, path: &Path) -> Result<()> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if exports.iter().any(|name| name.starts_with(HANDLER_EXPORT)) {
        return Ok(());
    }
    let found = if exports.is_empty() {
        "nothing".to_string()
    } else {
        exports.join(", ")
    };
    bail!(
        "{} does not export wasi:http/incoming-handler (it exports {found}); \
         build it for the wasi:http/proxy world",
        path.display()
    );
}

/// Validates and compiles `version` of `mount`'s file. Blocking, like
/// [`load`].
pub fn compile(
    engines: &Engines,
    mount: &Mount,
    version: Version,
    tier: Tier,
    pool: &Pool,
) -> Result<App> {
    let Version {
        bytes,
        digest,
        started,
    } = version;
    let path = &mount.component;
    let shown = path.display();
    require_component(bytes, path)?;

    let reset = Reset::for_component(bytes);
    let world = World::of_component(bytes);
    let mut engine = engines.get(reset, Compiler::Cranelift, world)?;
    let mut compiler = Compiler::Cranelift;
    // Winch is kept to 0.2 components: the async component model's code
    // has not been tried with it here.
    if tier == Tier::QuickFirst
        && world == World::Http02
        && bytes.len() >= QUICK_FIRST_FROM
        && !engines.cached(&engine, &digest)
    {
        compiler = Compiler::Winch;
        engine = engines.get(reset, compiler, world)?;
    }
    let engine = &engine;
    let linker = crate::guest::linker::linker(engine, world)?;
    let t_prepared = started.elapsed();
    let (component, built) = engines
        .compile(engine, compiler, bytes, &digest)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{shown} is not a valid component"))?;

    let t_compiled = started.elapsed();
    request_metrics::compiled(
        compiler.name(),
        built == Built::Cached,
        t_compiled.saturating_sub(t_prepared),
    );
    if world == World::Http02 {
        require_handler_export(&component, engine, path)?;
    }

    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!("{shown} needs an import wasmhost does not provide (it serves WASI 0.2 and 0.3, wasi:http 0.2 and 0.3)")
        })?;
    let pre = match world {
        World::Http02 => wasmtime_wasi_http::p2::bindings::ProxyPre::new(instance_pre)
            .map(ProxyPre::P2)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!("{shown} exports wasi:http/incoming-handler with the wrong type")
            })?,
        World::Http03 => wasmtime_wasi_http::p3::bindings::ServicePre::new(instance_pre)
            .map(ProxyPre::P3)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{shown} exports wasi:http/handler with the wrong type"))?,
    };

    tracing::debug!(
        "{shown}: engine and linker ready at {t_prepared:?}, {built:?} at {t_compiled:?}, linked at {:?}",
        started.elapsed()
    );
    let limits = mount.limits;
    Ok(App {
        route: mount.route.clone(),
        path: path.to_path_buf(),
        instances: Arc::new(Instances::new(
            pre,
            engine.clone(),
            reset,
            mount,
            pool.clone(),
        )?),
        admission: admission(&limits),
        size: bytes.len() as u64,
        digest,
        compile_time: started.elapsed(),
        built,
        compiler,
        metrics: OnceLock::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_components_from_modules_and_other_files() {
        let cases: [(&[u8], WasmKind); 5] = [
            (b"\0asm\x0d\x00\x01\x00rest", WasmKind::Component),
            (b"\0asm\x01\x00\x00\x00rest", WasmKind::CoreModule),
            (b"\0asm", WasmKind::NotWasm),
            (b"(module)", WasmKind::NotWasm),
            (b"", WasmKind::NotWasm),
        ];
        for (bytes, expected) in cases {
            assert_eq!(sniff(bytes), expected, "{bytes:?}");
        }
    }
}
