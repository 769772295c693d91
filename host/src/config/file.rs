//! `wasmhost.toml`: parsed, checked and turned into settings, every error
//! naming the file, the line and the key. Paths in it are relative to the
//! file. Unknown keys are errors: a typo must not be ignored.

use super::outbound::{OutboundCa, OutboundGrant};
use super::settings::{
    CertPair, DEFAULT_CONCURRENCY_PER_INSTANCE, DEFAULT_SPARES, Grants, Limits, ListenerConfig,
    MAX_SPARES, Mode, Mount, Origin,
};
use super::stores::{check_bucket_name, check_config_key, parse_store};
use super::units::{
    Destination, check_env_name, check_env_value, inherit_env, parse_admin, parse_dir,
    parse_duration, parse_network, parse_size,
};
use crate::config::paths::normalise_prefix;
use anyhow::{Result, anyhow, bail};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// What a `wasmhost.toml` sets; `None` where it is silent.
#[derive(Debug, Default)]
pub struct File {
    pub listeners: Vec<ListenerConfig>,
    pub mounts: Vec<Mount>,
    pub threads: Option<u16>,
    pub shutdown_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    pub memory_budget: Option<u64>,
    pub header_timeout: Option<Duration>,
    pub keep_alive_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    pub trusted_proxies: Vec<IpNet>,
    pub access_log: Option<Destination>,
    pub admin: Option<SocketAddr>,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    listen: Vec<RawListen>,
    #[serde(default)]
    app: Vec<RawApp>,
    threads: Option<Spanned<u16>>,
    shutdown_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<usize>>,
    memory_budget: Option<Spanned<String>>,
    header_timeout: Option<Spanned<String>>,
    keep_alive_timeout: Option<Spanned<String>>,
    send_timeout: Option<Spanned<String>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    access_log: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: Spanned<String>,
    /// `{ cert, key }`, or a list of them for several names (SNI).
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTls {
    One(RawCertPair),
    Many(Vec<RawCertPair>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertPair {
    cert: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    route: Spanned<String>,
    component: Spanned<String>,
    /// Requests one instance may serve; absent means a fresh instance each.
    reuse: Option<Spanned<u32>>,
    /// Instances kept instantiated ahead of requests.
    spares: Option<Spanned<u32>>,
    /// Requests one instance of a WASI 0.3 app serves at once (with reuse).
    concurrency_per_instance: Option<Spanned<u32>>,
    /// Memory one instance may grow to, e.g. "256MiB".
    memory_limit: Option<Spanned<String>>,
    /// The name `memory_limit` had before it matched its flag; still read.
    memory: Option<Spanned<String>>,
    /// CPU time per request, e.g. "10s".
    cpu_limit: Option<Spanned<String>>,
    /// The name `cpu_limit` had before it matched its flag; still read.
    cpu_time: Option<Spanned<String>>,
    /// Wall-clock time per request, e.g. "60s".
    timeout: Option<Spanned<String>>,
    /// Request body size, e.g. "16MiB".
    body_limit: Option<Spanned<String>>,
    /// Time between two reads of the request body, e.g. "30s".
    body_timeout: Option<Spanned<String>>,
    /// Requests running at once.
    concurrency: Option<Spanned<u32>>,
    /// Requests waiting to run.
    queue: Option<Spanned<u32>>,
    /// Environment variables the guest is given, `{ NAME = "value" }`.
    env: Option<Spanned<BTreeMap<String, String>>>,
    /// Variables of wasmhost's own environment the guest is given.
    inherit_env: Option<Vec<Spanned<String>>>,
    /// Its `wasi:config/store` variables: `{ key = "value" }`, or
    /// `{ key = { env = "NAME" } }` for a value read from wasmhost's
    /// environment.
    config: Option<Spanned<BTreeMap<String, toml::Value>>>,
    /// Its `wasi:keyvalue` buckets, `{ default = "memory" }`.
    keyvalue: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Bytes one in-memory keyvalue store may hold, e.g. "64MiB".
    keyvalue_memory_limit: Option<Spanned<String>>,
    /// Host directories the guest is given, `"HOST:GUEST[:rw]"`.
    dirs: Option<Vec<Spanned<String>>>,
    /// Its `dirs` may lie inside a directory an app may write.
    allow_nested_dirs: Option<bool>,
    /// Hosts the guest may reach, `"https://api.example.com"`.
    allowed_outbound_hosts: Option<Vec<Spanned<String>>>,
    /// A PEM file of the CA its HTTPS upstreams may be signed by.
    outbound_ca: Option<Spanned<String>>,
    /// Connect, first-byte and between-reads timeout of outbound requests.
    outbound_timeout: Option<Spanned<String>>,
    /// Outbound requests in flight at once.
    outbound_concurrency: Option<Spanned<u32>>,
    /// Files and sockets one instance may hold open at once.
    max_open_per_instance: Option<Spanned<u32>>,
    /// Requests one client address may have in the app at once.
    max_per_client: Option<Spanned<u32>>,
    /// The command that builds `component` from source, for `wasmhost dev`.
    build: Option<Spanned<String>>,
    /// The sources whose changes rerun `build`, as globs under the file's
    /// directory, e.g. `["src/**", "Cargo.toml"]`.
    watch: Option<Vec<Spanned<String>>>,
    /// What `wasmhost dev` serves instead (`[app.dev]`).
    dev: Option<RawDev>,
}

/// `[app.dev]`: what `wasmhost dev` builds and serves in place of the app's
/// own `build` and `component`, and the directories it grants on top of
/// `dirs`: a dev build that reads the app's source at instance start (the
/// Python bridge's) serves an edit without rebuilding. `serve` ignores it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDev {
    build: Option<Spanned<String>>,
    component: Option<Spanned<String>>,
    dirs: Option<Vec<Spanned<String>>>,
}

impl RawApp {
    /// The build command and component `wasmhost dev` uses.
    fn for_dev(&self) -> (Option<&Spanned<String>>, &Spanned<String>) {
        let dev = self.dev.as_ref();
        (
            dev.and_then(|dev| dev.build.as_ref())
                .or(self.build.as_ref()),
            dev.and_then(|dev| dev.component.as_ref())
                .unwrap_or(&self.component),
        )
    }
}

/// An `[[app]]` entry's `config`, `keyvalue` and `keyvalue_memory_limit`.
fn stores(entry: &RawApp, places: &Places, grants: &mut Grants) -> Result<()> {
    if let Some(config) = &entry.config {
        let place = places.at(config.span());
        for (key, value) in config.get_ref() {
            check_config_key(key).map_err(|e| anyhow!("{place}: config: {e}"))?;
            let value = config_value(key, value).map_err(|e| anyhow!("{place}: config: {e}"))?;
            grants.config.set(key.clone(), value);
        }
    }
    for (bucket, store) in entry.keyvalue.iter().flat_map(|k| k.get_ref()) {
        let place = places.at(store.span());
        check_bucket_name(bucket).map_err(|e| anyhow!("{place}: keyvalue: {e}"))?;
        let target = places.parsed(store, &format!("keyvalue.{bucket}"), parse_store)?;
        grants.keyvalue.buckets.insert(bucket.clone(), target);
    }
    if let Some(limit) = &entry.keyvalue_memory_limit {
        grants.keyvalue.memory_limit = places.parsed(limit, "keyvalue_memory_limit", parse_size)?;
        if grants.keyvalue.memory_limit == 0 {
            bail!(
                "{}: keyvalue_memory_limit must be more than 0",
                places.at(limit.span())
            );
        }
    }
    Ok(())
}

/// A config value as written: a string, or `{ env = "NAME" }` for the
/// value of wasmhost's environment variable NAME.
fn config_value(key: &str, value: &toml::Value) -> Result<String, String> {
    let wrong = || {
        format!(
            "{key}: a value is a string, or {{ env = \"NAME\" }} to read it from wasmhost's environment"
        )
    };
    let name = match value {
        toml::Value::String(text) => return Ok(text.clone()),
        toml::Value::Table(table) if table.len() == 1 => match table.get("env") {
            Some(toml::Value::String(name)) => name,
            _ => return Err(wrong()),
        },
        _ => return Err(wrong()),
    };
    std::env::var(name).map_err(|e| {
        let why = match e {
            std::env::VarError::NotPresent => "is not set",
            std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
        };
        format!("{key} is read from {name} in wasmhost's environment, which {why}; set it, or give the value")
    })
}

/// Turns a byte span of the file into its place (file and line).
struct Places<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Places<'_> {
    fn at(&self, span: Range<usize>) -> Origin {
        Origin::File {
            path: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
        }
    }

    /// A string value read by `parse`, or the error naming its place and key.
    fn parsed<T>(
        &self,
        value: &Spanned<String>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T> {
        parse(value.get_ref()).map_err(|e| anyhow!("{}: {key}: {e}", self.at(value.span())))
    }

    /// A duration that must not be zero.
    fn positive_duration(&self, value: &Spanned<String>, key: &str) -> Result<Duration> {
        let duration = self.parsed(value, key, parse_duration)?;
        if duration.is_zero() {
            bail!("{}: {key} must be more than 0", self.at(value.span()));
        }
        Ok(duration)
    }

    /// A count that must not be zero.
    fn at_least_one<T: Copy + PartialEq + From<u8>>(
        &self,
        value: &Spanned<T>,
        key: &str,
    ) -> Result<T> {
        if *value.get_ref() == T::from(0) {
            bail!("{}: {key} must be at least 1", self.at(value.span()));
        }
        Ok(*value.get_ref())
    }
}

/// How `wasmhost dev` builds one app: `command` run by `sh -c` in `dir`
/// whenever a file under `dir` matching one of `watch` changes.
#[derive(Debug, Clone)]
pub struct Build {
    pub route: Arc<str>,
    /// The file the build writes, which `serve` then reloads.
    pub component: PathBuf,
    pub command: String,
    pub watch: Vec<String>,
    /// The config file's directory.
    pub dir: PathBuf,
    pub origin: Origin,
}

/// The file's text, parsed as written, every error naming its place.
fn read_raw(path: &Path) -> Result<(String, RawFile)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read config {}: {e}", path.display()))?;
    let places = Places { path, text: &text };
    let raw: RawFile = toml::from_str(&text).map_err(|error| {
        let place = match error.span() {
            Some(span) => places.at(span).to_string(),
            None => path.display().to_string(),
        };
        anyhow!("{place}: {}", error.message().trim())
    })?;
    Ok((text, raw))
}

/// The `[[app]]` entries that say how they are built, read before anything
/// is built: their components need not exist yet.
pub fn builds(path: &Path) -> Result<Vec<Build>> {
    let (text, raw) = read_raw(path)?;
    let places = Places { path, text: &text };
    // `wasmhost.toml` has the parent "", which is no directory to run in.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut builds = Vec::new();
    for entry in &raw.app {
        let origin = places.at(entry.route.span());
        let route =
            normalise_prefix(entry.route.get_ref()).map_err(|e| anyhow!("{origin}: {e}"))?;
        let watch = entry.watch.iter().flatten();
        let (build, component) = entry.for_dev();
        match build {
            Some(command) if command.get_ref().trim().is_empty() => {
                bail!(
                    "{}: build is empty; give the command that builds the component",
                    places.at(command.span())
                )
            }
            Some(command) => builds.push(Build {
                route,
                component: dir.join(component.get_ref()),
                command: command.get_ref().clone(),
                watch: watch.map(|glob| glob.get_ref().clone()).collect(),
                dir: dir.clone(),
                origin,
            }),
            None => {
                if let Some(glob) = watch.into_iter().next() {
                    bail!(
                        "{}: watch needs a build command in the same [[app]]; add build = \"…\"",
                        places.at(glob.span())
                    );
                }
            }
        }
    }
    Ok(builds)
}

impl File {
    /// Reads and validates the file at `path`; with `dev`, for `wasmhost
    /// dev`, its apps' `[app.dev]` tables apply.
    pub fn load(path: &Path, dev: bool) -> Result<File> {
        let (text, raw) = read_raw(path)?;
        let places = Places { path, text: &text };
        // Components are found relative to the file, not the working directory.
        let base = path.parent().unwrap_or(Path::new("."));
        let access_log = raw
            .access_log
            .as_ref()
            .map(|value| places.parsed(value, "access_log", Destination::parse))
            .transpose()?
            .map(|destination| match destination {
                // Relative to the file, like components.
                Destination::File(path) => Destination::File(base.join(path)),
                other => other,
            });
        let optional_duration = |value: &Option<Spanned<String>>, key| {
            value
                .as_ref()
                .map(|value| places.positive_duration(value, key))
                .transpose()
        };
        Ok(File {
            listeners: listeners(&raw.listen, &places, base)?,
            mounts: mounts(&raw.app, &places, base, dev)?,
            threads: raw
                .threads
                .as_ref()
                .map(|value| places.at_least_one(value, "threads"))
                .transpose()?,
            shutdown_timeout: raw
                .shutdown_timeout
                .as_ref()
                .map(|value| places.parsed(value, "shutdown_timeout", parse_duration))
                .transpose()?,
            max_connections: raw
                .max_connections
                .as_ref()
                .map(|value| places.at_least_one(value, "max_connections"))
                .transpose()?,
            memory_budget: raw
                .memory_budget
                .as_ref()
                .map(|value| places.parsed(value, "memory_budget", parse_size))
                .transpose()?,
            header_timeout: optional_duration(&raw.header_timeout, "header_timeout")?,
            keep_alive_timeout: optional_duration(&raw.keep_alive_timeout, "keep_alive_timeout")?,
            send_timeout: optional_duration(&raw.send_timeout, "send_timeout")?,
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .map(|value| places.parsed(value, "trusted_proxies", parse_network))
                .collect::<Result<_>>()?,
            access_log,
            admin: raw
                .admin
                .as_ref()
                .map(|value| places.parsed(value, "admin", parse_admin))
                .transpose()?,
        })
    }
}

/// The `[[listen]]` entries.
fn listeners(entries: &[RawListen], places: &Places, base: &Path) -> Result<Vec<ListenerConfig>> {
    let mut listeners: Vec<ListenerConfig> = Vec::new();
    for entry in entries {
        let origin = places.at(entry.address.span());
        let addr: std::net::SocketAddr = entry.address.get_ref().parse().map_err(|_| {
            anyhow!(
                "{origin}: address `{}` is not IP:PORT; write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
                entry.address.get_ref()
            )
        })?;
        if addr.port() != 0 && listeners.iter().any(|listen| listen.addr == addr) {
            bail!("{origin}: listener {addr} is given twice; each listener needs its own address");
        }
        let pairs = match &entry.tls {
            None => Vec::new(),
            Some(RawTls::One(pair)) => vec![pair],
            Some(RawTls::Many(pairs)) if !pairs.is_empty() => pairs.iter().collect(),
            Some(RawTls::Many(_)) => bail!("{origin}: tls is an empty list; give {{ cert, key }}"),
        };
        let tls = pairs
            .into_iter()
            .map(|pair| CertPair {
                cert: base.join(&pair.cert),
                key: base.join(&pair.key),
            })
            .collect();
        listeners.push(ListenerConfig { addr, tls });
    }
    Ok(listeners)
}

/// The `[[app]]` entries.
fn mounts(entries: &[RawApp], places: &Places, base: &Path, dev: bool) -> Result<Vec<Mount>> {
    let mut mounts: Vec<Mount> = Vec::new();
    for entry in entries {
        let origin = places.at(entry.route.span());
        let route =
            normalise_prefix(entry.route.get_ref()).map_err(|e| anyhow!("{origin}: {e}"))?;
        if let Some(earlier) = mounts.iter().find(|m| m.route == route) {
            bail!(
                "{origin}: route {route} is mounted twice (also at {}); give each route one component",
                earlier.origin
            );
        }
        let named = if dev {
            entry.for_dev().1
        } else {
            &entry.component
        };
        let component: PathBuf = base.join(named.get_ref());
        super::check_component_exists(&component, &places.at(named.span()))?;
        mounts.push(Mount {
            route,
            component,
            mode: mode(entry, places)?,
            spares: spares(entry, places)?,
            concurrency_per_instance: concurrency_per_instance(entry, places)?,
            limits: limits(entry, places)?,
            grants: grants(entry, places, base, dev)?,
            origin,
        });
    }
    Ok(mounts)
}

/// An `[[app]]` entry's grants: only what it names.
fn grants(entry: &RawApp, places: &Places, base: &Path, dev: bool) -> Result<Grants> {
    let mut grants = Grants::default();
    if let Some(env) = &entry.env {
        let place = places.at(env.span());
        for (name, value) in env.get_ref() {
            check_env_name(name)
                .and_then(|()| check_env_value(name, value))
                .map_err(|e| anyhow!("{place}: env: {e}"))?;
            grants.set_env(name.clone(), value.clone());
        }
    }
    for name in entry.inherit_env.iter().flatten() {
        let place = places.at(name.span());
        let name = name.get_ref();
        check_env_name(name).map_err(|e| anyhow!("{place}: inherit_env: {e}"))?;
        if grants.env.iter().any(|(set, _)| set == name) {
            bail!("{place}: {name} is both in env and in inherit_env; keep one");
        }
        let inherited =
            inherit_env(name, &format!("{place}: inherit_env")).map_err(|e| anyhow!("{e}"))?;
        if let Some(value) = inherited {
            grants.set_env(name.clone(), value);
        }
    }
    stores(entry, places, &mut grants)?;
    grants.allow_nested_dirs = entry.allow_nested_dirs.unwrap_or(false);
    let dev_dirs = entry
        .dev
        .as_ref()
        .filter(|_| dev)
        .and_then(|dev| dev.dirs.as_ref());
    for dir in entry
        .dirs
        .iter()
        .flatten()
        .chain(dev_dirs.into_iter().flatten())
    {
        let origin = places.at(dir.span());
        let parsed = places.parsed(dir, "dirs", parse_dir)?;
        grants
            .dirs
            .push(super::dirs::dir_grant(parsed, base, &origin)?);
    }
    for entry in entry.allowed_outbound_hosts.iter().flatten() {
        let grant = places.parsed(entry, "allowed_outbound_hosts", OutboundGrant::parse)?;
        super::warn_if_wide(&grant, &places.at(entry.span()).to_string());
        grants.outbound.push(grant);
    }
    if let Some(ca) = &entry.outbound_ca {
        let path = base.join(ca.get_ref());
        let ca = OutboundCa::read(path)
            .map_err(|e| anyhow!("{}: outbound_ca: {e}", places.at(ca.span())))?;
        grants.outbound_ca = Some(ca);
    }
    Ok(grants)
}

fn mode(entry: &RawApp, places: &Places) -> Result<Mode> {
    let Some(uses) = &entry.reuse else {
        return Ok(Mode::Fresh);
    };
    match NonZeroU32::new(*uses.get_ref()) {
        Some(uses) => Ok(Mode::Reuse(uses)),
        None => bail!(
            "{}: reuse must be at least 1 (1 means a fresh instance per request)",
            places.at(uses.span())
        ),
    }
}

fn concurrency_per_instance(entry: &RawApp, places: &Places) -> Result<NonZeroU32> {
    let Some(declared) = &entry.concurrency_per_instance else {
        return Ok(DEFAULT_CONCURRENCY_PER_INSTANCE);
    };
    let at = places.at(declared.span());
    let Some(n) = NonZeroU32::new(*declared.get_ref()) else {
        bail!("{at}: concurrency_per_instance must be at least 1");
    };
    if n.get() > 1 && entry.reuse.is_none() {
        bail!(
            "{at}: concurrency_per_instance = {n} needs reuse: a fresh instance serves one request; add reuse = N (requests per instance) to this [[app]]"
        );
    }
    Ok(n)
}

fn spares(entry: &RawApp, places: &Places) -> Result<u32> {
    match &entry.spares {
        None => Ok(DEFAULT_SPARES),
        Some(spares) if *spares.get_ref() <= MAX_SPARES => Ok(*spares.get_ref()),
        Some(spares) => bail!(
            "{}: spares must be at most {MAX_SPARES} (each holds a slot of the instance pool)",
            places.at(spares.span())
        ),
    }
}

/// An `[[app]]` entry's limits: the defaults, with what it sets.
fn limits(entry: &RawApp, places: &Places) -> Result<Limits> {
    let mut limits = Limits::default();
    let memory = either(
        &entry.memory_limit,
        "memory_limit",
        &entry.memory,
        "memory",
        places,
    )?;
    if let Some((value, key)) = memory {
        limits.memory_limit = places.parsed(value, key, parse_size)?;
    }
    if let Some(value) = &entry.body_limit {
        limits.body_limit = places.parsed(value, "body_limit", parse_size)?;
    }
    let cpu = either(
        &entry.cpu_limit,
        "cpu_limit",
        &entry.cpu_time,
        "cpu_time",
        places,
    )?;
    if let Some((value, key)) = cpu {
        limits.cpu_limit = places.positive_duration(value, key)?;
    }
    if let Some(value) = &entry.timeout {
        limits.timeout = places.positive_duration(value, "timeout")?;
    }
    if let Some(value) = &entry.body_timeout {
        limits.body_timeout = places.positive_duration(value, "body_timeout")?;
    }
    if let Some(value) = &entry.concurrency {
        limits.concurrency = places.at_least_one(value, "concurrency")?;
    }
    if let Some(value) = &entry.queue {
        limits.queue = *value.get_ref();
    }
    if let Some(value) = &entry.outbound_timeout {
        limits.outbound_timeout = places.positive_duration(value, "outbound_timeout")?;
    }
    if let Some(value) = &entry.outbound_concurrency {
        limits.outbound_concurrency = places.at_least_one(value, "outbound_concurrency")?;
    }
    if let Some(value) = &entry.max_per_client {
        limits.max_per_client = Some(places.at_least_one(value, "max_per_client")?);
    }
    if let Some(value) = &entry.max_open_per_instance {
        limits.max_open_per_instance = places.at_least_one(value, "max_open_per_instance")?;
    }
    Ok(limits)
}

/// A key that may be written under its name or its older name, with the
/// name it was written under; both at once is an error.
fn either<'a>(
    name: &'a Option<Spanned<String>>,
    key: &'static str,
    older: &'a Option<Spanned<String>>,
    older_key: &'static str,
    places: &Places,
) -> Result<Option<(&'a Spanned<String>, &'static str)>> {
    match (name, older) {
        (Some(_), Some(value)) => bail!(
            "{}: {older_key} is the older name of {key}; give only {key}",
            places.at(value.span())
        ),
        (Some(value), None) => Ok(Some((value, key))),
        (None, Some(value)) => Ok(Some((value, older_key))),
        (None, None) => Ok(None),
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        let text = "a = 1\nb = 2\n\nc = 3";
        let cases = [(0, 1), (5, 1), (6, 2), (12, 3), (13, 4), (999, 4)];
        for (offset, line) in cases {
            assert_eq!(line_of(text, offset), line, "{offset}");
        }
    }
}
