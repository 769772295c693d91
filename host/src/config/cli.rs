//! The command line: clap types only. Validation that needs more than one flag
//! or the file system happens in `config`.

use super::outbound::OutboundGrant;
use super::settings::MAX_SPARES;
use super::stores::{StoreTarget, parse_bucket_flag, parse_config_var};
use super::units::{
    Destination, parse_admin, parse_dir, parse_duration, parse_env, parse_env_name, parse_network,
    parse_positive_duration, parse_size,
};
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

/// An application server for WebAssembly components.
///
/// wasmhost serves `wasi:http/proxy` components over HTTP the way a WSGI
/// server serves Python callables: every request runs in a fresh, sandboxed
/// instance of the component.
#[derive(Debug, Parser)]
#[command(name = "wasmhost", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// How the server's own log lines are written: `--log-format` of
    /// `serve` and `dev`, text for the other commands.
    pub fn log_format(&self) -> LogFormat {
        match &self.command {
            Command::Serve(args) => args.log_format,
            Command::Dev(args) => args.serve.log_format,
            _ => LogFormat::Text,
        }
    }
}

/// The server's own log lines (not the access log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for a terminal or the journal.
    #[default]
    Text,
    /// One JSON object per line (time, level, message, and the event's
    /// fields such as `app`), for a log pipeline.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve components over HTTP/1.1 and HTTP/2, plain or TLS.
    Serve(ServeArgs),
    /// Load and validate every component and print the route table; serve nothing.
    Check(Source),
    /// Print an nginx config that fronts the same configuration `serve`
    /// takes: its listeners as upstream servers, its apps as locations.
    Nginx(NginxArgs),
    /// Write a new app project, ready to build and serve, e.g.
    /// `wasmhost new rust hello`; prints the commands to build and serve it.
    New(NewArgs),
    /// Serve a project while developing it: rebuild an app when its sources
    /// change (its `build` and `watch` in wasmhost.toml) and swap the new
    /// build in without a restart. Takes `serve`'s flags; the config file is
    /// ./wasmhost.toml unless --config names another.
    Dev(DevArgs),
}

/// What `wasmhost dev` takes: `serve`'s flags and its own.
#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Do not answer an app's requests with its failed build's error page;
    /// keep serving its last good build instead.
    #[arg(long)]
    pub no_dev_errors: bool,
}

/// What `wasmhost new` writes.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The language of the app.
    #[arg(value_enum)]
    pub lang: Lang,
    /// The project's directory; its last component names the app. It must
    /// not exist, or be empty.
    #[arg(value_name = "NAME")]
    pub dir: PathBuf,
}

/// The languages `wasmhost new` has a template for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the `wasi` crate, built with cargo for wasm32-wasip2.
    Rust,
    /// Python with componentize-py 0.25.1.
    Python,
    /// A Python WSGI app (PEP 3333), built by the wasmhost-wsgi bridge.
    PythonWsgi,
    /// JavaScript with componentize-js 0.23 (npm), a `fetch` event handler.
    Javascript,
}

/// What to serve: a component at `/`, mounts, a config file, or a mix (flags
/// override the file).
#[derive(Debug, Args)]
pub struct Source {
    /// A component to serve at `/`: shorthand for `--mount /=APP.wasm`.
    #[arg(value_name = "APP.wasm")]
    pub app: Option<PathBuf>,

    /// Mount a component at a URL prefix, e.g. `--mount /api=api.wasm`.
    /// Repeatable; the longest matching prefix serves a request.
    #[arg(long = "mount", value_name = "PREFIX=FILE", value_parser = parse_mount)]
    pub mounts: Vec<MountArg>,

    /// A `wasmhost.toml` with `[[listen]]` and `[[app]]` entries. Flags given
    /// as well override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Set by `wasmhost dev`: the file's `[app.dev]` tables apply.
    #[arg(skip)]
    pub dev: bool,

    /// Let one instance serve up to N requests in turn (for every app)
    /// instead of a fresh instance per request: much faster for large guests,
    /// but state left by one request is seen by the next.
    #[arg(long, value_name = "N")]
    pub reuse: Option<NonZeroU32>,

    /// Let one instance of a WASI 0.3 app serve up to N requests at once
    /// (needs --reuse; a 0.2 app serves one at a time) [default: 16]
    #[arg(long, value_name = "N")]
    pub concurrency_per_instance: Option<NonZeroU32>,

    /// Keep N instances of each app instantiated ahead of requests, so a
    /// request does not wait for instantiation [default: 2; 0 turns it off]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=MAX_SPARES as i64))]
    pub spares: Option<u32>,

    /// Memory one instance of any app may grow to, e.g. `64MiB`, `1GiB`; a
    /// request that asks for more gets a 500 [default: 256MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
    /// CPU time one request's guest may run for, e.g. `500ms`, `10s`; it is
    /// stopped and the request gets a 504 [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub cpu_limit: Option<Duration>,
    /// Time a request's guest may take, waiting included, e.g. `30s`; it is
    /// stopped and the request gets a 504, or its streaming response is cut
    /// [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub timeout: Option<Duration>,
    /// Bytes of request body any app may read, e.g. `1MiB`; a larger body
    /// gets a 413 [default: 16MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub body_limit: Option<u64>,
    /// Time between two reads of a request body while the app waits for
    /// it, e.g. `10s`; a client slower than that gets a 408 and its request
    /// ends [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub body_timeout: Option<Duration>,
    /// Give every app's guest this environment variable, e.g.
    /// `--env DATABASE_URL=postgres://db/app`; repeatable. Guests get no
    /// environment but what is granted
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Give every app's guest this variable of wasmhost's own environment,
    /// read at load; repeatable. One that is unset is left out, with a
    /// warning
    #[arg(long = "inherit-env", value_name = "NAME", value_parser = parse_env_name)]
    pub inherit_env: Vec<String>,
    /// Give every app this `wasi:config/store` variable, e.g.
    /// `--config-var greeting=hello`; repeatable. A guest's `get` of any
    /// other key answers none
    #[arg(long = "config-var", value_name = "KEY=VALUE", value_parser = parse_config_var)]
    pub config_vars: Vec<(String, String)>,
    /// Give every app a `wasi:keyvalue` bucket: `memory` (the app's own, in
    /// wasmhost's memory), `memory:NAME` (shared by the apps given NAME) or
    /// `redis://HOST:PORT/DB`, for the default bucket or as `BUCKET=STORE`;
    /// repeatable. Guests open no bucket unless granted
    #[arg(long = "keyvalue", value_name = "[BUCKET=]STORE", value_parser = parse_bucket_flag)]
    pub keyvalue: Vec<(String, StoreTarget)>,
    /// Bytes of keys and values one in-memory keyvalue store may hold, e.g.
    /// `64MiB`; a write past it gets an error [default: 64MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub keyvalue_memory_limit: Option<u64>,
    /// Give every app's guest this host directory, read-only unless `:rw`,
    /// e.g. `--dir static:/static`; repeatable. The guest can reach nothing
    /// outside it
    #[arg(long = "dir", value_name = "HOST[:GUEST][:rw]", value_parser = parse_dir)]
    pub dirs: Vec<(String, String, bool)>,
    /// Accept a granted directory inside another that an app may write; it
    /// is then opened through that one, following no link. Refused without
    /// this: the outer app's guest could swap the inner directory for a link
    #[arg(long = "allow-nested-dirs")]
    pub allow_nested_dirs: bool,
    /// Let every app's guest reach this host, e.g.
    /// `--allow-outbound https://api.example.com` or `tcp://127.0.0.1:6379`;
    /// repeatable. Guests reach nothing but what is granted
    #[arg(long = "allow-outbound", value_name = "URL", value_parser = OutboundGrant::parse)]
    pub allow_outbound: Vec<OutboundGrant>,
    /// A PEM file of the CA that signs every app's HTTPS upstreams, trusted
    /// besides the public roots
    #[arg(long, value_name = "FILE")]
    pub outbound_ca: Option<PathBuf>,
    /// Time an outbound request may take to connect and get its response's
    /// head, then between two reads of its body [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub outbound_timeout: Option<Duration>,
    /// Outbound requests of any one app in flight at once; more wait for
    /// one to finish, within the app's --timeout [default: 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub outbound_concurrency: Option<u32>,
    /// Files and sockets one instance of any app may hold open at once;
    /// past it an open fails with the interface's error [default: 256]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_open_per_instance: Option<u32>,
    /// Requests of any one app that one client address may have running or
    /// waiting at once; more wait for one of its own to end [default: three
    /// quarters of --concurrency]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_per_client: Option<u32>,
    /// Requests of any one app that may run at once [default: 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Requests of any one app that may wait for a place to run; past that
    /// they get a 503 with Retry-After at once [default: 200]
    #[arg(long, value_name = "N")]
    pub queue: Option<u32>,
    /// Keep compiled components here, so a restart or a reload to a version
    /// seen before skips compiling [default: ~/.cache/wasmhost/compiled]
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every component at every start and reload; keep nothing on disk.
    #[arg(long)]
    pub no_cache: bool,
}

/// `--mount PREFIX=FILE` as given.
#[derive(Debug, Clone)]
pub struct MountArg {
    pub prefix: String,
    pub component: PathBuf,
}

fn parse_mount(text: &str) -> Result<MountArg, String> {
    match text.split_once('=') {
        Some((prefix, component)) if !component.is_empty() => Ok(MountArg {
            prefix: prefix.to_string(),
            component: component.into(),
        }),
        _ => Err(format!(
            "`{text}` is not PREFIX=FILE; write e.g. --mount /api=api.wasm"
        )),
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: Source,

    /// Do not watch the component files: serve what was loaded at startup
    /// until the process ends. By default a changed file is recompiled and
    /// swapped in while requests keep flowing.
    #[arg(long)]
    pub no_reload: bool,

    /// TCP port to listen on [default: 8080]; 0 picks a free port and prints it.
    #[arg(long, short)]
    pub port: Option<u16>,

    /// Address to listen on [default: 127.0.0.1]. The default answers only
    /// this machine; use 0.0.0.0 (or ::) to accept connections from other hosts.
    #[arg(long)]
    pub host: Option<IpAddr>,

    /// Listen on IP:PORT; repeatable, every listener serves the same apps.
    /// Replaces --host/--port and the config file's `[[listen]]` entries.
    #[arg(long = "listen", value_name = "IP:PORT", conflicts_with_all = ["port", "host"])]
    pub listen: Vec<SocketAddr>,

    /// Serve HTTPS with this certificate chain (PEM, leaf first) on every
    /// listener that has no TLS of its own; repeat with --tls-key for more
    /// certificates, chosen by the name the client asks for (SNI).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Vec<PathBuf>,
    /// The private key (PEM, not encrypted) of the --tls-cert given in the
    /// same position.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Vec<PathBuf>,

    /// Connections open at once across all listeners; past it new ones wait
    /// to be accepted [default: 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Memory all guests together may hold, e.g. `8GiB`; an instance that
    /// would grow past it fails its request with a 503 [default: 3/4 of the
    /// machine's memory, or of the cgroup's limit if lower]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_budget: Option<u64>,
    /// Believe X-Forwarded-For, X-Real-IP, X-Forwarded-Proto and
    /// X-Forwarded-Host from peers in this network (e.g. `127.0.0.1`,
    /// `10.0.0.0/8`); repeatable. From anyone else they are replaced with
    /// what the socket says [default: none]
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_network)]
    pub trusted_proxies: Vec<IpNet>,
    /// How the server's own log lines are written: `text`, or `json` (one
    /// object per line) [default: text]
    #[arg(long, value_name = "text|json", default_value = "text")]
    pub log_format: LogFormat,
    /// Serve /healthz, /readyz and /metrics (Prometheus) on this address of
    /// its own, never routed to apps: PORT (on 127.0.0.1) or IP:PORT
    /// [default: off]
    #[arg(long, value_name = "[IP:]PORT", value_parser = parse_admin)]
    pub admin: Option<SocketAddr>,
    /// Write a line per request, in the combined log format plus duration
    /// and app, to FILE (appended), `-` (standard output) or `off`
    /// [default: off]
    #[arg(long, value_name = "FILE|-|off", value_parser = Destination::parse)]
    pub access_log: Option<Destination>,
    /// Time a client has to send a request head, from its first byte (or
    /// from connecting); a slower one is disconnected [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub header_timeout: Option<Duration>,
    /// How long a connection may stay open with no request running and
    /// nothing arriving before it is closed [default: 75s]
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub keep_alive_timeout: Option<Duration>,
    /// How long a response may wait on a client that takes nothing (no
    /// write to its socket succeeds, no response body is taken) before its
    /// connection is closed [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub send_timeout: Option<Duration>,
    /// Connection worker threads, each serving its connections from accept
    /// to close [default: one per CPU].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// On SIGINT/SIGTERM, how long requests in flight may run before they are
    /// cut, e.g. `30s`, `500ms` [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct NginxArgs {
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Each listener stands for N wasmhost processes on consecutive ports
    /// (8080, 8081, …), all upstream servers.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub upstream: u16,

    /// Where nginx listens: PORT or IP:PORT.
    #[arg(long, value_name = "[IP:]PORT", default_value = "80")]
    pub nginx_listen: String,

    /// nginx's server_name.
    #[arg(long, value_name = "NAME", default_value = "_")]
    pub server_name: String,

    /// The directory nginx serves /static/ and /favicon.ico from.
    #[arg(long, value_name = "DIR", default_value = "/srv/wasmhost/static")]
    pub static_root: PathBuf,

    /// Print a complete nginx.conf for running nginx as any user, with its
    /// pid, logs and temp files under one directory (nginx -p DIR), instead
    /// of the part that goes in an existing nginx's http block.
    #[arg(long)]
    pub standalone: bool,
}
