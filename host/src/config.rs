//! One validated `Config` from the command line and an optional
//! `wasmhost.toml`, built in one place. Flags override the file. Every error
//! names the flag, or the file and line, and what to do.

use crate::access_log::Destination;
use crate::cli::{MAX_SPARES, MountArg, ServeArgs, Source, parse_duration, parse_size};
use crate::connection::{DEFAULT_TIMEOUTS, Timeouts};
use crate::forwarded::{TrustedProxies, parse_network};
use crate::instances::Mode;
use crate::limits::Limits;
use crate::router::normalise_prefix;
use crate::server;
use crate::tls::CertPair;
use anyhow::{Result, anyhow, bail};
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// A listening address, and the certificates if it speaks HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    /// Empty for plain HTTP.
    pub tls: Vec<CertPair>,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<Listen>,
    pub mounts: Vec<Mount>,
    pub threads: Option<u16>,
    pub shutdown_timeout: Duration,
    /// Connections open at once, across listeners.
    pub max_connections: usize,
    /// How long a connection may wait on its client.
    pub timeouts: Timeouts,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    pub access_log: Destination,
    /// Watch component files and swap in new versions.
    pub reload: bool,
}

/// Spare instances per app unless configured: one per request that can
/// arrive while the other is being instantiated on a small machine, little
/// memory on a large one.
pub const DEFAULT_SPARES: u32 = 2;

/// A component mounted at a route.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Canonical prefix (see `router::normalise_prefix`).
    pub route: Arc<str>,
    pub component: PathBuf,
    /// Fresh instance per request, or reuse.
    pub mode: Mode,
    /// Instances kept instantiated ahead of requests.
    pub spares: u32,
    /// What one request may use.
    pub limits: Limits,
    /// Where it was declared, for error messages.
    pub origin: Origin,
}

/// Where a setting came from.
#[derive(Debug, Clone)]
pub enum Origin {
    Flag(&'static str),
    File { path: PathBuf, line: usize },
}

impl Origin {
    /// `message`, prefixed with the file and line when it came from the
    /// config file (a message about a flag's file already names the file).
    pub fn locate(&self, message: impl fmt::Display) -> String {
        match self {
            Origin::Flag(_) => message.to_string(),
            Origin::File { .. } => format!("{self}: {message}"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
        }
    }
}

/// The `serve` configuration.
pub fn for_serve(args: &ServeArgs) -> Result<Config> {
    let config = for_nginx(args)?;
    require_some(&config.mounts)?;
    Ok(config)
}

/// The configuration `nginx` writes a front for: as `serve`'s, but it may
/// have no apps (the front then proxies everything to the listeners).
pub fn for_nginx(args: &ServeArgs) -> Result<Config> {
    let file = args.source.config.as_deref().map(File::load).transpose()?;
    let mounts = mounts(&args.source, file.as_ref())?;

    let from_file = file.as_ref().map_or(&[][..], |f| f.listeners.as_slice());
    let plain = |addr| Listen {
        addr,
        tls: Vec::new(),
    };
    let mut listeners = if !args.listen.is_empty() {
        args.listen.iter().copied().map(plain).collect()
    } else if args.host.is_none() && args.port.is_none() && !from_file.is_empty() {
        from_file.to_vec()
    } else {
        vec![plain(SocketAddr::new(
            args.host.unwrap_or(DEFAULT_HOST),
            args.port.unwrap_or(DEFAULT_PORT),
        ))]
    };
    if args.tls_cert.len() != args.tls_key.len() {
        bail!(
            "--tls-cert is given {} time(s) and --tls-key {}; give each certificate its key, in the same order",
            args.tls_cert.len(),
            args.tls_key.len()
        );
    }
    let flagged: Vec<CertPair> = args
        .tls_cert
        .iter()
        .zip(&args.tls_key)
        .map(|(cert, key)| CertPair {
            cert: cert.clone(),
            key: key.clone(),
        })
        .collect();
    for listen in listeners.iter_mut().filter(|listen| listen.tls.is_empty()) {
        listen.tls = flagged.clone();
    }
    let mut seen = Vec::new();
    // Port 0 asks the kernel for a free port each time: never a duplicate.
    for addr in listeners
        .iter()
        .map(|listen| listen.addr)
        .filter(|addr| addr.port() != 0)
    {
        if seen.contains(&addr) {
            bail!("listener {addr} is given twice; each listener needs its own address");
        }
        seen.push(addr);
    }

    Ok(Config {
        listeners,
        mounts,
        threads: args.threads.or(file.as_ref().and_then(|f| f.threads)),
        reload: !args.no_reload,
        shutdown_timeout: args
            .shutdown_timeout
            .or(file.as_ref().and_then(|f| f.shutdown_timeout))
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        max_connections: args
            .max_connections
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .or(file.as_ref().and_then(|f| f.max_connections))
            .unwrap_or(server::DEFAULT_MAX_CONNECTIONS),
        trusted_proxies: TrustedProxies::new(if args.trusted_proxies.is_empty() {
            file.as_ref()
                .map(|f| f.trusted_proxies.clone())
                .unwrap_or_default()
        } else {
            args.trusted_proxies.clone()
        }),
        access_log: args
            .access_log
            .clone()
            .or(file.as_ref().and_then(|f| f.access_log.clone()))
            .unwrap_or_default(),
        timeouts: Timeouts {
            header: args
                .header_timeout
                .or(file.as_ref().and_then(|f| f.header_timeout))
                .unwrap_or(DEFAULT_TIMEOUTS.header),
            keep_alive: args
                .keep_alive_timeout
                .or(file.as_ref().and_then(|f| f.keep_alive_timeout))
                .unwrap_or(DEFAULT_TIMEOUTS.keep_alive),
        },
    })
}

/// The mounts `check` validates.
pub fn for_check(source: &Source) -> Result<Vec<Mount>> {
    let file = source.config.as_deref().map(File::load).transpose()?;
    let mounts = mounts(source, file.as_ref())?;
    require_some(&mounts)?;
    Ok(mounts)
}

fn require_some(mounts: &[Mount]) -> Result<()> {
    if mounts.is_empty() {
        bail!(
            "nothing to serve: give a component (wasmhost serve app.wasm), \
             --mount PREFIX=FILE, or --config wasmhost.toml with [[app]] entries"
        );
    }
    Ok(())
}

/// The file's mounts, then the flags': a flag for a route the file also has
/// replaces the file's entry.
fn mounts(source: &Source, file: Option<&File>) -> Result<Vec<Mount>> {
    let mut mounts: Vec<Mount> = file.map(|f| f.mounts.clone()).unwrap_or_default();
    let mut from_flags: Vec<Mount> = Vec::new();
    let app = source.app.iter().map(|component| {
        (
            MountArg {
                prefix: "/".into(),
                component: component.clone(),
            },
            Origin::Flag("APP.wasm"),
        )
    });
    let flagged = source
        .mounts
        .iter()
        .map(|m| (m.clone(), Origin::Flag("--mount")));
    for (arg, origin) in app.chain(flagged) {
        let route = normalise_prefix(&arg.prefix).map_err(|e| anyhow!("{origin}: {e}"))?;
        if let Some(earlier) = from_flags.iter().find(|m| m.route == route) {
            bail!(
                "{origin}: route {route} is mounted twice (also by {}); give each route one component",
                earlier.origin
            );
        }
        check_component_exists(&arg.component, &origin)?;
        mounts.retain(|m| m.route != route);
        from_flags.push(Mount {
            route,
            component: arg.component,
            mode: Mode::Fresh,
            spares: DEFAULT_SPARES,
            limits: Limits::default(),
            origin,
        });
    }
    mounts.extend(from_flags);
    // `--reuse` applies to every app, the file's included.
    if let Some(uses) = source.reuse {
        for mount in &mut mounts {
            mount.mode = Mode::Reuse(uses);
        }
    }
    if let Some(spares) = source.spares {
        for mount in &mut mounts {
            mount.spares = spares;
        }
    }
    // Limit flags, like `--reuse`, apply to every app.
    for mount in &mut mounts {
        let limits = &mut mount.limits;
        limits.memory = source.memory_limit.unwrap_or(limits.memory);
        limits.cpu_time = source.cpu_limit.unwrap_or(limits.cpu_time);
        limits.timeout = source.timeout.unwrap_or(limits.timeout);
        limits.body = source.body_limit.unwrap_or(limits.body);
        limits.concurrency = source.concurrency.unwrap_or(limits.concurrency);
        limits.queue = source.queue.unwrap_or(limits.queue);
    }
    Ok(mounts)
}

fn check_component_exists(path: &Path, origin: &Origin) -> Result<()> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => bail!(origin.locate(format!("{shown} is not a file"))),
        Err(error) => bail!(origin.locate(format!("cannot read {shown}: {error}"))),
    }
}

/// A parsed and validated `wasmhost.toml`.
struct File {
    listeners: Vec<Listen>,
    mounts: Vec<Mount>,
    threads: Option<u16>,
    shutdown_timeout: Option<Duration>,
    max_connections: Option<usize>,
    header_timeout: Option<Duration>,
    keep_alive_timeout: Option<Duration>,
    trusted_proxies: Vec<ipnet::IpNet>,
    access_log: Option<Destination>,
}

/// The file as written. Unknown keys are errors: a typo must not be ignored.
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
    header_timeout: Option<Spanned<String>>,
    keep_alive_timeout: Option<Spanned<String>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    access_log: Option<Spanned<String>>,
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
    /// Memory one instance may grow to, e.g. "256MiB".
    memory: Option<Spanned<String>>,
    /// CPU time per request, e.g. "10s".
    cpu_time: Option<Spanned<String>>,
    /// Wall-clock time per request, e.g. "60s".
    timeout: Option<Spanned<String>>,
    /// Request body size, e.g. "16MiB".
    body_limit: Option<Spanned<String>>,
    /// Requests running at once.
    concurrency: Option<Spanned<u32>>,
    /// Requests waiting to run.
    queue: Option<Spanned<u32>>,
}

impl File {
    fn load(path: &Path) -> Result<File> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read config {}: {e}", path.display()))?;
        let at = |span: Range<usize>| Origin::File {
            path: path.to_path_buf(),
            line: line_of(&text, span.start),
        };
        let raw: RawFile = toml::from_str(&text).map_err(|error| {
            let place = match error.span() {
                Some(span) => at(span).to_string(),
                None => path.display().to_string(),
            };
            anyhow!("{place}: {}", error.message().trim())
        })?;
        // Components are found relative to the file, not the working directory.
        let base = path.parent().unwrap_or(Path::new("."));

        let mut listeners: Vec<Listen> = Vec::new();
        for entry in &raw.listen {
            let origin = at(entry.address.span());
            let addr: SocketAddr = entry.address.get_ref().parse().map_err(|_| {
                anyhow!(
                    "{origin}: address `{}` is not IP:PORT; write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    entry.address.get_ref()
                )
            })?;
            if addr.port() != 0 && listeners.iter().any(|listen| listen.addr == addr) {
                bail!(
                    "{origin}: listener {addr} is given twice; each listener needs its own address"
                );
            }
            let pairs = match &entry.tls {
                None => Vec::new(),
                Some(RawTls::One(pair)) => vec![pair],
                Some(RawTls::Many(pairs)) if !pairs.is_empty() => pairs.iter().collect(),
                Some(RawTls::Many(_)) => {
                    bail!("{origin}: tls is an empty list; give {{ cert, key }}")
                }
            };
            let tls = pairs
                .into_iter()
                .map(|pair| CertPair {
                    cert: base.join(&pair.cert),
                    key: base.join(&pair.key),
                })
                .collect();
            listeners.push(Listen { addr, tls });
        }

        let mut mounts: Vec<Mount> = Vec::new();
        for entry in &raw.app {
            let origin = at(entry.route.span());
            let route =
                normalise_prefix(entry.route.get_ref()).map_err(|e| anyhow!("{origin}: {e}"))?;
            if let Some(earlier) = mounts.iter().find(|m| m.route == route) {
                bail!(
                    "{origin}: route {route} is mounted twice (also at {}); give each route one component",
                    earlier.origin
                );
            }
            let component = base.join(entry.component.get_ref());
            check_component_exists(&component, &at(entry.component.span()))?;
            let mode = match &entry.reuse {
                None => Mode::Fresh,
                Some(uses) => match NonZeroU32::new(*uses.get_ref()) {
                    Some(uses) => Mode::Reuse(uses),
                    None => bail!(
                        "{}: reuse must be at least 1 (1 means a fresh instance per request)",
                        at(uses.span())
                    ),
                },
            };
            let spares = match &entry.spares {
                None => DEFAULT_SPARES,
                Some(spares) if *spares.get_ref() <= MAX_SPARES => *spares.get_ref(),
                Some(spares) => bail!(
                    "{}: spares must be at most {MAX_SPARES} (each holds a slot of the instance pool)",
                    at(spares.span())
                ),
            };
            let limits = app_limits(entry, &at)?;
            mounts.push(Mount {
                route,
                component,
                mode,
                spares,
                limits,
                origin,
            });
        }

        let shutdown_timeout = raw
            .shutdown_timeout
            .map(|value| parsed(&value, "shutdown_timeout", &at, parse_duration))
            .transpose()?;
        let threads = raw
            .threads
            .map(|value| at_least_one(&value, "threads", &at))
            .transpose()?;

        let max_connections = raw
            .max_connections
            .map(|value| at_least_one(&value, "max_connections", &at))
            .transpose()?;

        let header_timeout = raw
            .header_timeout
            .map(|value| positive_duration(&value, "header_timeout", &at))
            .transpose()?;
        let keep_alive_timeout = raw
            .keep_alive_timeout
            .map(|value| positive_duration(&value, "keep_alive_timeout", &at))
            .transpose()?;

        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .map(|value| parsed(value, "trusted_proxies", &at, parse_network))
            .collect::<Result<_>>()?;

        let access_log = raw
            .access_log
            .map(|value| parsed(&value, "access_log", &at, Destination::parse))
            .transpose()?
            .map(|destination| match destination {
                // Relative to the file, like components.
                Destination::File(path) => Destination::File(base.join(path)),
                other => other,
            });

        Ok(File {
            access_log,
            trusted_proxies,
            listeners,
            mounts,
            threads,
            shutdown_timeout,
            max_connections,
            header_timeout,
            keep_alive_timeout,
        })
    }
}

/// An `[[app]]` entry's limits: the defaults, with what it sets.
fn app_limits(entry: &RawApp, at: &impl Fn(Range<usize>) -> Origin) -> Result<Limits> {
    let size = |value: &Spanned<String>, key: &str| parsed(value, key, at, parse_size);
    let duration = |value: &Spanned<String>, key: &str| positive_duration(value, key, at);
    let mut limits = Limits::default();
    if let Some(value) = &entry.memory {
        limits.memory = size(value, "memory")?;
    }
    if let Some(value) = &entry.body_limit {
        limits.body = size(value, "body_limit")?;
    }
    if let Some(value) = &entry.cpu_time {
        limits.cpu_time = duration(value, "cpu_time")?;
    }
    if let Some(value) = &entry.timeout {
        limits.timeout = duration(value, "timeout")?;
    }
    if let Some(value) = &entry.concurrency {
        limits.concurrency = at_least_one(value, "concurrency", at)?;
    }
    if let Some(value) = &entry.queue {
        limits.queue = *value.get_ref();
    }
    Ok(limits)
}

/// A duration that must not be zero, or the error naming its place and key.
fn positive_duration(
    value: &Spanned<String>,
    key: &str,
    at: &impl Fn(Range<usize>) -> Origin,
) -> Result<Duration> {
    let duration = parsed(value, key, at, parse_duration)?;
    if duration.is_zero() {
        bail!("{}: {key} must be more than 0", at(value.span()));
    }
    Ok(duration)
}

/// A string value read by `parse`, or the error naming its place and key.
fn parsed<T>(
    value: &Spanned<String>,
    key: &str,
    at: &impl Fn(Range<usize>) -> Origin,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T> {
    parse(value.get_ref()).map_err(|e| anyhow!("{}: {key}: {e}", at(value.span())))
}

/// A count that must not be zero, or the error naming its place and key.
fn at_least_one<T: Copy + PartialEq + From<u8>>(
    value: &Spanned<T>,
    key: &str,
    at: &impl Fn(Range<usize>) -> Origin,
) -> Result<T> {
    if *value.get_ref() == T::from(0) {
        bail!("{}: {key} must be at least 1", at(value.span()));
    }
    Ok(*value.get_ref())
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
