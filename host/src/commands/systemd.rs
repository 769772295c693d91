//! What systemd hands the process and what it is told back, through the
//! `sd-notify` crate (the protocol's environment variables and datagrams;
//! nothing is done when they are absent, so outside systemd this is inert).
//!
//! Socket activation: listening sockets passed in `LISTEN_FDS` are served
//! instead of binding. Each one takes the place of the configured listener
//! with its address (or whose address its `FileDescriptorName=` spells), TLS
//! included; one that matches none is served as plain HTTP. Because systemd
//! holds the socket, `systemctl restart` queues new connections in its
//! backlog while one process drains and the next starts, instead of refusing
//! them.
//!
//! Readiness (`Type=notify`): `READY=1` once the listeners accept and every
//! app is loaded, `STOPPING=1` when a drain starts, `RELOADING=1` and
//! `READY=1` around a SIGHUP reload.

use anyhow::{Context, Result, bail};
use sd_notify::NotifyState;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

/// A listening socket systemd passed, and the name it was given.
pub struct Inherited {
    pub listener: std::net::TcpListener,
    pub addr: SocketAddr,
    pub name: String,
}

/// The sockets passed to this process (none outside socket activation).
/// Taken once: the variables are for this process, not its children.
pub fn inherited_listeners() -> Result<Vec<Inherited>> {
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .context("LISTEN_FDS: the sockets passed by systemd cannot be read")?
        .collect();
    let mut inherited = Vec::with_capacity(fds.len());
    for (fd, name) in fds {
        // SAFETY: systemd passes each of these descriptors to this process
        // alone, open, once; it is owned here from now on.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(error) => bail!(
                "LISTEN_FDS: descriptor {fd} ({name}) is not a TCP socket ({error}); \
                 wasmhost takes ListenStream= sockets only"
            ),
        };
        listener
            .set_nonblocking(true)
            .with_context(|| format!("LISTEN_FDS: descriptor {fd} ({addr})"))?;
        inherited.push(Inherited {
            listener,
            addr,
            name,
        });
    }
    Ok(inherited)
}

/// Tells systemd the server is ready (with a status line).
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the server is draining.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Tells systemd a reload began; [`ready`] says it is done.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    // `Type=notify-reload` wants the time the reload began.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!("NOTIFY_SOCKET: cannot tell systemd the state: {error}");
    }
}
