//! The page `wasmhost dev` (unless --no-dev-errors) answers an app's
//! requests with while its latest build fails: the build's output, so the
//! browser shows what the terminal did. Never used by `serve`.

use crate::guest::Body;
use bytes::Bytes;
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// The failed builds' pages, by route.
#[derive(Debug, Default)]
pub struct DevErrors {
    pages: Mutex<HashMap<Arc<str>, Bytes>>,
}

impl DevErrors {
    /// From now on `route` answers with this build output.
    pub fn fail(&self, route: &Arc<str>, command: &str, output: &str) {
        let page = format!(
            "<!doctype html>\n<meta charset=\"utf-8\">\n<title>build failed: {route}</title>\n\
             <h1>The build of {route} failed</h1>\n<p><code>{}</code> said:</p>\n<pre>{}</pre>\n\
             <p>Fix the source and save: the next good build serves, and this page goes.</p>\n",
            escape(command),
            escape(output)
        );
        self.pages.lock().insert(route.clone(), Bytes::from(page));
    }

    /// `route` builds again: its app answers.
    pub fn clear(&self, route: &Arc<str>) {
        self.pages.lock().remove(route);
    }

    /// The page for a request routed to `route`, if its build failed.
    pub fn page(&self, route: &Arc<str>) -> Option<http::Response<Body>> {
        let page = self.pages.lock().get(route).cloned()?;
        let body = Full::new(page)
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut response = http::Response::new(body);
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(response)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
