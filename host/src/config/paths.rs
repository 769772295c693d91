//! URL path segments, as both the config (validating a mount prefix) and the
//! router (matching and rewriting a request path) read them. Pure functions.
//!
//! Percent-encoding is left alone (`%2F` is not a separator), except that
//! `%2e` counts as `.` when spotting dot segments, since clients and apps
//! decode it to one.

use std::sync::Arc;

/// The non-empty segments of `path`.
pub fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|segment| !segment.is_empty())
}

/// `.`, written plainly or percent-encoded.
pub fn is_dot(segment: &str) -> bool {
    segment == "." || segment.eq_ignore_ascii_case("%2e")
}

/// `..`, written plainly or percent-encoded.
pub fn is_dot_dot(segment: &str) -> bool {
    matches!(
        segment.to_ascii_lowercase().as_str(),
        ".." | "%2e." | ".%2e" | "%2e%2e"
    )
}

/// Validates a mount prefix and puts it in canonical form: starts with `/`,
/// no trailing `/` (except the root itself), no empty, `.` or `..` segments,
/// no query.
pub fn normalise_prefix(prefix: &str) -> Result<Arc<str>, String> {
    if !prefix.starts_with('/') {
        return Err(format!("route `{prefix}` must start with `/`"));
    }
    if prefix.contains(['?', '#']) {
        return Err(format!(
            "route `{prefix}` must be a path, without `?` or `#`"
        ));
    }
    // Written into URLs, logs and the nginx config `wasmhost nginx` makes
    // (where `;`, `{`, quotes or spaces would be config, not a path).
    if let Some(bad) = prefix.chars().find(|&c| !is_route_char(c)) {
        return Err(format!(
            "route `{}` holds {bad:?}; a route may hold letters, digits and - . _ ~ % ! * + , = : @ / only",
            prefix.escape_debug()
        ));
    }
    let segments: Vec<&str> = split(prefix).collect();
    if segments.iter().any(|s| is_dot(s) || is_dot_dot(s)) {
        return Err(format!(
            "route `{prefix}` must not contain `.` or `..` segments"
        ));
    }
    Ok(format!("/{}", segments.join("/")).into())
}

/// A character a route may hold: RFC 3986's unreserved ones, `%` of its
/// escapes, and the path's delimiters that mean nothing to nginx's config.
fn is_route_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~%!*+,=:@/".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_prefixes_are_validated_and_canonical() {
        let cases = [
            ("/", Ok("/")),
            ("/api", Ok("/api")),
            ("/api/", Ok("/api")),
            ("//api//v2/", Ok("/api/v2")),
            ("api", Err(())),
            ("", Err(())),
            ("/api?x", Err(())),
            ("/a/../b", Err(())),
            ("/./a", Err(())),
            ("/a/%2E%2e", Err(())),
            ("/api-v2/~user/a.b_c", Ok("/api-v2/~user/a.b_c")),
            ("/a { return 200 pwned; } location /b", Err(())),
            ("/a;b", Err(())),
            ("/a\"b", Err(())),
            ("/$host", Err(())),
            ("/é", Err(())),
        ];
        for (prefix, expected) in cases {
            let got = normalise_prefix(prefix)
                .map(|p| p.to_string())
                .map_err(|_| ());
            assert_eq!(got, expected.map(str::to_string), "{prefix}");
        }
    }
}
