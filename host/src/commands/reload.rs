//! Hot reload. Every mounted component file, and the config file, is watched
//! through its directory, so that the rename-replace saves of editors,
//! `cargo build` and deploy scripts are seen as well as in-place writes. A
//! change is debounced, compiled off the request path and swapped into the
//! route table; requests already running finish on the version they started
//! with. A file that does not load (cut short, not a component, wrong world,
//! deleted) never replaces the version being served, and a config that does
//! not validate is not applied at all. SIGHUP reloads everything.

use crate::commands::systemd;
use crate::config::{Config, ListenerConfig, Mount};
use crate::guest::app::{self, App, Tier, Version};
use crate::guest::compile_cache::Digest;
use crate::guest::engine::{self, Compiler, Engines};
use crate::guest::instances::Pool;
use crate::http::router::{Router, Routes};
use crate::telemetry::request_metrics;
use anyhow::{Context, Result, anyhow};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A change is acted on once its file has been quiet this long: a save made
/// of several writes (truncate, write, write, close) is read once, whole.
const QUIET: Duration = Duration::from_millis(40);

/// A file written to without pause is still looked at this often.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Reads the configuration again: the config file with the flags over it.
pub type ConfigReader = Box<dyn Fn() -> Result<Config> + Send + Sync>;

/// What the reloader starts from.
pub struct Sources {
    /// The configuration being served.
    pub config: Config,
    /// The config file, if there is one: watched like the components.
    pub config_file: Option<PathBuf>,
    pub reread: ConfigReader,
}

/// What a reload needs to make and serve a new version of an app.
#[derive(Clone)]
pub struct ReloadTarget {
    /// The table new versions are swapped into.
    pub routes: Arc<Routes>,
    pub engines: Arc<Engines>,
    /// Where new versions' instances take their slots.
    pub pool: Pool,
}

/// A component file's contents and digest, read and hashed on a blocking
/// thread (an 18 MB component takes tens of milliseconds).
struct Read {
    bytes: Vec<u8>,
    digest: Digest,
}

async fn read(path: &Path) -> Result<Read> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let bytes = app::read(&path)?;
        let digest = Digest::of(&bytes);
        Ok(Read { bytes, digest })
    })
    .await
    .map_err(|panicked| anyhow!("the file reader failed: {panicked}"))?
}

impl ReloadTarget {
    /// The app serving at `route`, if any.
    fn serving(&self, route: &Arc<str>) -> Option<Arc<App>> {
        let routes = self.routes.load();
        routes
            .mounts()
            .find(|(prefix, _)| *prefix == route)
            .map(|(_, app)| app.clone())
    }

    /// Compiles a new version on a blocking thread; the final build of a
    /// version already serving (`Tier::Final`) on the background compiler
    /// threads, where it never delays a newer version.
    async fn compile(
        &self,
        mount: &Mount,
        read: Read,
        tier: Tier,
        noticed: Instant,
    ) -> Result<Arc<App>> {
        let (engines, mount, pool) = (self.engines.clone(), mount.clone(), self.pool.clone());
        tokio::task::spawn_blocking(move || {
            let version = Version {
                bytes: &read.bytes,
                digest: read.digest,
                started: noticed,
            };
            let compile = || app::compile(&engines, &mount, version, tier, &pool);
            match tier {
                Tier::Final => engine::in_background(compile),
                Tier::QuickFirst => compile(),
            }
        })
        .await
        .map_err(|panicked| anyhow!("the compiler thread failed: {panicked}"))?
        .map(Arc::new)
    }

    /// After a new version was swapped in: makes its spares, and its
    /// Cranelift build if it runs a Winch one, both in the background. It
    /// serves at once: its first requests instantiate for themselves, which
    /// for an 18 MB Python guest takes ~15 ms where its two spares took
    /// ~30 ms before the swap.
    fn settle(&self, app: &Arc<App>, mount: &Mount) {
        make_spares(app);
        self.optimise(app, mount.clone());
    }

    /// If `app` runs a Winch build, compiles the Cranelift build in the
    /// background and swaps it in, provided the route still serves that
    /// version by then (a newer file wins; the reloader handles it).
    pub fn optimise(&self, app: &Arc<App>, mount: Mount) {
        if app.compiler != Compiler::Winch {
            return;
        }
        let digest = app.digest;
        let reloads = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let compiled = match read(&mount.component).await {
                Ok(read) if read.digest == digest => {
                    reloads.compile(&mount, read, Tier::Final, started).await
                }
                // A newer file, or none: the reloader deals with it.
                Ok(_) => return,
                Err(error) => Err(error),
            };
            let app = match compiled {
                Ok(app) => app,
                Err(error) => {
                    tracing::warn!("optimising: {error:#}; the quick build keeps serving");
                    return;
                }
            };
            let mut swapped = false;
            reloads.routes.rcu(|routes| {
                let serving = routes.mounts().find(|(route, _)| **route == app.route);
                swapped = serving.is_some_and(|(_, serving)| {
                    serving.digest == digest && serving.compiler == Compiler::Winch
                });
                if swapped {
                    Arc::new(routes.with(&app.route, app.clone()))
                } else {
                    routes.clone()
                }
            });
            if swapped {
                tracing::info!(
                    "optimised {} ({digest}): Cranelift's build serves, compiled in {} ms",
                    app.route,
                    started.elapsed().as_millis()
                );
                make_spares(&app);
            }
        });
    }
}

/// Makes an app's spares in the background.
fn make_spares(app: &Arc<App>) {
    let instances = app.instances.clone();
    tokio::spawn(async move { instances.refill().await });
}

/// Reloading stops when this is dropped.
pub struct Reloader {
    task: JoinHandle<()>,
    renew: mpsc::UnboundedSender<Arc<str>>,
}

impl Reloader {
    /// Asks for a new version of the app at a route even if its file is
    /// unchanged: `wasmhost dev` after a build, as what its instances read
    /// when they start (granted source files) may have changed. It has new
    /// instances; the old ones finish the requests they have.
    pub fn renewer(&self) -> Renew {
        Renew(self.renew.clone())
    }
}

/// Sends [`Reloader::renewer`]'s requests.
#[derive(Clone)]
pub struct Renew(mpsc::UnboundedSender<Arc<str>>);

impl Renew {
    pub fn route(&self, route: &Arc<str>) {
        let _ = self.0.send(route.clone());
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts reloading what `reloads.routes` serves: on file changes if
/// `watch` (the default; `--no-reload` turns it off), and on SIGHUP always.
pub fn start(reloads: ReloadTarget, sources: Sources, watch: bool) -> Result<Reloader> {
    let hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let (sender, events) = mpsc::unbounded_channel();
    let watcher = if watch {
        let sender = sender.clone();
        let watcher =
            notify::recommended_watcher(move |event: notify::Result<Event>| match event {
                Ok(event) if is_change(&event.kind) => {
                    for path in event.paths {
                        let _ = sender.send(path);
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!("watching files for reload: {error:#}"),
            })
            .context("starting the file watcher for hot reload")?;
        Some(watcher)
    } else {
        None
    };
    let config_key = match &sources.config_file {
        Some(file) => Some(watch_key(file)?.1),
        None => None,
    };
    let mut reloading = ReloadState {
        reloads,
        listeners: sources.config.listeners,
        mounts: Vec::new(),
        watched: HashMap::new(),
        watcher,
        directories: BTreeSet::new(),
        config_key,
        reread: sources.reread,
        _open: sender,
    };
    reloading.watch(sources.config.mounts)?;
    let (renew, renewals) = mpsc::unbounded_channel();
    let task = tokio::spawn(reloading.run(events, renewals, hangup));
    Ok(Reloader { task, renew })
}

/// Events that may mean new contents. Opening and reading a file (the
/// reloader itself reads them) are not.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// A file's absolute directory, and the absolute path events name it by.
fn watch_key(file: &Path) -> Result<(PathBuf, PathBuf)> {
    let name = file
        .file_name()
        .with_context(|| format!("{} does not name a file", file.display()))?;
    let directory = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let directory = std::fs::canonicalize(directory)
        .with_context(|| format!("cannot watch {} for reload", directory.display()))?;
    let key = directory.join(name);
    Ok((directory, key))
}

struct ReloadState {
    reloads: ReloadTarget,
    /// The listeners started with; a config that changes them is applied
    /// except for them.
    listeners: Vec<ListenerConfig>,
    /// The mounts being served.
    mounts: Vec<Mount>,
    /// The routes each watched component file is mounted at.
    watched: HashMap<PathBuf, Vec<Arc<str>>>,
    watcher: Option<RecommendedWatcher>,
    directories: BTreeSet<PathBuf>,
    config_key: Option<PathBuf>,
    reread: ConfigReader,
    /// Keeps the event channel open when nothing is watched.
    _open: mpsc::UnboundedSender<PathBuf>,
}

impl ReloadState {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<PathBuf>,
        mut renewals: mpsc::UnboundedReceiver<Arc<str>>,
        mut hangup: tokio::signal::unix::Signal,
    ) {
        // A file changed between its loading at startup and the start of
        // watching is caught here; unchanged files cost a read and a hash.
        // Without watching (`--no-reload`) only SIGHUP reloads: a rescan
        // would pick up a file written just after startup.
        if self.watcher.is_some() {
            let started = Instant::now();
            let routes: Vec<Arc<str>> = self.mounts.iter().map(|m| m.route.clone()).collect();
            for route in routes {
                self.reload_mount(&route, started, false).await;
            }
        }
        loop {
            let first = tokio::select! {
                event = events.recv() => match event {
                    Some(path) => path,
                    None => return,
                },
                Some(route) = renewals.recv() => {
                    self.reload_mount(&route, Instant::now(), true).await;
                    continue;
                }
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration and every app");
                    systemd::reloading();
                    self.apply_config(Instant::now(), true).await;
                    systemd::ready("reloaded");
                    continue;
                }
            };
            let noticed = Instant::now();
            let mut changed = BTreeSet::from([first]);
            // Debounce: gather events until the files have been quiet a while.
            while noticed.elapsed() < MAX_WAIT {
                match tokio::time::timeout(QUIET, events.recv()).await {
                    Ok(Some(path)) => {
                        changed.insert(path);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            // A config change re-reads every mount's file as well.
            if let Some(key) = &self.config_key
                && changed.contains(key)
            {
                self.apply_config(noticed, false).await;
                continue;
            }
            for file in changed {
                for route in self.watched.get(&file).cloned().into_iter().flatten() {
                    self.reload_mount(&route, noticed, false).await;
                }
            }
        }
    }

    /// Watches the files of `mounts` (and the config file), which from now on
    /// are the mounts being served.
    fn watch(&mut self, mounts: Vec<Mount>) -> Result<()> {
        let mut watched: HashMap<PathBuf, Vec<Arc<str>>> = HashMap::new();
        let mut directories = BTreeSet::new();
        for mount in &mounts {
            let (directory, key) = watch_key(&mount.component)?;
            watched.entry(key).or_default().push(mount.route.clone());
            directories.insert(directory);
        }
        if let Some(key) = &self.config_key
            && let Some(directory) = key.parent()
        {
            directories.insert(directory.to_path_buf());
        }
        if let Some(watcher) = &mut self.watcher {
            for directory in directories.difference(&self.directories) {
                watcher
                    .watch(directory, RecursiveMode::NonRecursive)
                    .with_context(|| format!("cannot watch {} for reload", directory.display()))?;
            }
            for directory in self.directories.difference(&directories) {
                let _ = watcher.unwatch(directory);
            }
        }
        self.directories = directories;
        self.watched = watched;
        self.mounts = mounts;
        Ok(())
    }

    /// Loads the current contents of the file mounted at `route` and, if they
    /// are a new version (or `renew`) and load, serves them there.
    async fn reload_mount(&self, route: &Arc<str>, noticed: Instant, renew: bool) {
        let Some(mount) = self.mounts.iter().find(|mount| &mount.route == route) else {
            return;
        };
        let read = match read(&mount.component).await {
            Ok(read) => read,
            Err(error) => {
                // Deleted, or mid-rename: the last good version keeps
                // serving, and the next write is picked up.
                tracing::info!(
                    "not reloading {route}: {error:#}; still serving the previous version"
                );
                return;
            }
        };
        let serving = self.reloads.serving(route);
        let same = serving
            .as_ref()
            .is_some_and(|app| app.digest == read.digest);
        if same && !renew {
            return;
        }
        let loaded = match serving {
            Some(app) if same => app.renewed(mount).map(Arc::new),
            _ => {
                self.reloads
                    .compile(mount, read, Tier::QuickFirst, noticed)
                    .await
            }
        };
        match loaded {
            Ok(app) => {
                self.reloads
                    .routes
                    .rcu(|routes| routes.with(&app.route, app.clone()));
                let later = match app.compiler {
                    Compiler::Winch => " with Winch, Cranelift build to follow",
                    Compiler::Cranelift => "",
                };
                // Counted before the line, so whoever reads the line finds
                // the count.
                let took = noticed.elapsed();
                request_metrics::reload(route, Some((took, &app.digest.to_string())));
                if same {
                    tracing::info!(
                        "renewed {route} ({}): new instances in {} ms",
                        app.digest,
                        took.as_millis()
                    );
                    // Its Cranelift build, if one is under way, is the
                    // served version's, and replaces this one.
                    make_spares(&app);
                    return;
                }
                tracing::info!(
                    "reloaded {route} ({}) in {} ms{later}",
                    app.digest,
                    took.as_millis()
                );
                self.reloads.settle(&app, mount);
            }
            Err(error) => {
                request_metrics::reload(route, None);
                tracing::warn!(
                    "not reloading {route}: {error:#}; still serving the previous version"
                );
            }
        }
    }

    /// Reads the configuration again and serves it: mounts added, removed,
    /// or changed (file, contents, mode, spares, limits, grants) are applied
    /// together, and untouched mounts keep their app and its instances. If
    /// anything in it fails, nothing is applied. `force` recompiles every app.
    async fn apply_config(&mut self, noticed: Instant, force: bool) {
        let config = match (self.reread)() {
            Ok(config) => config,
            Err(error) => return refuse_config(format!("{error:#}")),
        };
        let plan = match self.plan(&config, noticed, force).await {
            Ok(plan) => plan,
            Err(reason) => return refuse_config(reason),
        };
        if let Err(error) = self.watch(config.mounts) {
            return refuse_config(format!("{error:#}"));
        }
        let before = self.reloads.routes.load().mounts().count();
        let removed = before - (plan.kept + plan.reloaded);
        self.reloads.routes.store(Arc::new(Router::new(plan.table)));
        let took = noticed.elapsed();
        request_metrics::reload(&Arc::from("-"), Some((took, "the configuration")));
        tracing::info!(
            "configuration applied in {} ms: {} app(s) added, {} reloaded, \
             {removed} removed, {} unchanged",
            took.as_millis(),
            plan.added,
            plan.reloaded,
            plan.kept
        );
        for (app, mount) in &plan.fresh {
            self.reloads.settle(app, mount);
        }
        if config.listeners != self.listeners {
            tracing::warn!("listener changes in the configuration take effect at the next restart");
        }
    }

    /// The route table `config` asks for: apps kept where nothing changed,
    /// compiled where something did; the reason if any mount fails.
    async fn plan(&self, config: &Config, noticed: Instant, force: bool) -> Result<Plan, String> {
        let mut plan = Plan::default();
        for mount in &config.mounts {
            let serving = self.reloads.serving(&mount.route);
            let located = |error: anyhow::Error| mount.origin.locate(format!("{error:#}"));
            let read = read(&mount.component).await.map_err(located)?;
            if let Some(app) = &serving
                && !force
                && unchanged(app, mount, read.digest)
            {
                plan.kept += 1;
                plan.table.push((mount.route.clone(), app.clone()));
                continue;
            }
            let app = self
                .reloads
                .compile(mount, read, Tier::QuickFirst, noticed)
                .await
                .map_err(located)?;
            if serving.is_some() {
                plan.reloaded += 1;
            } else {
                plan.added += 1;
            }
            plan.fresh.push((app.clone(), mount.clone()));
            plan.table.push((mount.route.clone(), app));
        }
        Ok(plan)
    }
}

/// A configuration ready to apply.
#[derive(Default)]
struct Plan {
    table: Vec<(Arc<str>, Arc<App>)>,
    /// New versions, to settle once they serve.
    fresh: Vec<(Arc<App>, Mount)>,
    added: usize,
    reloaded: usize,
    kept: usize,
}

/// The one line for a configuration that is not applied.
fn refuse_config(reason: String) {
    request_metrics::reload(&Arc::from("-"), None);
    tracing::warn!("not applying the configuration: {reason}; still serving the previous one");
}

/// Whether `app` already serves what `mount` with this file digest asks for.
fn unchanged(app: &App, mount: &Mount, digest: Digest) -> bool {
    app.path == mount.component
        && app.instances.mode() == mount.mode
        && app.instances.spares() == mount.spares as usize
        && app.instances.limits() == mount.limits
        && *app.instances.grants() == mount.grants
        && app.digest == digest
}
