//! `wasmhost dev`: the edit-save-refresh loop. Every app whose `[[app]]`
//! says how it is built (`build`, `watch`) is built once at start, then
//! again whenever a watched source changes: debounced, one build per app at
//! a time, a newer change killing the build under way. A good build writes
//! the component, which hot reload (`reload`) swaps in while requests keep
//! flowing; a failed one never replaces the version serving, its output is
//! printed, and with dev errors on the app's requests get it as a page
//! (`dev_errors`) until the next good build. A good build that leaves the
//! component as it was still gets the app new instances (`Renew`): a dev
//! build that reads the app's source from a granted directory when an
//! instance starts (the Python bridge's `--dev`) serves an edit that way,
//! without compiling anything.

use crate::commands::reload::Renew;
use crate::config::file::Build;
use crate::guest::compile_cache::Digest;
use crate::http::dev_errors::DevErrors;
use crate::http::router::Routes;
use anyhow::{Context, Result, anyhow, bail};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A save is acted on once the sources have been quiet this long: an editor
/// or a `git checkout` writing many files starts one build, not many.
const QUIET: Duration = Duration::from_millis(150);

/// How long a good build's component may take to be swapped in before the
/// line about it gives up waiting (an 18 MB Python build takes ~2 s).
const SWAP_DEADLINE: Duration = Duration::from_secs(120);

/// What `dev` adds to `serve`.
pub struct Dev {
    pub builds: Vec<Build>,
    /// Set when failed builds answer with their page.
    pub errors: Option<Arc<DevErrors>>,
}

/// Runs every build once, in order, before anything is served. A failure
/// is printed; it ends `dev` only when there is no earlier build to serve.
pub fn build_at_start(dev: &Dev) -> Result<()> {
    for build in &dev.builds {
        let began = Instant::now();
        let output = shell(build)
            .output()
            .with_context(|| format!("{}: cannot run build `{}`", build.origin, build.command))?;
        let took = began.elapsed();
        if output.status.success() {
            tracing::info!("built {} in {:.1} s", build.route, took.as_secs_f64());
            continue;
        }
        let text = output_text(&output.stdout, &output.stderr);
        eprint!("{text}");
        if !build.component.exists() {
            bail!(
                "{}: the build of {} failed ({}) and there is no earlier build at {} to serve; fix the error above and run wasmhost dev again",
                build.origin,
                build.route,
                output.status,
                build.component.display()
            );
        }
        tracing::warn!(
            "the build of {} failed in {:.1} s ({}); serving the earlier build at {}",
            build.route,
            took.as_secs_f64(),
            output.status,
            build.component.display()
        );
        if let Some(errors) = &dev.errors {
            errors.fail(&build.route, &build.command, &text);
        }
    }
    Ok(())
}

/// The sources being watched; building stops when this is dropped.
pub struct Watching {
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One app's build, with its globs compiled and its directory resolved as
/// the watcher reports paths.
struct Watched {
    build: Build,
    dir: PathBuf,
    globs: GlobSet,
}

impl Watched {
    fn new(build: &Build) -> Result<Self> {
        let dir = build
            .dir
            .canonicalize()
            .with_context(|| format!("{}: cannot open {}", build.origin, build.dir.display()))?;
        let mut globs = GlobSetBuilder::new();
        for glob in &build.watch {
            // `*` stays within one directory, `**` crosses them, as in
            // .gitignore.
            let compiled = GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|e| anyhow!("{}: watch: `{glob}` is not a glob: {e}", build.origin))?;
            globs.add(compiled);
        }
        let globs = globs
            .build()
            .map_err(|e| anyhow!("{}: watch: {e}", build.origin))?;
        Ok(Watched {
            build: build.clone(),
            dir,
            globs,
        })
    }

    fn wants(&self, path: &Path) -> bool {
        path.strip_prefix(&self.dir)
            .is_ok_and(|relative| self.globs.is_match(relative))
    }
}

/// Starts watching every build's sources.
pub fn watch(dev: &Dev, routes: Arc<Routes>, renew: Renew) -> Result<Watching> {
    let watched: Vec<Watched> = dev.builds.iter().map(Watched::new).collect::<Result<_>>()?;
    let (events, mut changes) = mpsc::unbounded_channel::<Event>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        if let Ok(event) = event {
            let _ = events.send(event);
        }
    })
    .context("cannot watch the sources")?;
    let mut dirs: Vec<&PathBuf> = watched.iter().map(|w| &w.dir).collect();
    dirs.dedup();
    for dir in dirs {
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
    }
    let errors = dev.errors.clone();
    let task = tokio::spawn(async move {
        let mut apps: Vec<AppBuilds> = watched
            .into_iter()
            .map(|watched| AppBuilds {
                watched,
                changed: None,
                running: None,
                generation: 0,
            })
            .collect();
        let (done, mut finished) = mpsc::unbounded_channel::<(usize, u64)>();
        loop {
            let next = apps.iter().filter_map(|app| app.changed).min();
            let wake = async {
                match next {
                    Some(at) => tokio::time::sleep_until((at + QUIET).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = changes.recv() => {
                    let Some(event) = event else { return };
                    if matches!(event.kind, EventKind::Access(_)) {
                        continue;
                    }
                    for app in &mut apps {
                        if event.paths.iter().any(|path| app.watched.wants(path)) {
                            app.changed = Some(Instant::now());
                        }
                    }
                }
                () = wake => {
                    let now = Instant::now();
                    for (index, app) in apps.iter_mut().enumerate() {
                        if app.changed.is_some_and(|at| now >= at + QUIET) {
                            app.changed = None;
                            let serving = Serving {
                                routes: routes.clone(),
                                renew: renew.clone(),
                            };
                            app.start(index, done.clone(), serving, errors.clone());
                        }
                    }
                }
                Some((index, generation)) = finished.recv() => {
                    // Only the latest build's end: an earlier one may report
                    // after a newer one started.
                    if let Some(app) = apps.get_mut(index).filter(|app| app.generation == generation) {
                        app.running = None;
                    }
                }
            }
        }
    });
    Ok(Watching {
        _watcher: watcher,
        task,
    })
}

/// An app's build under way, if any, and a change not yet built.
struct AppBuilds {
    watched: Watched,
    changed: Option<Instant>,
    running: Option<JoinHandle<()>>,
    /// Counts the builds started, so the end of a replaced one is ignored.
    generation: u64,
}

impl AppBuilds {
    /// Starts a build, ending the one under way: its output is stale.
    fn start(
        &mut self,
        index: usize,
        done: mpsc::UnboundedSender<(usize, u64)>,
        serving: Serving,
        errors: Option<Arc<DevErrors>>,
    ) {
        if let Some(running) = self.running.take() {
            // Dropping the child (kill_on_drop) kills the shell; its
            // process group goes with it below.
            running.abort();
        }
        let build = self.watched.build.clone();
        self.generation += 1;
        let generation = self.generation;
        self.running = Some(tokio::spawn(async move {
            run_build(&build, &serving, errors.as_deref()).await;
            let _ = done.send((index, generation));
        }));
    }
}

/// What a build's result is swapped into.
struct Serving {
    routes: Arc<Routes>,
    renew: Renew,
}

/// Runs one build and says how it went: one line, after the output of a
/// failure.
async fn run_build(build: &Build, target: &Serving, errors: Option<&DevErrors>) {
    let began = Instant::now();
    let routes = &*target.routes;
    let before = serving(routes, &build.route);
    let Some(output) = run_to_end(build).await else {
        return;
    };
    let took = began.elapsed().as_secs_f64();
    if !output.status.success() {
        failed(build, &output, took, errors);
        return;
    }
    let built = Instant::now();
    let digest = {
        let path = build.component.clone();
        tokio::task::spawn_blocking(move || std::fs::read(path).map(|bytes| Digest::of(&bytes)))
            .await
            .ok()
            .and_then(Result::ok)
    };
    let unchanged = before
        .as_ref()
        .is_some_and(|(_, serving)| Some(*serving) == digest);
    if unchanged {
        target.renew.route(&build.route);
    }
    let deadline = built + SWAP_DEADLINE;
    loop {
        let now = serving(routes, &build.route);
        let swapped = match (&before, &now) {
            (Some((old, _)), Some((new, _))) => old != new,
            (None, Some(_)) => true,
            _ => false,
        };
        if swapped {
            if let Some(errors) = errors {
                errors.clear(&build.route);
            }
            let what = if unchanged {
                "the component is unchanged; new instances of it serve"
            } else {
                "the new version serves"
            };
            tracing::info!(
                "built {} in {took:.1} s; {what} {} ms later",
                build.route,
                built.elapsed().as_millis()
            );
            return;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                "built {} in {took:.1} s, but it was not swapped in within {} s; see the reload lines above",
                build.route,
                SWAP_DEADLINE.as_secs()
            );
            return;
        }
        // Polls the route table, bounded by the deadline; a reload that
        // fails says why on its own line.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The build's command run to its end in a process group of its own (all
/// of it killed if this is dropped), with its output; `None`, said in a
/// line, if it could not be run.
async fn run_to_end(build: &Build) -> Option<std::process::Output> {
    let child = tokio::process::Command::from(shell(build))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(error) => {
            tracing::warn!(
                "{}: cannot run build `{}`: {error}",
                build.origin,
                build.command
            );
            return None;
        }
    };
    let _kill_group = KillGroup(child.id());
    match child.wait_with_output().await {
        Ok(output) => Some(output),
        Err(error) => {
            tracing::warn!(
                "the build of {} could not be waited for: {error}",
                build.route
            );
            None
        }
    }
}

/// A failed build: its output on the terminal, a line, and its error page
/// for the app's requests.
fn failed(build: &Build, output: &std::process::Output, took: f64, errors: Option<&DevErrors>) {
    let text = output_text(&output.stdout, &output.stderr);
    eprint!("{text}");
    let shown = if errors.is_some() {
        "its requests get the error page until the next good build"
    } else {
        "the previous version keeps serving"
    };
    tracing::warn!(
        "the build of {} failed in {took:.1} s ({}); {shown}",
        build.route,
        output.status
    );
    if let Some(errors) = errors {
        errors.fail(&build.route, &build.command, &text);
    }
}

/// The version serving at `route`: its identity and its component's digest.
fn serving(routes: &Routes, route: &Arc<str>) -> Option<(usize, Digest)> {
    let table = routes.load();
    table
        .mounts()
        .find(|(prefix, _)| *prefix == route)
        .map(|(_, app)| (Arc::as_ptr(app) as usize, app.digest))
}

/// Kills a build's whole process group when its task ends early: a
/// cancelled `cargo` must not go on writing the component.
struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: kill(2) on a process group this task made; a group
            // that already ended makes it fail with ESRCH, which is fine.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// The build's command, as `sh -c` in the config file's directory, with no
/// terminal input to wait for.
fn shell(build: &Build) -> std::process::Command {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", &build.command])
        .current_dir(&build.dir)
        .stdin(Stdio::null());
    command
}

/// A build's output as the terminal would have shown it.
fn output_text(stdout: &[u8], stderr: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(stderr));
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}
