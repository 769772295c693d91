//! The projects `wasmhost new LANG NAME` writes: the examples in
//! guest-examples/, embedded in the binary so a project can be started
//! anywhere, renamed, with the WIT a toolchain needs copied in.

use crate::config::cli::{Lang, NewArgs};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

const RUST_MANIFEST: &str = include_str!("../../guest-examples/rust-hello/Cargo.toml");
const RUST_LOCK: &str = include_str!("../../guest-examples/rust-hello/Cargo.lock");
const RUST_LIB: &str = include_str!("../../guest-examples/rust-hello/src/lib.rs");
const PYTHON_APP: &str = include_str!("../../guest-examples/python-hello/app.py");

/// The WIT wasmhost serves, as componentize-py reads it.
const WIT: &[(&str, &str)] = &[
    ("wit/world.wit", include_str!("../../wit/world.wit")),
    ("wit/deps/cli.wit", include_str!("../../wit/deps/cli.wit")),
    (
        "wit/deps/clocks.wit",
        include_str!("../../wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../wit/deps/filesystem.wit"),
    ),
    ("wit/deps/http.wit", include_str!("../../wit/deps/http.wit")),
    ("wit/deps/io.wit", include_str!("../../wit/deps/io.wit")),
    (
        "wit/deps/random.wit",
        include_str!("../../wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../wit/deps/sockets.wit"),
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
    let (files, build, serve) = match args.lang {
        Lang::Rust => {
            let files = vec![
                (
                    "Cargo.toml".into(),
                    RUST_MANIFEST.replace("name = \"rust-hello\"", &format!("name = \"{name}\"")),
                ),
                (
                    "Cargo.lock".into(),
                    RUST_LOCK.replace("name = \"rust-hello\"", &format!("name = \"{name}\"")),
                ),
                ("src/lib.rs".into(), RUST_LIB.to_string()),
                (".gitignore".into(), "/target\n".to_string()),
            ];
            let wasm = format!(
                "{shown}/target/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            );
            (
                files,
                format!("cd {shown} && cargo build --release --target wasm32-wasip2"),
                format!("wasmhost serve {wasm}"),
            )
        }
        Lang::Python => {
            let mut files: Vec<(PathBuf, String)> = WIT
                .iter()
                .map(|(path, text)| (path.into(), text.to_string()))
                .collect();
            files.push(("app.py".into(), PYTHON_APP.to_string()));
            files.push((".gitignore".into(), "*.wasm\n__pycache__/\n".to_string()));
            (
                files,
                format!(
                    "cd {shown} && componentize-py -d wit -w app componentize app -o {name}.wasm"
                ),
                format!("wasmhost serve {shown}/{name}.wasm"),
            )
        }
    };
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))?;
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))?;
    }
    Ok(format!(
        "created a {} app in {shown}\nbuild: {build}\nserve: {serve}\n",
        match args.lang {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
        }
    ))
}

/// The app's name: the directory's last component, as cargo and Python
/// accept it.
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
