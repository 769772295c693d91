//! Opening a connection to an upstream for an app's pool (`upstream_pool`):
//! the name looked up, the addresses put through the app's internal-address
//! rule (`egress`), TCP connected within the timeout, and TLS with the
//! public roots and the app's own CA for `https`, offering HTTP/2.
//!
//! The addresses are checked here, after the lookup and on the addresses
//! actually connected to, because a check of the name alone is beaten by
//! a name that resolves inside.

use crate::config::outbound::{Host, Scheme};
use crate::grants::egress::Egress;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

/// Makes an app's upstream connections.
pub struct Connector {
    pub egress: Arc<Egress>,
    pub tls: tokio_rustls::TlsConnector,
    /// For the lookup, the TCP connect and the TLS handshake, each.
    pub timeout: Duration,
}

/// Why no connection was made; `outbound` turns it into the guest's error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0} is an internal address that no grant names")]
    Internal(IpAddr),
    #[error("cannot look up {name}: {error}")]
    Lookup { name: String, error: io::Error },
    #[error("{0} has no address")]
    NoAddress(String),
    #[error("timed out")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("TLS: {0}")]
    Tls(io::Error),
}

impl Connector {
    /// A connection to `host` on `port`, TLS for `https`.
    pub async fn connect(
        &self,
        scheme: Scheme,
        host: Host<'_>,
        port: u16,
    ) -> Result<Upstream, ConnectError> {
        let addresses = match host {
            Host::Address(ip) => vec![ip],
            Host::Name(name) => self.look_up(name, port).await?,
        };
        let addresses = self
            .egress
            .admit(scheme, host, port, &addresses)
            .map_err(ConnectError::Internal)?;
        let tcp = self.connect_tcp(&addresses, port).await?;
        let _ = tcp.set_nodelay(true);
        if scheme == Scheme::Http {
            return Ok(Upstream {
                io: TokioIo::new(Either::Left(tcp)),
                h2: false,
            });
        }
        let name = match host {
            Host::Address(ip) => ServerName::IpAddress(ip.into()),
            Host::Name(name) => ServerName::try_from(name.to_string())
                .map_err(|e| ConnectError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e)))?,
        };
        let tls = tokio::time::timeout(self.timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Tls)?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Upstream {
            io: TokioIo::new(Either::Right(tls)),
            h2,
        })
    }

    async fn look_up(&self, name: &str, port: u16) -> Result<Vec<IpAddr>, ConnectError> {
        let found = tokio::time::timeout(self.timeout, tokio::net::lookup_host((name, port)))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(|error| ConnectError::Lookup {
                name: name.to_string(),
                error,
            })?;
        let mut addresses: Vec<IpAddr> = Vec::new();
        for ip in found.map(|addr| addr.ip().to_canonical()) {
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
        match addresses.is_empty() {
            true => Err(ConnectError::NoAddress(name.to_string())),
            false => Ok(addresses),
        }
    }

    /// The first of `addresses` that accepts, in the order the lookup gave.
    async fn connect_tcp(
        &self,
        addresses: &[IpAddr],
        port: u16,
    ) -> Result<TcpStream, ConnectError> {
        let attempt = async {
            let mut last = None;
            for &ip in addresses {
                match TcpStream::connect(SocketAddr::new(ip, port)).await {
                    Ok(stream) => return Ok(stream),
                    Err(error) => last = Some(error),
                }
            }
            Err(ConnectError::Connect(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to connect to")
            })))
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| ConnectError::Timeout)?
    }
}

/// A connection to an upstream, plain or TLS.
pub struct Upstream {
    pub io: TokioIo<Either<TcpStream, TlsStream<TcpStream>>>,
    /// TLS agreed on HTTP/2: one connection carries every request.
    pub h2: bool,
}
