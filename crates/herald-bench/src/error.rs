//! The one error type of the measuring code: a bench either measured or says what stopped it.

/// Why a measurement could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A bad option: a rate, size or weight out of range.
    #[error("{0}")]
    Usage(String),
    /// Local I/O: sockets, files, child processes' pipes.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The Kafka client (librdkafka) refused or failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A child process (`herald serve`, `herald bench member`) did not start or answer.
    #[error("{0}")]
    Child(String),
    /// Brokerless delivery failed to start.
    #[error("direct: {0}")]
    Direct(String),
    /// A report could not be read or written as JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A histogram could not be created or merged.
    #[error("histogram: {0}")]
    Histogram(String),
}

impl BenchError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let context = context.into();
        move |source| BenchError::Io { context, source }
    }
}

impl From<std::io::Error> for BenchError {
    fn from(source: std::io::Error) -> Self {
        BenchError::Io {
            context: "i/o".into(),
            source,
        }
    }
}
