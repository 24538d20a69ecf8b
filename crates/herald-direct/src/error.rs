//! Typed errors, one enum per operation, so callers can act on back-pressure, deadlines and
//! missing members differently.

use crate::frame::NackReason;

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemberStartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("mDNS: {0}")]
    Mdns(String),
}

/// Why a publisher could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublisherStartError {
    #[error("cannot open the UDP socket: {0}")]
    Udp(std::io::Error),
    #[error(transparent)]
    Mdns(#[from] crate::mdns::MdnsError),
}

/// Why a member's handler did not handle an event or answer a request. Its text goes back to
/// the producer in the nack: an event is retried on another member, a request fails with it.
///
/// ```
/// use herald_direct::HandlerError;
/// let e: HandlerError = "provider unavailable".into();
/// assert_eq!(e.to_string(), "provider unavailable");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler failed; the message says why.
    #[error("{0}")]
    Failed(String),
    /// The member answers no requests (what [`crate::Handler::on_request`] says by default).
    #[error("this member does not answer requests")]
    NoRequests,
}

impl HandlerError {
    /// A failure with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        HandlerError::Failed(message.into())
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        HandlerError::Failed(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        HandlerError::Failed(message.to_string())
    }
}

/// Why a direct publish failed. Every variant means the event was not acknowledged by some group.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error("no live member serves topic {topic:?} (group {group:?}) before the deadline")]
    NoLiveMember {
        topic: String,
        group: Option<String>,
    },
    #[error(
        "back-pressure: every member of group {group:?} for topic {topic:?} is at its capacity until the deadline"
    )]
    BackPressure { topic: String, group: String },
    #[error("timed out waiting for group {group:?} to acknowledge (last problem: {last})")]
    Timeout { group: String, last: String },
    #[error("group {group:?} refused the event {attempts} times; last: {reason:?}: {message}")]
    Nacked {
        group: String,
        attempts: u32,
        reason: NackReason,
        message: String,
    },
    #[error("event too large: {bytes} bytes, limit {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("the publisher was closed")]
    Closed,
}

/// Why a datagram could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    #[error("datagram payload of {bytes} bytes exceeds datagram_payload_bytes_max {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("no live member serves topic {topic:?}")]
    NoLiveMember { topic: String },
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("send failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a request got no response.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("no live member serves topic {topic:?} before the deadline")]
    NoLiveMember { topic: String },
    #[error("back-pressure: every member serving {topic:?} is at its capacity until the deadline")]
    BackPressure { topic: String },
    #[error("the handler failed: {0}")]
    Failed(String),
    #[error("request too large: {bytes} bytes, limit {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("the publisher was closed")]
    Closed,
}
