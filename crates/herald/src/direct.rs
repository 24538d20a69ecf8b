//! The direct (acked TCP) and datagram (UDP) transports: the SDK over `herald_direct`.
//!
//! One [`DirectTransport`] serves both kinds; they differ only in how `publish` sends. Each bus
//! owns one `herald_direct::Publisher` (static peers, mDNS); each subscription or replier is one
//! `herald_direct::Member` whose handler hands events to the shared runtime (`runtime.rs`) and
//! answers the producer only once the runtime says how the event ended. Retries, dead letters
//! and per-key order are the runtime's; this module only moves events and maps errors.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::FutureExt;
use herald_direct::event::remaining;
use herald_direct::handshake::GroupKey;
use herald_direct::keys::SecretKey;
use herald_direct::seal::DatagramKey;
use herald_direct::tls::{MemberTls, PublisherTls, TlsFiles};
use herald_direct::{
    BoxFuture as MemberFuture, DatagramError, DatagramSeal, Handler,
    HandlerError as MemberHandlerError, Member, MemberConfig, MemberStartError, Message, Publisher,
    PublisherConfig, Received, RequestContext as MemberRequestContext,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::bus::BusConfig;
use crate::error::{ConnectError, PublishError, RequestError, SubscribeError};
use crate::event::Event;
use crate::receipt::{Completed, Receipt};
use crate::runtime::DatagramLoss;
use crate::transport::{
    BoxFuture, Delivery, NativeRequests, Outcome, Replier, Running, SubscribeSpec, Transport,
    TransportKind,
};

/// How long closing a subscription waits for handlers already running before the member says
/// goodbye anyway (their events are then failed over by the producer).
const SHUTDOWN_DRAIN_MS: u64 = 30_000;

/// Address a subscription listens on when it names none: every interface, any free port.
const BIND_DEFAULT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Starts the publisher of a direct or datagram bus.
pub(crate) async fn connect(config: &BusConfig) -> Result<Arc<dyn Transport>, ConnectError> {
    let options = Options::parse(config)?;
    let publisher = Publisher::start(options.publisher.clone())
        .await
        .map_err(|e| ConnectError::Transport {
            transport: config.kind.as_str(),
            message: e.to_string(),
        })?;
    Ok(Arc::new(DirectTransport {
        kind: config.kind,
        mdns: config.mdns,
        publisher: Arc::new(Mutex::new(Some(publisher))),
        static_peers: config.peers.clone(),
        frame_bytes_max: options.publisher.frame_bytes_max,
        datagram_payload_bytes_max: options.publisher.datagram_payload_bytes_max,
        security: options.security,
    }))
}

/// The bus options a direct or datagram bus understands (`?name=value` in its URL, or
/// `BusBuilder::option`): fields of `herald_direct::PublisherConfig`, and the security its
/// subscriptions' members get too.
struct Options {
    publisher: PublisherConfig,
    security: MemberSecurity,
}

/// What a bus's members need to be as secure as its publisher: the same TLS identity and CA,
/// group key and topic keys.
#[derive(Clone, Default)]
struct MemberSecurity {
    /// `Some(Err)`: TLS was asked for without a certificate, which a publisher may do but a
    /// member cannot (it must present one); subscribing then fails with this message.
    tls: Option<Result<MemberTls, String>>,
    group_key: Option<GroupKey>,
    topic_keys: HashMap<String, DatagramKey>,
    topic_key_default: Option<DatagramKey>,
}

impl MemberSecurity {
    fn apply(&self, topic: &str, config: &mut MemberConfig) -> Result<(), SubscribeError> {
        if let Some(tls) = &self.tls {
            config.tls = Some(tls.clone().map_err(SubscribeError::Invalid)?);
        }
        config.group_key = self.group_key.clone();
        config.datagram_keys = self
            .topic_keys
            .get(topic)
            .or(self.topic_key_default.as_ref())
            .cloned()
            .into_iter()
            .collect();
        Ok(())
    }
}

/// Reads a key file named by option `name`.
fn key_file(name: &str, path: &str) -> Result<SecretKey, ConnectError> {
    SecretKey::from_file(Path::new(path)).map_err(|e| ConnectError::BadOption {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

impl Options {
    fn parse(config: &BusConfig) -> Result<Options, ConnectError> {
        let mut publisher = PublisherConfig::new(config.peers.clone());
        publisher.mdns = config.mdns;
        let mut security = MemberSecurity::default();
        let option = |name: &str| config.options.get(name).map(String::as_str);
        let tls = matches!(option(OPTION_TLS), Some("true" | "1"));
        let tls_files = [OPTION_CA, OPTION_CERT, OPTION_KEY, OPTION_SERVER_NAME];
        if !tls && let Some(name) = tls_files.iter().find(|n| option(n).is_some()) {
            return Err(ConnectError::BadOption {
                name: name.to_string(),
                reason: "a TLS option needs direct+tls:// (or the option tls=true)".to_string(),
            });
        }
        if tls {
            let bad = |name: &str, reason: String| ConnectError::BadOption {
                name: name.to_string(),
                reason,
            };
            let ca = option(OPTION_CA)
                .ok_or_else(|| bad(OPTION_CA, "TLS needs the CA bundle (ca=PATH)".to_string()))?;
            let files = TlsFiles {
                ca: ca.into(),
                certificate: option(OPTION_CERT).map(Into::into),
                key: option(OPTION_KEY).map(Into::into),
            };
            publisher.tls = Some(
                PublisherTls::load(&files, option(OPTION_SERVER_NAME))
                    .map_err(|e| bad(OPTION_CERT, e.to_string()))?,
            );
            security.tls = Some(if files.certificate.is_some() {
                Ok(MemberTls::load(&files).map_err(|e| bad(OPTION_CERT, e.to_string()))?)
            } else {
                Err("a subscription over TLS needs a certificate (cert=PATH&key=PATH)".to_string())
            });
        }
        if let Some(path) = option(OPTION_GROUP_KEY_FILE) {
            let key = GroupKey::new(&key_file(OPTION_GROUP_KEY_FILE, path)?);
            publisher.group_key = Some(key.clone());
            security.group_key = Some(key);
        }
        let encrypt = match option(OPTION_ENCRYPT) {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(ConnectError::BadOption {
                    name: OPTION_ENCRYPT.to_string(),
                    reason: format!("expected true or false, got {other:?}"),
                });
            }
        };
        for (name, value) in &config.options {
            let topic = if name == OPTION_TOPIC_KEY_FILE {
                None
            } else if let Some(topic) = name.strip_prefix(OPTION_TOPIC_KEY_FILE_PREFIX) {
                Some(topic)
            } else {
                continue;
            };
            let key = DatagramKey::new(&key_file(name, value)?);
            let seal = DatagramSeal {
                key: key.clone(),
                encrypt,
            };
            match topic {
                None => {
                    publisher.datagram_key_default = Some(seal);
                    security.topic_key_default = Some(key);
                }
                Some(topic) => {
                    publisher.datagram_keys.insert(topic.to_string(), seal);
                    security.topic_keys.insert(topic.to_string(), key);
                }
            }
        }
        for (name, value) in &config.options {
            if SECURITY_OPTIONS.contains(&name.as_str())
                || name.starts_with(OPTION_TOPIC_KEY_FILE_PREFIX)
            {
                continue;
            }
            let number = || -> Result<u64, ConnectError> {
                value.parse::<u64>().map_err(|_| ConnectError::BadOption {
                    name: name.clone(),
                    reason: format!("expected a whole number, got {value:?}"),
                })
            };
            let size = || -> Result<usize, ConnectError> {
                usize::try_from(number()?).map_err(|_| ConnectError::BadOption {
                    name: name.clone(),
                    reason: "too large".to_string(),
                })
            };
            match name.as_str() {
                "attempt_timeout_ms" => publisher.attempt_timeout_ms = number()?,
                "attempts_max" => {
                    publisher.attempts_max =
                        u32::try_from(number()?).map_err(|_| ConnectError::BadOption {
                            name: name.clone(),
                            reason: "too large".to_string(),
                        })?
                }
                "connect_timeout_ms" => publisher.connect_timeout_ms = number()?,
                "heartbeat_interval_ms" => publisher.heartbeat_interval_ms = number()?,
                "heartbeat_timeout_ms" => publisher.heartbeat_timeout_ms = number()?,
                "reconnect_interval_ms" => publisher.reconnect_interval_ms = number()?,
                "frame_bytes_max" => publisher.frame_bytes_max = size()?,
                "datagram_payload_bytes_max" => publisher.datagram_payload_bytes_max = size()?,
                "send_queue_frames_max" => publisher.send_queue_frames_max = size()?,
                // Simulates a lossy link: every Nth datagram to each member is not sent (its
                // sequence number is used up, so receivers count it as lost).
                "drop_every_nth_datagram" => {
                    publisher.drop_every_nth_datagram = Some(number()?).filter(|n| *n > 0)
                }
                _ => {
                    return Err(ConnectError::BadOption {
                        name: name.clone(),
                        reason: format!(
                            "not an option of the {} transport (known: {}, {}, topic_key_file.TOPIC)",
                            config.kind.as_str(),
                            KNOWN_OPTIONS.join(", "),
                            SECURITY_OPTIONS.join(", ")
                        ),
                    });
                }
            }
        }
        Ok(Options {
            publisher,
            security,
        })
    }
}

/// Set by `direct+tls://`: connections use TLS.
pub(crate) const OPTION_TLS: &str = "tls";
/// PEM file of the CA that signs the group's certificates.
const OPTION_CA: &str = "ca";
/// PEM file of this bus's certificate chain (TLS client and, for subscriptions, server).
const OPTION_CERT: &str = "cert";
/// PEM file of this bus's private key.
const OPTION_KEY: &str = "key";
/// A name members' certificates must be valid for (otherwise only their chain is checked).
const OPTION_SERVER_NAME: &str = "server_name";
/// File of the group key (64 hexadecimal digits).
const OPTION_GROUP_KEY_FILE: &str = "group_key_file";
/// File of the datagram key of every topic; `topic_key_file.TOPIC` for one topic.
const OPTION_TOPIC_KEY_FILE: &str = "topic_key_file";
const OPTION_TOPIC_KEY_FILE_PREFIX: &str = "topic_key_file.";
/// Encrypt sealed datagrams, not only authenticate them.
const OPTION_ENCRYPT: &str = "encrypt";

const SECURITY_OPTIONS: [&str; 8] = [
    OPTION_TLS,
    OPTION_CA,
    OPTION_CERT,
    OPTION_KEY,
    OPTION_SERVER_NAME,
    OPTION_GROUP_KEY_FILE,
    OPTION_TOPIC_KEY_FILE,
    OPTION_ENCRYPT,
];

const KNOWN_OPTIONS: [&str; 10] = [
    "attempt_timeout_ms",
    "attempts_max",
    "connect_timeout_ms",
    "heartbeat_interval_ms",
    "heartbeat_timeout_ms",
    "reconnect_interval_ms",
    "frame_bytes_max",
    "datagram_payload_bytes_max",
    "send_queue_frames_max",
    "drop_every_nth_datagram",
];

type SharedPublisher = Arc<Mutex<Option<Publisher>>>;

/// A member's address added to its own bus's publisher, to forget when the member leaves.
struct SelfPeer {
    publisher: SharedPublisher,
    addr: SocketAddr,
}

/// A direct or datagram bus's transport.
struct DirectTransport {
    kind: TransportKind,
    mdns: bool,
    /// `None` once the bus is closed; publishes in flight keep their own clone.
    publisher: SharedPublisher,
    /// The peers the bus was given, which closing a subscription must not forget.
    static_peers: Vec<SocketAddr>,
    frame_bytes_max: usize,
    datagram_payload_bytes_max: usize,
    /// TLS, group key and topic keys of this bus's subscriptions.
    security: MemberSecurity,
}

impl DirectTransport {
    fn publisher(&self) -> Option<Publisher> {
        self.publisher.lock().clone()
    }

    async fn publish_direct(
        &self,
        topic: &str,
        event: Event,
        deadline: SystemTime,
    ) -> Result<Receipt, PublishError> {
        let publisher = self.publisher().ok_or(PublishError::Closed)?;
        let id = event.id;
        let receipt = publisher
            .publish_until(message(topic, event), deadline)
            .await
            .map_err(publish_error)?;
        Ok(Receipt {
            id,
            completed: Completed::Handled {
                groups: receipt.groups,
            },
        })
    }

    async fn publish_datagram(
        &self,
        topic: &str,
        event: Event,
        deadline: SystemTime,
    ) -> Result<Receipt, PublishError> {
        let publisher = self.publisher().ok_or(PublishError::Closed)?;
        let id = event.id;
        // Right after start (or before any member is up) there is nobody to send to yet: wait
        // for the membership as a direct publish does, bounded by the deadline. Once members are
        // known this returns at once.
        if !publisher.wait_for_topic(topic, remaining(deadline)).await {
            return Err(PublishError::NoConsumer {
                topic: topic.to_string(),
            });
        }
        let datagrams = publisher
            .send_datagram(message(topic, event))
            .await
            .map_err(datagram_error)?;
        Ok(Receipt {
            id,
            completed: Completed::Sent { datagrams },
        })
    }

    /// Starts a member for `spec` and lets this bus's own publisher reach it, so one bus can
    /// publish to (or request from) its own subscriptions without mDNS or static peers.
    async fn start_member(
        &self,
        spec: &SubscribeSpec,
        handler: Arc<dyn Handler>,
    ) -> Result<MemberRunning, SubscribeError> {
        let mut config = MemberConfig::new(
            spec.topic.clone(),
            spec.group.clone(),
            spec.bind.unwrap_or(BIND_DEFAULT),
        );
        config.capacity = u32::try_from(spec.in_flight_max.max(1)).unwrap_or(u32::MAX);
        config.mdns = self.mdns;
        config.frame_bytes_max = self.frame_bytes_max;
        config.datagram_payload_bytes_max = self.datagram_payload_bytes_max;
        config.shutdown_drain_ms = SHUTDOWN_DRAIN_MS;
        self.security.apply(&spec.topic, &mut config)?;
        let member = Member::start(config, handler).await.map_err(|e| match e {
            MemberStartError::Config(message) => SubscribeError::Invalid(message),
            other => SubscribeError::Transport {
                transport: self.kind.as_str(),
                message: other.to_string(),
            },
        })?;
        let addr = reachable(member.local_addr());
        let mut self_peer = None;
        if let Some(publisher) = self.publisher() {
            publisher.add_peer(addr);
            if !self.static_peers.contains(&addr) {
                self_peer = Some(SelfPeer {
                    publisher: self.publisher.clone(),
                    addr,
                });
            }
        }
        Ok(MemberRunning {
            member: Some(member),
            sinks: None,
            self_peer,
        })
    }
}

impl Transport for DirectTransport {
    fn kind(&self) -> TransportKind {
        self.kind
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        event: Event,
        deadline: SystemTime,
    ) -> BoxFuture<'a, Result<Receipt, PublishError>> {
        match self.kind {
            TransportKind::Datagram => Box::pin(self.publish_datagram(topic, event, deadline)),
            _ => Box::pin(self.publish_direct(topic, event, deadline)),
        }
    }

    fn subscribe(
        &self,
        spec: SubscribeSpec,
        sink: mpsc::Sender<Delivery>,
    ) -> BoxFuture<'_, Result<Box<dyn Running>, SubscribeError>> {
        Box::pin(async move {
            let handler = SinkHandler::start(sink, spec.in_flight_max);
            let sinks = handler.sinks.clone();
            let mut running = self.start_member(&spec, Arc::new(handler)).await?;
            running.sinks = Some(sinks);
            Ok(Box::new(running) as Box<dyn Running>)
        })
    }

    fn dead_letter_default(&self, _topic: &str) -> Option<String> {
        // Nothing is stored without a broker: a failed event is refused back to its producer,
        // who still holds it and learns the handler's error from its publish.
        None
    }

    fn native_requests(&self) -> Option<&dyn NativeRequests> {
        Some(self)
    }

    fn reachable_groups(&self, topic: &str) -> Option<Vec<String>> {
        let publisher = self.publisher()?;
        let groups: std::collections::BTreeSet<String> = publisher
            .members()
            .into_iter()
            .filter(|m| m.state == herald_direct::MemberState::Up)
            .filter(|m| m.topic.as_deref() == Some(topic))
            .filter_map(|m| m.group)
            .collect();
        Some(groups.into_iter().collect())
    }

    fn publisher_id(&self) -> Option<String> {
        self.publisher()
            .map(|p| uuid::Uuid::from_u128(p.id()).to_string())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // Dropping the last clone of the publisher closes its connections; publishes still in
        // flight hold their own clone and finish first.
        let publisher = self.publisher.lock().take();
        drop(publisher);
        Box::pin(async {})
    }
}

impl NativeRequests for DirectTransport {
    fn request<'a>(
        &'a self,
        topic: &'a str,
        event: Event,
        deadline: SystemTime,
    ) -> BoxFuture<'a, Result<Event, RequestError>> {
        Box::pin(async move {
            let publisher = self
                .publisher()
                .ok_or(RequestError::Publish(PublishError::Closed))?;
            let request_id = event.id;
            let request_key = event.key.clone();
            let reply = publisher
                .request_reply_until(message(topic, event), deadline)
                .await
                .map_err(request_error)?;
            // The replier's event travels whole, its SDK metadata in its headers. A member that
            // predates replies with headers sends the payload alone: that reply is the
            // replier's payload under a fresh id, keeping the request's key.
            let mut reply = if reply.headers.is_empty() && reply.key.is_none() {
                let mut plain = Event::new(reply.value);
                plain.key = request_key;
                plain
            } else {
                Event::from_wire(reply.key, reply.value, reply.headers, None)
            };
            reply.correlation_id = Some(request_id);
            Ok(reply)
        })
    }

    fn serve(
        &self,
        spec: SubscribeSpec,
        replier: Replier,
    ) -> BoxFuture<'_, Result<Box<dyn Running>, SubscribeError>> {
        Box::pin(async move {
            let running = self
                .start_member(&spec, Arc::new(ReplierHandler { replier }))
                .await?;
            Ok(Box::new(running) as Box<dyn Running>)
        })
    }
}

/// The frame an SDK event travels in; SDK metadata goes in its headers.
fn message(topic: &str, event: Event) -> Message {
    let headers = event.wire_headers();
    Message {
        topic: topic.to_string(),
        key: event.key,
        value: event.payload,
        headers,
    }
}

/// The address this host's publisher reaches a member bound at `bound` on: loopback for a
/// member listening on every interface.
fn reachable(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bound.port())
        }
        _ => bound,
    }
}

/// The runtime lane of an event: its key, so one key's events stay in order; a keyless event
/// gets its own (its id), so keyless events run side by side.
fn lane_of(event: &Event) -> u64 {
    match &event.key {
        Some(key) => {
            let mut hasher = std::hash::DefaultHasher::new();
            key.hash(&mut hasher);
            hasher.finish()
        }
        None => {
            let id = event.id.as_u128();
            (id as u64) ^ ((id >> 64) as u64)
        }
    }
}

fn publish_error(e: herald_direct::PublishError) -> PublishError {
    use herald_direct::PublishError as E;
    use herald_direct::frame::NackReason;
    match e {
        E::NoLiveMember { topic, .. } => PublishError::NoConsumer { topic },
        E::BackPressure { topic, .. } => PublishError::BackPressure { topic },
        E::Timeout { group, last } => {
            PublishError::Timeout(format!("group {group:?} did not acknowledge ({last})"))
        }
        E::Nacked {
            reason: NackReason::DeadlineExceeded,
            group,
            message,
            ..
        } => PublishError::Timeout(format!(
            "the deadline passed while group {group:?} handled the event: {message}"
        )),
        E::Nacked { message, .. } => PublishError::Refused(message),
        E::TooLarge { bytes, limit } => PublishError::TooLarge { bytes, limit },
        E::Invalid(message) => PublishError::Invalid(message),
        E::Closed => PublishError::Closed,
        other => PublishError::Transport {
            transport: "direct",
            message: other.to_string(),
        },
    }
}

fn datagram_error(e: DatagramError) -> PublishError {
    match e {
        DatagramError::NoLiveMember { topic } => PublishError::NoConsumer { topic },
        DatagramError::TooLarge { bytes, limit } => PublishError::TooLarge { bytes, limit },
        DatagramError::Invalid(message) => PublishError::Invalid(message),
        other => PublishError::Transport {
            transport: "datagram",
            message: other.to_string(),
        },
    }
}

fn request_error(e: herald_direct::RequestError) -> RequestError {
    use herald_direct::RequestError as E;
    match e {
        E::DeadlineExceeded => RequestError::DeadlineExceeded,
        E::NoLiveMember { topic } => RequestError::NoReplier { topic },
        E::BackPressure { topic } => RequestError::BackPressure { topic },
        E::Failed(message) => RequestError::Failed(message),
        E::TooLarge { bytes, limit } => RequestError::TooLarge { bytes, limit },
        E::Invalid(message) => RequestError::Publish(PublishError::Invalid(message)),
        E::Closed => RequestError::Publish(PublishError::Closed),
        other => RequestError::Transport {
            transport: "direct",
            message: other.to_string(),
        },
    }
}

/// Where a subscription's member hands events to the runtime.
#[derive(Clone)]
struct Sinks {
    /// Direct events, queued synchronously in the order the member took them (a forwarding
    /// task moves them into the runtime's channel). Holds at most the member's capacity: each
    /// event in it is one the member has in flight, and the member admits no more than that.
    ordered: mpsc::Sender<Delivery>,
    /// Datagrams, straight into the runtime's channel: the member takes the next datagram only
    /// after the previous one is queued, so they keep their order and back-pressure reaches the
    /// socket (where overflow shows as counted loss).
    runtime: mpsc::Sender<Delivery>,
}

/// A subscription's member handler: hands each event to the runtime and, for direct events,
/// answers the producer with the runtime's outcome.
struct SinkHandler {
    /// Taken when the subscription closes, which ends the runtime once it drained.
    sinks: Arc<Mutex<Option<Sinks>>>,
}

impl SinkHandler {
    /// Starts the task that forwards direct events in order; returns the handler.
    fn start(runtime: mpsc::Sender<Delivery>, capacity: usize) -> SinkHandler {
        let (ordered, mut queued) = mpsc::channel::<Delivery>(capacity.max(1));
        let forward = runtime.clone();
        tokio::spawn(async move {
            while let Some(delivery) = queued.recv().await {
                if let Err(mpsc::error::SendError(d)) = forward.send(delivery).await {
                    let _ = d.done.send(Outcome::Nack(CLOSING.to_string()));
                }
            }
        });
        SinkHandler {
            sinks: Arc::new(Mutex::new(Some(Sinks { ordered, runtime }))),
        }
    }
}

const CLOSING: &str = "the subscription is closing";

impl Handler for SinkHandler {
    fn on_event(&self, received: Received) -> MemberFuture<Result<(), MemberHandlerError>> {
        let Some(sinks) = self.sinks.lock().clone() else {
            return Box::pin(async { Err(MemberHandlerError::failed(CLOSING)) });
        };
        let datagram = received.mode == herald_direct::Mode::Datagram;
        let event = Event::from_wire(received.key, received.value, received.headers, None);
        let lane = lane_of(&event);
        let (done, outcome) = oneshot::channel();
        let delivery = Delivery { event, lane, done };
        if datagram {
            // Nobody waits for a datagram's outcome: handlers run in the runtime meanwhile.
            return Box::pin(async move {
                sinks
                    .runtime
                    .send(delivery)
                    .await
                    .map_err(|_| MemberHandlerError::failed(CLOSING))
            });
        }
        // Queued here, before the member reads its next frame, so one producer's events reach
        // the runtime (and each key's lane) in the order they were sent.
        if sinks.ordered.try_send(delivery).is_err() {
            return Box::pin(async { Err(MemberHandlerError::failed(CLOSING)) });
        }
        Box::pin(async move {
            match outcome.await {
                Ok(Outcome::Ack) => Ok(()),
                Ok(Outcome::Nack(message)) => Err(MemberHandlerError::Failed(message)),
                Err(_) => Err(MemberHandlerError::failed(
                    "the subscription ended before handling the event",
                )),
            }
        })
    }
}

/// A replier's member handler: runs the replier under the caller's deadline.
struct ReplierHandler {
    replier: Replier,
}

impl Handler for ReplierHandler {
    fn on_event(&self, _received: Received) -> MemberFuture<Result<(), MemberHandlerError>> {
        Box::pin(async {
            Err(MemberHandlerError::failed(
                "this member answers requests only",
            ))
        })
    }

    fn on_request(
        &self,
        request: Received,
        ctx: MemberRequestContext,
    ) -> MemberFuture<Result<Bytes, MemberHandlerError>> {
        let answer = self.answer(request, ctx);
        Box::pin(async move { answer.await.map(|reply| reply.value) })
    }

    fn answer(
        &self,
        request: Received,
        ctx: MemberRequestContext,
    ) -> MemberFuture<Result<herald_direct::Reply, MemberHandlerError>> {
        let replier = self.replier.clone();
        Box::pin(async move {
            let event = Event::from_wire(request.key, request.value, request.headers, None);
            // A panicking replier fails its request instead of leaving the caller to wait for
            // the deadline (and the member's slot for it taken forever).
            let run = std::panic::AssertUnwindSafe(replier(event, ctx.deadline()));
            match run.catch_unwind().await {
                // The reply travels as a whole event: its id, timestamp and correlation id in
                // the SDK's headers, as on every other transport.
                Ok(Ok(reply)) => Ok(herald_direct::Reply {
                    headers: reply.wire_headers(),
                    key: reply.key,
                    value: reply.payload,
                }),
                Ok(Err(e)) => Err(MemberHandlerError::failed(e.message())),
                Err(_) => Err(MemberHandlerError::failed("the replier panicked")),
            }
        })
    }
}

/// A running subscription or replier: one member.
struct MemberRunning {
    member: Option<Member>,
    sinks: Option<Arc<Mutex<Option<Sinks>>>>,
    self_peer: Option<SelfPeer>,
}

impl Running for MemberRunning {
    fn close(mut self: Box<Self>) -> BoxFuture<'static, Result<(), SubscribeError>> {
        Box::pin(async move {
            // The member refuses new events, waits for the handlers in flight (their outcomes
            // come from the runtime, which refuses what it has not started), sends its acks and
            // says goodbye; then the runtime's channel closes and it finishes.
            if let Some(member) = self.member.take() {
                member.shutdown().await;
            }
            if let Some(sinks) = self.sinks.take() {
                sinks.lock().take();
            }
            // The member is gone for good: its own bus stops trying to reach it.
            if let Some(peer) = self.self_peer.take() {
                let publisher = peer.publisher.lock().clone();
                if let Some(publisher) = publisher {
                    publisher.remove_peer(peer.addr);
                }
            }
            Ok(())
        })
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.member.as_ref().map(Member::local_addr)
    }

    fn datagram_loss(&self) -> Vec<DatagramLoss> {
        let Some(member) = &self.member else {
            return Vec::new();
        };
        member
            .datagram_publishers()
            .into_iter()
            .map(|p| DatagramLoss {
                publisher: p.publisher,
                received: p.received,
                lost: p.lost,
                duplicates: p.duplicates,
            })
            .collect()
    }
}
