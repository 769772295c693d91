//! `wasi:config/store` and `wasi:keyvalue`: what a grant gives, what an
//! app without one gets (error values, and a log line naming the grant),
//! counts kept across instances and reloads in memory and in a real Redis,
//! the memory store's bound, and the egress rule on Redis addresses.

use crate::WASMHOST;
use std::time::Duration;
use wasmhost_tests::{Guest, Redis, Server, config_file, get, guest};

const DEADLINE: Duration = Duration::from_secs(60);

fn counter() -> &'static str {
    guest(Guest::KvCounter).to_str().unwrap()
}

fn kv() -> &'static str {
    guest(Guest::Kv).to_str().unwrap()
}

fn body(server: &Server, path: &str) -> String {
    get(&server.url(path)).unwrap().body
}

/// `[[app]]` entries for two components, with the given extra lines each.
fn two_apps(first: &str, second: &str) -> String {
    format!(
        "[[app]]\nroute = \"/\"\ncomponent = {:?}\n{first}\n\n[[app]]\nroute = \"/other\"\ncomponent = {:?}\n{second}\n",
        counter(),
        counter()
    )
}

#[test]
fn config_variables_are_what_the_grant_gives_and_a_secret_is_never_logged() {
    let secret = "s3cret-from-the-environment";
    let (_dir, file) = config_file(&format!(
        "[[app]]\nroute = \"/\"\ncomponent = {:?}\nconfig = {{ greeting = \"hi\", db_password = {{ env = \"KV_TEST_DB_PASSWORD\" }} }}\n",
        kv()
    ));
    let mut command = std::process::Command::new(WASMHOST);
    command
        .args(["serve", "--config", &file, "--port", "0"])
        .args(["--config-var", "region=eu-west"])
        .env("KV_TEST_DB_PASSWORD", secret)
        .env("RUST_LOG", "debug");
    let server = Server::spawn(command);
    assert_eq!(body(&server, "/config/greeting"), "hi");
    assert_eq!(body(&server, "/config/db_password"), secret);
    assert_eq!(body(&server, "/config/region"), "eu-west");
    assert_eq!(body(&server, "/config/missing"), "none");
    // Spin 3's version of the interface reads the same variables.
    assert_eq!(body(&server, "/spin-config/greeting"), "hi");
    assert_eq!(body(&server, "/spin-config/missing"), "none");
    assert_eq!(
        body(&server, "/config"),
        format!("db_password={secret}\ngreeting=hi\nregion=eu-west")
    );
    assert!(!server.log().contains(secret), "{}", server.log());

    // Without a grant, a guest sees no variable at all.
    let bare = Server::start(WASMHOST, &[kv()]);
    assert_eq!(body(&bare, "/config"), "");
    assert_eq!(body(&bare, "/config/greeting"), "none");
}

#[test]
fn a_config_value_read_from_an_unset_variable_is_a_clear_error() {
    let (_dir, file) = config_file(&format!(
        "[[app]]\nroute = \"/\"\ncomponent = {:?}\nconfig = {{ token = {{ env = \"KV_TEST_NEVER_SET\" }} }}\n",
        kv()
    ));
    let finished = wasmhost_tests::run_to_exit(
        WASMHOST,
        &["check", "--config", &file],
        Duration::from_secs(30),
    );
    let line = finished.error_line();
    assert!(
        line.contains("wasmhost.toml:4")
            && line.contains("KV_TEST_NEVER_SET")
            && line.contains("is not set"),
        "{line}"
    );
}

#[test]
fn without_a_grant_a_bucket_is_access_denied_and_the_log_names_the_grant() {
    let bare = Server::start(WASMHOST, &[kv()]);
    assert_eq!(body(&bare, "/open/default"), "error: Error::AccessDenied");
    assert!(
        bare.wait_for_log(
            "keyvalue bucket \"default\" denied: the app is not granted it; to allow it add keyvalue = { default = \"memory\" }",
            DEADLINE
        ),
        "{}",
        bare.log()
    );
    // Once per bucket, however often the guest asks.
    body(&bare, "/open/default");
    assert_eq!(
        bare.log()
            .matches("keyvalue bucket \"default\" denied")
            .count(),
        1
    );

    let granted = Server::start(WASMHOST, &[kv(), "--keyvalue", "memory"]);
    assert_eq!(body(&granted, "/open/default"), "ok");
    // `wasmtime serve` opens the default bucket as "".
    assert_eq!(body(&granted, "/open/"), "ok");
    assert_eq!(body(&granted, "/open/cache"), "error: Error::AccessDenied");
    assert!(
        granted.wait_for_log("add cache = \"memory\" to its keyvalue table", DEADLINE),
        "{}",
        granted.log()
    );
}

#[test]
fn a_counter_in_memory_counts_across_instances_and_reloads_and_apps_keep_their_own() {
    let (_dir, file) = config_file(&two_apps(
        "keyvalue = { default = \"memory\" }\nconfig = { greeting = \"Hi\" }",
        "keyvalue = { default = \"memory\" }",
    ));
    // A fresh instance for every request: the count is the bucket's.
    let server = Server::start(WASMHOST, &["--config", &file]);
    for n in 1..=3 {
        assert_eq!(body(&server, "/"), format!("Hi, visitor {n}\n"));
    }
    // The other app's default bucket is its own.
    assert_eq!(body(&server, "/other/"), "Hello, visitor 1\n");
    server.signal(wasmhost_tests::libc::SIGHUP);
    assert!(
        server.wait_for_log("configuration applied", DEADLINE),
        "{}",
        server.log()
    );
    assert_eq!(body(&server, "/"), "Hi, visitor 4\n");
    assert_eq!(body(&server, "/other/"), "Hello, visitor 2\n");
}

#[test]
fn apps_given_the_same_named_memory_store_share_its_keys() {
    let shared = "keyvalue = { default = \"memory:visits\" }";
    let (_dir, file) = config_file(&two_apps(shared, shared));
    let server = Server::start(WASMHOST, &["--config", &file, "--reuse", "2"]);
    assert_eq!(body(&server, "/"), "Hello, visitor 1\n");
    assert_eq!(body(&server, "/other/"), "Hello, visitor 2\n");
    assert_eq!(body(&server, "/visits"), "Hello, visitor 1\n");
    assert_eq!(body(&server, "/other/visits"), "Hello, visitor 2\n");
}

#[test]
fn batch_and_list_calls_follow_the_interface() {
    let server = Server::start(WASMHOST, &[kv(), "--keyvalue", "memory"]);
    assert_eq!(
        body(&server, "/batch"),
        "[a=1,b=2,none] a=false b=true keys=1"
    );
}

/// What `/draft2` answers when counters and compare-and-swap work: -3 then
/// 2, a CAS of an absent key swapped, one that went stale refused with a
/// new CAS of the value now, which then swaps.
const DRAFT2: &str = "increment=-3,2 cas=true,true,failed:v2,true c=v3 keys=2 cursor=None";

#[test]
fn the_latest_draft_of_the_interface_counts_signed_and_swaps_only_what_it_saw() {
    let server = Server::start(WASMHOST, &[kv(), "--keyvalue", "memory"]);
    assert_eq!(body(&server, "/draft2"), DRAFT2);
}

#[test]
fn the_memory_store_bound_holds_under_a_guest_that_writes_without_end() {
    let server = Server::start(
        WASMHOST,
        &[
            kv(),
            "--keyvalue",
            "memory",
            "--keyvalue-memory-limit",
            "8MiB",
        ],
    );
    let before = server.rss_kib();
    let mut fitted = Vec::new();
    for _ in 0..4 {
        let reply = get(&server.url("/fill")).unwrap();
        assert_eq!(reply.status, 507, "{}", reply.body);
        assert!(
            reply.body.contains("keyvalue_memory_limit"),
            "{}",
            reply.body
        );
        let writes = reply.body["full after ".len()..].split(' ').next().unwrap();
        fitted.push(writes.parse::<u32>().unwrap());
    }
    // 8 MiB holds 127 values of 64 KiB with their keys; each fill after
    // the first overwrites those and is refused at the same one.
    assert!(fitted.iter().all(|n| *n == 127), "{fitted:?}");
    // The server is alive, and has not grown past the bound and its own
    // working memory.
    assert_eq!(body(&server, "/open/default"), "ok");
    let grown_mib = server.rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "RSS grew {grown_mib} MiB for an 8 MiB store"
    );
}

#[test]
fn a_redis_host_that_resolves_to_an_internal_address_is_refused_unless_named() {
    // localhost is an internal address reached by name: a grant by name
    // does not reach it (the egress rule), so the operation fails with
    // the entry to add, and no connection is made.
    let server = Server::start(
        WASMHOST,
        &[counter(), "--keyvalue", "redis://localhost:1/0"],
    );
    let reply = get(&server.url("/")).unwrap();
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.contains("an internal address") && reply.body.contains("tcp://127.0.0.1:1"),
        "{}",
        reply.body
    );
}

#[test]
#[ignore = "needs redis-server; tests/run installs it and runs this"]
fn a_counter_in_redis_counts_across_instances_servers_and_reloads_and_is_in_metrics() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let admin = format!("127.0.0.1:{}", wasmhost_tests::free_port());
    let args = [
        counter(),
        "--keyvalue",
        &url,
        "--reuse",
        "2",
        "--admin",
        &admin,
    ];
    let server = Server::start(WASMHOST, &args);
    for n in 1..=5 {
        assert_eq!(body(&server, "/"), format!("Hello, visitor {n}\n"));
    }
    server.signal(wasmhost_tests::libc::SIGHUP);
    assert!(
        server.wait_for_log("configuration applied", DEADLINE),
        "{}",
        server.log()
    );
    assert_eq!(body(&server, "/"), "Hello, visitor 6\n");
    // Another server on the same database counts on: the count is Redis's.
    let second = Server::start(WASMHOST, &[counter(), "--keyvalue", &url]);
    assert_eq!(body(&second, "/"), "Hello, visitor 7\n");
    let metrics = get(&format!("http://{admin}/metrics")).unwrap().body;
    assert!(
        metrics.contains(
            "wasmhost_keyvalue_operations_total{app=\"/\",bucket=\"default\",store=\"redis\",op=\"increment\",outcome=\"ok\"} 6"
        ),
        "{metrics}"
    );
    // Redis gone: the guest gets an error value (its 503), the server lives
    // and says why.
    drop(redis);
    drop(second);
    for _ in 0..2 {
        assert_eq!(get(&server.url("/")).unwrap().status, 503);
    }
    assert!(
        server.wait_for_log("cannot connect to redis://127.0.0.1", DEADLINE),
        "{}",
        server.log()
    );
    assert_eq!(get(&server.url("/nowhere")).unwrap().status, 404);
}

#[test]
#[ignore = "needs redis-server; tests/run installs it and runs this"]
fn in_redis_batches_list_counters_and_compare_and_swap_work_as_in_memory() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let server = Server::start(WASMHOST, &[kv(), "--keyvalue", &url]);
    assert_eq!(body(&server, "/draft2"), DRAFT2);
    assert_eq!(
        body(&server, "/batch"),
        "[a=1,b=2,c=v3] a=false b=true keys=3"
    );
}
