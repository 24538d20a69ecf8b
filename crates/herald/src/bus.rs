//! The bus: one handle for publish, subscribe and request, whatever the transport.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::OnceCell;

use crate::codec::CodecError;
use crate::error::{ConnectError, HandlerError, PublishError, RequestError, SubscribeError};
use crate::event::{Event, EventId};
use crate::receipt::Receipt;
use crate::reply::ReplyInbox;
use crate::runtime::{self, HandlerFn, RetryPolicy, Subscription};
use crate::transport::{BoxFuture, Replier, StartFrom, SubscribeSpec, Transport, TransportKind};

/// Default time a publish may take before it fails with a timeout.
pub const PUBLISH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// SASL mechanism of a `broker+sasl` URL without `mechanism=`.
pub const SASL_MECHANISM_DEFAULT: &str = "SCRAM-SHA-512";
/// Default deadline of a request that does not set one.
pub const REQUEST_DEADLINE_DEFAULT: Duration = Duration::from_secs(10);
/// Default number of events a subscription handles at once (events of one key never overlap).
pub const CONCURRENCY_DEFAULT: usize = 8;
/// Largest concurrency a subscription may ask for.
pub const CONCURRENCY_MAX: usize = 4096;

/// How a bus is set up; built by [`BusBuilder`] or parsed from a URL.
#[derive(Debug, Clone)]
pub(crate) struct BusConfig {
    pub kind: TransportKind,
    /// Broker: the bootstrap list. Memory: the shared bus name ("" for a private one).
    pub target: String,
    /// Direct and datagram: static peers.
    pub peers: Vec<SocketAddr>,
    /// Direct and datagram: discover members with mDNS-SD (and announce subscriptions).
    pub mdns: bool,
    /// Transport options: librdkafka properties on the broker (`acks`, `compression.type`, ...).
    pub options: BTreeMap<String, String>,
    pub publish_timeout: Duration,
}

/// Builds a [`Bus`].
///
/// ```
/// # async fn f() -> Result<(), herald::ConnectError> {
/// let bus = herald::Bus::builder()
///     .broker("127.0.0.1:9092")
///     .option("compression.type", "zstd")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BusBuilder {
    config: BusConfig,
}

impl BusBuilder {
    /// In-process transport with the same semantics as the broker (stored, groups, offsets,
    /// dead letters), for tests. Buses built with the same non-empty `name` share topics.
    pub fn memory(mut self, name: &str) -> Self {
        self.config.kind = TransportKind::Memory;
        self.config.target = name.to_string();
        self
    }

    /// Kafka protocol through librdkafka: a Herald broker or any Kafka-compatible cluster.
    pub fn broker(mut self, bootstrap: &str) -> Self {
        self.config.kind = TransportKind::Broker;
        self.config.target = bootstrap.to_string();
        self
    }

    /// Brokerless, acknowledged after a consumer of every group handled the event.
    pub fn direct(mut self) -> Self {
        self.config.kind = TransportKind::Direct;
        self
    }

    /// Brokerless UDP, at most once.
    pub fn datagram(mut self) -> Self {
        self.config.kind = TransportKind::Datagram;
        self
    }

    /// Direct and datagram: static member addresses.
    pub fn peers(mut self, peers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.config.peers.extend(peers);
        self
    }

    /// Direct and datagram: find members with mDNS-SD, and announce this bus's subscriptions.
    pub fn mdns(mut self, on: bool) -> Self {
        self.config.mdns = on;
        self
    }

    /// A transport option (on the broker, any librdkafka property).
    pub fn option(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.options.insert(name.into(), value.into());
        self
    }

    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = timeout;
        self
    }

    pub async fn connect(self) -> Result<Bus, ConnectError> {
        let config = self.config;
        let transport: Arc<dyn Transport> = match config.kind {
            TransportKind::Memory => crate::memory::connect(&config)?,
            TransportKind::Broker => crate::broker::connect(&config).await?,
            TransportKind::Direct | TransportKind::Datagram => {
                crate::direct::connect(&config).await?
            }
        };
        Ok(Bus {
            inner: Arc::new(BusInner {
                id: EventId::new(),
                transport,
                config,
                inbox: OnceCell::new(),
            }),
        })
    }
}

struct BusInner {
    id: EventId,
    transport: Arc<dyn Transport>,
    config: BusConfig,
    /// Replies to this bus's requests over a stored transport, started by the first request.
    inbox: OnceCell<Arc<ReplyInbox>>,
}

impl Drop for BusInner {
    fn drop(&mut self) {
        if let Some(inbox) = self.inbox.take() {
            inbox.abort();
        }
    }
}

/// A handle on one transport for publishing, subscribing and requesting. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// use herald::{Bus, Event};
/// let bus = Bus::connect("memory://").await?;
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let sub = bus
///     .subscribe("greetings")
///     .group("printer")
///     .handle(move |event: Event| {
///         let tx = tx.clone();
///         async move {
///             tx.send(event.payload).ok();
///             Ok(())
///         }
///     })
///     .await?;
/// let receipt = bus.publish("greetings", Event::new("hello")).await?;
/// assert_eq!(receipt.kind(), "stored");
/// assert_eq!(rx.recv().await.unwrap(), "hello");
/// sub.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("id", &self.inner.id)
            .field("transport", &self.inner.config.kind)
            .field("target", &self.inner.config.target)
            .finish()
    }
}

impl Bus {
    pub fn builder() -> BusBuilder {
        BusBuilder {
            config: BusConfig {
                kind: TransportKind::Memory,
                target: String::new(),
                peers: Vec::new(),
                mdns: false,
                options: BTreeMap::new(),
                publish_timeout: PUBLISH_TIMEOUT_DEFAULT,
            },
        }
    }

    /// A bus from a URL:
    ///
    /// | URL | transport |
    /// |---|---|
    /// | `memory://` / `memory://NAME` | in-process; a private bus, or one shared by name |
    /// | `broker://HOST:PORT[,HOST:PORT]` (or `kafka://`) | Kafka protocol |
    /// | `broker+ssl://HOST:PORT?ca=PATH[&cert=PATH&key=PATH]` | Kafka protocol over TLS |
    /// | `broker+sasl://USER@HOST:PORT?password_file=PATH[&mechanism=M]` | SASL (SCRAM-SHA-512 unless `mechanism` says otherwise: SCRAM-SHA-256, PLAIN) |
    /// | `broker+sasl_ssl://USER@HOST:PORT?password_file=PATH&ca=PATH` | SASL over TLS |
    /// | `direct://HOST:PORT[,HOST:PORT]` / `direct://mdns` | brokerless, acknowledged |
    /// | `direct+tls://HOST:PORT?ca=PATH&cert=PATH&key=PATH[&server_name=NAME]` | direct over TLS, certificates from one CA on both sides |
    /// | `datagram://HOST:PORT[,...]` / `datagram://mdns` | brokerless UDP |
    ///
    /// Query parameters are transport options (`broker://h:9092?acks=1`), except
    /// `publish_timeout_ms` and `mdns=true` (peers and mDNS together). Direct and datagram also
    /// take `group_key_file=PATH` (a group key: members and producers prove they hold it),
    /// `topic_key_file=PATH` or `topic_key_file.TOPIC=PATH` (datagrams sealed with a topic
    /// key) and `encrypt=true` (sealed datagrams encrypted too). Keys and passwords are read
    /// from files; `docs/direct-protocol.md` and `docs/security.md` describe them.
    pub async fn connect(url: &str) -> Result<Bus, ConnectError> {
        Self::builder_from_url(url)?.connect().await
    }

    /// The builder a URL describes, to adjust before connecting.
    pub fn builder_from_url(url: &str) -> Result<BusBuilder, ConnectError> {
        let bad = |reason: &str| ConnectError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected SCHEME://..."))?;
        let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut b = Bus::builder();
        b = match scheme {
            "memory" => b.memory(target),
            "broker" | "kafka" | "broker+ssl" | "broker+sasl" | "broker+sasl_ssl" => {
                // SASL URLs name the user before the hosts: `broker+sasl://alice@h:9092`.
                let (user, hosts) = match target.rsplit_once('@') {
                    Some((user, hosts)) if scheme.contains("sasl") => (Some(user), hosts),
                    Some(_) => return Err(bad("only broker+sasl URLs name a user")),
                    None => (None, target),
                };
                if hosts.is_empty() {
                    return Err(bad("a broker URL needs HOST:PORT"));
                }
                b = b.broker(hosts);
                if let Some(protocol) = match scheme {
                    "broker+ssl" => Some("SSL"),
                    "broker+sasl" => Some("SASL_PLAINTEXT"),
                    "broker+sasl_ssl" => Some("SASL_SSL"),
                    _ => None,
                } {
                    b = b.option("security.protocol", protocol);
                }
                if scheme.contains("sasl") {
                    let user = user.ok_or_else(|| bad("a SASL URL needs USER@HOST:PORT"))?;
                    b = b
                        .option("sasl.username", user)
                        .option("sasl.mechanisms", SASL_MECHANISM_DEFAULT);
                }
                b
            }
            "direct" => b.direct(),
            "direct+tls" => b.direct().option(crate::direct::OPTION_TLS, "true"),
            "datagram" => b.datagram(),
            _ => {
                return Err(bad(
                    "the scheme must be memory, broker, kafka, broker+ssl, broker+sasl, \
                     broker+sasl_ssl, direct, direct+tls or datagram",
                ));
            }
        };
        let secure_broker = scheme.starts_with("broker+");
        if matches!(scheme, "direct" | "direct+tls" | "datagram") {
            if target == "mdns" {
                b = b.mdns(true);
            } else if !target.is_empty() {
                for peer in target.split(',') {
                    let addr = resolve(peer)
                        .ok_or_else(|| bad(&format!("{peer:?} is not a HOST:PORT address")))?;
                    b = b.peers([addr]);
                }
            }
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            b = match name {
                "publish_timeout_ms" => {
                    let ms: u64 = value.parse().map_err(|_| ConnectError::BadOption {
                        name: name.to_string(),
                        reason: "expected milliseconds".to_string(),
                    })?;
                    b.publish_timeout(Duration::from_millis(ms))
                }
                "mdns" => b.mdns(value == "true" || value == "1"),
                // The short names of a secured broker URL, as librdkafka properties; the
                // password file is read when the bus connects (`broker/mod.rs`).
                "mechanism" if secure_broker => b.option("sasl.mechanisms", value),
                "ca" if secure_broker => b.option("ssl.ca.location", value),
                "cert" if secure_broker => b.option("ssl.certificate.location", value),
                "key" if secure_broker => b.option("ssl.key.location", value),
                _ => b.option(name, value),
            };
        }
        Ok(b)
    }

    pub fn transport(&self) -> TransportKind {
        self.inner.transport.kind()
    }

    /// This bus instance's id (it names the reply topic of requests over a stored transport).
    pub fn id(&self) -> EventId {
        self.inner.id
    }

    /// Direct and datagram: the id this bus's publisher puts in every event it sends, which
    /// receivers use to count datagram loss per publisher ([`crate::DatagramLoss::publisher`]).
    /// `None` on other transports and once the bus is closed.
    pub fn publisher_id(&self) -> Option<String> {
        self.inner.transport.publisher_id()
    }

    /// Direct and datagram: the consumer groups serving `topic` that this bus reaches right now
    /// (one of their members is connected), sorted. Members are found as peers answer or mDNS
    /// announces them, so a program may wait for the groups it expects before it starts.
    /// `None` on the broker and memory, where producers know nothing of consumers.
    pub fn reachable_groups(&self, topic: &str) -> Option<Vec<String>> {
        self.inner.transport.reachable_groups(topic)
    }

    pub(crate) fn transport_handle(&self) -> &Arc<dyn Transport> {
        &self.inner.transport
    }

    /// Publishes `event` on `topic`. The receipt says what completed: *stored* (broker, memory),
    /// *handled* (direct) or *sent* (datagram). Fails after the bus's publish timeout.
    pub async fn publish(&self, topic: &str, event: Event) -> Result<Receipt, PublishError> {
        let deadline = SystemTime::now() + self.inner.config.publish_timeout;
        self.publish_until(topic, event, deadline).await
    }

    /// [`Bus::publish`] with an absolute deadline.
    pub async fn publish_until(
        &self,
        topic: &str,
        event: Event,
        deadline: SystemTime,
    ) -> Result<Receipt, PublishError> {
        check_topic(topic).map_err(PublishError::Invalid)?;
        let span = tracing::debug_span!("herald.publish", topic, id = %event.id);
        let _enter = span.enter();
        self.inner.transport.publish(topic, event, deadline).await
    }

    /// Publishes `value` as a JSON event.
    pub async fn publish_json<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Receipt, PublishError> {
        let event = Event::json(value).map_err(|e| PublishError::Invalid(e.to_string()))?;
        self.publish(topic, event).await
    }

    /// Publishes the outcome of handling `input` on `topic`: an event correlated to `input`
    /// (see [`Event::result_of`]) whose payload is `result` in JSON. A producer that consumes
    /// `topic` learns what happened to its event without calling anyone.
    pub async fn publish_result<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        input: &Event,
        result: &T,
    ) -> Result<Receipt, PublishError> {
        let encoded = Event::json(result).map_err(|e| PublishError::Invalid(e.to_string()))?;
        let mut event = Event::result_of(input, encoded.payload);
        event.headers = encoded.headers;
        self.publish(topic, event).await
    }

    /// Starts describing a subscription to `topic`; finish it with [`SubscribeBuilder::handle`].
    pub fn subscribe(&self, topic: &str) -> SubscribeBuilder {
        SubscribeBuilder {
            bus: self.clone(),
            topic: topic.to_string(),
            group: None,
            concurrency: CONCURRENCY_DEFAULT,
            retry: RetryPolicy::default(),
            dead_letter: DeadLetter::Default,
            start_from: StartFrom::default(),
            bind: None,
        }
    }

    /// Starts describing a request on `topic`; await it (after an optional
    /// [`RequestBuilder::deadline`]) for the reply.
    pub fn request(&self, topic: &str, event: Event) -> RequestBuilder {
        RequestBuilder {
            bus: self.clone(),
            topic: topic.to_string(),
            event,
            deadline: None,
        }
    }

    /// Starts describing a replier for requests on `topic`; finish it with [`ServeBuilder::reply`].
    pub fn serve(&self, topic: &str) -> ServeBuilder {
        ServeBuilder {
            sub: self.subscribe(topic),
        }
    }

    /// Closes the transport's connections. Publishing afterwards fails with `Closed`.
    pub async fn close(&self) {
        if let Some(inbox) = self.inner.inbox.get() {
            inbox.abort();
        }
        self.inner.transport.close().await;
    }

    async fn inbox(&self) -> Result<&Arc<ReplyInbox>, RequestError> {
        self.inner
            .inbox
            .get_or_try_init(|| ReplyInbox::start(self.clone()))
            .await
    }
}

fn resolve(peer: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    peer.to_socket_addrs().ok()?.next()
}

/// Topic names as Kafka allows them, so a name works on every transport.
pub(crate) fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err(format!(
            "topic name {topic:?} must have 1 to 249 characters"
        ));
    }
    if topic == "." || topic == ".." {
        return Err(format!("topic name {topic:?} is not allowed"));
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "topic name {topic:?} may contain only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Where events go that a handler could not handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetter {
    /// The transport's default: `<topic>.dlq` on the broker and memory; on direct, the event is
    /// refused back to the producer, whose publish fails with the handler's error.
    Default,
    /// This topic.
    Topic(String),
    /// Refuse the event instead: stored transports redeliver it later (after a restart or a
    /// rebalance), direct fails over to another member.
    Refuse,
}

/// Describes a subscription. Events are acknowledged only after the handler returned `Ok`.
pub struct SubscribeBuilder {
    bus: Bus,
    topic: String,
    group: Option<String>,
    concurrency: usize,
    retry: RetryPolicy,
    dead_letter: DeadLetter,
    start_from: StartFrom,
    bind: Option<SocketAddr>,
}

impl SubscribeBuilder {
    /// The consumer group: every group gets every event; within a group each event goes to one
    /// subscriber. Defaults to the topic name.
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.to_string());
        self
    }

    /// Events handled at once (default 8). Events with the same key are never handled at the
    /// same time and keep their order.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.clamp(1, CONCURRENCY_MAX);
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    pub fn dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.dead_letter = dead_letter;
        self
    }

    /// Where a group that never committed starts (stored transports; default earliest).
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start_from = start;
        self
    }

    /// Direct and datagram: the address to serve on (default: any free port on all interfaces).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    fn spec(&self) -> Result<SubscribeSpec, SubscribeError> {
        check_topic(&self.topic).map_err(SubscribeError::Invalid)?;
        let group = self.group.clone().unwrap_or_else(|| self.topic.clone());
        if group.is_empty() {
            return Err(SubscribeError::Invalid("empty group name".to_string()));
        }
        Ok(SubscribeSpec {
            topic: self.topic.clone(),
            group,
            start_from: self.start_from,
            in_flight_max: self.concurrency * 4,
            bind: self.bind,
        })
    }

    fn dead_letter_topic(&self) -> Option<String> {
        match &self.dead_letter {
            DeadLetter::Default => self.bus.inner.transport.dead_letter_default(&self.topic),
            DeadLetter::Topic(t) => Some(t.clone()),
            DeadLetter::Refuse => None,
        }
    }

    /// Starts handling events with `handler`. `Ok` acknowledges the event (commits it on the
    /// broker); `Err` retries it with backoff, then dead-letters it.
    pub async fn handle<F, Fut>(self, handler: F) -> Result<Subscription, SubscribeError>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let spec = self.spec()?;
        let dead_letter = self.dead_letter_topic();
        let handler: HandlerFn = Arc::new(move |e| Box::pin(handler(e)));
        runtime::start(
            self.bus.inner.transport.clone(),
            spec,
            self.concurrency,
            self.retry,
            dead_letter,
            handler,
        )
        .await
    }

    /// Like [`SubscribeBuilder::handle`], decoding each payload from JSON first. A payload that
    /// does not decode is a permanent failure: it is dead-lettered without retries.
    pub async fn handle_json<T, F, Fut>(self, handler: F) -> Result<Subscription, SubscribeError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(T, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.handle(move |event: Event| {
            let handler = handler.clone();
            async move {
                let value: T = event
                    .decode_json()
                    .map_err(|e: CodecError| HandlerError::permanent(e.to_string()))?;
                handler(value, event).await
            }
        })
        .await
    }
}

/// Describes a request; `.await` it for the reply event.
pub struct RequestBuilder {
    bus: Bus,
    topic: String,
    event: Event,
    deadline: Option<SystemTime>,
}

impl RequestBuilder {
    /// The time the whole request (and every request its replier makes) must finish in. Like
    /// [`RequestBuilder::deadline_at`], it can only shorten a deadline already set.
    pub fn deadline(self, within: Duration) -> Self {
        self.deadline_at(SystemTime::now() + within)
    }

    /// An absolute deadline; a later one than already set is ignored, so a chain never outlives
    /// its first caller.
    pub fn deadline_at(mut self, at: SystemTime) -> Self {
        self.deadline = Some(match self.deadline {
            Some(d) if d < at => d,
            _ => at,
        });
        self
    }

    async fn send(self) -> Result<Event, RequestError> {
        check_topic(&self.topic).map_err(|m| RequestError::Publish(PublishError::Invalid(m)))?;
        let deadline = self
            .deadline
            .unwrap_or_else(|| SystemTime::now() + REQUEST_DEADLINE_DEFAULT);
        if deadline <= SystemTime::now() {
            return Err(RequestError::DeadlineExceeded);
        }
        let span = tracing::debug_span!("herald.request", topic = %self.topic, id = %self.event.id);
        let _enter = span.enter();
        let transport = &self.bus.inner.transport;
        if let Some(native) = transport.native_requests() {
            return native.request(&self.topic, self.event, deadline).await;
        }
        let inbox = self.bus.inbox().await?;
        inbox
            .request(&self.bus, &self.topic, self.event, deadline)
            .await
    }
}

impl IntoFuture for RequestBuilder {
    type Output = Result<Event, RequestError>;
    type IntoFuture = BoxFuture<'static, Result<Event, RequestError>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// What a replier knows about the request it answers; nested requests made through it inherit
/// the caller's deadline.
#[derive(Clone, Debug)]
pub struct RequestContext {
    bus: Bus,
    deadline: SystemTime,
}

impl RequestContext {
    pub fn deadline(&self) -> SystemTime {
        self.deadline
    }

    /// Time left before the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        herald_direct::event::remaining(self.deadline)
    }

    /// A request on the same bus bounded by this request's deadline.
    pub fn request(&self, topic: &str, event: Event) -> RequestBuilder {
        self.bus.request(topic, event).deadline_at(self.deadline)
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

/// Describes a replier.
pub struct ServeBuilder {
    sub: SubscribeBuilder,
}

impl ServeBuilder {
    /// The group of repliers; each request goes to one of them. Defaults to the topic name.
    pub fn group(mut self, group: &str) -> Self {
        self.sub = self.sub.group(group);
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.sub = self.sub.concurrency(n);
        self
    }

    /// Direct: the address to serve on.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.sub = self.sub.bind(addr);
        self
    }

    /// Starts answering requests with `replier`. Its `Ok` event is the reply (correlated to the
    /// request by the bus); its `Err` reaches the caller as [`RequestError::Failed`]. Requests
    /// whose deadline passed before they were taken are not handled.
    pub async fn reply<F, Fut>(self, replier: F) -> Result<Subscription, SubscribeError>
    where
        F: Fn(Event, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Event, HandlerError>> + Send + 'static,
    {
        let spec = self.sub.spec()?;
        let bus = self.sub.bus.clone();
        let ctx_bus = bus.clone();
        let replier: Replier = Arc::new(move |event, deadline| {
            let ctx = RequestContext {
                bus: ctx_bus.clone(),
                deadline,
            };
            Box::pin(replier(event, ctx))
        });
        let transport = bus.inner.transport.clone();
        if let Some(native) = transport.native_requests() {
            let running = native.serve(spec, replier).await?;
            return Ok(Subscription::without_runtime(running));
        }
        crate::reply::serve(bus, spec, self.sub.concurrency, replier).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_builders() {
        let b =
            Bus::builder_from_url("broker://a:9092,b:9092?acks=1&publish_timeout_ms=500").unwrap();
        assert_eq!(b.config.kind, TransportKind::Broker);
        assert_eq!(b.config.target, "a:9092,b:9092");
        assert_eq!(b.config.options.get("acks").map(String::as_str), Some("1"));
        assert_eq!(b.config.publish_timeout, Duration::from_millis(500));

        let b = Bus::builder_from_url("direct://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(b.config.peers.len(), 2);
        assert!(!b.config.mdns);
        let b = Bus::builder_from_url("datagram://mdns").unwrap();
        assert!(b.config.mdns);
        assert_eq!(b.config.kind, TransportKind::Datagram);

        for bad in ["nope", "ftp://x", "broker://", "direct://not-an-address"] {
            assert!(Bus::builder_from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secured_urls_parse_into_librdkafka_properties_and_direct_options() {
        let option = |b: &BusBuilder, name: &str| b.config.options.get(name).cloned();
        let b = Bus::builder_from_url(
            "broker+sasl_ssl://alice@h:9093?mechanism=SCRAM-SHA-256&password_file=/p&ca=/ca.pem",
        )
        .unwrap();
        assert_eq!(b.config.kind, TransportKind::Broker);
        assert_eq!(b.config.target, "h:9093");
        assert_eq!(option(&b, "security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(option(&b, "sasl.username").as_deref(), Some("alice"));
        assert_eq!(
            option(&b, "sasl.mechanisms").as_deref(),
            Some("SCRAM-SHA-256")
        );
        assert_eq!(option(&b, "ssl.ca.location").as_deref(), Some("/ca.pem"));
        assert_eq!(option(&b, "password_file").as_deref(), Some("/p"));
        assert_eq!(option(&b, "sasl.password"), None, "never in the URL");

        let b = Bus::builder_from_url("broker+sasl://bob@h:9092,i:9092?password_file=/p").unwrap();
        assert_eq!(b.config.target, "h:9092,i:9092");
        assert_eq!(
            option(&b, "security.protocol").as_deref(),
            Some("SASL_PLAINTEXT")
        );
        assert_eq!(
            option(&b, "sasl.mechanisms").as_deref(),
            Some("SCRAM-SHA-512")
        );

        let b =
            Bus::builder_from_url("broker+ssl://h:9093?ca=/ca.pem&cert=/c.pem&key=/k.pem").unwrap();
        assert_eq!(option(&b, "security.protocol").as_deref(), Some("SSL"));
        assert_eq!(
            option(&b, "ssl.certificate.location").as_deref(),
            Some("/c.pem")
        );
        assert_eq!(option(&b, "ssl.key.location").as_deref(), Some("/k.pem"));
        assert_eq!(option(&b, "sasl.username"), None);

        let b =
            Bus::builder_from_url("direct+tls://127.0.0.1:7000?ca=/ca.pem&cert=/c&key=/k").unwrap();
        assert_eq!(b.config.kind, TransportKind::Direct);
        assert_eq!(b.config.peers.len(), 1);
        assert_eq!(option(&b, "tls").as_deref(), Some("true"));
        assert_eq!(option(&b, "ca").as_deref(), Some("/ca.pem"));

        for bad in [
            "broker+sasl://h:9092",
            "broker+ssl://alice@h:9092",
            "broker+sasl://a@",
        ] {
            assert!(Bus::builder_from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic("sms.dlq").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("a b").is_err());
        assert!(check_topic(&"x".repeat(250)).is_err());
    }
}
