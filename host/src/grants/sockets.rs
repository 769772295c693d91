//! wasi:sockets for guests: TCP connections to what the app's `tcp://`
//! grants name (a database, a cache), and name lookups of those names
//! only. No UDP, no listening, no binding but the implicit one of a
//! connect. Without a TCP grant a guest has no sockets at all.
//!
//! wasmtime-wasi checks each address a socket uses, but it has no check
//! for the names a guest looks up; `app::shadow_name_lookup` puts
//! [`Sockets::may_look_up`] in front of its `resolve-addresses`. A connect then sees only an address, so the
//! names this instance looked up (and a grant allowed) are kept, and a
//! connect to an address is allowed when one of them resolves to it.

use crate::config::outbound::{Host, Scheme};
use crate::grants::egress::{Egress, is_internal};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

/// Names one instance keeps for its connects; a guest that looks up more
/// is refused the connects to the ones past this many.
const NAMES_KEPT: usize = 32;

/// The interface whose lookup is shadowed, at the version wasmtime-wasi
/// defines it; a guest importing an older 0.2 one is linked to it too.
pub const NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// The sockets of one instance.
pub struct Sockets {
    egress: Arc<Egress>,
    /// Names this instance looked up that a grant allowed.
    looked_up: Arc<Mutex<Vec<String>>>,
}

impl Sockets {
    /// Sets up `wasi` so that each connect and lookup asks `egress`. An
    /// app without a TCP grant gets no sockets at all: each one a guest
    /// creates is a descriptor of this process, and a guest creating them
    /// in a loop would run the process out of them for every app.
    pub fn new(egress: &Arc<Egress>, wasi: &mut WasiCtxBuilder) -> Self {
        let looked_up: Arc<Mutex<Vec<String>>> = Arc::default();
        let names = looked_up.clone();
        let check = egress.clone();
        if egress.grants_tcp() {
            wasi.allow_tcp(true)
                .allow_ip_name_lookup(true)
                .socket_addr_check(move |addr, use_| {
                    let egress = check.clone();
                    let names = names.lock().clone();
                    Box::pin(async move {
                        match use_ {
                            // The implicit bind of a connect.
                            SocketAddrUse::TcpBind => {
                                addr.ip().is_unspecified() && addr.port() == 0
                            }
                            SocketAddrUse::TcpConnect => may_connect(&egress, addr, names).await,
                            _ => false,
                        }
                    })
                });
        }
        Self {
            egress: egress.clone(),
            looked_up,
        }
    }

    /// Whether the guest may look up `name`; an allowed name is kept.
    pub fn may_look_up(&self, name: &str) -> bool {
        if let Host::Address(_) = Host::parse(name) {
            // Answered without a query.
            return true;
        }
        if !self.egress.allows_lookup(name) {
            return false;
        }
        let mut kept = self.looked_up.lock();
        if !kept.iter().any(|n| n.eq_ignore_ascii_case(name)) && kept.len() < NAMES_KEPT {
            kept.push(name.to_string());
        }
        true
    }
}

/// Whether a guest may connect to `addr`: an address a grant names, a
/// public one a grant of any host covers, or a public one that a granted
/// name it looked up resolves to.
async fn may_connect(egress: &Egress, addr: SocketAddr, names: Vec<String>) -> bool {
    let (ip, port) = (addr.ip().to_canonical(), addr.port());
    if egress.names(Scheme::Tcp, ip, port) {
        return true;
    }
    let address = Host::Address(ip);
    if !is_internal(ip) && egress.permits(Scheme::Tcp, address, port) {
        return true;
    }
    for name in &names {
        if !egress.permits(Scheme::Tcp, Host::Name(name), port) {
            continue;
        }
        // Cached by the system's resolver: the guest just asked for it.
        let Ok(found) = tokio::net::lookup_host((name.as_str(), port)).await else {
            continue;
        };
        if found
            .map(|a| a.ip().to_canonical())
            .any(|found| found == ip)
        {
            if is_internal(ip) {
                egress.refuse_internal(Scheme::Tcp, Host::Name(name), ip, port);
                return false;
            }
            return true;
        }
    }
    // Logs the refusal with the entry that would allow it.
    egress.allows(Scheme::Tcp, address, port)
}
