//! Waiting for SIGTERM or SIGINT, the signals that ask both services to shut down gracefully.

use std::future::Future;

/// Installs the SIGTERM and SIGINT handlers now (so a signal during start-up is not the default
/// "die at once") and returns a future that resolves with the name of the first to arrive.
pub fn stop_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}
