//! `wasmhost check`: everything `serve` validates, nothing it serves; and
//! what `serve` shares with it: the compile cache the flags ask for, loading
//! every mount, and the line that describes a loaded app.

use crate::config::cli::Source;
use crate::config::{self, Mount};
use crate::guest::app::{self, App, Tier};
use crate::guest::compile_cache::{Built, Cache};
use crate::guest::engine::{Compiler, Engines, PoolSize};
use crate::guest::instances::Pool;
use crate::guest::limits::MemoryBudget;
use anyhow::{Result, anyhow};

/// `wasmhost check`: everything `serve` validates, nothing it serves. The
/// report to print: the route table and a last `ok` line.
pub fn check(source: Source) -> Result<String> {
    let mounts = config::for_check(&source)?;
    let pool = PoolSize::default();
    let engines = Engines::new(pool, compile_cache(&source)?);
    // Final builds: nothing is served, and the cache is warm for `serve`.
    let unbounded = Pool::new(pool.instances, MemoryBudget::new(u64::MAX));
    let apps = load_all(&engines, &mounts, Tier::Final, &unbounded)?;
    let mut report: String = apps.iter().map(|app| describe(app) + "\n").collect();
    report += &format!("ok: {} app(s) valid\n", apps.len());
    Ok(report)
}

/// The compile cache the flags ask for. A directory given with --cache-dir
/// must work; the default one is skipped with a warning if it does not.
pub(super) fn compile_cache(source: &Source) -> Result<Option<Cache>> {
    if source.no_cache {
        return Ok(None);
    }
    if let Some(dir) = &source.cache_dir {
        return Cache::open(dir).map(Some);
    }
    let Some(dir) = Cache::default_dir() else {
        return Ok(None);
    };
    match Cache::open(&dir) {
        Ok(cache) => Ok(Some(cache)),
        Err(error) => {
            tracing::warn!(
                "{error:#}; compiling without a cache (--cache-dir picks another place)"
            );
            Ok(None)
        }
    }
}

/// Compiles every mount. Blocking: run off the runtime's threads.
pub(super) fn load_all(
    engines: &Engines,
    mounts: &[Mount],
    tier: Tier,
    pool: &Pool,
) -> Result<Vec<App>> {
    mounts
        .iter()
        .map(|mount| {
            app::load(engines, mount, tier, pool)
                .map_err(|error| anyhow!(mount.origin.locate(format!("{error:#}"))))
        })
        .collect()
}

/// `route /api -> api.wasm (72 KiB, compiled in 61 ms, fresh instance per
/// request, 2 spares ready)`
pub(super) fn describe(app: &App) -> String {
    format!("route {} -> {}", app.route, summary(app))
}

pub(super) fn summary(app: &App) -> String {
    let spares = match app.instances.idle() {
        0 => String::new(),
        1 => ", 1 spare ready".to_string(),
        n => format!(", {n} spares ready"),
    };
    let compiled = match (app.built, app.compiler) {
        (Built::Cached, _) => "loaded from cache",
        (Built::Compiled, Compiler::Cranelift) => "compiled",
        (Built::Compiled, Compiler::Winch) => "compiled with Winch",
    };
    let later = match app.compiler {
        Compiler::Winch => ", Cranelift build to follow",
        Compiler::Cranelift => "",
    };
    let grants = app.instances.grants();
    // Names only: values are often secrets, and this goes to the log.
    let env = &grants.env;
    let env = match env.len() {
        0 => String::new(),
        _ => {
            let names: Vec<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
            format!(", env {}", names.join(" "))
        }
    };
    let dirs: String = grants
        .dirs
        .iter()
        .map(|dir| {
            let access = if dir.writable { "rw" } else { "ro" };
            format!(", dir {} at {} ({access})", dir.host.display(), dir.guest)
        })
        .collect();
    let outbound: String = grants
        .outbound
        .iter()
        .map(|grant| format!(", outbound {grant}"))
        .chain(
            grants
                .outbound_ca
                .iter()
                .map(|ca| format!(", outbound CA {}", ca.path.display())),
        )
        .collect();
    let config = match grants.config.is_empty() {
        true => String::new(),
        false => {
            let keys: Vec<&str> = grants.config.iter().map(|(key, _)| key.as_str()).collect();
            format!(", config {}", keys.join(" "))
        }
    };
    let keyvalue: String = grants
        .keyvalue
        .buckets
        .iter()
        .map(|(bucket, store)| format!(", keyvalue {bucket} in {store}"))
        .collect();
    let world = match app.instances.is_p3() {
        true => "wasi:http 0.3, ",
        false => "",
    };
    let at_once = match app.instances.per_instance() {
        1 => String::new(),
        n => format!(", {n} at once"),
    };
    format!(
        "{} ({} KiB, {world}{compiled} in {} ms{later}, {}{at_once}{spares}{env}{config}{dirs}{outbound}{keyvalue})",
        app.path.display(),
        app.size.div_ceil(1024),
        app.compile_time.as_millis(),
        app.instances.mode(),
    )
}
