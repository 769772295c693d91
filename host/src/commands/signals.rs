//! SIGINT and SIGTERM: the first starts a graceful shutdown, the second cuts
//! it short. SIGUSR1: reopen the access log (log rotation).

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

/// On every SIGUSR1, calls `reopen` (on a task that ends with the runtime).
pub fn on_usr1(reopen: impl Fn() + Send + 'static) -> Result<()> {
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            reopen();
        }
    });
    Ok(())
}
