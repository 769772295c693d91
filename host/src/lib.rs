//! wasmhost: an application server for WebAssembly components.
//!
//! The crate is in folders, one per concern; `docs/architecture.md` draws
//! one request's path through them, for WASI 0.2 and 0.3.
//!
//! ```text
//! config      flags and wasmhost.toml as one validated `Config`: plain data
//!             the runtime reads (and the URL segment rules, `paths`)
//! telemetry   the counts the request path keeps, the log-rate bound
//! grants      what a guest may reach outside: directories, descriptors,
//!             egress rules, outbound HTTP and its connection pool, TCP
//! guest       everything about running guests, behind one door
//!             (`guest::serve`): apps, engines, the compile cache,
//!             instances, the sandbox, limits, bodies, faults, p2 and p3
//! http        accept to response: listeners, TLS, one connection's clock,
//!             the per-request service (head rules, forwarding headers, one
//!             route lookup, the access log, the dev error page)
//! admin       the admin listener: /healthz, /readyz, /metrics, status page
//! commands    serve, check, dev, new, nginx, reload, signals, systemd,
//!             logging, runtimes: the wiring of everything above
//! ```
//!
//! Beside them: `deferred` (work a request leaves for its connection to
//! run after the response, as plain futures) and `allocator` (the global
//! allocator, and freed memory handed back from idle threads).
//!
//! Each folder may import only the folders below it in [`LAYERS`], and the
//! HTTP layer reaches the guest only through the door: what `guest/mod.rs`
//! itself exports (`serve`, `App`, `Client`, `Connection`, `Body`,
//! `plain`), never a module inside `guest/`. The test at the end of this
//! file reads the sources and holds every folder to it, with no import
//! cycle between files.
//!
//! [`serve`] (`http::server::run`) is the entry point for an embedder or a
//! test: listeners, a route table and a shutdown future in, no signals;
//! the types it needs are re-exported here, the folders are the crate's own.

/// Each top-level module and what it may import (besides itself).
pub const LAYERS: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("deferred", &[]),
    ("allocator", &[]),
    ("telemetry", &["config"]),
    ("grants", &["config", "telemetry"]),
    (
        "guest",
        &["config", "telemetry", "grants", "deferred", "allocator"],
    ),
    ("http", &["config", "telemetry", "deferred", "guest"]),
    ("admin", &["config", "telemetry", "http", "guest"]),
    (
        "commands",
        &[
            "config",
            "telemetry",
            "grants",
            "guest",
            "http",
            "admin",
            "deferred",
            "allocator",
        ],
    ),
];

/// Folders that may reach `guest` only through its door.
pub const THROUGH_THE_DOOR: &[&str] = &["http"];

pub(crate) mod admin;
pub mod allocator;
pub(crate) mod commands;
pub mod config;
pub(crate) mod deferred;
pub(crate) mod grants;
pub(crate) mod guest;
pub(crate) mod http;
pub(crate) mod telemetry;

// The binary's pieces, and the embedder API: load apps with an engine and
// a pool, put them in a route table, and serve it on your own listeners
// until your own shutdown future resolves.
pub use commands::logging;
pub use guest::App;
pub use guest::app::{Tier, load as load_app};
pub use guest::engine::{Engines, PoolSize};
pub use guest::instances::Pool;
pub use guest::limits::MemoryBudget;
pub use http::router::{Router, Routes};
pub use http::server::{Drained, Listener, Options, run as serve};

use anyhow::Result;
use config::cli::{Cli, Command};

/// Runs one command to completion; what it prints on standard output.
pub fn run(cli: Cli) -> Result<String> {
    match cli.command {
        Command::Serve(args) => commands::serve::serve(args).map(|()| String::new()),
        Command::Check(source) => commands::check::check(source),
        Command::Nginx(args) => commands::nginx::run(args),
        Command::New(args) => commands::scaffold::write(&args),
        Command::Dev(args) => commands::serve::dev(args).map(|()| String::new()),
    }
}

#[cfg(test)]
mod layers {
    use super::{LAYERS, THROUGH_THE_DOOR};
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`, as its module path (`guest::p3`).
    fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            if path.is_dir() {
                let mut inner = prefix.to_vec();
                inner.push(name);
                modules(&path, &inner, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let mut module = prefix.to_vec();
                if name != "mod" && name != "lib" && name != "main" {
                    module.push(name);
                }
                out.insert(module, path);
            }
        }
    }

    /// The `crate::…` paths a file names outside its test module.
    fn paths_named(source: &str) -> Vec<Vec<String>> {
        let code = source.split("#[cfg(test)]").next().unwrap();
        let mut found = Vec::new();
        for (at, _) in code.match_indices("crate::") {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let rest = &code[at + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(
                path.split("::")
                    .filter(|segment| !segment.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
        found
    }

    /// The module file a path lands in: its longest prefix that is one.
    fn module_of(path: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Vec<String> {
        (0..=path.len())
            .rev()
            .map(|len| path[..len].to_vec())
            .find(|prefix| modules.contains_key(prefix))
            .unwrap()
    }

    #[test]
    fn every_folder_imports_only_what_its_layer_allows_and_files_form_no_cycle() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = BTreeMap::new();
        modules(&root, &[], &mut all);
        let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
        let mut broken = Vec::new();
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (module, file) in &all {
            let Some(folder) = module.first() else {
                continue;
            };
            let may = allowed
                .get(folder.as_str())
                .unwrap_or_else(|| panic!("{} is in no layer of LAYERS", file.display()));
            let source = std::fs::read_to_string(file).unwrap();
            for path in paths_named(&source) {
                let Some(target) = path.first() else {
                    continue;
                };
                // Macros exported at the crate root (`crate::limited!`).
                if !all.keys().any(|known| known.first() == Some(target)) {
                    continue;
                }
                if target != folder && !may.contains(&target.as_str()) {
                    broken.push(format!("{}: crate::{}", file.display(), path.join("::")));
                }
                if target == "guest"
                    && target != folder
                    && THROUGH_THE_DOOR.contains(&folder.as_str())
                    && module_of(&path, &all).len() > 1
                {
                    broken.push(format!(
                        "{}: crate::{} is behind guest's door",
                        file.display(),
                        path.join("::")
                    ));
                }
                let to = module_of(&path, &all);
                if &to != module {
                    edges.entry(module.clone()).or_default().insert(to);
                }
            }
        }
        assert!(
            broken.is_empty(),
            "imports that break LAYERS:\n{}",
            broken.join("\n")
        );
        // A file that imports one that imports it back (through any chain).
        let mut state: BTreeMap<Vec<String>, bool> = BTreeMap::new();
        fn visit(
            at: &Vec<String>,
            edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
            state: &mut BTreeMap<Vec<String>, bool>,
            trail: &mut Vec<Vec<String>>,
        ) {
            match state.get(at) {
                Some(true) => return,
                Some(false) => {
                    let names: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                    panic!("import cycle: {} -> {}", names.join(" -> "), at.join("::"));
                }
                None => {}
            }
            state.insert(at.clone(), false);
            trail.push(at.clone());
            for next in edges.get(at).into_iter().flatten() {
                visit(next, edges, state, trail);
            }
            trail.pop();
            state.insert(at.clone(), true);
        }
        for module in all.keys() {
            visit(module, &edges, &mut state, &mut Vec::new());
        }
    }

    /// `source` with comments, strings and character literals blanked,
    /// line breaks kept: braces left are the code's own.
    fn code_only(source: &str) -> String {
        let chars: Vec<char> = source.chars().collect();
        let mut out = String::with_capacity(source.len());
        let mut at = 0;
        let blank = |out: &mut String, text: &[char]| {
            out.extend(text.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
        };
        let starts = |at: usize, text: &str| {
            text.chars()
                .enumerate()
                .all(|(i, c)| chars.get(at + i) == Some(&c))
        };
        while at < chars.len() {
            let end = if starts(at, "//") {
                (at..chars.len())
                    .find(|&i| chars[i] == '\n')
                    .unwrap_or(chars.len())
            } else if starts(at, "/*") {
                (at + 2..chars.len())
                    .find(|&i| starts(i, "*/"))
                    .map_or(chars.len(), |i| i + 2)
            } else if chars[at] == 'r'
                && !chars
                    .get(at.wrapping_sub(1))
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                && (starts(at + 1, "\"") || starts(at + 1, "#"))
            {
                let hashes = chars[at + 1..].iter().take_while(|&&c| c == '#').count();
                if chars.get(at + 1 + hashes) != Some(&'"') {
                    out.push(chars[at]);
                    at += 1;
                    continue;
                }
                let close: String = std::iter::once('"')
                    .chain((0..hashes).map(|_| '#'))
                    .collect();
                (at + 2 + hashes..chars.len())
                    .find(|&i| starts(i, &close))
                    .map_or(chars.len(), |i| i + close.len())
            } else if chars[at] == '"' {
                let mut i = at + 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i + 1
            } else if chars[at] == '\''
                && (chars.get(at + 2) == Some(&'\'') || chars.get(at + 1) == Some(&'\\'))
            {
                (at + 2..chars.len())
                    .find(|&i| chars[i] == '\'')
                    .map_or(chars.len(), |i| i + 1)
            } else {
                out.push(chars[at]);
                at += 1;
                continue;
            };
            let end = end.min(chars.len());
            blank(&mut out, &chars[at..end]);
            at = end;
        }
        out
    }

    /// Each `fn` with a body in `code`: its name, first line and length in
    /// lines, from `fn` to its closing brace.
    fn functions(code: &str) -> Vec<(String, usize, usize)> {
        let bytes = code.as_bytes();
        let mut found = Vec::new();
        for (at, _) in code.match_indices("fn ") {
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let name: String = code[at + 3..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let Some(open) = code[at..].find(['{', ';']).map(|i| at + i) else {
                continue;
            };
            if name.is_empty() || bytes[open] == b';' {
                continue;
            }
            let mut depth = 0;
            let close = (open..bytes.len()).find(|&i| {
                match bytes[i] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    _ => {}
                }
                depth == 0
            });
            let first = code[..at].matches('\n').count() + 1;
            let last = code[..close.unwrap_or(bytes.len())].matches('\n').count() + 1;
            found.push((name, first, last - first + 1));
        }
        found
    }

    #[test]
    fn no_function_is_a_hundred_lines_long() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = BTreeMap::new();
        modules(&root, &[], &mut all);
        let mut long = Vec::new();
        for file in all.values() {
            let code = code_only(&std::fs::read_to_string(file).unwrap());
            for (name, line, lines) in functions(&code) {
                if lines >= 100 {
                    long.push(format!("{}:{line}: {name}, {lines} lines", file.display()));
                }
            }
        }
        assert!(long.is_empty(), "split these:\n{}", long.join("\n"));
        // The scan itself: a brace inside a string or comment is no brace.
        let sample = "fn a() {\n    let s = \"}\";\n    // }\n    let c = '}';\n}\nfn b() {}\n";
        let lengths: Vec<usize> = functions(&code_only(sample)).iter().map(|f| f.2).collect();
        assert_eq!(lengths, [5, 1]);
    }
}
