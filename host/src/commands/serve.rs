//! `wasmhost serve` and `wasmhost dev`: build the engines, bind, load every
//! mounted app, serve until a signal, drain and exit.

use super::check::{compile_cache, describe, load_all, summary};
use super::dev::{self, Dev};
use super::reload;
use super::runtimes::{self, Workers};
use super::signals;
use super::systemd::{self, Inherited};
use crate::admin::metrics::{Metrics, PoolUse};
use crate::admin::status::Status;
use crate::admin::{self, Admin};
use crate::allocator;
use crate::config::cli::{DevArgs, ServeArgs};
use crate::config::{self, Config, ListenerConfig, Mount};
use crate::grants::descriptors;
use crate::guest::app::{App, Tier};
use crate::guest::compile_cache::Cache;
use crate::guest::engine::{Engines, EpochTicker, PoolSize};
use crate::guest::instances::Pool;
use crate::guest::limits::{self, MemoryBudget};
use crate::http::access_log::{AccessLog, Writer as LogWriter};
use crate::http::dev_errors::DevErrors;
use crate::http::forwarded::TrustedProxies;
use crate::http::router::{Router, Routes};
use crate::http::server::{self, Drained, Listener};
use crate::http::tls::Certificates;
use crate::telemetry::request_metrics;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// `wasmhost serve`: serves until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> Result<()> {
    serve_with(args, None)
}

/// `wasmhost dev`: `serve`, with the apps' builds run first and again at
/// every change of their sources.
pub fn dev(args: DevArgs) -> Result<()> {
    let DevArgs {
        serve: mut args,
        no_dev_errors,
    } = args;
    if args.no_reload {
        bail!(
            "--no-reload: wasmhost dev swaps each new build in as it reloads; leave the flag out"
        );
    }
    let file = args
        .source
        .config
        .get_or_insert_with(|| PathBuf::from("wasmhost.toml"))
        .clone();
    if !file.is_file() {
        bail!(
            "{}: no such file; run wasmhost dev in a project that has one (wasmhost new writes it), or give --config FILE",
            file.display()
        );
    }
    args.source.dev = true;
    let builds = config::file::builds(&file)?;
    if builds.is_empty() {
        bail!(
            "{}: no [[app]] says how it is built; add build = \"…\" and watch = [\"src/**\"] to the app to rebuild",
            file.display()
        );
    }
    let dev = Dev {
        builds,
        errors: (!no_dev_errors).then(|| Arc::new(DevErrors::default())),
    };
    dev::build_at_start(&dev)?;
    serve_with(args, Some(dev))
}

fn serve_with(args: ServeArgs, dev: Option<Dev>) -> Result<()> {
    let config = config::for_serve(&args)?;
    let cache = compile_cache(&args.source)?;
    let runtime = runtimes::main_runtime()?;
    let workers = Workers::start(config.threads)?;
    let config_file = args.source.config.clone();
    let reread: reload::ConfigReader = Box::new(move || config::for_serve(&args));
    let served = runtime.block_on(serve_until_signalled(
        config,
        cache,
        config_file,
        reread,
        dev,
        &workers,
    ));
    // Requests are drained by now. What may still run on the blocking
    // threads is a background Cranelift build (a minute for a large guest
    // at idle priority) or a compile-cache write, which a reader ignores
    // unless whole: dropping the runtime would wait for them.
    runtime.shutdown_background();
    served
}

async fn serve_until_signalled(
    config: Config,
    cache: Option<Cache>,
    config_file: Option<PathBuf>,
    reread: reload::ConfigReader,
    dev: Option<Dev>,
    workers: &Workers,
) -> Result<()> {
    let signals = signals::install()?;
    let (access_log, log_writer) = open_access_log(&config)?;
    let pool_size = PoolSize::default();
    let engines = Arc::new(Engines::new(pool_size, cache));
    let (budget, budget_line) = memory_budget(config.memory_budget);
    let descriptors = descriptors::raise_limit();
    let pool = Pool::new(pool_size.instances, budget);

    // Bind before compiling: a taken port is reported at once, and clients
    // that connect while a large app compiles wait in the backlog instead of
    // being refused.
    let inherited = systemd::inherited_listeners()?;
    let (listeners, _certificate_watchers) = bind_all(&config.listeners, inherited).await?;
    // Up before the apps load, so its /readyz says they are loading.
    let admin = match config.admin {
        Some(addr) => Some(start_admin(addr).await?),
        None => None,
    };
    let apps = load_at_startup(&engines, &config.mounts, &pool).await?;
    let _ticker = EpochTicker::start(engines.clone());
    // Ends with the runtime.
    tokio::spawn(allocator::every_second());
    for app in &apps {
        app.instances.refill().await;
    }
    let routes = Arc::new(Routes::from_pointee(Router::new(
        apps.iter().map(|app| (app.route.clone(), app.clone())),
    )));
    if let Some((admin, _)) = &admin {
        admin_reads(admin, &routes, &pool, pool_size, &engines);
    }
    // Watching starts before the `serving on` line, so a change made once
    // that line is out is never missed.
    let reloads = reload::ReloadTarget {
        routes: routes.clone(),
        engines,
        pool,
    };
    let sources = reload::Sources {
        config: config.clone(),
        config_file,
        reread,
    };
    let _watching = watch(reloads, sources, &apps, dev.as_ref())?;
    // Said once everything loaded: a startup error stays the only line.
    tracing::info!("{budget_line}");
    tracing::info!(
        "open files and sockets: {} for the process, guests together up to {} (the rest is the server's)",
        descriptors.descriptors,
        descriptors.guests
    );
    let readiness = admin.as_ref().map(|(admin, bound)| {
        tracing::info!("admin on http://{bound}/ (status page; /healthz, /readyz, /metrics)");
        admin.readiness.clone()
    });
    if let Some(readiness) = &readiness {
        // Every app is loaded; the listeners were bound before, and the
        // connections that came meanwhile wait in their backlogs until the
        // accept loops start below.
        readiness.ready();
    }
    announce(&apps, &listeners)?;
    systemd::ready(&format!("serving {} app(s)", apps.len()));

    let options = server::Options {
        max_connections: config.max_connections,
        timeouts: config.timeouts,
        drain_timeout: config.shutdown_timeout,
        trusted_proxies: Arc::new(TrustedProxies::new(config.trusted_proxies.clone())),
        access_log,
        dev_errors: dev.and_then(|dev| dev.errors),
        workers: workers.handles(),
    };
    let listeners = listeners.into_iter().map(|bound| bound.listener).collect();
    let first = async {
        let _ = signals.first.await;
        if let Some(readiness) = &readiness {
            readiness.draining();
        }
        systemd::stopping();
    };
    let second = async {
        let _ = signals.second.await;
    };
    let drained = server::run(listeners, routes, options, first, second).await;
    stopped(drained, log_writer);
    Ok(())
}

/// The access log the config asks for, reopened on SIGUSR1, and its
/// writer.
fn open_access_log(config: &Config) -> Result<(Option<Arc<AccessLog>>, Option<LogWriter>)> {
    let (access_log, log_writer) = AccessLog::open(&config.access_log)?.unzip();
    let access_log = access_log.map(Arc::new);
    if let Some(log) = access_log.clone() {
        signals::on_usr1(move || {
            // Asked for before the line, so a line logged after it goes to
            // the new file.
            log.reopen();
            tracing::info!("SIGUSR1: reopening the access log");
        })?;
    }
    Ok((access_log, log_writer))
}

/// The server has drained (or was cut short): the access log's last lines
/// written, and the last line.
fn stopped(drained: Drained, log_writer: Option<LogWriter>) {
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
}

/// The admin listener, bound and answering (`/readyz` says loading).
async fn start_admin(addr: SocketAddr) -> Result<(Arc<Admin>, SocketAddr)> {
    let counts = request_metrics::install();
    let admin = Arc::new(Admin {
        metrics: Arc::new(Metrics::new(counts)),
        readiness: Arc::default(),
        status: Status::start(counts),
    });
    let bound = admin::start(addr, admin.clone()).await?;
    Ok((admin, bound))
}

/// What the status page and `/metrics` read at each look: the route table,
/// the pool's slots and the engines' compile counts.
fn admin_reads(
    admin: &Admin,
    routes: &Arc<Routes>,
    pool: &Pool,
    pool_size: PoolSize,
    engines: &Arc<Engines>,
) {
    let (slots, total) = (pool.clone(), u64::from(pool_size.instances));
    admin.status.serve(routes.clone());
    admin.metrics.serve(
        routes.clone(),
        PoolUse {
            total,
            in_use: Box::new(move || total.saturating_sub(slots.free_slots() as u64)),
            engines: engines.clone(),
        },
    );
}

/// What watches for new versions until dropped: the reloader (its
/// Cranelift builds of the apps that started on Winch queued first) and,
/// under `wasmhost dev`, the apps' builds.
fn watch(
    reloads: reload::ReloadTarget,
    sources: reload::Sources,
    apps: &[Arc<App>],
    dev: Option<&Dev>,
) -> Result<(Option<dev::Watching>, Option<reload::Reloader>)> {
    for app in apps {
        let mount = sources
            .config
            .mounts
            .iter()
            .find(|mount| mount.route == app.route);
        if let Some(mount) = mount {
            reloads.optimise(app, mount.clone());
        }
    }
    let routes = reloads.routes.clone();
    let reload = sources.config.reload;
    let reloader = reload::start(reloads, sources, reload)
        .inspect_err(|error| tracing::warn!("hot reload is off: {error:#}"))
        .ok();
    let building = match (dev, &reloader) {
        (Some(dev), Some(reloader)) => Some(dev::watch(dev, routes, reloader.renewer())?),
        (Some(_), None) => bail!("wasmhost dev needs hot reload, which did not start (see above)"),
        (None, _) => None,
    };
    // The builds stop before the reloader they hand their results to.
    Ok((building, reloader))
}

/// The guest memory budget, and the line that reports it at startup.
fn memory_budget(configured: Option<u64>) -> (Arc<MemoryBudget>, String) {
    let gib = |bytes: u64| bytes as f64 / f64::from(1u32 << 30);
    let (limit, line) = match (configured, limits::default_memory_budget()) {
        (Some(limit), _) => (
            limit,
            format!("guest memory budget {:.1} GiB (--memory-budget)", gib(limit)),
        ),
        (None, Some((limit, source, total))) => (
            limit,
            format!(
                "guest memory budget {:.1} GiB (3/4 of {source}, {:.1} GiB; --memory-budget sets it)",
                gib(limit),
                gib(total)
            ),
        ),
        (None, None) => (
            u64::MAX,
            "no guest memory budget: this machine's memory size cannot be read; --memory-budget sets one"
                .to_string(),
        ),
    };
    (MemoryBudget::new(limit), line)
}

/// A bound listener and, for TLS, its certificates (for the startup line).
struct Bound {
    listener: Listener,
    certificates: Option<Arc<Certificates>>,
}

/// Binds every listener, loading its certificates; also returns the tasks
/// that watch those for renewals, which run until dropped. A socket systemd
/// passed (`inherited`) stands in for the listener with its address.
async fn bind_all(
    listens: &[ListenerConfig],
    mut inherited: Vec<Inherited>,
) -> Result<(Vec<Bound>, Vec<JoinHandle<()>>)> {
    let mut bound = Vec::with_capacity(listens.len() + inherited.len());
    let mut watchers = Vec::new();
    for listen in listens {
        let passed = inherited.iter().position(|socket| {
            socket.addr == listen.addr
                || socket.name == listen.addr.to_string()
                // `ListenStream=8080` listens on every address.
                || (socket.addr.ip().is_unspecified() && socket.addr.port() == listen.addr.port())
        });
        let socket = match passed {
            Some(index) => from_systemd(inherited.remove(index))?,
            None => server::bind(listen.addr).await?,
        };
        if listen.tls.is_empty() {
            bound.push(Bound {
                listener: Listener { socket, tls: None },
                certificates: None,
            });
            continue;
        }
        let certificates = Certificates::load(listen.tls.clone())?;
        let acceptor = TlsAcceptor::from(certificates.server_config()?);
        watchers.push(certificates.watch());
        bound.push(Bound {
            listener: Listener {
                socket,
                tls: Some(acceptor),
            },
            certificates: Some(certificates),
        });
    }
    for extra in inherited {
        tracing::info!(
            "systemd passed {} ({}), which no listener names: serving it as plain HTTP",
            extra.addr,
            extra.name
        );
        bound.push(Bound {
            listener: Listener {
                socket: from_systemd(extra)?,
                tls: None,
            },
            certificates: None,
        });
    }
    Ok((bound, watchers))
}

fn from_systemd(socket: Inherited) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(socket.listener)
        .with_context(|| format!("serving the socket systemd passed for {}", socket.addr))
}

/// Compiles every mount off the runtime's threads, large ones with Winch
/// first (`reload` swaps in their Cranelift builds).
async fn load_at_startup(
    engines: &Arc<Engines>,
    mounts: &[Mount],
    pool: &Pool,
) -> Result<Vec<Arc<App>>> {
    let (engines, mounts, pool) = (engines.clone(), mounts.to_vec(), pool.clone());
    let apps =
        tokio::task::spawn_blocking(move || load_all(&engines, &mounts, Tier::QuickFirst, &pool))
            .await
            .context("the compiler thread panicked")??;
    Ok(apps.into_iter().map(Arc::new).collect())
}

/// The startup lines. One app at the root on one listener: everything on
/// the `serving on` line. Otherwise the route table once, then a line per
/// listener.
fn announce(apps: &[Arc<App>], listeners: &[Bound]) -> Result<()> {
    let with = match apps {
        [only] if &*only.route == "/" && listeners.len() == 1 => {
            format!(" with {}", summary(only))
        }
        _ => {
            for app in apps {
                tracing::info!("{}", describe(app));
            }
            format!(" with {} app(s)", apps.len())
        }
    };
    for app in apps
        .iter()
        .filter(|app| app.instances.is_p3() && app.instances.mode() == crate::config::Mode::Fresh)
    {
        // A 0.3 component is written to share an instance; isolation is the
        // default, so say what it costs and how to trade it.
        tracing::info!(
            "[{}] is a WASI 0.3 app with a fresh instance per request, which keeps its requests apart; \
             with --reuse N (reuse = N in its [[app]]) one instance serves up to {} of them at once, \
             at half to two thirds of the CPU a request (bench/NOTES.md)",
            app.route,
            crate::config::DEFAULT_CONCURRENCY_PER_INSTANCE
        );
    }
    for bound in listeners {
        let local = bound
            .listener
            .socket
            .local_addr()
            .context("reading the bound address")?;
        match &bound.certificates {
            None => tracing::info!("serving on http://{local}/{with}"),
            Some(certificates) => tracing::info!(
                "serving on https://{local}/{with}; certificate {}",
                certificates.describe()
            ),
        }
    }
    Ok(())
}
