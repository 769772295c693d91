//! The rules a request head must meet before anything reads it, the same on
//! HTTP/1 and HTTP/2 (hyper's HTTP/1 parser applies the size and count
//! limits itself; HTTP/2 streams get them here and from the builder):
//!
//! - at most [`MAX_HEADERS`] header fields, at most [`MAX_HEAD_BYTES`] in
//!   all, else `431`;
//! - exactly one `Host`, and it is a `uri-host[:port]`, else `400`
//!   (RFC 9112 §3.2);
//! - a target in absolute form (`GET http://a.example/`) or HTTP/2's
//!   `:authority` wins over `Host`, which is set to it, so the guest's
//!   authority and its `X-Forwarded-Host` agree;
//! - HTTP/1.0 does not require `Host`: without one, the request is for the
//!   listener's own address.

use http::header::{HOST, HeaderValue};
use http::uri::Authority;
use http::{Request, Version};
use std::net::SocketAddr;

/// Bytes a request head may take (request line and headers); larger gets a
/// 431. nginx's default `large_client_header_buffers` allows 4 × 8 KiB lines.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Header fields a request may have; more gets a 431.
pub const MAX_HEADERS: usize = 100;

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHead {
    /// More header fields than [`MAX_HEADERS`].
    TooManyHeaders,
    /// No `Host` where one is required.
    NoHost,
    /// `Host` given more than once.
    RepeatedHost,
    /// `Host` is not `host[:port]`.
    BadHost,
}

/// Checks `request`'s head and settles its `Host`; `local` is the address
/// of the listener it came in on.
pub fn check<B>(request: &mut Request<B>, local: SocketAddr) -> Result<(), BadHead> {
    if request.headers().len() > MAX_HEADERS {
        return Err(BadHead::TooManyHeaders);
    }
    let mut hosts = request.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(BadHead::RepeatedHost);
    }
    if let Some(authority) = request.uri().authority() {
        if !is_host_text(authority.as_str()) {
            return Err(BadHead::BadHost);
        }
        let value = HeaderValue::from_str(authority.as_str()).map_err(|_| BadHead::BadHost)?;
        request.headers_mut().insert(HOST, value);
        return Ok(());
    }
    match host {
        Some(host) if is_host(host) => Ok(()),
        Some(_) => Err(BadHead::BadHost),
        None if request.version() <= Version::HTTP_10 => {
            let value = HeaderValue::from_str(&local.to_string())
                .expect("a socket address is valid header text");
            request.headers_mut().insert(HOST, value);
            Ok(())
        }
        None => Err(BadHead::NoHost),
    }
}

/// `uri-host[:port]`: an authority without user information.
fn is_host(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(is_host_text)
}

/// `uri-host[:port]`, the port (if any) from 1 to 65535: the same rule for
/// `Host` and for a target's authority (absolute form, `:authority`).
fn is_host_text(text: &str) -> bool {
    if text.is_empty() || text.contains('@') {
        return false;
    }
    if text.parse::<Authority>().is_err() {
        return false;
    }
    // After an IPv6 literal's `]`, or after the last `:` of any other host.
    let port = match text.rfind(']') {
        Some(close) => text[close + 1..].strip_prefix(':'),
        None => text.rsplit_once(':').map(|(_, port)| port),
    };
    port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(target);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(()).unwrap()
    }

    fn checked(version: Version, target: &str, hosts: &[&str]) -> Result<String, BadHead> {
        let local = "127.0.0.1:8080".parse().unwrap();
        let mut request = request(version, target, hosts);
        check(&mut request, local)?;
        Ok(request.headers()[HOST].to_str().unwrap().to_string())
    }

    #[test]
    fn host_is_one_valid_authority() {
        let v11 = Version::HTTP_11;
        let cases: [(&str, &[&str], Result<&str, BadHead>); 14] = [
            ("/", &["example.test"], Ok("example.test")),
            ("/", &["example.test:8080"], Ok("example.test:8080")),
            ("/", &["[::1]:8080"], Ok("[::1]:8080")),
            ("/", &["a.test", "b.test"], Err(BadHead::RepeatedHost)),
            ("/", &["evil.example/x?<script>"], Err(BadHead::BadHost)),
            ("/", &["user@example.test"], Err(BadHead::BadHost)),
            ("/", &[""], Err(BadHead::BadHost)),
            ("/", &[], Err(BadHead::NoHost)),
            // The target's authority wins, as RFC 9112 §3.2.2 says.
            ("http://a.example/x", &["b.example"], Ok("a.example")),
            // Refused in the target as in Host: user information, port 0
            // and ports past 65535.
            (
                "http://u:p@evil.example/",
                &["a.example"],
                Err(BadHead::BadHost),
            ),
            ("http://a.example:0/", &["a.example"], Err(BadHead::BadHost)),
            ("/", &["a.example:99999"], Err(BadHead::BadHost)),
            ("/", &["a.example:0"], Err(BadHead::BadHost)),
            ("http://a.example:65535/", &[], Ok("a.example:65535")),
        ];
        for (target, hosts, expected) in cases {
            assert_eq!(
                checked(v11, target, hosts),
                expected.map(str::to_string),
                "{target} {hosts:?}"
            );
        }
    }

    #[test]
    fn an_http_1_0_request_without_host_is_for_the_listener() {
        assert_eq!(
            checked(Version::HTTP_10, "/", &[]),
            Ok("127.0.0.1:8080".to_string())
        );
        assert_eq!(
            checked(Version::HTTP_10, "/", &["a.test"]),
            Ok("a.test".to_string())
        );
    }

    #[test]
    fn more_headers_than_the_limit_are_refused() {
        let mut request = request(Version::HTTP_2, "http://a.test/", &[]);
        for n in 0..=MAX_HEADERS {
            request.headers_mut().append(
                format!("x-{n}").parse::<http::HeaderName>().unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        assert_eq!(
            check(&mut request, "127.0.0.1:1".parse().unwrap()),
            Err(BadHead::TooManyHeaders)
        );
    }
}
