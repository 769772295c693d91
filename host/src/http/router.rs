//! The URL tree: which mounted app a request path belongs to, and the path
//! that app sees. Pure functions, no I/O.
//!
//! Semantics (the README's "Mounting several apps" section):
//! - the path is normalised first: empty segments (`//`) and `.` segments go;
//! - the longest mounted prefix wins, on a segment boundary (`/api` matches
//!   `/api`, `/api/` and `/api/x`, never `/apix`);
//! - the app sees the rest of the path (`/api/x?q=1` → `/x?q=1`, `/api` → `/`)
//!   with the query untouched; the prefix is its SCRIPT_NAME;
//! - `..` segments resolve inside the app's part of the path; a path that
//!   `..` would move out of the mount it names (or above `/`) is refused;
//! - percent-encoding is left alone (`%2F` is not a separator), except that
//!   `%2e` counts as `.` when spotting dot segments (`paths`).
//!
//! A request is routed once, by the service; the result names the app for
//! the access log and, applied with [`Routed::rewrite`], gives the handler
//! the request as the app must see it.

use crate::config::paths::{is_dot, is_dot_dot, split};
use crate::guest::App;
use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue};
use std::sync::Arc;

/// The route table requests are served from. A reload swaps in a new one;
/// a request holds the app it was routed to until it is done with it.
pub type Routes = ArcSwap<Router<Arc<App>>>;

/// The header carrying the mount point to the app, like WSGI's SCRIPT_NAME.
const FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// A request path the router refuses outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    /// No mount covers the path.
    NotFound,
    /// A `..` segment climbs above the mount point (or the path is not
    /// origin-form, e.g. `*`).
    BadPath,
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Routed<'a, T> {
    pub target: &'a T,
    /// The mount point, `/` for the root mount.
    pub prefix: &'a str,
    /// The path and query the app sees; always starts with `/`.
    pub path_and_query: String,
}

impl<T> Routed<'_, T> {
    /// Rewrites `request` as the app must see it: its path relative to the
    /// mount, the mount in `X-Forwarded-Prefix` (a client-sent one would lie
    /// to the app about where it is mounted, so it is removed).
    pub fn rewrite<B>(&self, request: &mut http::Request<B>) -> Result<(), Unrouted> {
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = Some(self.path_and_query.parse().map_err(|_| Unrouted::BadPath)?);
        *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| Unrouted::BadPath)?;
        let headers = request.headers_mut();
        headers.remove(&FORWARDED_PREFIX);
        if self.prefix != "/" {
            let value = HeaderValue::from_str(self.prefix).map_err(|_| Unrouted::BadPath)?;
            headers.insert(FORWARDED_PREFIX, value);
        }
        Ok(())
    }
}

/// Mount points and what is mounted on them, longest prefix first.
#[derive(Debug)]
pub struct Router<T> {
    mounts: Vec<(Arc<str>, T)>,
}

impl<T> Router<T> {
    /// `mounts` are (prefix, target) pairs with prefixes already validated by
    /// `paths::normalise_prefix` and unique.
    pub fn new(mounts: impl IntoIterator<Item = (Arc<str>, T)>) -> Self {
        let mut mounts: Vec<_> = mounts.into_iter().collect();
        mounts.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Self { mounts }
    }

    /// Every mount and what is mounted there.
    pub fn mounts(&self) -> impl Iterator<Item = (&Arc<str>, &T)> {
        self.mounts.iter().map(|(prefix, target)| (prefix, target))
    }

    /// This router with `target` mounted at `prefix`, replacing what was
    /// there.
    pub fn with(&self, prefix: &Arc<str>, target: T) -> Self
    where
        T: Clone,
    {
        let others = self
            .mounts
            .iter()
            .filter(|(other, _)| other != prefix)
            .cloned();
        Self::new(others.chain([(prefix.clone(), target)]))
    }

    /// The longest mount covering `segments`: its index and segment count.
    fn longest_match(&self, segments: &[&str]) -> Option<(usize, usize)> {
        self.mounts
            .iter()
            .enumerate()
            .find_map(|(index, (prefix, _))| {
                let mut depth = 0;
                for mount_segment in split(prefix) {
                    if segments.get(depth) != Some(&mount_segment) {
                        return None;
                    }
                    depth += 1;
                }
                Some((index, depth))
            })
    }

    /// Routes a request target (`/path?query`).
    pub fn route(&self, path_and_query: &str) -> Result<Routed<'_, T>, Unrouted> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if !path.starts_with('/') {
            return Err(Unrouted::BadPath);
        }
        let segments = clean_segments(path);
        // The mount the path names as written, and the one it lands in once
        // `..` is applied: they must agree, so `..` can never move a request
        // out of the app it addresses (or climb above `/`).
        let written = self.longest_match(&segments);
        let resolved = resolve_dot_dot(&segments).ok_or(Unrouted::BadPath)?;
        let landed = self.longest_match(&resolved);
        let (index, depth) = match (written, landed) {
            (None, None) => return Err(Unrouted::NotFound),
            (Some(w), Some(l)) if w == l => l,
            _ => return Err(Unrouted::BadPath),
        };
        let (prefix, target) = &self.mounts[index];
        let (prefix, rest) = (&**prefix, &resolved[depth..]);

        let mut out = String::with_capacity(path_and_query.len());
        for segment in rest {
            out.push('/');
            out.push_str(segment);
        }
        // A trailing slash is part of the resource name; keep it.
        if out.is_empty() || (path.ends_with('/') && !rest.is_empty()) {
            out.push('/');
        }
        if let Some(query) = query {
            out.push('?');
            out.push_str(query);
        }
        Ok(Routed {
            target,
            prefix,
            path_and_query: out,
        })
    }
}

/// Segments without empty and `.` ones; `..` kept for the app-relative pass.
fn clean_segments(path: &str) -> Vec<&str> {
    split(path).filter(|segment| !is_dot(segment)).collect()
}

/// Applies `..` segments; None if one climbs above the start.
fn resolve_dot_dot<'a>(segments: &[&'a str]) -> Option<Vec<&'a str>> {
    let mut out = Vec::with_capacity(segments.len());
    for &segment in segments {
        if is_dot_dot(segment) {
            out.pop()?;
        } else {
            out.push(segment);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::paths::normalise_prefix;

    fn router(prefixes: &[&'static str]) -> Router<&'static str> {
        Router::new(prefixes.iter().map(|p| (normalise_prefix(p).unwrap(), *p)))
    }

    type Case = (&'static str, Result<(&'static str, &'static str), Unrouted>);

    /// Each path routes to the expected (target, rewritten path) or refusal.
    fn assert_routes(router: &Router<&'static str>, cases: &[Case]) {
        for (path, expected) in cases {
            let got = router
                .route(path)
                .map(|r| (*r.target, r.path_and_query.clone()));
            let expected = match expected {
                Ok((target, rewritten)) => Ok((*target, rewritten.to_string())),
                Err(refusal) => Err(*refusal),
            };
            assert_eq!(got, expected, "{path}");
        }
    }

    #[test]
    fn routes_to_the_longest_prefix_on_a_segment_boundary() {
        let router = router(&["/", "/api", "/api/v2", "/static"]);
        let cases: [Case; 13] = [
            ("/", Ok(("/", "/"))),
            ("/index.html", Ok(("/", "/index.html"))),
            ("/api", Ok(("/api", "/"))),
            ("/api/", Ok(("/api", "/"))),
            ("/api/x", Ok(("/api", "/x"))),
            ("/api/x/", Ok(("/api", "/x/"))),
            ("/api/x?q=1", Ok(("/api", "/x?q=1"))),
            ("/api?q=1", Ok(("/api", "/?q=1"))),
            ("/apix", Ok(("/", "/apix"))),
            ("/api/v2", Ok(("/api/v2", "/"))),
            ("/api/v2/users/7", Ok(("/api/v2", "/users/7"))),
            ("/api/v20", Ok(("/api", "/v20"))),
            ("/static/a.css", Ok(("/static", "/a.css"))),
        ];
        assert_routes(&router, &cases);
    }

    #[test]
    fn normalises_empty_and_dot_segments_before_matching() {
        let router = router(&["/", "/api"]);
        let cases: [Case; 10] = [
            ("//api//x", Ok(("/api", "/x"))),
            ("/./api/./x", Ok(("/api", "/x"))),
            ("/%2e/api/x", Ok(("/api", "/x"))),
            ("/api/x/../y", Ok(("/api", "/y"))),
            ("/api/x/%2E%2E/y", Ok(("/api", "/y"))),
            ("/api/x/..", Ok(("/api", "/"))),
            ("/a/b/../../c", Ok(("/", "/c"))),
            // Percent-encoded slashes are data, not separators.
            ("/api%2Fx", Ok(("/", "/api%2Fx"))),
            ("/api/a%2Fb", Ok(("/api", "/a%2Fb"))),
            // The query is never touched, even when it looks like a path.
            ("/api/x?next=/../../etc", Ok(("/api", "/x?next=/../../etc"))),
        ];
        assert_routes(&router, &cases);
    }

    #[test]
    fn refuses_dot_dot_above_the_mount_and_unmounted_paths() {
        let with_root = router(&["/", "/api"]);
        let without_root = router(&["/api"]);
        let cases = [
            (&with_root, "/..", Unrouted::BadPath),
            (&with_root, "/../etc/passwd", Unrouted::BadPath),
            (&with_root, "/api/../secret", Unrouted::BadPath),
            (&with_root, "/api/x/../../secret", Unrouted::BadPath),
            (&with_root, "/api/%2e%2e/secret", Unrouted::BadPath),
            // `..` may not move a request into another mount either.
            (&with_root, "/x/../api/y", Unrouted::BadPath),
            (&without_root, "/other/../api/x", Unrouted::BadPath),
            (&with_root, "*", Unrouted::BadPath),
            (&without_root, "/", Unrouted::NotFound),
            (&without_root, "/apix", Unrouted::NotFound),
            (&without_root, "/other/api", Unrouted::NotFound),
        ];
        for (router, path, expected) in cases {
            assert_eq!(
                router.route(path).map(|r| *r.target),
                Err(expected),
                "{path}"
            );
        }
    }

    #[test]
    fn with_replaces_one_mount_and_keeps_the_others() {
        let before = router(&["/", "/api"]);
        let api = normalise_prefix("/api").unwrap();
        let after = before.with(&api, "new api");
        assert_eq!(after.route("/api/x").unwrap().target, &"new api");
        assert_eq!(after.route("/other").unwrap().target, &"/");
        assert_eq!(after.mounts().count(), 2);
        let added = after.with(&normalise_prefix("/new").unwrap(), "new");
        assert_eq!(added.route("/new").unwrap().target, &"new");
        assert_eq!(before.route("/api").unwrap().target, &"/api");
    }

    #[test]
    fn rewrite_gives_the_app_its_path_and_its_mount_point() {
        let router = router(&["/", "/api"]);
        let request = |path: &str| {
            http::Request::builder()
                .uri(format!("http://example.test{path}"))
                .header("x-forwarded-prefix", "/lie")
                .body(())
                .unwrap()
        };
        let mut api = request("/api/users?page=2");
        router
            .route("/api/users?page=2")
            .unwrap()
            .rewrite(&mut api)
            .unwrap();
        assert_eq!(api.uri().to_string(), "http://example.test/users?page=2");
        assert_eq!(api.headers()["x-forwarded-prefix"], "/api");

        let mut root = request("/about");
        router.route("/about").unwrap().rewrite(&mut root).unwrap();
        assert_eq!(root.uri().path(), "/about");
        assert!(root.headers().get("x-forwarded-prefix").is_none());
    }
}
