//! The seam between the bus and one transport (memory, broker, direct, datagram).
//!
//! A transport moves events; everything a handler needs beyond that (retry with backoff, dead
//! letters, per-key order, concurrency, graceful shutdown) lives once in `runtime.rs`. A transport
//! feeds [`Delivery`] values into the runtime's channel in the order they must be handled and
//! learns the outcome of each from its `done` channel: only then may it acknowledge (commit the
//! offset, send the ack frame).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use crate::error::{HandlerError, PublishError, RequestError, SubscribeError};
use crate::event::Event;
use crate::receipt::Receipt;
use crate::runtime::DatagramLoss;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which transport a bus uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    Memory,
    Broker,
    Direct,
    Datagram,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Memory => "memory",
            TransportKind::Broker => "broker",
            TransportKind::Direct => "direct",
            TransportKind::Datagram => "datagram",
        }
    }
}

/// Where a group that has never committed starts reading (stored transports only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// From the oldest event kept: nothing published before the group's first start is missed.
    #[default]
    Earliest,
    /// Only events published after the subscription started.
    Latest,
}

/// What a subscription asks of its transport.
#[derive(Debug, Clone)]
pub(crate) struct SubscribeSpec {
    pub topic: String,
    pub group: String,
    pub start_from: StartFrom,
    /// Deliveries handed to the runtime and not yet done, at most; the transport stops reading
    /// (and, on direct, advertises this as the member's capacity).
    pub in_flight_max: usize,
    /// Direct and datagram: the address the member listens on (port 0: any free port).
    pub bind: Option<SocketAddr>,
}

/// How the runtime finished with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Handled (or dead-lettered): acknowledge it.
    Ack,
    /// Not handled and not dead-lettered: do not acknowledge; the transport redelivers it (stored
    /// transports) or nacks it to the producer, who fails over (direct).
    Nack(String),
}

/// One event handed to the runtime.
pub(crate) struct Delivery {
    pub event: Event,
    /// Deliveries with the same lane are handled one after the other, in channel order: the
    /// transport derives it from the key (or the partition when there is none).
    pub lane: u64,
    pub done: oneshot::Sender<Outcome>,
}

/// A running subscription, from the transport's side.
pub(crate) trait Running: Send {
    /// Stops taking new events, waits until every delivery already handed out is done, makes
    /// the acknowledgements durable (final commit), and leaves the group.
    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SubscribeError>>;

    /// The address a brokerless member listens on.
    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Datagram counts per publisher that sent to this subscription (datagram transport).
    fn datagram_loss(&self) -> Vec<DatagramLoss> {
        Vec::new()
    }
}

/// Answers one request: the request event and the absolute deadline of the whole chain.
pub(crate) type Replier =
    Arc<dyn Fn(Event, SystemTime) -> BoxFuture<'static, Result<Event, HandlerError>> + Send + Sync>;

/// A transport.
pub(crate) trait Transport: Send + Sync + 'static {
    fn kind(&self) -> TransportKind;

    /// Publishes one event; the receipt says what completed.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        event: Event,
        deadline: SystemTime,
    ) -> BoxFuture<'a, Result<Receipt, PublishError>>;

    /// Starts feeding `sink` with the events of `spec.topic` for `spec.group`.
    fn subscribe(
        &self,
        spec: SubscribeSpec,
        sink: mpsc::Sender<Delivery>,
    ) -> BoxFuture<'_, Result<Box<dyn Running>, SubscribeError>>;

    /// The dead-letter topic used when a subscription does not name one: `Some("<topic>.dlq")` on
    /// stored transports; `None` on direct, where a failed event is nacked back to the producer
    /// (who still holds it and learns the error from its publish).
    fn dead_letter_default(&self, topic: &str) -> Option<String>;

    /// Request/response natively (direct). `None` means the bus runs requests over reply topics
    /// with this transport's publish and subscribe (`reply.rs`).
    fn native_requests(&self) -> Option<&dyn NativeRequests> {
        None
    }

    /// Direct and datagram: the id this bus's publisher carries in every event, as receivers
    /// name it in [`DatagramLoss::publisher`].
    fn publisher_id(&self) -> Option<String> {
        None
    }

    /// Direct and datagram: the groups serving `topic` that this bus reaches now (a member of
    /// each is up). `None` on transports where producers know nothing of consumers.
    fn reachable_groups(&self, topic: &str) -> Option<Vec<String>> {
        let _ = topic;
        None
    }

    /// Closes connections; called when the last clone of the bus is dropped or closed.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Request/response for a transport that has it built in.
pub(crate) trait NativeRequests: Send + Sync {
    fn request<'a>(
        &'a self,
        topic: &'a str,
        event: Event,
        deadline: SystemTime,
    ) -> BoxFuture<'a, Result<Event, RequestError>>;

    fn serve(
        &self,
        spec: SubscribeSpec,
        replier: Replier,
    ) -> BoxFuture<'_, Result<Box<dyn Running>, SubscribeError>>;
}
