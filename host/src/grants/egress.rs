//! What one app's guests may reach, applied at run time: its
//! `allowed_outbound_hosts` checked for every outbound request, TCP
//! connection and name lookup, the rule for internal addresses, and the
//! log of what was refused, once per destination. `outbound` (HTTP) and
//! `sockets` (TCP) both ask here.
//!
//! The internal-address rule: a destination may be granted by name, but
//! what the name resolves to is only reached if it is a public address,
//! or if a grant names that address (or a network holding it) itself. A
//! granted `api.example.com` that resolves to 10.0.0.5, or a `*` that
//! matches `169.254.169.254`, is how a guest would reach what sits behind
//! the firewall (SSRF), not what the operator granted.

use crate::config::outbound::{Host, OutboundGrant, Scheme};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::time::{Duration, Instant};

/// Destinations whose refusal is remembered, so each is logged once;
/// past this many an app's refusals are logged at the rate of `log_rate`.
const REMEMBERED: usize = 1024;

pub struct Egress {
    /// The app's route, which starts its log lines.
    route: String,
    grants: Vec<OutboundGrant>,
    /// Destinations already logged as refused.
    told: Mutex<HashSet<String>>,
}

impl Egress {
    pub fn new(route: &str, grants: &[OutboundGrant]) -> Self {
        Self {
            route: route.to_string(),
            grants: grants.to_vec(),
            told: Mutex::new(HashSet::new()),
        }
    }

    /// Whether any grant is for TCP.
    pub fn grants_tcp(&self) -> bool {
        self.grants
            .iter()
            .any(|grant| grant.scheme.is_none_or(|s| s == Scheme::Tcp))
    }

    /// Whether a grant lets the guest ask for `host` on `port` by `scheme`;
    /// if none does, the refusal is logged with the entry that would.
    pub fn allows(&self, scheme: Scheme, host: Host, port: u16) -> bool {
        if self.permits(scheme, host, port) {
            return true;
        }
        let origin = origin(scheme, host, port);
        self.tell_once(&origin, || {
            format!(
                "outbound {} to {origin} denied; to allow it add \"{origin}\" to allowed_outbound_hosts",
                what(scheme)
            )
        });
        false
    }

    /// The first grant that lets the guest ask for `host` on `port`: what
    /// its requests are counted by, so that a guest granted a wildcard
    /// cannot make a series per name it makes up.
    pub fn granting(&self, scheme: Scheme, host: Host, port: u16) -> Option<&OutboundGrant> {
        self.grants.iter().find(|g| g.allows(scheme, host, port))
    }

    /// `allows`, without logging a refusal.
    pub fn permits(&self, scheme: Scheme, host: Host, port: u16) -> bool {
        self.grants.iter().any(|g| g.allows(scheme, host, port))
    }

    /// Of the addresses `host` resolved to, those the guest may connect
    /// to on `port`: internal ones only where a grant names them. `Err`
    /// holds the first one refused when none is left.
    pub fn admit(
        &self,
        scheme: Scheme,
        host: Host,
        port: u16,
        addresses: &[IpAddr],
    ) -> Result<Vec<IpAddr>, IpAddr> {
        let admitted: Vec<IpAddr> = addresses
            .iter()
            .copied()
            .filter(|&ip| !is_internal(ip) || self.names(scheme, ip, port))
            .collect();
        match (admitted.is_empty(), addresses.first()) {
            (true, Some(&refused)) => {
                self.refuse_internal(scheme, host, refused, port);
                Err(refused)
            }
            _ => Ok(admitted),
        }
    }

    /// Whether a grant names `ip` itself.
    pub fn names(&self, scheme: Scheme, ip: IpAddr, port: u16) -> bool {
        self.grants
            .iter()
            .any(|grant| grant.names_address(scheme, ip, port))
    }

    /// Whether the guest may look up `name` (wasi:sockets): only a name a
    /// TCP grant could need. Lookups are queries that leave the machine,
    /// so one for any other name is refused, and logged.
    pub fn allows_lookup(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        if self.grants.iter().any(|grant| grant.allows_lookup(name)) {
            return true;
        }
        self.tell_once(&format!("lookup {name}"), || {
            format!(
                "name lookup of {name} denied; to allow it add \"tcp://{name}:PORT\" \
                 (the port the guest connects to) to allowed_outbound_hosts"
            )
        });
        false
    }

    /// Logs that the internal `ip`, which `host` was or resolved to, was
    /// refused, with the entry that would allow it.
    pub fn refuse_internal(&self, scheme: Scheme, host: Host, ip: IpAddr, port: u16) {
        let asked = origin(scheme, host, port);
        let entry = origin(scheme, Host::Address(ip), port);
        let name = match host {
            Host::Name(name) => format!("{name} is {ip}, "),
            Host::Address(_) => format!("{ip} is "),
        };
        self.tell_once(&asked, || {
            format!(
                "outbound {} to {asked} refused: {name}an internal address, which only an entry \
                 naming it reaches; to allow it add \"{entry}\" to allowed_outbound_hosts",
                what(scheme)
            )
        });
    }

    fn tell_once(&self, destination: &str, line: impl FnOnce() -> String) {
        let first = {
            let mut told = self.told.lock();
            if told.len() < REMEMBERED {
                told.insert(destination.to_string())
            } else {
                !told.contains(destination)
            }
        };
        if first {
            crate::limited!(warn, "[{}] {}", self.route, line());
        }
    }
}

fn what(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Tcp => "connection",
        Scheme::Http | Scheme::Https => "request",
    }
}

/// `scheme://host[:port]`, the port left out where it is the scheme's own:
/// the form an `allowed_outbound_hosts` entry takes.
pub fn origin(scheme: Scheme, host: Host, port: u16) -> String {
    let host = match host {
        Host::Name(name) => name.to_ascii_lowercase(),
        Host::Address(IpAddr::V6(ip)) => format!("[{ip}]"),
        Host::Address(ip) => ip.to_string(),
    };
    match scheme.default_port() {
        Some(default) if default == port => format!("{}://{host}", scheme.name()),
        _ => format!("{}://{host}:{port}", scheme.name()),
    }
}

/// Addresses that lead inside: this machine, private and shared networks,
/// link-local ones (where cloud metadata services answer) and the
/// unspecified address (which connects to this machine).
pub fn is_internal(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let special = match ip {
        IpAddr::V4(ip) => is_internal_v4(ip),
        IpAddr::V6(ip) => is_internal_v6(ip),
    };
    special || is_own(ip)
}

/// IANA's special-purpose IPv4 blocks that are not globally reachable.
fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        // 0.0.0.0/8, "this network"
        || a == 0
        // 100.64.0.0/10, carrier-grade NAT
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24, IETF protocol assignments
        || (a, b, c) == (192, 0, 0)
        // 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24: documentation
        || (a, b, c) == (192, 0, 2)
        || (a, b, c) == (198, 51, 100)
        || (a, b, c) == (203, 0, 113)
        // 192.88.99.0/24, the retired 6to4 relays
        || (a, b, c) == (192, 88, 99)
        // 198.18.0.0/15, benchmarking
        || (a == 198 && (b & 0xfe) == 18)
        // 240.0.0.0/4, reserved
        || a >= 240
}

/// IANA's special-purpose IPv6 blocks that are not globally reachable.
fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // ::/96, the deprecated IPv4-compatible addresses (`[::127.0.0.1]`)
        || s[..6] == [0; 6]
        // 64:ff9b:1::/48, local-use NAT64
        || s[..3] == [0x64, 0xff9b, 1]
        // 100::/64, discard-only
        || s[..4] == [0x100, 0, 0, 0]
        // 2001::/23, IETF protocol assignments (Teredo, benchmarking, ORCHID)
        || (s[0] == 0x2001 && s[1] < 0x200)
        // 2001:db8::/32 and 3fff::/20, documentation
        || s[..2] == [0x2001, 0xdb8]
        || (s[0] & 0xfff0) == 0x3ff0
        // 5f00::/16, segment routing
        || s[0] == 0x5f00
        // fc00::/7, unique local
        || (s[0] & 0xfe00) == 0xfc00
        // fe80::/10, link-local; fec0::/10, the old site-local
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        // An IPv4 address carried in IPv6 (NAT64, 6to4) that is internal.
        || embedded_v4(ip).is_some_and(is_internal_v4)
}

/// Whether `ip` is one of this machine's own interface addresses: a
/// service bound to 0.0.0.0 (a database, a sidecar, the admin listener)
/// answers on each of them, public ones included. Read from the kernel
/// at most once every few seconds, so that an address added since counts.
fn is_own(ip: IpAddr) -> bool {
    const FRESH_FOR: Duration = Duration::from_secs(5);
    static OWN: Mutex<Option<(Instant, Vec<IpAddr>)>> = Mutex::new(None);
    let mut own = OWN.lock();
    let stale = own
        .as_ref()
        .is_none_or(|(read, _)| read.elapsed() > FRESH_FOR);
    if stale {
        *own = Some((Instant::now(), interface_addresses()));
    }
    own.as_ref()
        .is_some_and(|(_, addresses)| addresses.contains(&ip))
}

/// The addresses of this machine's interfaces (getifaddrs(3)); none if
/// the kernel will not say.
fn interface_addresses() -> Vec<IpAddr> {
    let mut first: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `first` with a list that freeifaddrs frees;
    // each entry's address is read as the family it names.
    unsafe {
        if libc::getifaddrs(&mut first) != 0 {
            return Vec::new();
        }
        let mut addresses = Vec::new();
        let mut entry = first;
        while !entry.is_null() {
            let addr = (*entry).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(addr as *const libc::sockaddr_in);
                        addresses.push(IpAddr::from(v4.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(addr as *const libc::sockaddr_in6);
                        addresses.push(IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            entry = (*entry).ifa_next;
        }
        libc::freeifaddrs(first);
        addresses
    }
}

/// The IPv4 address inside a NAT64 (64:ff9b::/96) or 6to4 (2002::/16) one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let octets = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(octets(hi, lo)),
        [0x2002, hi, lo, ..] => Some(octets(hi, lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_told_from_public_ones() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.254",
            "::127.0.0.1",
            "::a00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
        ] {
            assert!(is_internal(ip(internal)), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "198.20.0.1",
            "192.0.1.1",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
        ] {
            assert!(!is_internal(ip(public)), "{public}");
        }
    }

    #[test]
    fn the_machines_own_addresses_are_internal() {
        let own = interface_addresses();
        assert!(own.contains(&ip("127.0.0.1")), "{own:?}");
        for address in own {
            assert!(is_internal(address), "{address}");
        }
    }

    #[test]
    fn origins_are_written_as_entries() {
        let name = Host::Name("API.example.com");
        assert_eq!(origin(Scheme::Https, name, 443), "https://api.example.com");
        assert_eq!(
            origin(Scheme::Http, name, 8080),
            "http://api.example.com:8080"
        );
        let v6 = Host::Address(ip("::1"));
        assert_eq!(origin(Scheme::Tcp, v6, 6379), "tcp://[::1]:6379");
    }

    #[test]
    fn an_internal_address_needs_an_entry_naming_it() {
        let grants: Vec<OutboundGrant> = ["http://localhost:8080", "http://10.0.0.0/8:8080"]
            .iter()
            .map(|text| OutboundGrant::parse(text).unwrap())
            .collect();
        let egress = Egress::new("/", &grants);
        let local = Host::Name("localhost");
        assert_eq!(
            egress.admit(Scheme::Http, local, 8080, &[ip("127.0.0.1")]),
            Err(ip("127.0.0.1"))
        );
        assert_eq!(
            egress.admit(
                Scheme::Http,
                local,
                8080,
                &[ip("10.0.0.7"), ip("127.0.0.1")]
            ),
            Ok(vec![ip("10.0.0.7")])
        );
        assert_eq!(
            egress.admit(Scheme::Http, local, 8080, &[ip("93.184.216.34")]),
            Ok(vec![ip("93.184.216.34")])
        );
    }
}
