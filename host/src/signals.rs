//! SIGINT and SIGTERM: the first starts a graceful shutdown, the second cuts
//! it short.

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// Futures for the first and the second shutdown signal.
pub struct ShutdownSignals {
    pub first: oneshot::Receiver<()>,
    pub second: oneshot::Receiver<()>,
}

/// Installs the handlers (from here on SIGINT and SIGTERM no longer kill the
/// process) and watches for them on a task that ends with the runtime.
pub fn install() -> Result<ShutdownSignals> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (first_tx, first) = oneshot::channel();
    let (second_tx, second) = oneshot::channel();
    tokio::spawn(async move {
        for tx in [first_tx, second_tx] {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            let _ = tx.send(());
        }
    });
    Ok(ShutdownSignals { first, second })
}
