//! Every `wasi:keyvalue` and `wasi:config` call, on request, for the
//! end-to-end tests: `/open/NAME` opens a bucket, `/fill` writes 64 KiB
//! values until the store refuses one, `/batch` runs the batch interface,
//! `/config` lists the variables and `/config/KEY` reads one.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "kv-test", generate_all });
}

use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::{batch, store};

struct Kv;

impl wasi::exports::http::incoming_handler::Guest for Kv {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = answer(&path);
        respond(out, status, &body);
    }
}

fn answer(path: &str) -> (u16, String) {
    if let Some(name) = path.strip_prefix("/open/") {
        return match store::open(name) {
            Ok(_) => (200, "ok".into()),
            Err(error) => (200, format!("error: {error:?}")),
        };
    }
    if let Some(key) = path.strip_prefix("/config/") {
        return match config::get(key) {
            Ok(Some(value)) => (200, value),
            Ok(None) => (200, "none".into()),
            Err(error) => (500, format!("error: {error:?}")),
        };
    }
    match path {
        "/config" => match config::get_all() {
            Ok(mut all) => {
                all.sort();
                let lines: Vec<String> = all.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (200, lines.join("\n"))
            }
            Err(error) => (500, format!("error: {error:?}")),
        },
        "/fill" => fill(),
        "/batch" => match run_batch() {
            Ok(text) => (200, text),
            Err(error) => (500, format!("error: {error:?}")),
        },
        _ => (404, "not found".into()),
    }
}

/// Writes until the store says no, at most 1 GiB.
fn fill() -> (u16, String) {
    let bucket = match store::open("default") {
        Ok(bucket) => bucket,
        Err(error) => return (503, format!("error: {error:?}")),
    };
    let value = vec![b'x'; 64 * 1024];
    for written in 0..16384 {
        if let Err(error) = bucket.set(&format!("fill-{written}"), &value) {
            return (507, format!("full after {written} writes: {error:?}"));
        }
    }
    (200, "never full".into())
}

fn run_batch() -> Result<String, store::Error> {
    let bucket = store::open("default")?;
    batch::set_many(
        &bucket,
        &[("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())],
    )?;
    let got = batch::get_many(&bucket, &["a".into(), "b".into(), "c".into()])?;
    let shown: Vec<String> = got
        .into_iter()
        .map(|pair| match pair {
            Some((key, value)) => format!("{key}={}", String::from_utf8_lossy(&value)),
            None => "none".into(),
        })
        .collect();
    batch::delete_many(&bucket, &["a".into()])?;
    let listed = bucket.list_keys(None)?;
    Ok(format!(
        "[{}] a={} b={} keys={}",
        shown.join(","),
        bucket.exists("a")?,
        bucket.exists("b")?,
        listed.keys.len()
    ))
}

fn respond(out: ResponseOutparam, status: u16, body: &str) {
    let response = OutgoingResponse::new(Fields::new());
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body, taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the stream, taken once");
    stream
        .blocking_write_and_flush(body.as_bytes())
        .expect("the client reads the body");
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("the body ends");
}

wasi::http::proxy::export!(Kv);
