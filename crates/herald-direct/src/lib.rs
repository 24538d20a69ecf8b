//! Brokerless delivery: direct (acked, TCP) and datagram (UDP) pub/sub, request/response, discovery.
//!
//! A [`Member`] serves one topic as part of a group; a [`Publisher`] finds members (a static peer
//! list or mDNS-SD), learns their group and capacity from their hello frame, and delivers each
//! event to exactly one member of every group serving the topic. The wire format is described in
//! `docs/direct-protocol.md` and implemented in [`frame`].

mod conn_writer;
pub mod error;
pub mod event;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod mdns;
pub mod member;
pub mod publisher;
pub mod seal;
mod stream;
pub mod tls;
pub mod window;

pub use error::{
    DatagramError, HandlerError, MemberStartError, PublishError, PublisherStartError, RequestError,
};
pub use event::{BoxFuture, FnHandler, Handler, Message, Mode, Received, Reply, RequestContext};
pub use member::{Member, MemberConfig, MemberStats, PublisherLoss};
pub use publisher::{
    DATAGRAM_BATCH_MAX, DatagramSeal, MemberState, MemberView, Publisher, PublisherConfig, Receipt,
    Source,
};
