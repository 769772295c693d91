//! Grants: a guest is given nothing of the host unless its app grants it,
//! and one app's grant is not another's. Environment variables so far.

use crate::WASMHOST;
use std::process::Command;
use std::time::Duration;
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, Server, get, guest, run_to_exit};

/// wasmhost with two variables of its own environment that a guest must
/// not see unless granted.
fn serve(args: &[&str]) -> Server {
    let mut command = Command::new(WASMHOST);
    command
        .arg("serve")
        .args(args)
        .env("WASMHOST_TEST_SECRET", "s3cret")
        .env("WASMHOST_TEST_SHARED", "from the host");
    Server::spawn(command)
}

fn fault() -> &'static str {
    guest(Guest::Fault).to_str().unwrap()
}

#[test]
fn a_guest_sees_none_of_the_hosts_environment_unless_granted() {
    let server = serve(&[fault(), "--port", "0"]);
    assert_eq!(get(&server.url("/env")).unwrap().body, "");
}

#[test]
fn env_and_inherit_env_flags_give_every_app_exactly_those() {
    let server = serve(&[
        fault(),
        "--port",
        "0",
        "--env",
        "A=1",
        "--env",
        "URL=postgres://db/app?x=y",
        "--inherit-env",
        "WASMHOST_TEST_SHARED",
        "--inherit-env",
        "WASMHOST_TEST_UNSET",
    ]);
    assert_eq!(
        get(&server.url("/env")).unwrap().body,
        "A=1\nURL=postgres://db/app?x=y\nWASMHOST_TEST_SHARED=from the host\n"
    );
    let log = server.log();
    assert!(
        log.contains("--inherit-env: WASMHOST_TEST_UNSET is not set in wasmhost's environment; the guest does not get it"),
        "{log}"
    );
    // Names at startup, never values: they are often secrets.
    assert!(log.contains(", env A URL WASMHOST_TEST_SHARED)"), "{log}");
    assert!(!log.contains("postgres://"), "{log}");
}

/// `wasmhost check ARGS…`, run to its end.
fn check(args: &[&str]) -> wasmhost_tests::Finished {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    run_to_exit(WASMHOST, &all, Duration::from_secs(180))
}

/// The error line of `wasmhost check` on a file whose one app (the fault
/// guest at `/`, lines 1-3) goes on with `rest`.
fn file_error(rest: &str) -> String {
    let (_dir, config) = wasmhost_tests::config_file(&format!(
        "[[app]]\nroute = \"/\"\ncomponent = \"{}\"\n{rest}",
        fault()
    ));
    check(&["--config", &config]).error_line().to_string()
}

#[test]
fn grants_are_per_app_in_the_config_file() {
    let (_dir, config) = wasmhost_tests::config_file(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[app]]\nroute = \"/a\"\ncomponent = \"{fault}\"\n\
         env = {{ DATABASE_URL = \"postgres://db/app\" }}\n\
         inherit_env = [\"WASMHOST_TEST_SHARED\"]\n\
         [[app]]\nroute = \"/b\"\ncomponent = \"{fault}\"\n",
        fault = fault()
    ));
    let server = serve(&["--config", &config]);
    assert_eq!(
        get(&server.url("/a/env")).unwrap().body,
        "DATABASE_URL=postgres://db/app\nWASMHOST_TEST_SHARED=from the host\n"
    );
    assert_eq!(get(&server.url("/b/env")).unwrap().body, "");
}

#[test]
fn a_flag_adds_to_every_apps_env_and_wins_over_the_file() {
    let (_dir, config) = wasmhost_tests::config_file(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[app]]\nroute = \"/\"\ncomponent = \"{}\"\nenv = {{ MODE = \"file\", KEEP = \"yes\" }}\n",
        fault()
    ));
    let server = serve(&["--config", &config, "--env", "MODE=flag"]);
    assert_eq!(
        get(&server.url("/env")).unwrap().body,
        "KEEP=yes\nMODE=flag\n"
    );
}

#[test]
fn bad_env_grants_are_one_line_errors_naming_the_flag_or_the_line() {
    // A bad flag value is clap's usage error, as for every flag.
    let flag = check(&[fault(), "--env", "NOVALUE"]);
    assert_eq!(flag.status.code(), Some(2), "{}", flag.stderr);
    assert!(flag.stderr.contains("--env"), "{}", flag.stderr);
    assert!(
        flag.stderr.contains("`NOVALUE` is not NAME=VALUE"),
        "{}",
        flag.stderr
    );
    assert!(!flag.stderr.contains("panicked"), "{}", flag.stderr);

    let line = file_error("\nenv = { \"A=B\" = \"x\" }\n");
    assert!(
        line.contains("wasmhost.toml:5: env: `A=B` is not an environment variable name"),
        "{line}"
    );

    let line = file_error("env = { A = \"x\" }\ninherit_env = [\"A\"]\n");
    assert!(
        line.contains("wasmhost.toml:5: A is both in env and in inherit_env; keep one"),
        "{line}"
    );
}

/// Writes `contents` to `path` by renaming a sibling over it, as an editor
/// saves.
fn rename_over(path: &std::path::Path, contents: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, contents).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

#[test]
fn an_edited_grant_applies_at_the_reload_and_only_to_its_app() {
    let app = |route: &str, env: &str| {
        format!(
            "[[app]]\nroute = \"{route}\"\ncomponent = \"{}\"\n{env}",
            fault()
        )
    };
    let listen = "[[listen]]\naddress = \"127.0.0.1:0\"\n";
    let (_dir, config) = wasmhost_tests::config_file(&format!(
        "{listen}{}{}",
        app("/a", "env = { V = \"1\" }\n"),
        app("/b", "")
    ));
    let server = serve(&["--config", &config]);
    assert_eq!(get(&server.url("/a/env")).unwrap().body, "V=1\n");
    rename_over(
        std::path::Path::new(&config),
        &format!(
            "{listen}{}{}",
            app("/a", "env = { V = \"2\" }\n"),
            app("/b", "")
        ),
    );
    assert!(
        server.wait_for_log("configuration applied", Duration::from_secs(60)),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains("0 app(s) added, 1 reloaded, 0 removed, 1 unchanged"),
        "{log}"
    );
    assert_eq!(get(&server.url("/a/env")).unwrap().body, "V=2\n");
    assert_eq!(get(&server.url("/b/env")).unwrap().body, "");
}

/// A directory to grant, `data/` (a file, a subdirectory, and links that
/// try to leave it), beside a file outside it.
fn data_dir() -> TempDir {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.txt"), "granted\n").unwrap();
    std::fs::write(data.join("sub/b.txt"), "below\n").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "secret\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), data.join("absolute-link")).unwrap();
    std::os::unix::fs::symlink("../outside.txt", data.join("climbing-link")).unwrap();
    std::os::unix::fs::symlink("sub/b.txt", data.join("inner-link")).unwrap();
    dir
}

/// The status and body of `GET path`, sent as written (no client
/// normalises its `..`).
fn raw_get(server: &Server, path: &str) -> (u16, String) {
    let reply = wasmhost_tests::raw_request(
        server.addresses(1)[0],
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    );
    let status = reply[9..12].parse().unwrap();
    let (head, mut body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, body.to_string());
    }
    let mut text = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        text.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    (status, text)
}

#[test]
fn a_granted_dir_is_readable_and_nothing_past_it() {
    let dir = data_dir();
    let grant_host = dir.path().join("data").display().to_string();
    let grant = format!("{grant_host}:/data");
    let server = serve(&[fault(), "--port", "0", "--dir", &grant]);
    assert_eq!(
        raw_get(&server, "/file/data/a.txt"),
        (200, "granted\n".into())
    );
    assert_eq!(
        raw_get(&server, "/file/data/sub/b.txt"),
        (200, "below\n".into())
    );
    assert_eq!(
        raw_get(&server, "/file/data/inner-link"),
        (200, "below\n".into())
    );
    for escape in [
        "/file/data/../outside.txt",
        "/file/data/sub/../../outside.txt",
        "/file/data/absolute-link",
        "/file/data/climbing-link",
        &format!("/file{}", dir.path().join("outside.txt").display()),
    ] {
        let (status, body) = raw_get(&server, escape);
        assert_eq!(status, 403, "{escape}: {body}");
        assert!(!body.contains("secret"), "{escape}: {body}");
    }
    assert!(
        server
            .log()
            .contains(&format!(", dir {grant_host} at /data (ro))")),
        "{}",
        server.log()
    );
    // Read-only unless granted `:rw`.
    assert_eq!(raw_get(&server, "/write/data/new.txt").0, 403);
    assert!(!dir.path().join("data/new.txt").exists());
}

#[test]
fn a_rw_dir_is_writable_and_a_dir_is_one_apps_only() {
    let dir = data_dir();
    let (_config_dir, config) = wasmhost_tests::config_file(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[app]]\nroute = \"/a\"\ncomponent = \"{fault}\"\ndirs = [\"{data}:/data:rw\"]\n\
         [[app]]\nroute = \"/b\"\ncomponent = \"{fault}\"\n",
        fault = fault(),
        data = dir.path().join("data").display()
    ));
    let server = serve(&["--config", &config]);
    assert_eq!(
        raw_get(&server, "/a/write/data/new.txt"),
        (200, "written\n".into())
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/new.txt")).unwrap(),
        "written\n"
    );
    assert_eq!(raw_get(&server, "/b/file/data/a.txt").0, 403);
    assert_eq!(raw_get(&server, "/a/file/data/a.txt").0, 200);
}

#[test]
fn a_missing_dir_is_an_error_naming_the_flag_or_the_line() {
    let flag = check(&[fault(), "--dir", "/no/such/dir:/data"]);
    let line = flag.error_line();
    assert!(
        line.contains("--dir: cannot open the directory /no/such/dir"),
        "{line}"
    );
    let line = file_error("dirs = [\"missing:/data\"]\n");
    assert!(
        line.contains("wasmhost.toml:4: cannot open the directory"),
        "{line}"
    );
    assert!(line.contains("missing"), "{line}");
}

/// `data/` with `cache/` inside, and `outside/hostname` beside them: the
/// file a guest escaping its grants would read.
fn nested_dirs() -> TempDir {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir_all(dir.path().join("data/cache")).unwrap();
    std::fs::write(dir.path().join("data/cache/kept"), "cached\n").unwrap();
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/hostname"), "secret\n").unwrap();
    dir
}

/// A config file serving the fault guest at each `(route, extra lines)`.
fn apps_config(apps: &[(&str, String)]) -> (TempDir, String) {
    let mut text = String::from("[[listen]]\naddress = \"127.0.0.1:0\"\n");
    for (route, extra) in apps {
        text.push_str(&format!(
            "[[app]]\nroute = \"{route}\"\ncomponent = \"{}\"\n{extra}",
            fault()
        ));
    }
    wasmhost_tests::config_file(&text)
}

#[test]
fn nested_grants_are_refused_at_load_naming_the_line_unless_allowed() {
    let dir = nested_dirs();
    let data = dir.path().join("data");
    let one_app = format!(
        "dirs = [\"{}:/data:rw\", \"{}:/cache:rw\"]\n",
        data.display(),
        data.join("cache").display()
    );
    let (_config_dir, config) = apps_config(&[("/", one_app.clone())]);
    let line = check(&["--config", &config]).error_line().to_string();
    assert!(
        line.contains("wasmhost.toml:4: the granted directory"),
        "{line}"
    );
    assert!(line.contains("lies inside"), "{line}");
    assert!(line.contains("allow_nested_dirs = true"), "{line}");

    // Across apps: the read-only inner grant is the one refused.
    let (_config_dir, config) = apps_config(&[
        ("/a", format!("dirs = [\"{}:/data:rw\"]\n", data.display())),
        (
            "/b",
            format!("dirs = [\"{}:/cache\"]\n", data.join("cache").display()),
        ),
    ]);
    let line = check(&["--config", &config]).error_line().to_string();
    assert!(
        line.contains("wasmhost.toml:8: the granted directory"),
        "{line}"
    );
    assert!(line.contains("which app /a may write"), "{line}");

    // Inside a directory no app writes, nothing can move it.
    let (_config_dir, config) = apps_config(&[
        ("/a", format!("dirs = [\"{}:/data\"]\n", data.display())),
        (
            "/b",
            format!("dirs = [\"{}:/cache\"]\n", data.join("cache").display()),
        ),
    ]);
    let finished = check(&["--config", &config]);
    assert!(finished.status.success(), "{}", finished.stderr);

    let allowed = format!("{one_app}allow_nested_dirs = true\n");
    let (_config_dir, config) = apps_config(&[("/", allowed)]);
    let finished = check(&["--config", &config]);
    assert!(finished.status.success(), "{}", finished.stderr);
}

#[test]
fn a_guest_cannot_link_out_of_its_grant() {
    let dir = nested_dirs();
    let grant = format!("{}:/data:rw", dir.path().join("data").display());
    let server = serve(&[fault(), "--port", "0", "--dir", &grant]);
    for target in [
        "../outside/hostname",
        "cache/../../outside",
        "/etc/hostname",
    ] {
        let (status, body) = raw_get(
            &server,
            &format!("/symlink?target={target}&link=/data/link"),
        );
        assert_eq!(status, 403, "{target}: {body}");
        assert!(body.contains("not-permitted"), "{target}: {body}");
        assert!(std::fs::symlink_metadata(dir.path().join("data/link")).is_err());
    }
    // A link within its own directory is still a link.
    assert_eq!(
        raw_get(&server, "/symlink?target=cache/kept&link=/data/kept-link"),
        (200, "linked\n".into())
    );
    assert_eq!(
        raw_get(&server, "/file/data/kept-link"),
        (200, "cached\n".into())
    );
}

/// The escape of the security review: a guest granted `data/` and
/// `data/cache/` moves `cache` away and leaves a link climbing out in its
/// place. The guest's own link is refused; the one put there for it (as a
/// guest of an older wasmhost could) leads nowhere, since every instance
/// gets the directory that was opened, and a reload that would open the
/// link refuses it.
#[test]
fn a_guest_cannot_escape_through_nested_grants() {
    let dir = nested_dirs();
    let data = dir.path().join("data");
    let (_config_dir, config) = apps_config(&[(
        "/",
        format!(
            "dirs = [\"{}:/data:rw\", \"{}:/cache:rw\"]\nallow_nested_dirs = true\n",
            data.display(),
            data.join("cache").display()
        ),
    )]);
    let server = serve(&["--config", &config]);
    assert_eq!(
        raw_get(&server, "/file/cache/kept"),
        (200, "cached\n".into())
    );
    assert_eq!(
        raw_get(&server, "/rename?from=/data/cache&to=/data/moved"),
        (200, "renamed\n".into())
    );
    let (status, body) = raw_get(
        &server,
        "/symlink?target=../../../../../../../../etc&link=/data/cache",
    );
    assert_eq!(status, 403, "{body}");
    std::os::unix::fs::symlink("../outside", data.join("cache")).unwrap();
    // Each request is a new instance, given the directory opened at load.
    for _ in 0..3 {
        assert_eq!(
            raw_get(&server, "/file/cache/kept"),
            (200, "cached\n".into())
        );
        let (status, body) = raw_get(&server, "/file/cache/hostname");
        assert_eq!(status, 403, "{body}");
        assert!(!body.contains("secret"), "{body}");
    }
    assert_eq!(raw_get(&server, "/write/cache/new").0, 200);
    assert!(data.join("moved/new").exists());
    assert!(!dir.path().join("outside/new").exists());

    // A reload opens the grants again: the link is refused, with a line, and
    // the version serving goes on.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "env = { V = \"2\" }\n",
    )
    .unwrap();
    assert!(
        server.wait_for_log("is now a symbolic link", Duration::from_secs(60)),
        "{}",
        server.log()
    );
    assert_eq!(
        raw_get(&server, "/file/cache/kept"),
        (200, "cached\n".into())
    );
    assert_eq!(raw_get(&server, "/file/cache/hostname").0, 403);
}

#[test]
fn a_guest_cannot_escape_through_another_apps_nested_grant() {
    let dir = nested_dirs();
    let data = dir.path().join("data");
    let (_config_dir, config) = apps_config(&[
        (
            "/a",
            format!("dirs = [\"{}:/uploads:rw\"]\n", data.display()),
        ),
        (
            "/b",
            format!(
                "dirs = [\"{}:/public\"]\nallow_nested_dirs = true\n",
                data.join("cache").display()
            ),
        ),
    ]);
    let server = serve(&["--config", &config]);
    assert_eq!(
        raw_get(&server, "/b/file/public/kept"),
        (200, "cached\n".into())
    );
    assert_eq!(
        raw_get(&server, "/a/rename?from=/uploads/cache&to=/uploads/old"),
        (200, "renamed\n".into())
    );
    let (status, body) = raw_get(&server, "/a/symlink?target=../outside&link=/uploads/cache");
    assert_eq!(status, 403, "{body}");
    std::os::unix::fs::symlink("../outside", data.join("cache")).unwrap();
    for _ in 0..3 {
        assert_eq!(
            raw_get(&server, "/b/file/public/kept"),
            (200, "cached\n".into())
        );
        let (status, body) = raw_get(&server, "/b/file/public/hostname");
        assert_eq!(status, 403, "{body}");
        assert!(!body.contains("secret"), "{body}");
    }
}
