//! What an app may reach outside: the entries of `allowed_outbound_hosts`
//! (and `--allow-outbound`), written in Spin's syntax, and the private CA
//! its HTTPS upstreams may be signed by. Plain data; `outbound` and
//! `sockets` apply it.
//!
//! An entry is `SCHEME://HOST[:PORT]`:
//! - SCHEME: `http`, `https`, `tcp` (a wasi:sockets connection) or `*`;
//! - HOST: a name (`api.example.com`), every name under a domain
//!   (`*.example.org`, not `example.org` itself), any host (`*`), an
//!   address (`10.0.0.5`, `[::1]`) or a network (`10.0.0.0/8`);
//! - PORT: a number, a range (`8000-8999`) or `*`; without one, the
//!   scheme's (80, 443); `tcp` and `*` must name theirs.

use ipnet::IpNet;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// How a guest reaches an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
    /// A wasi:sockets TCP connection.
    Tcp,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tcp => "tcp",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Http => Some(80),
            Scheme::Https => Some(443),
            Scheme::Tcp => None,
        }
    }
}

/// Where a guest asks to go: a name it gave, or an address.
#[derive(Debug, Clone, Copy)]
pub enum Host<'a> {
    Name(&'a str),
    Address(IpAddr),
}

impl<'a> Host<'a> {
    /// `text` as a URL or a lookup names it: brackets around an IPv6
    /// address are allowed, a name is compared without case.
    pub fn parse(text: &'a str) -> Host<'a> {
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Address(ip.to_canonical()),
            Err(_) => Host::Name(text.strip_suffix('.').unwrap_or(text)),
        }
    }
}

/// One entry of `allowed_outbound_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundGrant {
    /// `None` for `*`: every scheme.
    pub scheme: Option<Scheme>,
    pub host: HostRule,
    pub ports: PortRule,
    /// As written, for `check` and the log.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// Exactly this name, in lower case.
    Name(String),
    /// Every name ending in `.` and this, in lower case.
    Under(String),
    /// An address or a network, which also grants reaching it when it is
    /// internal (see `outbound`).
    Network(IpNet),
    /// Any host.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRule {
    /// From the first to the last, both included.
    Range(u16, u16),
    Any,
}

impl OutboundGrant {
    /// Parses one entry; the error says what a good one looks like.
    pub fn parse(text: &str) -> Result<OutboundGrant, String> {
        let example = "write e.g. \"https://api.example.com\", \"http://127.0.0.1:9000\" or \"tcp://db.internal:5432\"";
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` is not SCHEME://HOST[:PORT]; {example}"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            "tcp" => Some(Scheme::Tcp),
            "*" => None,
            other => {
                return Err(format!(
                    "`{text}`: unknown scheme `{other}`; use http, https, tcp (for a database or any TCP service) or *"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['?', '#', '@']) || rest.matches('/').count() > 1 {
            return Err(format!(
                "`{text}` names more than a host and a port; a grant is SCHEME://HOST[:PORT], without a path"
            ));
        }
        let (host, port) = split_port(rest);
        let host = host_rule(host)
            .ok_or_else(|| format!("`{text}`: `{host}` is not a host; {example}"))?;
        let ports = match port {
            Some(port) => port_rule(port).ok_or_else(|| {
                format!("`{text}`: `{port}` is not a port; write a number, a range such as 8000-8999, or *")
            })?,
            None => match scheme.and_then(Scheme::default_port) {
                Some(port) => PortRule::Range(port, port),
                None => {
                    return Err(format!(
                        "`{text}` needs a port: {} has no default one; write e.g. \"tcp://db.internal:5432\"",
                        scheme.map_or("*", Scheme::name)
                    ));
                }
            },
        };
        Ok(OutboundGrant {
            scheme,
            host,
            ports,
            text: text.to_string(),
        })
    }

    /// Whether this entry lets a guest reach `host` on `port` by `scheme`.
    pub fn allows(&self, scheme: Scheme, host: Host, port: u16) -> bool {
        self.scheme.is_none_or(|s| s == scheme)
            && self.ports.contains(port)
            && match (&self.host, host) {
                (HostRule::Any, _) => true,
                (HostRule::Name(name), Host::Name(asked)) => name.eq_ignore_ascii_case(asked),
                (HostRule::Under(domain), Host::Name(asked)) => {
                    asked.len() > domain.len() + 1
                        && asked.as_bytes()[asked.len() - domain.len() - 1] == b'.'
                        && asked[asked.len() - domain.len()..].eq_ignore_ascii_case(domain)
                }
                (HostRule::Network(net), Host::Address(ip)) => net.contains(&ip),
                _ => false,
            }
    }

    /// Whether this entry names `ip` itself (as an address or a network
    /// holding it), which is what reaching an internal address takes.
    pub fn names_address(&self, scheme: Scheme, ip: IpAddr, port: u16) -> bool {
        matches!(self.host, HostRule::Network(_)) && self.allows(scheme, Host::Address(ip), port)
    }

    /// Whether a name lookup of `name` may be needed by this entry: it lets
    /// the guest connect by TCP to a host of that name.
    pub fn allows_lookup(&self, name: &str) -> bool {
        self.scheme.is_none_or(|s| s == Scheme::Tcp)
            && match &self.host {
                HostRule::Network(_) => false,
                _ => self.allows(Scheme::Tcp, Host::Name(name), self.ports.first()),
            }
    }

    /// An entry for any host, which deserves a warning.
    pub fn is_wide(&self) -> bool {
        match &self.host {
            HostRule::Any => true,
            HostRule::Network(net) => net.prefix_len() == 0,
            _ => false,
        }
    }
}

impl PortRule {
    fn contains(self, port: u16) -> bool {
        match self {
            PortRule::Range(first, last) => (first..=last).contains(&port),
            PortRule::Any => true,
        }
    }

    fn first(self) -> u16 {
        match self {
            PortRule::Range(first, _) => first,
            PortRule::Any => 0,
        }
    }
}

/// `host[:port]`, where an IPv6 host is in brackets.
fn split_port(text: &str) -> (&str, Option<&str>) {
    if text.starts_with('[') {
        return match text.find(']') {
            Some(end) => match text[end + 1..].strip_prefix(':') {
                Some(port) => (&text[..=end], Some(port)),
                None => (text, None),
            },
            None => (text, None),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    }
}

fn host_rule(host: &str) -> Option<HostRule> {
    if host == "*" {
        return Some(HostRule::Any);
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(HostRule::Network(IpNet::from(ip.to_canonical())));
    }
    if let Ok(net) = bare.parse::<IpNet>() {
        return Some(HostRule::Network(net.trunc()));
    }
    let (rule, name): (fn(String) -> HostRule, &str) = match host.strip_prefix("*.") {
        Some(domain) => (HostRule::Under, domain),
        None => (HostRule::Name, host),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| rule(name.to_ascii_lowercase()))
}

fn port_rule(text: &str) -> Option<PortRule> {
    if text == "*" {
        return Some(PortRule::Any);
    }
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let (first, last): (u16, u16) = (first.parse().ok()?, last.parse().ok()?);
    (first >= 1 && first <= last).then_some(PortRule::Range(first, last))
}

impl fmt::Display for OutboundGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Certificates an app's HTTPS upstreams may be signed by besides the
/// public roots: `outbound_ca`, read and parsed with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundCa {
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
}

impl OutboundCa {
    /// Reads the PEM file at `path`; the error names it and what is wrong.
    pub fn read(path: PathBuf) -> Result<OutboundCa, String> {
        let shown = path.display();
        let text = std::fs::read(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let certs = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{shown} is not a PEM file of certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "{shown} holds no certificate; give the PEM of the CA that signs the upstream's"
            ));
        }
        let (_, unusable) = rustls::RootCertStore::empty().add_parsable_certificates(certs.clone());
        if unusable > 0 {
            return Err(format!(
                "{unusable} certificate(s) in {shown} cannot be parsed as a CA; give the PEM of the CA itself"
            ));
        }
        Ok(OutboundCa { path, certs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(text: &str) -> OutboundGrant {
        OutboundGrant::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn name(text: &str) -> Host<'_> {
        Host::parse(text)
    }

    #[test]
    fn a_host_without_a_port_means_the_schemes_port() {
        let https = grant("https://api.example.com");
        assert!(https.allows(Scheme::Https, name("api.example.com"), 443));
        assert!(https.allows(Scheme::Https, name("API.Example.com."), 443));
        assert!(!https.allows(Scheme::Https, name("api.example.com"), 8443));
        assert!(!https.allows(Scheme::Http, name("api.example.com"), 443));
        assert!(!https.allows(Scheme::Https, name("example.com"), 443));
        let http = grant("http://127.0.0.1:9000/");
        assert!(http.allows(Scheme::Http, name("127.0.0.1"), 9000));
        assert!(!http.allows(Scheme::Http, name("127.0.0.1"), 80));
        assert!(!http.allows(Scheme::Http, name("localhost"), 9000));
    }

    #[test]
    fn wildcards_cover_subdomains_ports_and_schemes() {
        let under = grant("https://*.example.org");
        assert!(under.allows(Scheme::Https, name("a.example.org"), 443));
        assert!(under.allows(Scheme::Https, name("a.b.example.org"), 443));
        assert!(!under.allows(Scheme::Https, name("example.org"), 443));
        assert!(!under.allows(Scheme::Https, name("badexample.org"), 443));
        let wide = grant("*://*:*");
        assert!(wide.is_wide());
        assert!(wide.allows(Scheme::Tcp, name("10.0.0.1"), 5432));
        let range = grant("http://localhost:8000-8999");
        assert!(range.allows(Scheme::Http, name("localhost"), 8500));
        assert!(!range.allows(Scheme::Http, name("localhost"), 9000));
    }

    #[test]
    fn addresses_and_networks_are_named_literally() {
        let net = grant("tcp://10.0.0.0/8:5432");
        assert!(net.names_address(Scheme::Tcp, "10.1.2.3".parse().unwrap(), 5432));
        assert!(!net.names_address(Scheme::Tcp, "11.1.2.3".parse().unwrap(), 5432));
        let v6 = grant("http://[::1]:8080");
        assert!(v6.allows(Scheme::Http, name("[::1]"), 8080));
        assert!(v6.names_address(Scheme::Http, "::1".parse().unwrap(), 8080));
        // A name is never an address grant, even of what it resolves to.
        let local = grant("http://localhost:8080");
        assert!(!local.names_address(Scheme::Http, "127.0.0.1".parse().unwrap(), 8080));
    }

    #[test]
    fn lookups_follow_tcp_grants_of_names() {
        assert!(grant("tcp://db.internal:5432").allows_lookup("db.internal"));
        assert!(grant("tcp://*.db.internal:5432").allows_lookup("a.db.internal"));
        assert!(!grant("tcp://db.internal:5432").allows_lookup("other.internal"));
        assert!(!grant("https://db.internal").allows_lookup("db.internal"));
        assert!(!grant("tcp://10.0.0.1:5432").allows_lookup("db.internal"));
    }

    #[test]
    fn bad_entries_say_what_to_write() {
        for text in [
            "api.example.com",
            "ftp://example.com",
            "tcp://db.internal",
            "*://example.com",
            "https://example.com/path",
            "https://user@example.com",
            "http://example.com:http",
            "http://example.com:0",
            "http://exa mple.com",
            "http://:80",
            "http://10.0.0.0/33:80",
        ] {
            assert!(OutboundGrant::parse(text).is_err(), "{text}");
        }
    }
}
