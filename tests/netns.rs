//! The production layout across machines, without a toy: nginx and three
//! wasmhost processes each on a network stack of its own (`ip netns`),
//! joined by veth pairs with private addresses, the test's client on a
//! fourth. nginx runs the config `wasmhost nginx` prints; a rolling restart
//! and a `kill -9` fail no request, and each app sees the client's own
//! address through the proxy it trusts. Needs root and network namespaces:
//! it fails without them, and plain `cargo test` leaves it out.

use crate::WASMHOST;
use crate::nginx::{nginx_load, restart_each, served, wait_for_traffic, wasmhost_nginx};
use std::net::SocketAddr;
use std::process::Command;
use wasmhost_tests::tempfile::TempDir;
use wasmhost_tests::{Guest, Nginx, Server, guest};

const APPS: usize = 3;

/// `ip ARGS`, its stderr if it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("running ip: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The namespaces and links of one run, removed on drop (a namespace's
/// veth ends go with it).
struct Network {
    /// The front (nginx) first, then the apps.
    namespaces: Vec<String>,
    /// The client's end of its link to the front.
    client_link: String,
    /// The client's address, and the front's on the same link.
    client: String,
    front: String,
}

impl Network {
    /// Front, apps and links, or why the kernel would not have them.
    fn create() -> Result<Network, String> {
        // Unique per process, so two runs on one machine do not collide;
        // names stay within the 15 bytes of an interface name.
        let tag = format!("wh{}", std::process::id() % 100_000);
        let subnet = std::process::id() % 250;
        let mut network = Network {
            namespaces: Vec::new(),
            client_link: format!("{tag}c"),
            client: format!("10.212.{subnet}.1"),
            front: format!("10.212.{subnet}.2"),
        };
        let front = format!("{tag}-front");
        ip(&["netns", "add", &front])?;
        network.namespaces.push(front.clone());
        for i in 0..APPS {
            let app = format!("{tag}-app{i}");
            ip(&["netns", "add", &app])?;
            network.namespaces.push(app);
        }
        for ns in &network.namespaces {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // The client, here, to the front.
        let front_end = format!("{tag}f");
        ip(&[
            "link",
            "add",
            &network.client_link,
            "type",
            "veth",
            "peer",
            "name",
            &front_end,
        ])?;
        ip(&["link", "set", &front_end, "netns", &front])?;
        let client = format!("{}/30", network.client);
        ip(&["addr", "add", &client, "dev", &network.client_link])?;
        ip(&["link", "set", &network.client_link, "up"])?;
        let front_addr = format!("{}/30", network.front);
        ip(&["-n", &front, "addr", "add", &front_addr, "dev", &front_end])?;
        ip(&["-n", &front, "link", "set", &front_end, "up"])?;
        // The front to each app: 10.213.I.1 nginx's end, 10.213.I.2 the app's.
        for i in 0..APPS {
            let app = &network.namespaces[1 + i];
            let (near, far) = (format!("{tag}n{i}"), format!("{tag}a{i}"));
            ip(&["link", "add", &near, "type", "veth", "peer", "name", &far])?;
            ip(&["link", "set", &near, "netns", &front])?;
            ip(&["link", "set", &far, "netns", app])?;
            let near_addr = format!("10.213.{i}.1/30");
            let far_addr = format!("10.213.{i}.2/30");
            ip(&["-n", &front, "addr", "add", &near_addr, "dev", &near])?;
            ip(&["-n", &front, "link", "set", &near, "up"])?;
            ip(&["-n", app, "addr", "add", &far_addr, "dev", &far])?;
            ip(&["-n", app, "link", "set", &far, "up"])?;
        }
        Ok(network)
    }

    fn front(&self) -> &str {
        &self.namespaces[0]
    }

    fn app(&self, i: usize) -> &str {
        &self.namespaces[1 + i]
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.client_link]);
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn app_listen(i: usize) -> String {
    format!("10.213.{i}.2:8080")
}

/// wasmhost in app `i`'s namespace, trusting only nginx's end of its link.
fn start_app(network: &Network, i: usize) -> Server {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", network.app(i), WASMHOST, "serve"])
        .arg(guest(Guest::Fault))
        .arg(format!(
            "--mount=/hello={}",
            guest(Guest::RustHello).display()
        ))
        .args(["--listen", &app_listen(i)])
        .args(["--trusted-proxy", &format!("10.213.{i}.1")])
        .args(["--access-log", "-"]);
    Server::spawn(command)
}

#[test]
#[ignore = "needs root and nginx; tests/run installs it and runs this"]
fn across_network_namespaces_a_rolling_restart_and_a_kill_fail_no_request() {
    // Gated (tests/run runs it): without network namespaces it fails.
    let network = Network::create().unwrap_or_else(|why| {
        panic!(
            "the kernel refused a network namespace or veth pair (this needs root and \
             CONFIG_NET_NS): {why}"
        )
    });
    let mut servers: Vec<Server> = (0..APPS).map(|i| start_app(&network, i)).collect();

    let dir = TempDir::new().unwrap();
    // nginx's workers drop root for an unprivileged user.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let nginx_addr: SocketAddr = format!("{}:8000", network.front).parse().unwrap();
    let mut args = vec![
        guest(Guest::Fault).display().to_string(),
        format!("--mount=/hello={}", guest(Guest::RustHello).display()),
    ];
    for i in 0..APPS {
        args.extend(["--listen".into(), app_listen(i)]);
    }
    args.extend([
        "--standalone".into(),
        "--nginx-listen".into(),
        nginx_addr.to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = wasmhost_nginx(&args);
    let nginx = Nginx::start_with(
        &["ip", "netns", "exec", network.front()],
        dir.path(),
        &config,
        nginx_addr,
    );

    // A rolling restart, with POSTs among the requests: each process
    // drains on SIGTERM and its successor takes the same address.
    let load = nginx_load(nginx.url(""), true);
    for server in &servers {
        wait_for_traffic(server, 0, 20);
    }
    restart_each(&mut servers, |i| start_app(&network, i));
    let tally = load.finish();
    let (sent, failures) = (tally.sent(), tally.failures);
    assert!(
        failures.is_empty(),
        "rolling restart: {} of {sent} failed: {failures:?}",
        failures.len()
    );
    assert!(sent > 300, "{sent}");

    // kill -9 of one machine's server, under GETs (a POST that reached the
    // dead process is lost with it; nginx retries a GET on another).
    let load = nginx_load(nginx.url(""), false);
    for server in &servers {
        let before = served(server);
        wait_for_traffic(server, before, 20);
    }
    drop(servers.remove(1)); // SIGKILL
    for server in &servers {
        let before = served(server);
        wait_for_traffic(server, before, 100);
    }
    let restarted = start_app(&network, 1);
    wait_for_traffic(&restarted, 0, 20);
    let tally = load.finish();
    let (sent, failures) = (tally.sent(), tally.failures);
    assert!(
        failures.is_empty(),
        "kill -9: {} of {sent} failed: {failures:?}",
        failures.len()
    );

    // Each app saw the client's own address, from the other side of nginx.
    let client_line = format!("{} - - [", network.client);
    assert!(
        restarted.log().contains(&client_line),
        "{}",
        restarted.log()
    );
    assert!(
        !nginx.error_log().contains("no live upstreams"),
        "{}",
        nginx.error_log()
    );
}
