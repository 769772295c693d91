//! The projects `wasmhost new LANG NAME` writes: the demo apps in
//! guest-examples/, embedded in the binary so a project can be started
//! anywhere, renamed, with the WIT (and for WSGI the bridge) its toolchain
//! needs copied in.

use crate::config::cli::{Lang, NewArgs};
use anyhow::{Result, bail};
use std::path::Path;

/// The files of a WIT directory: its world and the WASI packages it uses.
macro_rules! wit_files {
    ($dir:literal, $into:literal) => {
        &[
            (
                concat!($into, "/world.wit"),
                include_str!(concat!("../../../", $dir, "/world.wit")),
            ),
            (
                concat!($into, "/deps/cli.wit"),
                include_str!(concat!("../../../", $dir, "/deps/cli.wit")),
            ),
            (
                concat!($into, "/deps/clocks.wit"),
                include_str!(concat!("../../../", $dir, "/deps/clocks.wit")),
            ),
            (
                concat!($into, "/deps/filesystem.wit"),
                include_str!(concat!("../../../", $dir, "/deps/filesystem.wit")),
            ),
            (
                concat!($into, "/deps/http.wit"),
                include_str!(concat!("../../../", $dir, "/deps/http.wit")),
            ),
            (
                concat!($into, "/deps/io.wit"),
                include_str!(concat!("../../../", $dir, "/deps/io.wit")),
            ),
            (
                concat!($into, "/deps/random.wit"),
                include_str!(concat!("../../../", $dir, "/deps/random.wit")),
            ),
            (
                concat!($into, "/deps/sockets.wit"),
                include_str!(concat!("../../../", $dir, "/deps/sockets.wit")),
            ),
        ]
    };
}

type Files = &'static [(&'static str, &'static str)];

const RUST: Files = &[
    (
        "Cargo.toml",
        include_str!("../../../guest-examples/rust-demo/Cargo.toml"),
    ),
    (
        "Cargo.lock",
        include_str!("../../../guest-examples/rust-demo/Cargo.lock"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../guest-examples/rust-demo/src/lib.rs"),
    ),
    (".gitignore", "/target\n"),
];

const PYTHON: Files = &[
    (
        "app.py",
        include_str!("../../../guest-examples/python-demo/app.py"),
    ),
    (".gitignore", "*.wasm\n__pycache__/\n"),
];

/// The WSGI app and, beside it, the bridge that builds it, so the project
/// builds with `python3 -m wasmhost_wsgi` and nothing else to install but
/// componentize-py (and uv, once `requirements.txt` names a dependency).
const PYTHON_WSGI: Files = &[
    (
        "wsgi.py",
        include_str!("../../../guest-examples/python-wsgi-demo/wsgi.py"),
    ),
    (
        "requirements.txt",
        "# The app's dependencies, vendored into the component at build time.\n",
    ),
    (
        "wasmhost_wsgi/__init__.py",
        include_str!("../../../python/wasmhost-wsgi/wasmhost_wsgi/__init__.py"),
    ),
    (
        "wasmhost_wsgi/__main__.py",
        include_str!("../../../python/wasmhost-wsgi/wasmhost_wsgi/__main__.py"),
    ),
    (
        "wasmhost_wsgi/bridge.py",
        include_str!("../../../python/wasmhost-wsgi/wasmhost_wsgi/bridge.py"),
    ),
    (
        "wasmhost_wsgi/cli.py",
        include_str!("../../../python/wasmhost-wsgi/wasmhost_wsgi/cli.py"),
    ),
    (
        "wasmhost_wsgi/warmup.py",
        include_str!("../../../python/wasmhost-wsgi/wasmhost_wsgi/warmup.py"),
    ),
    (".gitignore", "*.wasm\n__pycache__/\n.wasmhost/\n"),
];

/// The demo app and, beside it, wasmhost-js, which npm installs from there
/// (`.npmrc`: as a copy, its dependencies pinned by its shrinkwrap), so the
/// project builds anywhere with npm and the registry.
const JAVASCRIPT: Files = &[
    (
        "app.js",
        include_str!("../../../guest-examples/javascript-demo/app.js"),
    ),
    (
        "package.json",
        r#"{
  "name": "javascript-demo",
  "private": true,
  "type": "module",
  "scripts": {
    "build": "wasmhost-js build app.js -o javascript-demo.wasm"
  },
  "dependencies": {
    "hono": "4.13.23"
  },
  "devDependencies": {
    "wasmhost-js": "file:wasmhost-js"
  }
}
"#,
    ),
    (".npmrc", "install-links=true\n"),
    (".gitignore", "*.wasm\nnode_modules/\n.wasmhost/\n"),
    (
        "wasmhost-js/package.json",
        include_str!("../../../js/wasmhost-js/package.json"),
    ),
    (
        "wasmhost-js/npm-shrinkwrap.json",
        include_str!("../../../js/wasmhost-js/npm-shrinkwrap.json"),
    ),
    (
        "wasmhost-js/bin/wasmhost-js.js",
        include_str!("../../../js/wasmhost-js/bin/wasmhost-js.js"),
    ),
    (
        "wasmhost-js/lib/build.js",
        include_str!("../../../js/wasmhost-js/lib/build.js"),
    ),
    (
        "wasmhost-js/runtime/handler.js",
        include_str!("../../../js/wasmhost-js/runtime/handler.js"),
    ),
    (
        "wasmhost-js/runtime/dev.js",
        include_str!("../../../js/wasmhost-js/runtime/dev.js"),
    ),
];

/// Writes the project and says how to build and serve it.
pub fn write(args: &NewArgs) -> Result<String> {
    let dir = &args.dir;
    let name = project_name(dir)?;
    if dir.exists() && (!dir.is_dir() || std::fs::read_dir(dir)?.next().is_some()) {
        bail!(
            "{}: exists and is not an empty directory; choose a new NAME",
            dir.display()
        );
    }
    let shown = dir.display();
    let (language, parts): (_, &[Files]) = match args.lang {
        Lang::Rust => ("Rust", &[RUST]),
        Lang::Python => ("Python", &[PYTHON, wit_files!("wit", "wit")]),
        Lang::PythonWsgi => (
            "Python WSGI",
            &[PYTHON_WSGI, wit_files!("wit", "wasmhost_wsgi/wit")],
        ),
        Lang::Javascript => (
            "JavaScript",
            &[
                JAVASCRIPT,
                wit_files!("js/wasmhost-js/wit", "wasmhost-js/wit"),
            ],
        ),
    };
    let project = Project::of(args.lang, &name);
    let config = project.config();
    let written = parts
        .iter()
        .flat_map(|files| files.iter())
        .map(|(path, text)| (*path, *text))
        .chain([("wasmhost.toml", config.as_str())]);
    for (path, text) in written {
        let text = match args.lang {
            // Cargo and npm name the package, and the lock files repeat it.
            Lang::Rust => text.replace("\"rust-demo\"", &format!("\"{name}\"")),
            Lang::Javascript => text.replace("javascript-demo", &name),
            Lang::Python | Lang::PythonWsgi => text.to_string(),
        };
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))?;
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))?;
        if path.extension().is_some_and(|ext| ext == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let reuse = project
        .reuse
        .map(|n| format!(" --reuse {n}"))
        .unwrap_or_default();
    Ok(format!(
        "created a {language} app in {shown}\nbuild: cd {shown} && {}\nserve: wasmhost serve {shown}/{}{reuse}\ndev:   cd {shown} && wasmhost dev\n",
        project.build, project.component
    ))
}

/// How a project is built: the commands printed and its wasmhost.toml say
/// the same.
struct Project {
    /// The component the build writes, relative to the project.
    component: String,
    /// Run in the project's directory.
    build: String,
    /// The sources `wasmhost dev` rebuilds on, as TOML.
    watch: &'static str,
    /// Its `[app.dev]` table, if `dev` serves another build.
    dev: Option<String>,
    /// Requests an instance serves, if it may serve more than one.
    reuse: Option<u32>,
}

impl Project {
    fn of(lang: Lang, name: &str) -> Project {
        let wasm = format!("{name}.wasm");
        let mut dev = None;
        let mut reuse = None;
        let (component, build, watch) = match lang {
            Lang::Rust => (
                format!(
                    "target/wasm32-wasip2/release/{}.wasm",
                    name.replace('-', "_")
                ),
                // The project's own target dir, wherever CARGO_TARGET_DIR points.
                "cargo build --release --target wasm32-wasip2 --target-dir target".to_string(),
                r#"["src/**", "Cargo.toml"]"#,
            ),
            Lang::Python => (
                wasm.clone(),
                format!("componentize-py -d wit -w app componentize app -o {wasm}"),
                r#"["*.py"]"#,
            ),
            Lang::PythonWsgi => {
                dev = Some(
                    "\n# Under `wasmhost dev` the app's own source is not built into the\n\
                     # component: each build copies it to .wasmhost/dev/src, which an\n\
                     # instance reads when it starts, so an edit serves without\n\
                     # compiling. A new import or a change to requirements.txt builds\n\
                     # the dependencies again. `serve` serves what `build` above makes.\n\
                     [app.dev]\n\
                     build = \"python3 -m wasmhost_wsgi build --dev wsgi:application -r requirements.txt -o .wasmhost/dev.wasm\"\n\
                     component = \".wasmhost/dev.wasm\"\n\
                     dirs = [\".wasmhost/dev:/app\"]\n"
                        .to_string(),
                );
                (
                    wasm.clone(),
                    format!(
                        "python3 -m wasmhost_wsgi build wsgi:application -r requirements.txt -o {wasm}"
                    ),
                    r#"["*.py", "requirements.txt"]"#,
                )
            }
            Lang::Javascript => {
                // SpiderMonkey's start is most of a fresh request's cost, and
                // wasmhost-js's components serve many requests per instance.
                reuse = Some(1000);
                dev = Some(
                    "\n# Under `wasmhost dev` the app is not built into the component: each\n\
                     # build bundles it to .wasmhost/dev/app.js, which a new instance reads\n\
                     # and runs, so an edit serves without building the engine again.\n\
                     # `serve` serves what `build` above makes.\n\
                     [app.dev]\n\
                     build = \"test -d node_modules || npm install && node_modules/.bin/wasmhost-js build --dev app.js -o .wasmhost/dev.wasm\"\n\
                     component = \".wasmhost/dev.wasm\"\n\
                     dirs = [\".wasmhost/dev:/app\"]\n"
                        .to_string(),
                );
                (
                    wasm.clone(),
                    "npm install && npm run build".to_string(),
                    r#"["*.js", "src/**", "package.json"]"#,
                )
            }
        };
        Project {
            component,
            build,
            watch,
            dev,
            reuse,
        }
    }

    /// The project's wasmhost.toml: the app at `/`, with the build and the
    /// sources `wasmhost dev` rebuilds it from.
    fn config(&self) -> String {
        let Project {
            component,
            build,
            watch,
            dev,
            reuse,
        } = self;
        let dev = dev.as_deref().unwrap_or_default();
        let reuse = reuse
            .map(|n| {
                format!(
                    "# An instance serves up to {n} requests in turn, keeping its module state.\nreuse = {n}\n"
                )
            })
            .unwrap_or_default();
        format!(
            "# `wasmhost dev` builds the app, serves it, and rebuilds and reloads it\n\
             # whenever a watched source changes; `wasmhost serve --config\n\
             # wasmhost.toml` serves the last build.\n\
             [[app]]\n\
             route = \"/\"\n\
             component = \"{component}\"\n\
             build = \"{build}\"\n\
             watch = {watch}\n{reuse}{dev}"
        )
    }
}

/// The app's name: the directory's last component, as cargo, npm and
/// Python accept it.
fn project_name(dir: &Path) -> Result<String> {
    let name = dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "{}: the last part of NAME names the app: lowercase letters, digits, - and _, starting with a letter",
            dir.display()
        );
    }
    Ok(name.to_string())
}
