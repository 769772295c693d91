//! Configuration: the command line (`cli`) and an optional `wasmhost.toml`
//! (`file`) converge here, once, into one validated [`Config`] (`settings`),
//! written in the units of `units`. Flags override the file, the file
//! overrides the defaults. Every error names the flag, or the file and line,
//! and what to do.
//!
//! Configuration is data: nothing here imports a runtime module; the
//! runtime reads these types.

pub mod cli;
pub mod dirs;
pub mod file;
pub mod outbound;
pub mod paths;
pub mod settings;
pub mod stores;
pub mod units;

pub use settings::*;
pub use stores::{ConfigVars, KeyValueGrant, RedisTarget, StoreTarget};
pub use units::{Destination, parse_admin, parse_duration, parse_network, parse_size};

use crate::config::paths::normalise_prefix;
use anyhow::{Result, anyhow, bail};
use cli::{MountArg, ServeArgs, Source};
use file::File;
use std::net::SocketAddr;
use std::path::Path;

/// The `serve` configuration.
pub fn for_serve(args: &ServeArgs) -> Result<Config> {
    let config = for_nginx(args)?;
    require_some(&config.mounts)?;
    Ok(config)
}

/// The configuration `nginx` writes a front for: as `serve`'s, but it may
/// have no apps (the front then proxies everything to the listeners).
pub fn for_nginx(args: &ServeArgs) -> Result<Config> {
    let file = load_file(&args.source)?;
    let file = file.as_ref();
    Ok(Config {
        listeners: listeners(args, file)?,
        mounts: mounts(&args.source, file)?,
        threads: args.threads.or(file.and_then(|f| f.threads)),
        reload: !args.no_reload,
        shutdown_timeout: args
            .shutdown_timeout
            .or(file.and_then(|f| f.shutdown_timeout))
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        max_connections: args
            .max_connections
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .or(file.and_then(|f| f.max_connections))
            .unwrap_or(DEFAULT_MAX_CONNECTIONS),
        memory_budget: args.memory_budget.or(file.and_then(|f| f.memory_budget)),
        trusted_proxies: if args.trusted_proxies.is_empty() {
            file.map(|f| f.trusted_proxies.clone()).unwrap_or_default()
        } else {
            args.trusted_proxies.clone()
        },
        access_log: args
            .access_log
            .clone()
            .or(file.and_then(|f| f.access_log.clone()))
            .unwrap_or_default(),
        admin: args.admin.or(file.and_then(|f| f.admin)),
        timeouts: Timeouts {
            header: args
                .header_timeout
                .or(file.and_then(|f| f.header_timeout))
                .unwrap_or(DEFAULT_TIMEOUTS.header),
            keep_alive: args
                .keep_alive_timeout
                .or(file.and_then(|f| f.keep_alive_timeout))
                .unwrap_or(DEFAULT_TIMEOUTS.keep_alive),
            send: args
                .send_timeout
                .or(file.and_then(|f| f.send_timeout))
                .unwrap_or(DEFAULT_TIMEOUTS.send),
        },
    })
}

/// The mounts `check` validates.
pub fn for_check(source: &Source) -> Result<Vec<Mount>> {
    let file = load_file(source)?;
    let mounts = mounts(source, file.as_ref())?;
    require_some(&mounts)?;
    Ok(mounts)
}

fn load_file(source: &Source) -> Result<Option<File>> {
    source
        .config
        .as_deref()
        .map(|path| File::load(path, source.dev))
        .transpose()
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

/// `--listen`, else `--host`/`--port`, else the file's `[[listen]]`, else
/// the default address; `--tls-cert`/`--tls-key` for those without TLS.
fn listeners(args: &ServeArgs, file: Option<&File>) -> Result<Vec<ListenerConfig>> {
    let from_file = file.map_or(&[][..], |f| f.listeners.as_slice());
    let plain = |addr| ListenerConfig {
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
    Ok(listeners)
}

/// The file's mounts, then the flags': a flag for a route the file also has
/// replaces the file's entry. Flags that set a mount's settings (`--reuse`,
/// `--spares`, the limits) apply to every mount, the file's included.
fn mounts(source: &Source, file: Option<&File>) -> Result<Vec<Mount>> {
    let mut mounts: Vec<Mount> = file.map(|f| f.mounts.clone()).unwrap_or_default();
    add_flag_mounts(source, &mut mounts)?;
    let inherited = inherited_by_flags(source)?;
    let dirs = source
        .dirs
        .iter()
        .map(|dir| dirs::dir_grant(dir.clone(), Path::new(""), &Origin::Flag("--dir")))
        .collect::<Result<Vec<_>>>()?;
    for grant in &source.allow_outbound {
        warn_if_wide(grant, "--allow-outbound");
    }
    let outbound_ca = source
        .outbound_ca
        .clone()
        .map(outbound::OutboundCa::read)
        .transpose()
        .map_err(|e| anyhow!("--outbound-ca: {e}"))?;
    for mount in &mut mounts {
        if let Some(uses) = source.reuse {
            mount.mode = Mode::Reuse(uses);
        }
        mount.spares = source.spares.unwrap_or(mount.spares);
        if let Some(n) = source.concurrency_per_instance {
            if n.get() > 1 && mount.mode == Mode::Fresh {
                bail!(
                    "--concurrency-per-instance {n}: app {} makes a fresh instance per request, which serves one request; add --reuse N, or reuse = N to its [[app]]",
                    mount.route
                );
            }
            mount.concurrency_per_instance = n;
        }
        limit_flags(source, &mut mount.limits);
        for (name, value) in source.env.iter().chain(&inherited) {
            mount.grants.set_env(name.clone(), value.clone());
        }
        for (key, value) in &source.config_vars {
            mount.grants.config.set(key.clone(), value.clone());
        }
        for (bucket, store) in &source.keyvalue {
            mount
                .grants
                .keyvalue
                .buckets
                .insert(bucket.clone(), store.clone());
        }
        if let Some(limit) = source.keyvalue_memory_limit {
            mount.grants.keyvalue.memory_limit = limit;
        }
        mount.grants.dirs.extend(dirs.iter().cloned());
        mount.grants.allow_nested_dirs |= source.allow_nested_dirs;
        mount
            .grants
            .outbound
            .extend(source.allow_outbound.iter().cloned());
        if outbound_ca.is_some() {
            mount.grants.outbound_ca = outbound_ca.clone();
        }
    }
    dirs::place_nested(&mut mounts)?;
    Ok(mounts)
}

/// The mounts the flags give (APP.wasm at `/`, each `--mount`), added to
/// `mounts`; one for a route the file also mounts replaces the file's.
fn add_flag_mounts(source: &Source, mounts: &mut Vec<Mount>) -> Result<()> {
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
            concurrency_per_instance: DEFAULT_CONCURRENCY_PER_INSTANCE,
            limits: Limits::default(),
            grants: Grants::default(),
            origin,
        });
    }
    mounts.extend(from_flags);
    Ok(())
}

/// The limit flags, over an app's own limits.
fn limit_flags(source: &Source, limits: &mut Limits) {
    limits.memory_limit = source.memory_limit.unwrap_or(limits.memory_limit);
    limits.cpu_limit = source.cpu_limit.unwrap_or(limits.cpu_limit);
    limits.timeout = source.timeout.unwrap_or(limits.timeout);
    limits.body_limit = source.body_limit.unwrap_or(limits.body_limit);
    limits.body_timeout = source.body_timeout.unwrap_or(limits.body_timeout);
    limits.concurrency = source.concurrency.unwrap_or(limits.concurrency);
    limits.queue = source.queue.unwrap_or(limits.queue);
    limits.outbound_timeout = source.outbound_timeout.unwrap_or(limits.outbound_timeout);
    limits.outbound_concurrency = source
        .outbound_concurrency
        .unwrap_or(limits.outbound_concurrency);
    limits.max_per_client = source.max_per_client.or(limits.max_per_client);
    limits.max_open_per_instance = source
        .max_open_per_instance
        .unwrap_or(limits.max_open_per_instance);
}

/// A grant of any host works, but is rarely what was meant.
pub(crate) fn warn_if_wide(grant: &outbound::OutboundGrant, place: &str) {
    if grant.is_wide() {
        tracing::warn!(
            "{place}: allowed_outbound_hosts entry \"{grant}\" lets the guest reach any host \
             (internal addresses still need their own entry); name the hosts it needs"
        );
    }
}

/// The variables `--inherit-env` names, read once for every app.
fn inherited_by_flags(source: &Source) -> Result<Vec<(String, String)>> {
    let mut inherited = Vec::new();
    for name in &source.inherit_env {
        if let Some(value) =
            units::inherit_env(name, "--inherit-env").map_err(|e| anyhow!("{e}"))?
        {
            inherited.push((name.clone(), value));
        }
    }
    Ok(inherited)
}

/// A mounted component must be a file that can be read.
fn check_component_exists(path: &Path, origin: &Origin) -> Result<()> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => bail!(origin.locate(format!("{shown} is not a file"))),
        Err(error) => bail!(origin.locate(format!("cannot read {shown}: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use cli::{Cli, Command};
    use std::time::Duration;

    /// A directory with `app.wasm` (its contents are never read here) and
    /// `wasmhost.toml` holding `toml`.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(toml: &str) -> Dir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "wasmhost-config-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("app.wasm"), b"").unwrap();
            std::fs::write(dir.join("wasmhost.toml"), toml).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `wasmhost serve` with `flags`, and `--config` if `file` is given.
    fn config(flags: &[&str], file: Option<&str>) -> Config {
        let dir = Dir::new(file.unwrap_or(""));
        let app = dir.0.join("app.wasm");
        let toml = dir.0.join("wasmhost.toml");
        let mut argv = vec!["wasmhost", "serve"];
        if file.is_some() {
            argv.extend(["--config", toml.to_str().unwrap()]);
        } else {
            argv.push(app.to_str().unwrap());
        }
        argv.extend(flags);
        let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!("parsed as serve")
        };
        for_serve(&args).unwrap()
    }

    /// One setting: its flag, its file line (a global key, or an `[[app]]`
    /// key), and how to read it from a `Config`.
    struct Key {
        flag: [&'static str; 2],
        file: &'static str,
        app_key: bool,
        read: fn(&Config) -> String,
    }

    fn app(config: &Config) -> &Mount {
        &config.mounts[0]
    }

    fn keys() -> Vec<Key> {
        let mut keys = global_keys();
        keys.extend(app_keys());
        keys
    }

    /// The process's keys: a flag, the same key in the file, and how to
    /// read it back from the config.
    fn global_keys() -> Vec<Key> {
        let global = |flag, file, read| Key {
            flag,
            file,
            app_key: false,
            read,
        };
        vec![
            global(["--threads", "3"], "threads = 5", |c| {
                format!("{:?}", c.threads)
            }),
            global(
                ["--shutdown-timeout", "3s"],
                "shutdown_timeout = \"5s\"",
                |c| format!("{:?}", c.shutdown_timeout),
            ),
            global(["--max-connections", "3"], "max_connections = 5", |c| {
                c.max_connections.to_string()
            }),
            global(
                ["--memory-budget", "3GiB"],
                "memory_budget = \"5GiB\"",
                |c| format!("{:?}", c.memory_budget),
            ),
            global(["--header-timeout", "3s"], "header_timeout = \"5s\"", |c| {
                format!("{:?}", c.timeouts.header)
            }),
            global(
                ["--keep-alive-timeout", "3s"],
                "keep_alive_timeout = \"5s\"",
                |c| format!("{:?}", c.timeouts.keep_alive),
            ),
            global(
                ["--trusted-proxy", "10.0.0.3"],
                "trusted_proxies = [\"10.0.0.5\"]",
                |c| format!("{:?}", c.trusted_proxies),
            ),
            global(["--send-timeout", "3s"], "send_timeout = \"5s\"", |c| {
                format!("{:?}", c.timeouts.send)
            }),
            global(["--access-log", "-"], "access_log = \"access.log\"", |c| {
                format!("{:?}", c.access_log)
            }),
            global(
                ["--listen", "127.0.0.1:3"],
                "[[listen]]\naddress = \"127.0.0.1:5\"",
                |c| format!("{:?}", c.listeners),
            ),
        ]
    }

    /// An app's keys, likewise.
    fn app_keys() -> Vec<Key> {
        let per_app = |flag, file, read| Key {
            flag,
            file,
            app_key: true,
            read,
        };
        vec![
            per_app(["--reuse", "3"], "reuse = 5", |c| {
                format!("{:?}", app(c).mode)
            }),
            per_app(["--spares", "3"], "spares = 5", |c| {
                app(c).spares.to_string()
            }),
            per_app(["--env", "A=3"], "env = { A = \"5\" }", |c| {
                format!("{:?}", app(c).grants.env)
            }),
            per_app(["--memory-limit", "3MiB"], "memory_limit = \"5MiB\"", |c| {
                app(c).limits.memory_limit.to_string()
            }),
            per_app(["--memory-limit", "3MiB"], "memory = \"5MiB\"", |c| {
                app(c).limits.memory_limit.to_string()
            }),
            per_app(["--cpu-limit", "3s"], "cpu_limit = \"5s\"", |c| {
                format!("{:?}", app(c).limits.cpu_limit)
            }),
            per_app(["--cpu-limit", "3s"], "cpu_time = \"5s\"", |c| {
                format!("{:?}", app(c).limits.cpu_limit)
            }),
            per_app(["--timeout", "3s"], "timeout = \"5s\"", |c| {
                format!("{:?}", app(c).limits.timeout)
            }),
            per_app(["--body-limit", "3MiB"], "body_limit = \"5MiB\"", |c| {
                app(c).limits.body_limit.to_string()
            }),
            per_app(["--body-timeout", "3s"], "body_timeout = \"5s\"", |c| {
                format!("{:?}", app(c).limits.body_timeout)
            }),
            per_app(["--concurrency", "3"], "concurrency = 5", |c| {
                app(c).limits.concurrency.to_string()
            }),
            per_app(["--queue", "3"], "queue = 5", |c| {
                app(c).limits.queue.to_string()
            }),
            per_app(["--max-per-client", "3"], "max_per_client = 5", |c| {
                format!("{:?}", app(c).limits.max_per_client)
            }),
            per_app(
                ["--max-open-per-instance", "3"],
                "max_open_per_instance = 5",
                |c| app(c).limits.max_open_per_instance.to_string(),
            ),
            per_app(["--config-var", "a=3"], "config = { a = \"5\" }", |c| {
                format!("{:?}", app(c).grants.config.get("a"))
            }),
            per_app(
                ["--keyvalue", "memory:three"],
                "keyvalue = { default = \"memory\" }",
                |c| format!("{:?}", app(c).grants.keyvalue.buckets),
            ),
            per_app(
                ["--keyvalue-memory-limit", "3MiB"],
                "keyvalue_memory_limit = \"5MiB\"",
                |c| app(c).grants.keyvalue.memory_limit.to_string(),
            ),
        ]
    }

    /// The file with `line` set, and the app every test serves.
    fn file_with(key: &Key) -> String {
        let app = "[[app]]\nroute = \"/\"\ncomponent = \"app.wasm\"\n";
        if key.app_key {
            format!("{app}{}\n", key.file)
        } else {
            format!("{}\n{app}", key.file)
        }
    }

    #[test]
    fn every_key_is_a_flag_over_the_file_over_the_default() {
        let defaults = config(&[], None);
        let empty_file = config(
            &[],
            Some("[[app]]\nroute = \"/\"\ncomponent = \"app.wasm\"\n"),
        );
        for key in keys() {
            let name = key.flag[0];
            let default = (key.read)(&defaults);
            assert_eq!(
                (key.read)(&empty_file),
                default,
                "{name}: an empty file keeps the default"
            );
            let from_file = (key.read)(&config(&[], Some(&file_with(&key))));
            assert_ne!(from_file, default, "{name}: the file sets it");
            let from_flag = (key.read)(&config(&key.flag, None));
            assert_ne!(from_flag, default, "{name}: the flag sets it");
            let both = (key.read)(&config(&key.flag, Some(&file_with(&key))));
            assert_eq!(both, from_flag, "{name}: the flag wins over the file");
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = config(&[], None);
        assert_eq!(config.threads, None);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(config.max_connections, 10_000);
        assert_eq!(config.timeouts, DEFAULT_TIMEOUTS);
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.access_log, Destination::Off);
        assert_eq!(config.listeners[0].addr, "127.0.0.1:8080".parse().unwrap());
        let mount = app(&config);
        assert_eq!((mount.mode, mount.spares), (Mode::Fresh, 2));
        assert_eq!(mount.limits, Limits::default());
        assert!(config.reload);
    }

    #[test]
    fn the_dev_table_applies_under_dev_only() {
        let dir = Dir::new(
            "[[app]]\nroute = \"/\"\ncomponent = \"app.wasm\"\nbuild = \"make\"\n\
             [app.dev]\nbuild = \"make dev\"\ncomponent = \"dev.wasm\"\ndirs = [\"src:/app\"]\n",
        );
        std::fs::write(dir.0.join("dev.wasm"), b"").unwrap();
        std::fs::create_dir(dir.0.join("src")).unwrap();
        let path = dir.0.join("wasmhost.toml");
        let served = File::load(&path, false).unwrap();
        assert_eq!(served.mounts[0].component, dir.0.join("app.wasm"));
        assert!(served.mounts[0].grants.dirs.is_empty());
        let dev = File::load(&path, true).unwrap();
        assert_eq!(dev.mounts[0].component, dir.0.join("dev.wasm"));
        assert_eq!(dev.mounts[0].grants.dirs.len(), 1);
        let builds = file::builds(&path).unwrap();
        assert_eq!(builds[0].command, "make dev");
        assert_eq!(builds[0].component, dir.0.join("dev.wasm"));

        std::fs::write(
            &path,
            "[[app]]\nroute = \"/\"\ncomponent = \"app.wasm\"\n[app.dev]\nreuse = 3\n",
        )
        .unwrap();
        let error = File::load(&path, false).unwrap_err();
        assert!(
            format!("{error:#}").contains(":5: unknown field `reuse`"),
            "{error:#}"
        );
    }

    #[test]
    fn a_limit_under_both_its_names_is_refused() {
        let dir = Dir::new(
            "[[app]]\nroute = \"/\"\ncomponent = \"app.wasm\"\nmemory = \"1MiB\"\nmemory_limit = \"2MiB\"\n",
        );
        let error = File::load(&dir.0.join("wasmhost.toml"), false).unwrap_err();
        assert!(
            format!("{error:#}")
                .ends_with(":4: memory is the older name of memory_limit; give only memory_limit"),
            "{error:#}"
        );
    }

    #[test]
    fn a_config_value_is_a_string_or_an_environment_variable_and_nothing_else() {
        let load = |line: &str| {
            let dir = Dir::new(&format!(
                "[[app]]\nroute = \"/\"\ncomponent = \"app.wasm\"\n{line}\n"
            ));
            File::load(&dir.0.join("wasmhost.toml"), false).map_err(|e| format!("{e:#}"))
        };
        let file = load("config = { a = \"1\", b = { env = \"PATH\" } }").unwrap();
        let vars = &file.mounts[0].grants.config;
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            (vars.get("a"), vars.get("b")),
            (Some("1"), Some(path.as_str()))
        );
        for (line, said) in [
            (
                "config = { a = 1 }",
                ":4: config: a: a value is a string, or { env = \"NAME\" }",
            ),
            (
                "config = { a = { envv = \"X\" } }",
                ":4: config: a: a value is a string",
            ),
            (
                "config = { \"a b\" = \"1\" }",
                ":4: config: config key \"a b\" has ' '",
            ),
            (
                "config = { a = { env = \"WASMHOST_TEST_NEVER_SET\" } }",
                ":4: config: a is read from WASMHOST_TEST_NEVER_SET in wasmhost's environment, which is not set",
            ),
        ] {
            let error = load(line).unwrap_err();
            assert!(error.contains(said), "{line}: {error}");
        }
    }
}
