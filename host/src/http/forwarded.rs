//! Who the client is, as far as the guest is told. wasi:http gives a guest no
//! peer address, so it reads the client from `X-Real-IP` and
//! `X-Forwarded-For`, and the public scheme and host from
//! `X-Forwarded-Proto` and `X-Forwarded-Host`. Those headers are only
//! believed from a trusted proxy (`--trusted-proxy`, none by default); from
//! anyone else they are overwritten with what the socket says, so a client
//! cannot claim another address.
//!
//! From a trusted proxy the client is found the way nginx's realip module
//! does with `real_ip_recursive on`: walk `X-Forwarded-For` from the right,
//! skipping trusted addresses; the first untrusted one is the client.
//! Entries left of it were written by the client and are dropped.

use crate::guest::Client;
use http::HeaderMap;
use http::header::{FORWARDED, HOST, HeaderName, HeaderValue};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id kept from a proxy; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// The networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An IPv4 address as it appears from a dual-stack socket (`::ffff:a.b.c.d`)
/// is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What one connection's requests are told about their client.
#[derive(Debug, Clone)]
pub struct Forwarding {
    peer: IpAddr,
    /// `peer`, formatted once per connection.
    peer_value: HeaderValue,
    /// The peer is a trusted proxy.
    trusted: Option<Arc<TrustedProxies>>,
    /// The connection is TLS.
    https: bool,
}

impl Forwarding {
    pub fn new(peer: SocketAddr, trusted: &Arc<TrustedProxies>, https: bool) -> Self {
        let peer = canonical(peer.ip());
        Self {
            peer,
            peer_value: header_value(peer),
            trusted: trusted.contains(peer).then(|| trusted.clone()),
            https,
        }
    }

    /// Rewrites the forwarding headers of a request on this connection and
    /// says who its client is.
    pub fn apply(&self, headers: &mut HeaderMap) -> Client {
        match &self.trusted {
            Some(trusted) => self.told_by_proxy(trusted, headers),
            None => self.told_by_socket(headers),
        }
    }

    /// The peer is the client: what it claims is replaced.
    fn told_by_socket(&self, headers: &mut HeaderMap) -> Client {
        headers.insert(X_REAL_IP, self.peer_value.clone());
        headers.insert(X_FORWARDED_FOR, self.peer_value.clone());
        headers.insert(X_FORWARDED_PROTO, proto(self.https));
        match headers.get(HOST).cloned() {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
        // RFC 7239's header says the same things and is no more believable.
        headers.remove(FORWARDED);
        headers.insert(X_REQUEST_ID, new_request_id());
        Client {
            ip: self.peer,
            https: self.https,
        }
    }

    /// The peer is a trusted proxy: believe it, as far as it is trusted.
    fn told_by_proxy(&self, trusted: &TrustedProxies, headers: &mut HeaderMap) -> Client {
        // nginx's `$request_id`, say: one id for the request across both
        // servers' logs. A missing, repeated or odd one is replaced.
        let mut ids = headers.get_all(X_REQUEST_ID).iter();
        let kept = match (ids.next(), ids.next()) {
            (Some(id), None) => usable_request_id(id).then(|| id.clone()),
            _ => None,
        };
        headers.insert(X_REQUEST_ID, kept.unwrap_or_else(new_request_id));
        let chain = forwarded_for(headers);
        // The client is the last address not one of ours; if every address
        // is ours, the first.
        let client_at = chain
            .iter()
            .rposition(|ip| !trusted.contains(*ip))
            .or(if chain.is_empty() { None } else { Some(0) });
        let ip = match client_at {
            Some(at) => chain[at],
            None => headers
                .get(X_REAL_IP)
                .and_then(|value| value.to_str().ok()?.trim().parse().ok())
                .map(canonical)
                .unwrap_or(self.peer),
        };
        let value = match client_at {
            Some(at) => {
                let kept: Vec<String> = chain[at..].iter().map(IpAddr::to_string).collect();
                HeaderValue::from_str(&kept.join(", ")).expect("addresses are valid header text")
            }
            None => header_value(ip),
        };
        headers.insert(X_FORWARDED_FOR, value);
        headers.insert(X_REAL_IP, header_value(ip));

        let https = match first_value(headers, &X_FORWARDED_PROTO).map(str::to_ascii_lowercase) {
            Some(proto) if proto == "https" => true,
            Some(proto) if proto == "http" => false,
            _ => self.https,
        };
        headers.insert(X_FORWARDED_PROTO, proto(https));
        let host = first_value(headers, &X_FORWARDED_HOST)
            .filter(|host| host.parse::<http::uri::Authority>().is_ok())
            .and_then(|host| HeaderValue::from_str(host).ok())
            .or_else(|| headers.get(HOST).cloned());
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
        Client { ip, https }
    }
}

/// Every address in the request's `X-Forwarded-For` headers, in order;
/// entries that are not addresses (`unknown`, obfuscated names) are skipped.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| parse_entry(entry.trim()))
        .map(canonical)
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

/// The first comma-separated value of a header, trimmed.
fn first_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

fn proto(https: bool) -> HeaderValue {
    HeaderValue::from_static(if https { "https" } else { "http" })
}

fn header_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an address is valid header text")
}

/// A request id made here: 128 random bits in hex, as nginx's `$request_id`.
fn new_request_id() -> HeaderValue {
    HeaderValue::from_str(&format!("{:032x}", fastrand::u128(..)))
        .expect("hex digits are valid header text")
}

/// Whether a proxy's request id can be passed on and logged as it is:
/// visible ASCII but the quote and the backslash, which would end or
/// escape the access log's quoted fields.
fn usable_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID
        && bytes
            .iter()
            .all(|&byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_network;

    fn forwarding(peer: &str, trusted: &[&str]) -> Forwarding {
        let trusted = TrustedProxies::new(
            trusted
                .iter()
                .map(|net| parse_network(net).unwrap())
                .collect(),
        );
        Forwarding::new(
            SocketAddr::new(peer.parse().unwrap(), 40000),
            &Arc::new(trusted),
            false,
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn get<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
        map.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address_scheme_or_host() {
        let forwarding = forwarding("203.0.113.7", &["127.0.0.1"]);
        let mut map = headers(&[
            ("host", "example.com"),
            ("x-real-ip", "1.1.1.1"),
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=1.1.1.1"),
        ]);
        let client = forwarding.apply(&mut map);
        assert_eq!(client.ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert!(!client.https);
        assert_eq!(get(&map, "x-real-ip"), Some("203.0.113.7"));
        assert_eq!(get(&map, "x-forwarded-for"), Some("203.0.113.7"));
        assert_eq!(get(&map, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&map, "x-forwarded-host"), Some("example.com"));
        assert_eq!(get(&map, "forwarded"), None);
    }

    #[test]
    fn a_trusted_proxy_is_believed_up_to_the_first_untrusted_address() {
        let forwarding = forwarding("10.0.0.2", &["10.0.0.0/8"]);
        // The client claimed 1.1.1.1; the edge proxy (10.0.0.9) appended the
        // address it saw, 198.51.100.4.
        let mut map = headers(&[
            ("host", "app.internal"),
            ("x-forwarded-for", "1.1.1.1, 198.51.100.4"),
            ("x-forwarded-for", "10.0.0.9"),
            ("x-forwarded-proto", "HTTPS"),
            ("x-forwarded-host", "example.com:8443"),
        ]);
        let client = forwarding.apply(&mut map);
        assert_eq!(client.ip, "198.51.100.4".parse::<IpAddr>().unwrap());
        assert!(client.https);
        assert_eq!(get(&map, "x-real-ip"), Some("198.51.100.4"));
        assert_eq!(get(&map, "x-forwarded-for"), Some("198.51.100.4, 10.0.0.9"));
        assert_eq!(get(&map, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&map, "x-forwarded-host"), Some("example.com:8443"));
    }

    #[test]
    fn a_trusted_proxy_without_forwarded_for_is_asked_for_x_real_ip_then_the_socket() {
        let forwarding = forwarding("127.0.0.1", &["127.0.0.0/8"]);
        let mut map = headers(&[("x-real-ip", "192.0.2.1"), ("host", "h")]);
        assert_eq!(
            forwarding.apply(&mut map).ip,
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(get(&map, "x-forwarded-for"), Some("192.0.2.1"));

        let mut map = headers(&[("x-forwarded-for", "garbage"), ("host", "h")]);
        assert_eq!(
            forwarding.apply(&mut map).ip,
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(get(&map, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&map, "x-forwarded-host"), Some("h"));
    }

    #[test]
    fn when_every_hop_is_trusted_the_first_is_the_client() {
        let forwarding = forwarding("10.0.0.2", &["10.0.0.0/8"]);
        let mut map = headers(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(
            forwarding.apply(&mut map).ip,
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(get(&map, "x-forwarded-for"), Some("10.1.1.1, 10.2.2.2"));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        let forwarding = forwarding("::ffff:127.0.0.1", &["127.0.0.1"]);
        let mut map = headers(&[("x-forwarded-for", "192.0.2.9")]);
        assert_eq!(
            forwarding.apply(&mut map).ip,
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
    }
}
