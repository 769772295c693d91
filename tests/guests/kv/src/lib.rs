//! Every `wasi:keyvalue` and `wasi:config` call, on request, for the
//! end-to-end tests: `/open/NAME` opens a bucket, `/fill` writes 64 KiB
//! values until the store refuses one, `/batch` runs the batch interface,
//! `/config` lists the variables and `/config/KEY` reads one (and
//! `/spin-config/KEY` through Spin 3's version of the interface); `/draft2`
//! runs the counters and compare-and-swap of wasi:keyvalue@0.2.0-draft2.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "kv-test", generate_all });
}

use bindings::wasi::config0_2_0_draft_2024_09_27::store as spin_config;
use bindings::wasi::config0_2_0_rc_1::store as config;
use bindings::wasi::keyvalue0_2_0_draft::{batch, store};
use bindings::wasi::keyvalue0_2_0_draft2 as draft2;

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
    if let Some(key) = path.strip_prefix("/spin-config/") {
        return match spin_config::get(key) {
            Ok(Some(value)) => (200, value),
            Ok(None) => (200, "none".into()),
            Err(error) => (500, format!("error: {error:?}")),
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
        "/draft2" => match run_draft2() {
            Ok(text) => (200, text),
            Err(error) => (500, format!("error: {error:?}")),
        },
        "/batch" => match run_batch() {
            Ok(text) => (200, text),
            Err(error) => (500, format!("error: {error:?}")),
        },
        _ => (404, "not found".into()),
    }
}

/// Counters and compare-and-swap of wasi:keyvalue@0.2.0-draft2.
fn run_draft2() -> Result<String, draft2::store::Error> {
    use draft2::atomics::{self, Cas, CasError};
    let bucket = draft2::store::open("")?;
    let down = atomics::increment(&bucket, "signed", -3)?;
    let up = atomics::increment(&bucket, "signed", 5)?;
    let first = Cas::new(&bucket, "c")?;
    let absent = first.current()?.is_none();
    let swapped = atomics::swap(first, b"v1").is_ok();
    let stale = Cas::new(&bucket, "c")?;
    bucket.set("c", b"v2")?;
    let retried = match atomics::swap(stale, b"v3") {
        Err(CasError::CasFailed(fresh)) => {
            let now = String::from_utf8(fresh.current()?.unwrap_or_default()).unwrap();
            let again = atomics::swap(fresh, b"v3").is_ok();
            format!("failed:{now},{again}")
        }
        Ok(()) => "swapped a stale value".into(),
        Err(CasError::StoreError(error)) => return Err(error),
    };
    let value = String::from_utf8(bucket.get("c")?.unwrap_or_default()).unwrap();
    let listed = bucket.list_keys(None)?;
    Ok(format!(
        "increment={down},{up} cas={absent},{swapped},{retried} c={value} keys={} cursor={:?}",
        listed.keys.len(),
        listed.cursor
    ))
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
