//! The signals that stop a command (Ctrl-C's SIGINT, and SIGTERM from service managers and
//! CI runners), listened for from the moment a command starts.
//!
//! Tokio installs a signal's handler when the listener is created, and its `ctrl_c()` only
//! when that future is first polled. A command that polls late (`apns-sim test` polls once
//! COMMAND is running, `serve` once its banner is printed) would leave a window in which
//! the signal's default still holds: the process dies at once, nothing is cleaned up, and
//! COMMAND, which holds the same standard output, lives on. So the listeners are made here,
//! before any work, and only waited on later.

use std::future::Future;

use anyhow::{Context, Result};

/// Installs the handlers for SIGINT and SIGTERM now, and returns a future that resolves
/// when either arrives. An error means a handler could not be installed, and the command
/// stops with it before doing anything.
pub(super) fn stop_requested() -> Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("listening for Ctrl-C (SIGINT)")?;
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    // Elsewhere only Ctrl-C is listened for, and tokio's `ctrl_c()` installs its handler
    // when first polled, so the window this module closes on unix stays open there.
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        Ok(async move {
            if ctrl_c.await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}
