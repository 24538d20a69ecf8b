//! What every long-running command sets up around its work, once for all of them: the tracing
//! subscriber on stderr, the SIGTERM/SIGINT handlers that stop it cleanly, and for the broker
//! the open-file limit raised to what the system allows.

use std::io::IsTerminal as _;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::CliError;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event, for log collectors.
    Json,
}

/// A log filter from its `RUST_LOG`-style text, refused with a usage error when malformed.
pub fn log_filter(text: &str) -> Result<EnvFilter, CliError> {
    EnvFilter::try_new(text)
        .map_err(|error| CliError::Usage(format!("bad log filter `{text}`: {error}")))
}

/// Installs the process's tracing subscriber: `filter`, `format`, on stderr, in colour only on a
/// terminal. Fails if one is installed already.
pub fn init_logging(filter: EnvFilter, format: LogFormat) -> Result<(), CliError> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|error| CliError::Other(anyhow::anyhow!("installing the logger: {error}")))
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that resolves on the
/// first of them, naming it. Call it before starting what the signal stops: a signal that
/// arrives before the handlers are installed kills the process at once (the default action),
/// skipping the clean stop.
pub fn stop_signal() -> Result<impl Future<Output = &'static str>, std::io::Error> {
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

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard one and logs both: a broker
/// holding thousands of partitions and connections needs descriptors, and the soft limit is
/// only a default any process may lift up to the hard one.
pub fn raise_open_files_limit() {
    match herald_broker::limits::raise_open_files_limit() {
        Ok(((soft_before, hard), (soft, _))) if soft_before != soft => {
            tracing::info!(soft, hard, soft_before, "raised the open-file limit");
        }
        Ok((_, (soft, hard))) => tracing::info!(soft, hard, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}
