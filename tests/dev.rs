//! `wasmhost dev` on projects made by `wasmhost new`: an edit serves the new
//! build while requests keep flowing, a build that fails shows the
//! compiler's message (as a page, or not at all with --no-dev-errors, the
//! last good build serving), and fixing it serves again.

use crate::WASMHOST;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wasmhost_tests::{Load, Server, get, run_to_exit, tempfile::TempDir};

/// A build plus the reload of what it made: a cold componentize-py build on
/// a loaded 2-core machine takes most of a minute.
const BUILD_DEADLINE: Duration = Duration::from_secs(240);

fn new_project(lang: &str, dir: &Path) {
    let made = run_to_exit(
        WASMHOST,
        &["new", lang, dir.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(made.status.success(), "{}", made.stderr);
    assert!(made.stdout.contains("dev:   cd "), "{}", made.stdout);
}

fn dev(dir: &Path, flags: &[&str]) -> Server {
    let mut command = Command::new(WASMHOST);
    command
        .current_dir(dir)
        .args(["dev", "--port", "0"])
        .args(flags)
        // The project builds into its own target dir, as a user's would.
        .env_remove("CARGO_TARGET_DIR");
    Server::spawn(command)
}

/// Polls `/` until its body satisfies `done`; the last body.
fn wait_for_body(server: &Server, done: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + BUILD_DEADLINE;
    loop {
        let reply = get(&server.url("/")).unwrap();
        if done(reply.status, &reply.body) {
            return reply.body;
        }
        assert!(
            Instant::now() < deadline,
            "/ still answers {} {:?}\n{}",
            reply.status,
            reply.body,
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn dev_rebuilds_a_rust_project_and_shows_a_failed_build_as_a_page() {
    let root = TempDir::new().unwrap();
    let dir = root.path().join("devapp");
    new_project("rust", &dir);
    let server = dev(&dir, &[]);
    assert_eq!(get(&server.url("/")).unwrap().body, "Hello from Rust!\n");
    let source = dir.join("src/lib.rs");

    let load = Load::get(&server.url("/"), 1);
    edit(&source, "Hello from Rust!", "Hello from an edited Rust!");
    wait_for_body(&server, |_, body| body.contains("edited"));
    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{tally:?}\n{}", server.log());
    assert!(server.wait_for_log("the new version serves", Duration::from_secs(10)));

    // A syntax error: the page shows rustc's message.
    edit(&source, "fn json_escape(", "fn json_escape((");
    let page = wait_for_body(&server, |status, _| status == 500);
    assert!(page.contains("The build of / failed"), "{page}");
    assert!(page.contains("error"), "{page}");
    assert!(page.contains("src/lib.rs"), "{page}");
    assert!(server.wait_for_log("the build of / failed", Duration::from_secs(10)));

    edit(&source, "fn json_escape((", "fn json_escape(");
    edit(&source, "an edited Rust", "a fixed Rust");
    wait_for_body(&server, |status, body| {
        status == 200 && body.contains("fixed")
    });
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn dev_rebuilds_a_python_project_and_keeps_the_last_good_build_serving() {
    let root = TempDir::new().unwrap();
    let dir = root.path().join("devpy");
    new_project("python", &dir);
    let server = dev(&dir, &["--no-dev-errors"]);
    assert_eq!(get(&server.url("/")).unwrap().body, "Hello from Python!\n");
    let source = dir.join("app.py");

    let load = Load::get(&server.url("/"), 1);
    edit(
        &source,
        "Hello from Python!",
        "Hello from an edited Python!",
    );
    wait_for_body(&server, |_, body| body.contains("edited"));

    // A syntax error: the terminal shows Python's message, the last good
    // build keeps answering every request.
    edit(&source, "def start(", "def start((");
    assert!(
        server.wait_for_log("the build of / failed", BUILD_DEADLINE),
        "{}",
        server.log()
    );
    assert!(server.log().contains("SyntaxError"), "{}", server.log());
    let reply = get(&server.url("/")).unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "Hello from an edited Python!\n")
    );

    edit(&source, "def start((", "def start(");
    edit(&source, "an edited Python", "a fixed Python");
    wait_for_body(&server, |_, body| body.contains("fixed"));
    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{tally:?}\n{}", server.log());
}

#[test]
fn dev_says_what_is_missing_without_a_config_or_a_build() {
    let root = TempDir::new().unwrap();
    let run = |flags: &[&str]| {
        let mut args = vec!["dev"];
        args.extend_from_slice(flags);
        run_to_exit(WASMHOST, &args, Duration::from_secs(30))
    };
    let missing = root.path().join("nowhere.toml");
    let finished = run(&["--config", missing.to_str().unwrap()]);
    assert!(!finished.status.success());
    assert!(
        finished
            .error_line()
            .contains("nowhere.toml: no such file; run wasmhost dev in a project"),
        "{}",
        finished.stderr
    );

    let config = root.path().join("wasmhost.toml");
    std::fs::write(
        &config,
        "[[app]]\nroute = \"/\"\ncomponent = \"app.wasm\"\nwatch = [\"*.py\"]\n",
    )
    .unwrap();
    let finished = run(&["--config", config.to_str().unwrap()]);
    assert!(
        finished
            .error_line()
            .contains("wasmhost.toml:4: watch needs a build command in the same [[app]]"),
        "{}",
        finished.stderr
    );

    std::fs::write(
        &config,
        "[[app]]\nroute = \"/\"\ncomponent = \"app.wasm\"\nbuild = \" \"\n",
    )
    .unwrap();
    let finished = run(&["--config", config.to_str().unwrap()]);
    assert!(
        finished.error_line().contains(
            "wasmhost.toml:4: build is empty; give the command that builds the component"
        ),
        "{}",
        finished.stderr
    );
}

/// A Python WSGI project's dev build leaves the app's source out of the
/// component (`[app.dev]`): an edit serves from new instances, with no
/// build; a new import builds the dependencies again; a syntax error is the
/// build's error page.
fn dev_serves_python_wsgi_edits_from_the_source(flags: &[&str]) {
    let root = TempDir::new().unwrap();
    let dir = root.path().join("devwsgi");
    new_project("python-wsgi", &dir);
    let server = dev(&dir, flags);
    assert_eq!(
        get(&server.url("/")).unwrap().body,
        "Hello from Python (WSGI)!\n"
    );
    let source = dir.join("wsgi.py");

    let load = Load::get(&server.url("/"), 1);
    edit(
        &source,
        "Hello from Python (WSGI)!",
        "Hello from an edited WSGI!",
    );
    wait_for_body(&server, |_, body| body.contains("edited"));
    assert!(
        server.wait_for_log(
            "the component is unchanged; new instances of it serve",
            Duration::from_secs(30)
        ),
        "{}",
        server.log()
    );

    // A module the dev build did not import: the dependencies are built
    // again, with it.
    edit(
        &source,
        r#"return [b"Hello from an edited WSGI!\n"]"#,
        "import fractions\n        return [str(fractions.Fraction(2, 6)).encode()]",
    );
    wait_for_body(&server, |_, body| body == "1/3");
    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{tally:?}\n{}", server.log());

    edit(&source, "def application(", "def application((");
    let page = wait_for_body(&server, |status, _| status == 500);
    assert!(page.contains("SyntaxError"), "{page}");
    assert!(page.contains("wsgi.py"), "{page}");
    edit(&source, "def application((", "def application(");
    edit(&source, "Fraction(2, 6)", "Fraction(3, 4)");
    wait_for_body(&server, |status, body| status == 200 && body == "3/4");
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn dev_serves_a_python_wsgi_edit_without_a_build() {
    dev_serves_python_wsgi_edits_from_the_source(&[]);
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn dev_serves_a_python_wsgi_edit_on_new_instances_under_reuse() {
    dev_serves_python_wsgi_edits_from_the_source(&["--reuse", "100"]);
}

/// A JavaScript project's dev build leaves the app out of the component
/// (`[app.dev]`): an edit is bundled and served by new instances, with no
/// engine built again; a syntax error is the build's error page; requests
/// flowing meanwhile all succeed.
#[test]
#[ignore = "needs Node.js; tests/run installs it and runs this"]
fn dev_serves_a_javascript_edit_from_its_bundle() {
    let root = TempDir::new().unwrap();
    let dir = root.path().join("devjs");
    new_project("javascript", &dir);
    // Its first build installs the project's npm packages.
    let server = dev(&dir, &[]);
    assert_eq!(
        get(&server.url("/")).unwrap().body,
        "Hello from JavaScript!\n"
    );
    let source = dir.join("app.js");

    let load = Load::get(&server.url("/"), 1);
    edit(&source, "Hello from JavaScript!", "Hello from an edit!");
    wait_for_body(&server, |_, body| body == "Hello from an edit!\n");
    assert!(
        server.wait_for_log(
            "the component is unchanged; new instances of it serve",
            Duration::from_secs(30)
        ),
        "{}",
        server.log()
    );
    // A module of an npm package the app did not import before.
    edit(
        &source,
        "import { Hono } from \"hono\";",
        "import { Hono } from \"hono\";\nimport { getCookie } from \"hono/cookie\";",
    );
    edit(
        &source,
        "c.text(\"Hello from an edit!\\n\")",
        "c.text(`cookie ${getCookie(c, \"seen\") ?? \"none\"}\\n`)",
    );
    wait_for_body(&server, |_, body| body == "cookie none\n");
    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{tally:?}\n{}", server.log());

    edit(&source, "const app = new Hono();", "const app = new Hono(;");
    let page = wait_for_body(&server, |status, _| status == 500);
    assert!(page.contains("app.js:"), "{page}");
    edit(&source, "const app = new Hono(;", "const app = new Hono();");
    wait_for_body(&server, |status, body| {
        status == 200 && body == "cookie none\n"
    });
}
