//! The `serve` and `check` commands: build the engine, load every mounted
//! app, then either report the route table (`check`) or bind, serve until a
//! signal, drain and exit (`serve`).

use crate::access_log::AccessLog;
use crate::app::{self, App, Tier};
use crate::cache::{self, Cache};
use crate::cli::{ServeArgs, Source};
use crate::config::{self, Config, Mount};
use crate::engine::{Compiler, Engines, EpochTicker, PoolSize};
use crate::handler::Target;
use crate::reload;
use crate::router::Router;
use crate::server::{self, Drained};
use crate::signals;
use crate::tls;
use anyhow::{Context, Result, anyhow};
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

pub fn run(args: ServeArgs) -> Result<()> {
    let config = config::for_serve(&args)?;
    let cache = compile_cache(&args.source)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("wasmhost-worker");
    if let Some(threads) = config.threads {
        runtime.worker_threads(usize::from(threads));
    }
    let runtime = runtime.build().context("starting the async runtime")?;
    let config_file = args.source.config.clone();
    let reread: reload::Reread = Box::new(move || config::for_serve(&args));
    runtime.block_on(serve(config, cache, config_file, reread))
}

/// `wasmhost check`: everything `serve` validates, nothing it serves.
pub fn check(source: Source) -> Result<()> {
    let mounts = config::for_check(&source)?;
    let engines = Engines::new(PoolSize::default(), compile_cache(&source)?);
    // Final builds: nothing is served, and the cache is warm for `serve`.
    let apps = load_all(&engines, &mounts, Tier::Final)?;
    for app in &apps {
        println!("{}", describe(app));
    }
    println!("ok: {} app(s) valid", apps.len());
    Ok(())
}

async fn serve(
    config: Config,
    cache: Option<Cache>,
    config_file: Option<PathBuf>,
    reread: reload::Reread,
) -> Result<()> {
    let signals = signals::install()?;
    let (access_log, log_writer) = AccessLog::open(&config.access_log)?.unzip();
    let pool = PoolSize::default();
    let engines = Arc::new(Engines::new(pool, cache));

    // Bind before compiling: a taken port is reported at once, and clients
    // that connect while a large app compiles wait in the backlog instead of
    // being refused.
    let mut listeners = Vec::with_capacity(config.listeners.len());
    let mut _certificate_watchers = Vec::new();
    for listen in &config.listeners {
        let tls = if listen.tls.is_empty() {
            None
        } else {
            let certificates = tls::Certificates::load(listen.tls.clone())?;
            let acceptor = TlsAcceptor::from(certificates.server_config()?);
            _certificate_watchers.push(certificates.watch());
            Some((acceptor, certificates))
        };
        listeners.push((server::bind(listen.addr).await?, tls));
    }

    let mounts = config.mounts.clone();
    let apps = tokio::task::spawn_blocking({
        let engines = engines.clone();
        move || load_all(&engines, &mounts, Tier::QuickFirst)
    })
    .await
    .context("the compiler thread panicked")??;
    let _ticker = EpochTicker::start(engines.clone());
    let slots = Arc::new(Semaphore::new(pool.instances as usize));
    for app in &apps {
        app.instances.refill(&app.pre, &slots).await;
    }

    let apps: Vec<Arc<App>> = apps.into_iter().map(Arc::new).collect();
    let target = Arc::new(Target {
        routes: ArcSwap::from_pointee(Router::new(
            apps.iter().map(|app| (app.route.clone(), app.clone())),
        )),
        slots,
    });
    // Watching starts before the `serving on` line, so a change made once
    // that line is out is never missed.
    let sources = reload::Sources {
        config: config.clone(),
        config_file,
        reread,
    };
    for app in &apps {
        if let Some(mount) = config.mounts.iter().find(|mount| mount.route == app.route) {
            reload::optimise(target.clone(), engines.clone(), app, mount.clone());
        }
    }
    let _reloader = match reload::start(target.clone(), engines, sources, config.reload) {
        Ok(reloader) => Some(reloader),
        Err(error) => {
            tracing::warn!("hot reload is off: {error:#}");
            None
        }
    };
    // One app at the root on one listener: say everything on the `serving
    // on` line. Otherwise print the route table once, then the listeners.
    let with = match apps.as_slice() {
        [only] if &*only.route == "/" && listeners.len() == 1 => {
            format!(" with {}", summary(only))
        }
        _ => {
            for app in &apps {
                tracing::info!("{}", describe(app));
            }
            format!(" with {} app(s)", apps.len())
        }
    };
    for (socket, tls) in &listeners {
        let local = socket.local_addr().context("reading the bound address")?;
        match tls {
            None => tracing::info!("serving on http://{local}/{with}"),
            Some((_, certificates)) => tracing::info!(
                "serving on https://{local}/{with}; certificate {}",
                certificates.describe()
            ),
        }
    }
    let listeners = listeners
        .into_iter()
        .map(|(socket, tls)| server::Listener {
            socket,
            tls: tls.map(|(acceptor, _)| acceptor),
        })
        .collect();

    let first = async {
        let _ = signals.first.await;
    };
    let second = async {
        let _ = signals.second.await;
    };
    let options = server::Options {
        max_connections: config.max_connections,
        timeouts: config.timeouts,
        drain_timeout: config.shutdown_timeout,
        trusted_proxies: Arc::new(config.trusted_proxies.clone()),
        access_log: access_log.map(Arc::new),
    };
    let drained = server::serve(listeners, target, options, first, second).await;
    // The access log's last lines are on their way to its writer; once
    // every connection is closed it ends as soon as they are written. Cut
    // connections still hold theirs, so then it gets one batch's time.
    let flush = match drained {
        Drained::Clean => Duration::from_secs(2),
        Drained::Cut => Duration::from_millis(300),
    };
    if let Some(writer) = log_writer {
        writer.wait(flush);
    }
    match drained {
        Drained::Clean => tracing::info!("stopped"),
        Drained::Cut => tracing::info!("stopped; some requests were cut"),
    }
    Ok(())
}

/// The compile cache the flags ask for. A directory given with --cache-dir
/// must work; the default one is skipped with a warning if it does not.
pub fn compile_cache(source: &Source) -> Result<Option<Cache>> {
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
fn load_all(engines: &Engines, mounts: &[Mount], tier: Tier) -> Result<Vec<App>> {
    mounts
        .iter()
        .map(|mount| {
            app::load(engines, mount, tier)
                .map_err(|error| anyhow!(mount.origin.locate(format!("{error:#}"))))
        })
        .collect()
}

/// `route /api -> api.wasm (72 KiB, compiled in 61 ms, fresh instance per
/// request, 2 spares ready)`
fn describe(app: &App) -> String {
    format!("route {} -> {}", app.route, summary(app))
}

fn summary(app: &App) -> String {
    let spares = match app.instances.idle() {
        0 => String::new(),
        1 => ", 1 spare ready".to_string(),
        n => format!(", {n} spares ready"),
    };
    let compiled = match (app.origin, app.compiler) {
        (cache::Origin::Cached, _) => "loaded from cache",
        (cache::Origin::Compiled, Compiler::Cranelift) => "compiled",
        (cache::Origin::Compiled, Compiler::Winch) => "compiled with Winch",
    };
    let later = match app.compiler {
        Compiler::Winch => ", Cranelift build to follow",
        Compiler::Cranelift => "",
    };
    format!(
        "{} ({} KiB, {compiled} in {} ms{later}, {}{spares})",
        app.path.display(),
        app.size.div_ceil(1024),
        app.compile_time.as_millis(),
        app.instances.mode(),
    )
}
