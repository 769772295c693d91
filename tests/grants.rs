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

fn config_dir(text: &str) -> (TempDir, String) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("wasmhost.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn grants_are_per_app_in_the_config_file() {
    let (_dir, config) = config_dir(&format!(
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
    let (_dir, config) = config_dir(&format!(
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
    let check = |args: &[&str]| {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        run_to_exit(WASMHOST, &all, Duration::from_secs(180))
    };
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

    let (_dir, config) = config_dir(&format!(
        "[[app]]\nroute = \"/\"\ncomponent = \"{}\"\n\nenv = {{ \"A=B\" = \"x\" }}\n",
        fault()
    ));
    let file = check(&["--config", &config]);
    let line = file.error_line();
    assert!(
        line.contains("wasmhost.toml:5: env: `A=B` is not an environment variable name"),
        "{line}"
    );

    let (_dir, config) = config_dir(&format!(
        "[[app]]\nroute = \"/\"\ncomponent = \"{}\"\nenv = {{ A = \"x\" }}\ninherit_env = [\"A\"]\n",
        fault()
    ));
    let both = check(&["--config", &config]);
    let line = both.error_line();
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
    let (_dir, config) = config_dir(&format!(
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
