//! The validated settings `serve`, `check` and `nginx` run from, with their
//! defaults: plain data, read by the runtime and never the other way round.
//! Each setting has one name: the flag `--memory-limit`, the file key
//! `memory_limit` and the field `memory_limit` are the same setting.

use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::outbound::{OutboundCa, OutboundGrant};
use super::stores::{ConfigVars, KeyValueGrant};
use super::units::Destination;

pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections open at once unless configured; each costs a socket and a
/// little memory, and past it new ones wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Spare instances per app unless configured: one per request that can
/// arrive while the other is being instantiated on a small machine, little
/// memory on a large one.
pub const DEFAULT_SPARES: u32 = 2;

/// Requests one instance of a WASI 0.3 app in reuse mode serves at once,
/// unless configured. Chosen by measurement (bench/NOTES.md): an instance
/// takes a second request only once one of its requests waits on I/O, so a
/// guest that only computes never shares, and one that waits serves 16 on
/// the memory of one, as Spin and `wasmtime serve` do.
pub const DEFAULT_CONCURRENCY_PER_INSTANCE: NonZeroU32 = NonZeroU32::new(16).unwrap();

/// Spares per app at most: they hold pool slots that other apps' requests
/// may be waiting for.
pub const MAX_SPARES: u32 = 64;

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub mounts: Vec<Mount>,
    /// Connection worker threads; one per CPU if unset.
    pub threads: Option<u16>,
    /// After the shutdown signal, how long requests in flight may run.
    pub shutdown_timeout: Duration,
    /// Connections open at once, across listeners.
    pub max_connections: usize,
    /// Bytes of linear memory all guests together may hold; `None` for the
    /// default, three quarters of the machine's (or the cgroup's) memory.
    pub memory_budget: Option<u64>,
    /// How long a connection may wait on its client.
    pub timeouts: Timeouts,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub access_log: Destination,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; off if unset.
    pub admin: Option<SocketAddr>,
    /// Watch component files and swap in new versions.
    pub reload: bool,
}

/// A listening address, and the certificates if it speaks HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// Empty for plain HTTP.
    pub tls: Vec<CertPair>,
}

/// A certificate chain file and its private key file, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long a connection may wait on its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the first byte of a request head (or from accept) to its end.
    pub header: Duration,
    /// With no request running and nothing arriving.
    pub keep_alive: Duration,
    /// With a response waiting on the client: no write to the socket and
    /// no response body taken for this long, and the connection is closed.
    pub send: Duration,
}

/// Defaults as nginx's `client_header_timeout` would have them if it were
/// stricter, and its `keepalive_timeout`. The keep-alive default is above
/// the 60 s nginx keeps idle upstream connections, so that behind nginx it
/// is nginx that closes them: a connection closed by us just as nginx sends
/// a request on it would fail that request.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    header: Duration::from_secs(30),
    keep_alive: Duration::from_secs(75),
    // nginx's send_timeout.
    send: Duration::from_secs(30),
};

/// A component mounted at a route.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Canonical prefix (see `paths::normalise_prefix`).
    pub route: Arc<str>,
    pub component: PathBuf,
    /// Fresh instance per request, or reuse.
    pub mode: Mode,
    /// Instances kept instantiated ahead of requests.
    pub spares: u32,
    /// Requests one instance of a WASI 0.3 app serves at once in reuse mode
    /// (a fresh instance serves one; a 0.2 guest one at a time).
    pub concurrency_per_instance: NonZeroU32,
    /// What one request may use.
    pub limits: Limits,
    /// What its guest is given beyond nothing.
    pub grants: Grants,
    /// Where it was declared, for error messages.
    pub origin: Origin,
}

/// What an app's guest is granted; by default nothing (applied by
/// `sandbox`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The environment variables the guest sees, and only these: each
    /// name once, in the order given.
    pub env: Vec<(String, String)>,
    /// Host directories the guest may open, each under its guest path.
    pub dirs: Vec<DirGrant>,
    /// The hosts it may reach by HTTP, HTTPS and TCP.
    pub outbound: Vec<OutboundGrant>,
    /// The CA its HTTPS upstreams may be signed by, besides the public roots.
    pub outbound_ca: Option<OutboundCa>,
    /// Its directories may lie inside one that an app may write; they are
    /// then opened through that one (see `config::dirs`).
    pub allow_nested_dirs: bool,
    /// Its `wasi:config/store` variables.
    pub config: ConfigVars,
    /// The `wasi:keyvalue` buckets it may open.
    pub keyvalue: KeyValueGrant,
}

/// A host directory given to a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// Checked to be a directory when the configuration was read.
    pub host: PathBuf,
    /// Where the guest finds it, e.g. `/static`.
    pub guest: String,
    /// Read-only unless this is set.
    pub writable: bool,
    /// Set when `host` lies inside a directory that an app may write: a
    /// guest there could have swapped a part of the path for a link.
    pub within: Option<Within>,
}

/// Where a nested grant is opened from: `outer`, then `below` one
/// component at a time, following no symbolic link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Within {
    pub outer: PathBuf,
    pub below: PathBuf,
}

impl Grants {
    /// Sets `name`, replacing an earlier value.
    pub fn set_env(&mut self, name: String, value: String) {
        match self.env.iter_mut().find(|(existing, _)| *existing == name) {
            Some(entry) => entry.1 = value,
            None => self.env.push((name, value)),
        }
    }
}

/// How an app's instances are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A new instance for every request.
    #[default]
    Fresh,
    /// One instance serves up to this many requests in turn.
    Reuse(NonZeroU32),
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Fresh => f.write_str("fresh instance per request"),
            Mode::Reuse(uses) => write!(f, "instances reused for up to {uses} requests"),
        }
    }
}

/// What one request of an app may use (enforced by `limits`, `admission`
/// and `bodies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes one linear memory of an instance may grow to.
    pub memory_limit: u64,
    /// Time a request's guest may spend running, measured in epoch ticks
    /// that pass while it runs; waiting in host calls does not count.
    pub cpu_limit: Duration,
    /// Time from the request to the guest's handler returning, whatever it
    /// does meanwhile; covers a guest that never answers.
    pub timeout: Duration,
    /// Bytes of request body the guest may read.
    pub body_limit: u64,
    /// Time between two reads of the request body while the guest waits
    /// for it (nginx's `client_body_timeout`); a client slower than that
    /// gets a `408`.
    pub body_timeout: Duration,
    /// Requests of the app that may hold an instance at once.
    pub concurrency: u32,
    /// Requests that may wait for one of those places; more get a 503.
    pub queue: u32,
    /// Time an outbound request may take to connect and get its response's
    /// head, and then between two reads of its body.
    pub outbound_timeout: Duration,
    /// Outbound requests of the app's guests in flight at once; more wait
    /// (within the app's `timeout`).
    pub outbound_concurrency: u32,
    /// Requests one client address may have in the app at once, running
    /// or waiting; three quarters of `concurrency` if unset.
    pub max_per_client: Option<u32>,
    /// Files and sockets one instance may hold open at once: each is a
    /// descriptor of this process, which all apps share.
    pub max_open_per_instance: u32,
}

/// Enough for an interpreter such as CPython (~40 MiB for a hello) with room
/// for real work; a guest that needs more says so in its config.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;
pub const DEFAULT_CPU_LIMIT: Duration = Duration::from_secs(10);
/// As nginx's `proxy_read_timeout`, so a wasmhost behind it answers first.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Room for form posts and modest uploads; an app taking files raises it.
pub const DEFAULT_BODY_LIMIT: u64 = 16 << 20;
/// nginx's `client_body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A tenth of the instance pool, so one app cannot take all of it.
pub const DEFAULT_CONCURRENCY: u32 = 100;
pub const DEFAULT_QUEUE: u32 = 200;
pub const DEFAULT_OUTBOUND_TIMEOUT: Duration = Duration::from_secs(30);
/// As many as requests may run at once, so one outbound call each never waits.
pub const DEFAULT_OUTBOUND_CONCURRENCY: u32 = 100;
/// As many as a process gets by default on many systems (macOS, Solaris,
/// and the soft limit older Linux distributions set): room for any real
/// app, and a small share of what the server holds.
pub const DEFAULT_MAX_OPEN_PER_INSTANCE: u32 = 256;

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_limit: DEFAULT_MEMORY_LIMIT,
            cpu_limit: DEFAULT_CPU_LIMIT,
            timeout: DEFAULT_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            queue: DEFAULT_QUEUE,
            outbound_timeout: DEFAULT_OUTBOUND_TIMEOUT,
            outbound_concurrency: DEFAULT_OUTBOUND_CONCURRENCY,
            max_per_client: None,
            max_open_per_instance: DEFAULT_MAX_OPEN_PER_INSTANCE,
        }
    }
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
