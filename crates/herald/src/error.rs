//! One error type per operation (connect, publish, subscribe, request), plus the error a handler
//! returns.

use std::fmt;

/// Why a bus could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("bad bus URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("bad option {name:?}: {reason}")]
    BadOption { name: String, reason: String },
    #[error("cannot start the {transport} transport: {message}")]
    Transport {
        transport: &'static str,
        message: String,
    },
}

/// Why a publish did not complete. Every variant means the receipt's guarantee was not reached;
/// the event may still have been delivered (a timeout after sending), so retrying is
/// at-least-once.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error("no consumer serves topic {topic:?}")]
    NoConsumer { topic: String },
    #[error("back-pressure on topic {topic:?}: every consumer is at its capacity")]
    BackPressure { topic: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("a consumer refused the event: {0}")]
    Refused(String),
    #[error("event too large: {bytes} bytes, limit {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("{transport} transport: {message}")]
    Transport {
        transport: &'static str,
        message: String,
    },
    #[error("the bus was closed")]
    Closed,
}

/// Why a subscription could not start or stop cleanly.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    #[error("invalid subscription: {0}")]
    Invalid(String),
    #[error("{transport} transport: {message}")]
    Transport {
        transport: &'static str,
        message: String,
    },
    #[error("the {transport} transport cannot {what}")]
    Unsupported {
        transport: &'static str,
        what: &'static str,
    },
}

/// Why a request got no response.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("no replier serves topic {topic:?}")]
    NoReplier { topic: String },
    #[error("back-pressure on topic {topic:?}")]
    BackPressure { topic: String },
    #[error("the replier failed: {0}")]
    Failed(String),
    #[error("request too large: {bytes} bytes, limit {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("the request could not be sent: {0}")]
    Publish(#[from] PublishError),
    #[error("{transport} transport: {message}")]
    Transport {
        transport: &'static str,
        message: String,
    },
    #[error("the {transport} transport cannot {what}")]
    Unsupported {
        transport: &'static str,
        what: &'static str,
    },
}

/// What a handler returns when it could not handle an event. Any error converts into it with `?`.
///
/// A *retryable* error (the default) is retried with backoff; a *permanent* one (an event that
/// can never succeed, e.g. a payload that does not decode) goes straight to the dead-letter topic.
///
/// ```
/// use herald::HandlerError;
/// fn parse(s: &str) -> Result<u32, HandlerError> {
///     Ok(s.parse::<u32>()?)
/// }
/// assert!(parse("x").is_err());
/// assert!(HandlerError::permanent("bad payload").is_permanent());
/// ```
pub struct HandlerError {
    message: String,
    permanent: bool,
}

impl HandlerError {
    /// An error worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            permanent: false,
        }
    }

    /// An error no retry will fix: the event is dead-lettered at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            permanent: true,
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

// Like anyhow::Error, HandlerError does not implement std::error::Error itself, so that every
// error type converts into it with `?`.
impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::retryable(e.to_string())
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message)
            .field("permanent", &self.permanent)
            .finish()
    }
}
