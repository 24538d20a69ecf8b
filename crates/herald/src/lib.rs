//! Herald's SDK: publish, subscribe and request with one event model over four transports.
//!
//! | transport | URL | `publish` returns when the event is | delivery |
//! |---|---|---|---|
//! | broker | `broker://HOST:PORT` | *stored* by the broker (on disk with `acks=all`) | at least once, consumers may be away for the retention time |
//! | direct | `direct://HOST:PORT,...` or `direct://mdns` | *handled*: a consumer of every group ran its handler and acked | retried and failed over inside each group |
//! | datagram | `datagram://HOST:PORT,...` or `datagram://mdns` | *sent* | at most once; receivers count losses |
//! | memory | `memory://` | *stored* in this process | as the broker, for tests |
//!
//! Subscribers acknowledge an event only after their handler returned `Ok`; a failing handler
//! is retried with backoff ([`RetryPolicy`]) and its event then goes to a dead-letter topic
//! (`<topic>.dlq`). Events with the same key are handled in order, other keys concurrently.
//! Requests carry an absolute deadline that nested requests inherit ([`RequestContext`]).

mod broker;
mod bus;
pub mod codec;
mod direct;
mod error;
mod event;
mod memory;
mod receipt;
mod reply;
mod runtime;
mod transport;

pub use bus::{
    Bus, BusBuilder, CONCURRENCY_DEFAULT, CONCURRENCY_MAX, DeadLetter, PUBLISH_TIMEOUT_DEFAULT,
    REQUEST_DEADLINE_DEFAULT, RequestBuilder, RequestContext, ServeBuilder, SubscribeBuilder,
};
pub use codec::{Codec, CodecError, Json};
pub use error::{ConnectError, HandlerError, PublishError, RequestError, SubscribeError};
pub use event::{
    Event, EventId, HEADER_CONTENT_TYPE, HEADER_CORRELATION_ID, HEADER_DEADLINE_MS,
    HEADER_DLQ_ATTEMPTS, HEADER_DLQ_ERROR, HEADER_DLQ_GROUP, HEADER_DLQ_TOPIC, HEADER_ID,
    HEADER_REPLY_ERROR, HEADER_REPLY_TO, HEADER_TIMESTAMP_MS, ParseEventIdError,
};
pub use receipt::{Completed, Receipt};
pub use runtime::{DatagramLoss, RetryPolicy, Subscription, SubscriptionStats};
pub use transport::{StartFrom, TransportKind};
