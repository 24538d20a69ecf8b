//! Errors of the `herald` command and the exit codes they map to, in one place.
//!
//! Scripts rely on these codes, so they are part of the interface: add new ones, never renumber.

use std::process::ExitCode;

/// Exit codes, as printed by `herald help`.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  error not covered below (the message says what happened)
  2  bad usage: unknown option, missing or malformed argument
  3  broker or peer unreachable
  4  not found: topic, group or partition does not exist
  5  not every event was acknowledged (the summary says how many and why)
  6  refused by the broker or peer (invalid request, policy, limit)
  7  timed out waiting for a deadline";

/// An error the command reports as one line on stderr before exiting with its code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotAcknowledged(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    TimedOut(String),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl From<herald_bench::BenchError> for CliError {
    fn from(error: herald_bench::BenchError) -> Self {
        match error {
            herald_bench::BenchError::Usage(message) => CliError::Usage(message),
            other => CliError::Other(other.into()),
        }
    }
}

impl CliError {
    /// The process exit code for this error (see [`HELP`]).
    pub fn code(&self) -> u8 {
        match self {
            CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
            CliError::NotFound(_) => 4,
            CliError::NotAcknowledged(_) => 5,
            CliError::Refused(_) => 6,
            CliError::TimedOut(_) => 7,
        }
    }

    /// Prints the one-line message and returns the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("error: {self}");
        ExitCode::from(self.code())
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::Other(error.into())
    }
}
