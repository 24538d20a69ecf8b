//! Herald's SDK: publish, subscribe and request with one event model over four transports.
//!
//! | transport | URL | `publish` returns when the event is | delivery |
//! |---|---|---|---|
//! | broker | `broker://HOST:PORT` | *stored* by the broker (on disk with `acks=all`) | at least once; consumers may be away for the whole retention time |
//! | direct | `direct://HOST:PORT,...` or `direct://mdns` | *handled*: a consumer of every group ran its handler and acked | retried and failed over inside each group |
//! | datagram | `datagram://HOST:PORT,...` or `datagram://mdns` | *sent* | at most once; receivers count losses |
//! | memory | `memory://` | *stored* in this process | as the broker, for tests |
//!
//! Subscribers acknowledge an event only after their handler returned `Ok`; a failing handler
//! is retried with backoff ([`RetryPolicy`]) and its event then goes to a dead-letter topic
//! (`<topic>.dlq`, with the error and attempt count in `herald-dlq-*` headers). Events with the
//! same key are handled in order, other keys concurrently. Requests carry an absolute deadline
//! that nested requests inherit ([`RequestContext`]). Every handler run is a `herald.handle`
//! tracing span with the topic, group, event id and attempt.
//!
//! # Memory: the semantics, in one process
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use herald::{Bus, Event, HandlerError, RetryPolicy};
//!
//! let bus = Bus::connect("memory://").await?;
//! let (tx, mut dead) = tokio::sync::mpsc::unbounded_channel();
//! let dlq = bus
//!     .subscribe("sms.dlq")
//!     .handle(move |e: Event| {
//!         let tx = tx.clone();
//!         async move { tx.send(e).ok(); Ok(()) }
//!     })
//!     .await?;
//! let sender = bus
//!     .subscribe("sms")
//!     .group("sms-service")
//!     .retry(RetryPolicy::attempts(3).backoff(Duration::from_millis(1), Duration::from_millis(10)))
//!     .handle(|e: Event| async move {
//!         if e.payload.is_empty() {
//!             return Err(HandlerError::permanent("empty message"));
//!         }
//!         Ok(())
//!     })
//!     .await?;
//! bus.publish("sms", Event::new("hello").with_key("+441234")).await?;
//! bus.publish("sms", Event::new("")).await?;
//! let failed = dead.recv().await.unwrap();
//! assert_eq!(failed.header_str(herald::HEADER_DLQ_ERROR), Some("empty message"));
//! sender.shutdown().await?;
//! dlq.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Broker: Herald or any Kafka-compatible cluster
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> anyhow::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let broker = herald_broker::Broker::start(herald_broker::BrokerConfig {
//! #     data_dir: dir.path().to_path_buf(),
//! #     kafka_addr: "127.0.0.1:0".parse()?,
//! #     groups: herald_broker::group::GroupConfig {
//! #         initial_rebalance_delay_ms: 0,
//! #         ..Default::default()
//! #     },
//! #     ..Default::default()
//! # })
//! # .await?;
//! # let bootstrap = broker.kafka_addr().to_string();
//! use herald::{Bus, Completed, Event};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Sms { to: String, text: String }
//!
//! // `bootstrap` is `herald serve`'s address (127.0.0.1:9092 by default) or any Kafka cluster's.
//! // Options after `?` are librdkafka properties, except the SDK's own `connect_timeout_ms`
//! // (how long connecting waits for a broker to answer, default 5000) and
//! // `commit_interval_ms` (how often acknowledged offsets are committed, default 200).
//! let bus = Bus::connect(&format!("broker://{bootstrap}?compression.type=zstd")).await?;
//! let sms = Sms { to: "+441234".into(), text: "Your code is 1234".into() };
//! let receipt = bus.publish("sms", Event::json(&sms)?.with_key(sms.to.clone())).await?;
//! let Completed::Stored { partition, offset } = receipt.completed else { unreachable!() };
//! println!("stored at {partition}/{offset}");
//!
//! // A consumer group: offsets are committed only after the handler succeeded.
//! let (tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
//! let sub = bus
//!     .subscribe("sms")
//!     .group("sms-service")
//!     .handle_json(move |sms: Sms, event| {
//!         let tx = tx.clone();
//!         async move {
//!             println!("sending {:?} to {} ({})", sms.text, sms.to, event.id);
//!             tx.send(event.id).ok();
//!             Ok(())
//!         }
//!     })
//!     .await?;
//! assert_eq!(sent.recv().await, Some(receipt.id));
//! sub.shutdown().await?; // in-flight handlers finish, offsets are committed
//! # broker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Direct and datagram: no broker
//!
//! Consumers serve a topic on an address; producers find them from a peer list
//! (`direct://HOST:PORT,...`) or by mDNS-SD on the LAN (`direct://mdns`, which also announces
//! the bus's own subscriptions).
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> anyhow::Result<()> {
//! use herald::{Bus, Event};
//!
//! let consumer = Bus::connect("direct://").await?;
//! let joint = consumer
//!     .subscribe("arm.moves")
//!     .group("elbow")
//!     .bind("127.0.0.1:0".parse()?)
//!     .handle(|e: Event| async move { println!("move {:?}", e.payload); Ok(()) })
//!     .await?;
//! let elbow = joint.local_addr().expect("a direct subscription listens");
//!
//! // A direct producer is done when a member of every group has handled the event.
//! let producer = Bus::connect(&format!("direct://{elbow}")).await?;
//! let receipt = producer.publish("arm.moves", Event::new("+5deg")).await?;
//! assert_eq!(receipt.kind(), "handled");
//!
//! // Datagrams: one UDP datagram per event, at most once; receivers count what was lost.
//! let station = Bus::connect("datagram://").await?;
//! let (tx, mut readings) = tokio::sync::mpsc::unbounded_channel();
//! let listening = station
//!     .subscribe("telemetry")
//!     .group("station-1")
//!     .bind("127.0.0.1:0".parse()?)
//!     .handle(move |e: Event| {
//!         let tx = tx.clone();
//!         async move { tx.send(e.payload).ok(); Ok(()) }
//!     })
//!     .await?;
//! let at = listening.local_addr().expect("a datagram subscription listens");
//! let sensor = Bus::connect(&format!("datagram://{at}")).await?;
//! assert_eq!(sensor.publish("telemetry", Event::new("t=21.5")).await?.kind(), "sent");
//! assert_eq!(readings.recv().await.as_deref(), Some(&b"t=21.5"[..]));
//! for sender in listening.datagram_loss() {
//!     println!("{}: received {} lost {}", sender.publisher, sender.received, sender.lost);
//! }
//! # joint.shutdown().await?;
//! # listening.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Requests with deadlines that propagate
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use herald::{Bus, Event};
//!
//! let bus = Bus::connect("memory://").await?;
//! let prices = bus.serve("prices").reply(|req: Event, _ctx| async move {
//!     Ok(Event::new(format!("{}: 42", String::from_utf8_lossy(&req.payload))))
//! }).await?;
//! // A replier that asks another service passes its caller's deadline on through `ctx`.
//! let quotes = bus.serve("quotes").reply(|req: Event, ctx| async move {
//!     let price = ctx.request("prices", Event::new(req.payload)).await?;
//!     Ok(Event::new(price.payload))
//! }).await?;
//! let reply = bus.request("quotes", Event::new("ACME")).deadline(Duration::from_secs(5)).await?;
//! assert_eq!(reply.payload, "ACME: 42");
//! quotes.shutdown().await?;
//! prices.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Over the broker a request travels as an event carrying a reply topic (one per bus,
//! `herald.replies.<bus id>`) and its deadline, for callers that can wait longer than a
//! connection should stay open; over direct it is one TCP round trip.

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
#[cfg(feature = "msgpack")]
pub use codec::MsgPack;
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
