//! The WSGI bridge (python/wasmhost-wsgi): an unmodified PEP 3333
//! application (guest-examples/python-wsgi/wsgi.py) built into a component
//! and served, its environ, streaming both ways, and its mistakes as 500s.

use crate::WASMHOST;
use std::time::Duration;
use wasmhost_tests::{Guest, Server, get, guest, post};

fn wsgi_app() -> String {
    format!("/app={}", guest(Guest::PythonWsgi).display())
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_wsgi_app_gets_a_faithful_environ() {
    let server = Server::start(WASMHOST, &["--mount", &wsgi_app()]);
    assert_eq!(
        get(&server.url("/app/")).unwrap().body,
        "Hello from a WSGI app in a component!\n"
    );
    let reply = wasmhost_tests::ureq::get(&server.url("/app/environ?a=1&b=%20"))
        .header("X-Test", "yes")
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let port = server
        .url("/")
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    for expected in [
        "\"REQUEST_METHOD\": \"GET\"".to_string(),
        // The mount prefix is the WSGI SCRIPT_NAME, the rest PATH_INFO.
        "\"SCRIPT_NAME\": \"/app\"".to_string(),
        "\"PATH_INFO\": \"/environ\"".to_string(),
        "\"QUERY_STRING\": \"a=1&b=%20\"".to_string(),
        "\"SERVER_NAME\": \"127.0.0.1\"".to_string(),
        format!("\"SERVER_PORT\": \"{port}\""),
        "\"REMOTE_ADDR\": \"127.0.0.1\"".to_string(),
        "\"HTTP_X_TEST\": \"yes\"".to_string(),
        "\"wsgi.url_scheme\": \"http\"".to_string(),
    ] {
        assert!(reply.contains(&expected), "{expected} not in {reply}");
    }
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_wsgi_app_streams_the_request_and_the_response() {
    let server = Server::start(WASMHOST, &["--mount", &wsgi_app(), "--reuse", "100"]);
    let body: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for _ in 0..3 {
        let echoed = post(&server.url("/app/echo"), &body).unwrap();
        assert_eq!(echoed.status, 200);
        assert!(
            echoed.body.as_bytes() == body.as_slice(),
            "the echo differs"
        );
    }
    let streamed = get(&server.url("/app/stream")).unwrap();
    assert_eq!(streamed.body.lines().count(), 1000);
    assert_eq!(streamed.body.lines().last(), Some("line 999"));
    assert_eq!(get(&server.url("/app/nope")).unwrap().status, 404);
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_wsgi_mistake_is_a_500_with_a_clear_line_and_the_instance_serves_on() {
    let server = Server::start(WASMHOST, &["--mount", &wsgi_app(), "--reuse", "100"]);
    assert_eq!(get(&server.url("/app/str-body")).unwrap().status, 500);
    assert!(server.wait_for_log(
        "stderr: wasmhost-wsgi: TypeError: the response body must be bytes, not str",
        Duration::from_secs(10)
    ));
    assert_eq!(get(&server.url("/app/bad-status")).unwrap().status, 500);
    assert!(server.wait_for_log(
        "stderr: wasmhost-wsgi: ValueError: bad status 'OK': give e.g. '200 OK'",
        Duration::from_secs(10)
    ));
    // Reused instances: each request released what it held.
    for _ in 0..5 {
        assert_eq!(get(&server.url("/app/")).unwrap().status, 200);
    }
    assert!(!server.log().contains("trapped"), "{}", server.log());
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_flask_app_is_served_unmodified_through_the_bridge() {
    let flask = guest(Guest::PythonFlask).to_str().unwrap();
    let server = Server::start(WASMHOST, &[flask, "--reuse", "100"]);
    assert_eq!(
        get(&server.url("/")).unwrap().body,
        "Hello from Flask in a component!\n"
    );
    let hello = get(&server.url("/hello/world")).unwrap();
    assert_eq!(
        (
            hello.status,
            hello.header("content-type"),
            hello.body.trim()
        ),
        (200, Some("application/json"), "{\"hello\":\"world\"}")
    );
    let form = wasmhost_tests::ureq::post(&server.url("/form"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send("name=Ada&tag=a&tag=b")
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert_eq!(form.trim(), "{\"name\":\"Ada\",\"tags\":[\"a\",\"b\"]}");
    let page = get(&server.url("/page")).unwrap().body;
    assert!(
        page.contains("<title>A &lt;page&gt;</title>") && page.contains("<li>two &amp; three</li>"),
        "{page}"
    );
    assert_eq!(get(&server.url("/missing")).unwrap().status, 404);
    assert_eq!(get(&server.url("/nope")).unwrap().status, 404);
    // Flask answers its own exceptions with a 500 and logs them to
    // wsgi.errors, the guest's stderr.
    assert_eq!(get(&server.url("/boom")).unwrap().status, 500);
    assert!(server.wait_for_log(
        "stderr: RuntimeError: the app failed on purpose",
        Duration::from_secs(10)
    ));
    for _ in 0..5 {
        assert_eq!(get(&server.url("/hello/again")).unwrap().status, 200);
    }
    assert!(!server.log().contains("trapped"), "{}", server.log());
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_bottle_app_is_served_unmodified_through_the_bridge() {
    let bottle = guest(Guest::WsgiBottle).to_str().unwrap();
    let server = Server::start(WASMHOST, &["--mount", &format!("/b={bottle}")]);
    assert_eq!(
        get(&server.url("/b/")).unwrap().body,
        "Hello from Bottle in a component!\n"
    );
    let hello = get(&server.url("/b/hello/world")).unwrap();
    assert_eq!(
        (hello.status, hello.body.replace(' ', "").trim()),
        (200, "{\"hello\":\"world\"}")
    );
    let upload = post(&server.url("/b/upload"), &[b'x'; 100_000]).unwrap();
    assert!(upload.body.contains("\"bytes\": 100000"), "{}", upload.body);
    // Bottle resolves the redirect against the request URL it built from
    // SCRIPT_NAME and PATH_INFO: under the mount.
    let redirect = wasmhost_tests::ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(&server.url("/b/redirect"))
        .call()
        .unwrap();
    assert_eq!(redirect.status().as_u16(), 303);
    let location = redirect
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(location.ends_with("/b/hello/redirected"), "{location}");
    assert_eq!(get(&server.url("/b/nope")).unwrap().status, 404);
    let own = get(&server.url("/b/weakref"))
        .unwrap()
        .body
        .replace(' ', "");
    assert_eq!(
        own.trim(),
        "{\"module\":\"weakref\",\"alive\":true,\"seen\":[\"collected\"]}"
    );
}

/// HTTP/2 carries each cookie as a field of its own: the app gets them as
/// one `Cookie` header joined with `; ` (RFC 9113 §8.2.3), and any other
/// repeated field joined with `,`.
#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn cookies_sent_over_http2_reach_the_app_joined_with_semicolons() {
    let bottle = guest(Guest::WsgiBottle).to_str().unwrap();
    let server = Server::start(WASMHOST, &["--mount", &format!("/b={bottle}")]);
    let addr = server.addresses(1)[0];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::get("http://test/b/cookies")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-many", "x")
            .header("x-many", "y")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let mut body = response.await.unwrap().into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8(text).unwrap()
    });
    let body = body.replace(' ', "");
    assert!(body.contains("\"cookie\":\"a=1;b=2\""), "{body}");
    assert!(
        body.contains("\"cookies\":{\"a\":\"1\",\"b\":\"2\"}"),
        "{body}"
    );
    assert!(body.contains("\"x-many\":\"x,y\""), "{body}");
}

/// An agent that hands back redirects and error statuses as they are.
fn as_is() -> wasmhost_tests::ureq::Agent {
    wasmhost_tests::ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// What a framework's test app answers, each app served at its own mount:
/// its page at `/`, the redirect it makes from `/redirect` (status and the
/// path it points to under the mount), and the text its 404 page holds.
struct Framework {
    guest: Guest,
    mount: &'static str,
    hello: &'static str,
    redirect: (u16, &'static str),
    not_found: &'static str,
    /// What its 500 page or its log says of the exception.
    error: &'static str,
}

/// Serves `framework`'s app, unmodified, under its mount prefix and checks
/// a page, a redirect built from SCRIPT_NAME, a form POST, its own 404 and
/// an exception as a 500.
fn serves_every_check(framework: Framework) {
    let app = guest(framework.guest).to_str().unwrap();
    let mount = framework.mount;
    let server = Server::start(WASMHOST, &["--mount", &format!("{mount}={app}")]);
    let page = get(&server.url(&format!("{mount}/"))).unwrap();
    assert_eq!((page.status, page.body.as_str()), (200, framework.hello));
    let redirect = as_is()
        .get(&server.url(&format!("{mount}/redirect")))
        .call()
        .unwrap();
    assert_eq!(redirect.status().as_u16(), framework.redirect.0);
    // Absolute, or a path from the root (Werkzeug's), under the mount.
    let location = redirect.headers()["location"].to_str().unwrap();
    let path = format!("{mount}{}", framework.redirect.1);
    assert!(
        location == server.url(&path) || location == path,
        "{location} is not {path}"
    );
    let form = as_is()
        .post(&server.url(&format!("{mount}/form")))
        .content_type("application/x-www-form-urlencoded")
        .send("name=ada")
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert_eq!(form, "posted ada\n");
    let missing = get(&server.url(&format!("{mount}/nope"))).unwrap();
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains(framework.not_found),
        "{}",
        missing.body
    );
    // The exception is the framework's to report: on its 500 page
    // (CherryPy's) or in the log.
    let boom = get(&server.url(&format!("{mount}/boom"))).unwrap();
    assert_eq!(boom.status, 500);
    let said = boom.body.contains(framework.error)
        || server.wait_for_log(framework.error, Duration::from_secs(10));
    assert!(said, "{}\n{}", boom.body, server.log());
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_flask_app_answers_every_framework_check() {
    serves_every_check(Framework {
        guest: Guest::WsgiFlask,
        mount: "/f",
        hello: "Hello from Flask in a component!\n",
        redirect: (302, "/"),
        not_found: "Not Found",
        error: "RuntimeError: boom",
    });
}

#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_bottle_app_answers_every_framework_check() {
    serves_every_check(Framework {
        guest: Guest::WsgiBottle,
        mount: "/b",
        hello: "Hello from Bottle in a component!\n",
        redirect: (303, "/hello/redirected"),
        not_found: "Not found: &#039;/nope&#039;",
        error: "RuntimeError: boom",
    });
}

/// Pyramid 2.1: its wheels resolve for the guest's Python 3.14 (WebOb's
/// `legacy-cgi; python_version >= "3.13"`, which a resolver for the
/// building machine's 3.11 skipped, so it did not build).
#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_pyramid_app_is_served_unmodified_through_the_bridge() {
    serves_every_check(Framework {
        guest: Guest::WsgiPyramid,
        mount: "/py",
        hello: "Hello from Pyramid in a component!\n",
        redirect: (302, "/"),
        not_found: "404 Not Found",
        error: "RuntimeError: boom",
    });
}

/// CherryPy 18.10. Before, it was refused for pydantic-core's native
/// modules, though nothing a CherryPy app imports needs them, and answered
/// every request 400 for the Host that wasi:http carries apart from the
/// fields.
#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_cherrypy_app_is_served_unmodified_through_the_bridge() {
    serves_every_check(Framework {
        guest: Guest::WsgiCherryPy,
        mount: "/cp",
        hello: "Hello from CherryPy in a component!\n",
        redirect: (303, "/hello"),
        not_found: "The path '/cp/nope' was not found",
        error: "500 Internal Server Error",
    });
}

/// Falcon 4.4, from its CPython 3.14 wheel with the compiled modules
/// removed: Falcon runs as pure Python without them.
#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_falcon_app_is_served_unmodified_through_the_bridge() {
    serves_every_check(Framework {
        guest: Guest::WsgiFalcon,
        mount: "/fa",
        hello: "Hello from Falcon in a component!\n",
        redirect: (302, "/"),
        not_found: "404 Not Found",
        error: "RuntimeError: boom",
    });
}

/// The value of the cookie `name` that `reply` sets.
fn set_cookie(headers: &wasmhost_tests::ureq::http::HeaderMap, name: &str) -> String {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix(&format!("{name}="))?.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie in {headers:?}"))
        .to_string()
}

/// A Django 5.2 project in the usual layout (manage.py, a settings module,
/// an app with its templates), unmodified, under a mount prefix: a template
/// rendered with a form and a CSRF token, a session in a signed cookie kept
/// across requests (and so across instances), a POST with the token
/// redirected, one without it refused with Django's own 403 page, an
/// APPEND_SLASH redirect, and Django's 404 and 500 pages, fresh and reused,
/// with the SECRET_KEY its settings read from the granted environment. Before, every
/// page Django imports on first use (template loaders, error views, the
/// session serializers, the CSRF page it reads from a file) was a 500.
#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn a_django_project_is_served_unmodified_through_the_bridge() {
    let django = guest(Guest::WsgiDjango).to_str().unwrap();
    for mode in [&[][..], &["--reuse", "100"][..]] {
        let mut args = vec![
            "--mount".to_string(),
            format!("/dj={django}"),
            "--env".to_string(),
            "DJANGO_SECRET_KEY=granted-at-run-time".to_string(),
        ];
        args.extend(mode.iter().map(|arg| arg.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        django_checks(&Server::start(WASMHOST, &args));
    }
}

/// What the Django test project answers, in any serving mode.
fn django_checks(server: &Server) {
    // The settings module is run again with the granted environment: the
    // build's own SECRET_KEY is not the one that signs.
    let key = get(&server.url("/dj/key/")).unwrap();
    assert_eq!(
        (key.status, key.body.as_str()),
        (200, "granted-at-run-time")
    );
    let agent = as_is();
    let page = agent.get(&server.url("/dj/")).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csrf_cookie = set_cookie(page.headers(), "csrftoken");
    let session = set_cookie(page.headers(), "sessionid");
    let html = page.into_body().read_to_string().unwrap();
    assert!(html.contains("<h1>Polls</h1><p>visits 1</p>"), "{html}");
    let token = html
        .split("name=\"csrfmiddlewaretoken\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token in {html}"));

    let again = agent
        .get(&server.url("/dj/"))
        .header("cookie", &format!("sessionid={session}"))
        .call()
        .unwrap();
    let html = again.into_body().read_to_string().unwrap();
    assert!(html.contains("visits 2"), "{html}");

    let voted = agent
        .post(&server.url("/dj/vote/"))
        .header("cookie", &format!("csrftoken={csrf_cookie}"))
        .content_type("application/x-www-form-urlencoded")
        .send(format!("csrfmiddlewaretoken={token}&choice=yes"))
        .unwrap();
    assert_eq!(voted.status().as_u16(), 302);
    assert_eq!(voted.headers()["location"], "/dj/?voted=yes");

    let refused = agent
        .post(&server.url("/dj/vote/"))
        .content_type("application/x-www-form-urlencoded")
        .send("choice=yes")
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let html = refused.into_body().read_to_string().unwrap();
    assert!(html.contains("Forbidden <span>(403)</span>"), "{html}");
    assert!(html.contains("CSRF verification failed"), "{html}");

    let slash = agent.get(&server.url("/dj/vote")).call().unwrap();
    assert_eq!(slash.status().as_u16(), 301);
    assert_eq!(slash.headers()["location"], "/dj/vote/");

    let missing = get(&server.url("/dj/nope/")).unwrap();
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains("<h1>Not Found</h1>"),
        "{}",
        missing.body
    );
    let boom = get(&server.url("/dj/boom/")).unwrap();
    assert_eq!(boom.status, 500);
    assert!(
        boom.body.contains("<h1>Server Error (500)</h1>"),
        "{}",
        boom.body
    );
}

/// An app that imports standard-library modules inside its handler (and so
/// only on a request, after componentize-py has built the component) finds
/// them all; one it imports by a name given at run time is there if common
/// or given with `--include`, and a clear ImportError otherwise.
#[test]
#[ignore = "needs componentize-py; tests/run installs it and runs this"]
fn modules_an_app_imports_on_a_request_are_in_the_component() {
    let lazy = guest(Guest::WsgiLazy).to_str().unwrap();
    let server = Server::start(WASMHOST, &["--mount", &format!("/l={lazy}")]);
    for (path, body) in [
        ("/l/json", "{\"ok\": true}\n"),
        (
            "/l/hashlib",
            "7681d0721de88a4fa26d8b07e2dca742827389d69d95130e0ec0b3497ed0ef4e\n",
        ),
        ("/l/decimal", "0.3\n"),
        ("/l/sqlite3", "42\n"),
        ("/l/uuid", "00000000-0000-0000-0000-000000000001\n"),
        ("/l/dynamic/secrets", "secrets\n"),
        ("/l/dynamic/colorsys", "colorsys\n"),
    ] {
        let reply = get(&server.url(path)).unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, body), "{path}");
    }
    let missing = get(&server.url("/l/dynamic/wave")).unwrap();
    assert_eq!(missing.status, 500);
    assert_eq!(
        missing.body,
        "ModuleNotFoundError: No module named 'wave'\n"
    );
}
