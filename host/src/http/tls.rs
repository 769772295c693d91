//! TLS for the listeners that have it, with rustls (no OpenSSL): each
//! listener has one or more certificate chains with their keys, chosen by
//! the name the client asks for (SNI), the first when it asks for none or
//! for a name no certificate has. ALPN offers `h2` and `http/1.1`.
//!
//! The files are read again when they change, so a renewed certificate is
//! served to new connections without a restart; a renewal that does not
//! load (half written, key not matching) keeps the old one and says why.
//! Changes are found by looking at the files every `POLL_INTERVAL` rather
//! than with inotify: certbot and cert-manager renew by swapping symlinks,
//! which a watch on the file or its directory does not reliably see.

use crate::config::CertPair;
use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the certificate files are looked at for a renewal.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One certificate, loaded.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// DNS names (possibly `*.` wildcards) and addresses it is for.
    names: Vec<String>,
    not_after: SystemTime,
}

impl Loaded {
    fn serves(&self, name: &str) -> bool {
        self.names.iter().any(|pattern| name_matches(pattern, name))
    }
}

/// A listener's certificates, swapped whole when the files change.
#[derive(Debug)]
pub struct Certificates {
    pairs: Vec<CertPair>,
    current: ArcSwap<Vec<Loaded>>,
}

impl Certificates {
    /// Loads every pair; an error names the file and what to do.
    pub fn load(pairs: Vec<CertPair>) -> Result<Arc<Certificates>> {
        let loaded = load_all(&pairs, true)?;
        Ok(Arc::new(Certificates {
            pairs,
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    /// `a.test, b.test (expires 2027-02-01)`, for the log.
    pub fn describe(&self) -> String {
        self.current
            .load()
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The rustls configuration serving these certificates.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Looks at the files every `POLL_INTERVAL` for as long as the returned
    /// task runs, and loads them again when they change.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let certificates = self.clone();
        tokio::spawn(async move {
            let mut seen = stamps(&certificates.pairs);
            let mut ticks = tokio::time::interval(POLL_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let now = stamps(&certificates.pairs);
                if now == seen {
                    continue;
                }
                seen = now;
                let pairs = certificates.pairs.clone();
                let loaded = tokio::task::spawn_blocking(move || load_all(&pairs, false)).await;
                match loaded {
                    Ok(Ok(loaded)) => {
                        let text = loaded.iter().map(describe).collect::<Vec<_>>().join("; ");
                        certificates.current.store(Arc::new(loaded));
                        tracing::info!("loaded renewed TLS certificate: {text}");
                    }
                    Ok(Err(error)) => {
                        tracing::warn!("keeping the current TLS certificate: {error:#}")
                    }
                    Err(error) => tracing::error!("certificate loader failed: {error}"),
                }
            }
        })
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.current.load();
        let chosen = match hello.server_name() {
            Some(name) if loaded.len() > 1 => loaded.iter().find(|cert| cert.serves(name)),
            _ => None,
        };
        chosen.or(loaded.first()).map(|cert| cert.key.clone())
    }
}

fn describe(loaded: &Loaded) -> String {
    let names = if loaded.names.is_empty() {
        "no names".to_string()
    } else {
        loaded.names.join(", ")
    };
    format!("{names} (expires {})", date(loaded.not_after))
}

/// What identifies a version of the files: size, modification time and
/// inode of what the paths point to now.
fn stamps(pairs: &[CertPair]) -> Vec<Option<(u64, SystemTime, u64)>> {
    use std::os::unix::fs::MetadataExt;
    pairs
        .iter()
        .flat_map(|pair| [&pair.cert, &pair.key])
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.len(), meta.modified().ok()?, meta.ino()))
        })
        .collect()
}

fn load_all(pairs: &[CertPair], at_startup: bool) -> Result<Vec<Loaded>> {
    pairs.iter().map(|pair| load(pair, at_startup)).collect()
}

/// Loads one pair: the chain, the key, that they belong together, and the
/// names and expiry of the certificate (an expired one is served, with a
/// warning: refusing to start would take the site down over a late renewal).
fn load(pair: &CertPair, at_startup: bool) -> Result<Loaded> {
    let cert_path = &pair.cert;
    let key_path = &pair.key;
    let cert_text = read(cert_path, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            anyhow!(
                "{}: not a PEM certificate file ({error:?})",
                cert_path.display()
            )
        })?;
    if chain.is_empty() {
        bail!(
            "{}: no PEM certificate in it (-----BEGIN CERTIFICATE-----); give the certificate chain in PEM",
            cert_path.display()
        );
    }
    let key_text = read(key_path, "private key")?;
    if contains(&key_text, b"ENCRYPTED") {
        bail!(
            "{}: the private key is encrypted, and wasmhost cannot ask for its passphrase; \
             decrypt it (openssl pkey -in KEY -out KEY.plain) and keep that file private",
            key_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => anyhow!(
            "{}: no PEM private key in it (-----BEGIN PRIVATE KEY-----)",
            key_path.display()
        ),
        other => anyhow!("{}: not a PEM private key ({other:?})", key_path.display()),
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|error| {
        anyhow!(
            "{}: unsupported private key ({error}); use an RSA, ECDSA P-256/P-384 or Ed25519 key",
            key_path.display()
        )
    })?;
    let (names, not_before, not_after) = inspect(&chain[0]).with_context(|| {
        format!(
            "{}: the first certificate cannot be read",
            cert_path.display()
        )
    })?;
    let key = CertifiedKey::new(chain, signing);
    key.keys_match().map_err(|_| {
        anyhow!(
            "{} does not match the certificate in {}; give the key the certificate was issued for",
            key_path.display(),
            cert_path.display()
        )
    })?;
    let now = SystemTime::now();
    if not_after < now {
        tracing::warn!(
            "TLS certificate {} expired on {}; clients will refuse it until it is renewed",
            cert_path.display(),
            date(not_after)
        );
    } else if not_before > now {
        tracing::warn!(
            "TLS certificate {} is not valid before {}",
            cert_path.display(),
            date(not_before)
        );
    } else if at_startup && names.is_empty() {
        tracing::warn!("TLS certificate {} names no host", cert_path.display());
    }
    Ok(Loaded {
        key: Arc::new(key),
        names,
        not_after,
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|error| anyhow!("cannot read TLS {what} {}: {error}", path.display()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The certificate's subject alternative names (DNS names and addresses)
/// and its validity.
fn inspect(cert: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime, SystemTime)> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|error| anyhow!("{error}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    let validity = parsed.validity();
    let time = |t: x509_parser::time::ASN1Time| {
        let seconds = t.timestamp();
        if seconds >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    Ok((names, time(validity.not_before), time(validity.not_after)))
}

/// `2027-02-01`.
fn date(time: SystemTime) -> impl fmt::Display {
    let days = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let (year, month, day) = crate::http::access_log::civil_from_days(days as i64);
    format!("{year}-{month:02}-{day:02}")
}

/// A name a client asked for against a certificate's name: exact, or one
/// label under a `*.` wildcard. Both are compared without case.
fn name_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_or_one_label_under_a_wildcard() {
        assert!(name_matches("a.test", "a.test"));
        assert!(name_matches("a.test", "A.Test."));
        assert!(!name_matches("a.test", "b.test"));
        assert!(name_matches("*.example.com", "www.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
    }
}
