//! The producer side: membership (static peers and mDNS), pooled pipelined connections with
//! heartbeats, flow control against advertised capacities, and the three ways to send:
//! direct publish (acked), datagrams, and requests.
//!
//! This module holds the public API and its configuration; `membership` keeps the member list
//! and chooses a member per delivery, `conn` runs one connection per member, and `datagram` owns
//! the UDP socket.

mod conn;
mod datagram;
mod membership;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{DatagramError, PublishError, PublisherStartError, RequestError};
use crate::event::{Message, Reply, system_to_instant, system_to_unix_ms};
use crate::frame::{self, NackReason, WireEvent};
use crate::handshake::GroupKey;
use crate::mdns::{self, Discovery};
use crate::member::DATAGRAM_PAYLOAD_BYTES_MAX_DEFAULT;
use crate::seal::{self, DatagramKey};
use crate::tls::PublisherTls;

pub use datagram::DATAGRAM_BATCH_MAX;
use datagram::{DatagramScratch, DatagramSocket};
use membership::{Slot, add_peer, deliver, remove_mdns};

/// How a producer finds and talks to members.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Members' TCP addresses (their UDP port has the same number).
    pub peers: Vec<SocketAddr>,
    /// Also browse mDNS-SD for members.
    pub mdns: bool,
    pub frame_bytes_max: usize,
    pub datagram_payload_bytes_max: usize,
    /// A ping goes out on a connection that has been quiet this long.
    pub heartbeat_interval_ms: u64,
    /// A connection that has been quiet this long is declared dead.
    pub heartbeat_timeout_ms: u64,
    /// Pause between attempts to (re)connect to a member that is down.
    pub reconnect_interval_ms: u64,
    pub connect_timeout_ms: u64,
    /// Longest wait for one member's ack before trying another member (capped by the deadline).
    pub attempt_timeout_ms: u64,
    /// Handler failures (nacks) tolerated per group before a publish gives up.
    pub attempts_max: u32,
    /// Frames queued per connection before senders wait.
    pub send_queue_frames_max: usize,
    /// Test hook: skip sending every Nth datagram to each member (its sequence number is used up,
    /// so the receiver counts exactly those as lost).
    pub drop_every_nth_datagram: Option<u64>,
    /// Topics whose datagrams are sealed, with their key: each datagram then carries the key's
    /// id, this publisher's id, a sequence number and a tag (see `docs/direct-protocol.md`).
    /// Datagrams of other topics go out unsealed.
    pub datagram_keys: HashMap<String, DatagramSeal>,
    /// The key of every topic not in `datagram_keys`; `None`: those go out unsealed.
    pub datagram_key_default: Option<DatagramSeal>,
    /// The group key: with it, this producer uses only members that prove they hold it, and
    /// proves it holds it to them (`docs/direct-protocol.md`, "Group key"); a member without
    /// it is refused. Without it, members that require a key refuse this producer.
    pub group_key: Option<GroupKey>,
    /// TLS: members must present a certificate from the configured CA; this producer presents
    /// its own if it has one (members refuse it otherwise).
    pub tls: Option<PublisherTls>,
}

/// How a topic's datagrams are sealed: the topic key, and whether the payload is encrypted
/// (XChaCha20-Poly1305) or only authenticated (HMAC-SHA256).
#[derive(Debug, Clone)]
pub struct DatagramSeal {
    pub key: DatagramKey,
    pub encrypt: bool,
}

impl PublisherConfig {
    pub fn new(peers: Vec<SocketAddr>) -> Self {
        PublisherConfig {
            peers,
            mdns: false,
            frame_bytes_max: frame::FRAME_BYTES_MAX_DEFAULT,
            datagram_payload_bytes_max: DATAGRAM_PAYLOAD_BYTES_MAX_DEFAULT,
            heartbeat_interval_ms: 500,
            heartbeat_timeout_ms: 2_000,
            reconnect_interval_ms: 200,
            connect_timeout_ms: 1_000,
            attempt_timeout_ms: 10_000,
            attempts_max: 8,
            send_queue_frames_max: 8192,
            drop_every_nth_datagram: None,
            datagram_keys: HashMap::new(),
            datagram_key_default: None,
            group_key: None,
            tls: None,
        }
    }
}

/// Where a member came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Static,
    Mdns,
}

/// A member's state as the producer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Never reached yet.
    Connecting,
    /// Connected, hello received; takes events.
    Up,
    /// Unreachable: connection lost, refused or heartbeat timed out. Retried in the background.
    Down,
    /// Said goodbye (or its mDNS record was withdrawn).
    Left,
}

/// One row of the membership view.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberView {
    pub addr: SocketAddr,
    pub source: Source,
    pub state: MemberState,
    pub member_id: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub capacity: u32,
    pub in_flight: u32,
    pub last_error: Option<String>,
}

/// What a successful direct publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub id: u128,
    /// Groups that acknowledged the event (every group serving the topic).
    pub groups: Vec<String>,
}

struct Shared {
    config: PublisherConfig,
    id: u128,
    seq: AtomicU64,
    /// Sequence numbers of sealed datagrams, one per datagram sent whatever its destination, so
    /// (publisher id, number) never repeats: it is the encryption nonce.
    sealed_seq: AtomicU64,
    members: Mutex<HashMap<SocketAddr, Slot>>,
    changed: Notify,
    udp: DatagramSocket,
    rr: AtomicUsize,
    /// Slots ever added to `members`, numbering each (`Slot::epoch`).
    slots_added: AtomicU64,
    /// Encoding buffer and target list of `send_datagram`, kept to avoid allocations per
    /// datagram. A call takes them out and puts them back; concurrent calls make their own.
    datagram_scratch: Mutex<DatagramScratch>,
}

struct Inner {
    shared: Arc<Shared>,
    mdns_daemon: Option<mdns_sd::ServiceDaemon>,
    mdns_task: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for slot in self.shared.members.lock().values_mut() {
            if let Some(task) = slot.task.take() {
                task.abort();
            }
        }
        if let Some(task) = self.mdns_task.take() {
            task.abort();
        }
        if let Some(daemon) = self.mdns_daemon.take() {
            let _ = daemon.shutdown();
        }
    }
}

/// A producer: publishes direct events and datagrams and sends requests to the members it knows.
///
/// Cloning is cheap; every clone shares the same connections and membership.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use herald_direct::{Message, Publisher, PublisherConfig};
/// use std::time::Duration;
/// let publisher = Publisher::start(PublisherConfig::new(vec!["127.0.0.1:7400".parse()?])).await?;
/// publisher.publish(Message::new("sms", "hello"), Duration::from_secs(2)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl Publisher {
    /// Starts connecting to the static peers (and browsing mDNS if asked). Returns at once;
    /// use [`Publisher::wait_for_topic`] to wait until members are known.
    pub async fn start(config: PublisherConfig) -> Result<Publisher, PublisherStartError> {
        let udp = DatagramSocket::bind().map_err(PublisherStartError::Udp)?;
        let shared = Arc::new(Shared {
            id: uuid::Uuid::new_v4().as_u128(),
            seq: AtomicU64::new(0),
            sealed_seq: AtomicU64::new(0),
            members: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            udp,
            rr: AtomicUsize::new(0),
            slots_added: AtomicU64::new(0),
            datagram_scratch: Mutex::new(DatagramScratch::default()),
            config,
        });
        for addr in shared.config.peers.clone() {
            add_peer(&shared, addr, Source::Static, None);
        }
        let (mdns_daemon, mdns_task) = if shared.config.mdns {
            let (tx, mut rx) = mpsc::channel(256);
            let daemon = mdns::browse(tx)?;
            let shared2 = shared.clone();
            let task = tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    match d {
                        Discovery::Found {
                            fullname,
                            addrs,
                            topic,
                        } => {
                            for addr in addrs {
                                tracing::info!(%addr, %topic, %fullname, "discovered a member with mDNS");
                                add_peer(&shared2, addr, Source::Mdns, Some(fullname.clone()));
                            }
                        }
                        Discovery::Removed { fullname } => remove_mdns(&shared2, &fullname),
                    }
                }
            });
            (Some(daemon), Some(task))
        } else {
            (None, None)
        };
        Ok(Publisher {
            inner: Arc::new(Inner {
                shared,
                mdns_daemon,
                mdns_task,
            }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// This producer's id, carried in every event as the publisher.
    pub fn id(&self) -> u128 {
        self.shared().id
    }

    /// Adds a member address at run time (it is used as soon as its hello arrives).
    pub fn add_peer(&self, addr: SocketAddr) {
        add_peer(self.shared(), addr, Source::Static, None);
    }

    /// Forgets a member address (one added with [`Publisher::add_peer`] whose member is gone for
    /// good, say): its connection closes, it is no longer retried, and its group no longer
    /// counts. Events awaiting its reply fail over to another member of the group.
    pub fn remove_peer(&self, addr: SocketAddr) {
        let shared = self.shared();
        let mut members = shared.members.lock();
        if let Some(mut slot) = members.remove(&addr) {
            tracing::info!(%addr, "member address removed");
            slot.retire();
        }
        drop(members);
        shared.changed.notify_waiters();
    }

    /// The membership view: every known member, its state, group and load.
    pub fn members(&self) -> Vec<MemberView> {
        let members = self.shared().members.lock();
        let mut view: Vec<MemberView> = members
            .iter()
            .map(|(addr, s)| MemberView {
                addr: *addr,
                source: s.source,
                state: s.state,
                member_id: s
                    .hello
                    .as_ref()
                    .map(|h| uuid::Uuid::from_u128(h.member_id).to_string()),
                topic: s.hello.as_ref().map(|h| h.topic.clone()),
                group: s.hello.as_ref().map(|h| h.group.clone()),
                capacity: s.hello.as_ref().map_or(0, |h| h.capacity),
                in_flight: s.in_flight,
                last_error: s.last_error.clone(),
            })
            .collect();
        view.sort_by_key(|v| v.addr);
        view
    }

    /// Waits until every static peer has been tried once (connected or failed), or the timeout
    /// passes; returns whether that happened.
    pub async fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared().changed.notified();
            if self.shared().static_settled() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// Waits until a member serving `topic` is up and every static peer has been tried once
    /// (so every group on the list is known), or the timeout passes; returns whether a member
    /// serving `topic` is up.
    pub async fn wait_for_topic(&self, topic: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared().changed.notified();
            let live = self.shared().has_live(topic);
            if live && self.shared().static_settled() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return live;
            }
        }
    }

    /// Publishes a direct event and returns once one member of every group serving the topic
    /// has handled and acknowledged it, or fails when `timeout` passes.
    pub async fn publish(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Receipt, PublishError> {
        self.publish_until(message, SystemTime::now() + timeout)
            .await
    }

    /// [`Publisher::publish`] with an absolute deadline.
    pub async fn publish_until(
        &self,
        message: Message,
        deadline: SystemTime,
    ) -> Result<Receipt, PublishError> {
        let shared = self.shared();
        let (event, at) = shared.direct_event(message, deadline)?;
        let groups = shared.groups_until(&event.topic, at).await.ok_or_else(|| {
            PublishError::NoLiveMember {
                topic: event.topic.clone(),
                group: None,
            }
        })?;
        let event = Arc::new(event);
        // A publish has no deadline of its own around the deliveries: they report themselves.
        let progress = AtomicU8::new(WAITING_FOR_MEMBER);
        let deliveries = groups
            .iter()
            .map(|g| deliver(shared, g, event.clone(), at, false, &progress));
        let results = futures::future::join_all(deliveries).await;
        for result in results {
            result?;
        }
        Ok(Receipt {
            id: event.id,
            groups: groups.into_iter().collect(),
        })
    }

    /// Sends a request to one member of a group serving the topic and waits for its response.
    pub async fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        self.request_until(message, SystemTime::now() + timeout)
            .await
    }

    /// [`Publisher::request`] with an absolute deadline: a handler making nested requests passes
    /// its [`crate::RequestContext::deadline`] here so the chain never outlives the first caller.
    pub async fn request_until(
        &self,
        message: Message,
        deadline: SystemTime,
    ) -> Result<Bytes, RequestError> {
        self.request_reply_until(message, deadline)
            .await
            .map(|reply| reply.value)
    }

    /// [`Publisher::request`] returning the whole [`Reply`]: its value, key and headers.
    pub async fn request_reply(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        self.request_reply_until(message, SystemTime::now() + timeout)
            .await
    }

    /// [`Publisher::request_until`] returning the whole [`Reply`]: its value, key and headers
    /// (a member older than replies with headers sends the value alone).
    pub async fn request_reply_until(
        &self,
        message: Message,
        deadline: SystemTime,
    ) -> Result<Reply, RequestError> {
        let shared = self.shared();
        let (event, at) = shared.direct_event(message, deadline)?;
        let topic = event.topic.clone();
        let progress = AtomicU8::new(WAITING_FOR_MEMBER);
        // The whole call is bounded by the deadline, whatever the members do.
        let work = async {
            let groups = shared.groups_until(&topic, at).await.ok_or_else(|| {
                RequestError::NoLiveMember {
                    topic: topic.clone(),
                }
            })?;
            let group = groups.iter().next().cloned().unwrap_or_default();
            match deliver(shared, &group, Arc::new(event), at, true, &progress).await {
                Ok(Some(reply)) => Ok(reply),
                Ok(None) => Err(RequestError::Failed("no response".into())),
                Err(PublishError::NoLiveMember { .. }) => Err(RequestError::NoLiveMember {
                    topic: topic.clone(),
                }),
                Err(PublishError::BackPressure { .. }) => Err(RequestError::BackPressure {
                    topic: topic.clone(),
                }),
                Err(PublishError::Nacked {
                    reason: NackReason::DeadlineExceeded,
                    ..
                })
                | Err(PublishError::Timeout { .. }) => Err(RequestError::DeadlineExceeded),
                Err(PublishError::Nacked { message, .. }) => Err(RequestError::Failed(message)),
                Err(other) => Err(RequestError::Failed(other.to_string())),
            }
        };
        match tokio::time::timeout_at(at, work).await {
            // A failure reported within the deadline's last millisecond (the wire's resolution)
            // comes from a nested call that hit the same deadline.
            Ok(Err(RequestError::Failed(_))) if Instant::now() + Duration::from_millis(1) >= at => {
                Err(RequestError::DeadlineExceeded)
            }
            Ok(result) => result,
            // The waits inside end at the same instant as this one, and either may be seen
            // first: say what the request was still waiting for, as a publish would.
            Err(_) => Err(match progress.load(Ordering::Relaxed) {
                WAITING_FOR_MEMBER => RequestError::NoLiveMember { topic },
                WAITING_FOR_ROOM => RequestError::BackPressure { topic },
                _ => RequestError::DeadlineExceeded,
            }),
        }
    }
}

/// What a delivery is waiting for, so a caller whose own deadline fires first can say why:
/// a live member of the group, room on one, or the reply of one it sent to.
const WAITING_FOR_MEMBER: u8 = 0;
const WAITING_FOR_ROOM: u8 = 1;
const WAITING_FOR_REPLY: u8 = 2;

/// Why a message cannot be sent whatever the members do: the part of every send's checks that
/// is the same for publish, request and datagrams. Each converts into that operation's error.
enum Unsendable {
    Invalid(String),
    TooLarge { bytes: usize, limit: usize },
}

impl From<Unsendable> for PublishError {
    fn from(e: Unsendable) -> Self {
        match e {
            Unsendable::Invalid(message) => PublishError::Invalid(message),
            Unsendable::TooLarge { bytes, limit } => PublishError::TooLarge { bytes, limit },
        }
    }
}

impl From<Unsendable> for RequestError {
    fn from(e: Unsendable) -> Self {
        match e {
            Unsendable::Invalid(message) => RequestError::Invalid(message),
            Unsendable::TooLarge { bytes, limit } => RequestError::TooLarge { bytes, limit },
        }
    }
}

impl From<Unsendable> for DatagramError {
    fn from(e: Unsendable) -> Self {
        match e {
            Unsendable::Invalid(message) => DatagramError::Invalid(message),
            Unsendable::TooLarge { bytes, limit } => DatagramError::TooLarge { bytes, limit },
        }
    }
}

fn validate(message: &Message) -> Result<(), Unsendable> {
    if message.topic.is_empty() || message.topic.len() > 255 {
        return Err(Unsendable::Invalid("topic must be 1..=255 bytes".into()));
    }
    if message.headers.len() > frame::HEADERS_MAX {
        return Err(Unsendable::Invalid(format!(
            "at most {} headers",
            frame::HEADERS_MAX
        )));
    }
    if message.headers.iter().any(|(k, _)| k.len() > 255) {
        return Err(Unsendable::Invalid(
            "header names must be at most 255 bytes".into(),
        ));
    }
    Ok(())
}

impl Shared {
    /// The checks every send makes first, and the event it sends: `message` validated, given
    /// its id and `deadline` (none for a datagram), and its frame within `limit` bytes.
    fn prepare(
        &self,
        message: Message,
        deadline: Option<SystemTime>,
        limit: usize,
    ) -> Result<WireEvent, Unsendable> {
        validate(&message)?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let event = WireEvent {
            // Unique without a random draw per event: this publisher's random id in the high
            // half, its sequence number in the low half.
            id: (self.id << 64) | seq as u128,
            publisher: self.id,
            seq,
            deadline_unix_ms: deadline.map_or(0, system_to_unix_ms),
            topic: message.topic,
            key: message.key,
            value: message.value,
            headers: message.headers,
        };
        let bytes = frame::event_frame_len(&event);
        if bytes > limit {
            return Err(Unsendable::TooLarge { bytes, limit });
        }
        Ok(event)
    }

    /// [`Shared::prepare`] for a direct event or request (a frame within `frame_bytes_max`),
    /// with the monotonic instant of its deadline.
    fn direct_event(
        &self,
        message: Message,
        deadline: SystemTime,
    ) -> Result<(WireEvent, Instant), Unsendable> {
        let event = self.prepare(message, Some(deadline), self.config.frame_bytes_max)?;
        Ok((event, Instant::from_std(system_to_instant(deadline))))
    }

    /// [`Shared::prepare`] for a datagram: no deadline, within `datagram_payload_bytes_max`.
    /// A sealed datagram is larger than its frame by the envelope, which the limit leaves room
    /// for (and the error reports whole datagrams).
    fn datagram_event(&self, message: Message) -> Result<WireEvent, Unsendable> {
        let limit = self.config.datagram_payload_bytes_max;
        if self.sealing(&message.topic).is_none() {
            return self.prepare(message, None, limit);
        }
        // The envelope replaces the frame's length prefix with its own header and adds a tag.
        let overhead = seal::sealed_len(0) - frame::LENGTH_PREFIX_BYTES;
        self.prepare(message, None, limit.saturating_sub(overhead))
            .map_err(|e| match e {
                Unsendable::TooLarge { bytes, .. } => Unsendable::TooLarge {
                    bytes: bytes + overhead,
                    limit,
                },
                other => other,
            })
    }

    /// How datagrams of `topic` are sealed, if they are.
    fn sealing(&self, topic: &str) -> Option<&DatagramSeal> {
        self.config
            .datagram_keys
            .get(topic)
            .or(self.config.datagram_key_default.as_ref())
    }

    /// Appends one datagram of `event` to `out`: its EVENT frame, sealed when its topic has a
    /// key (`scratch` holds the frame meanwhile).
    fn encode_datagram(&self, event: &WireEvent, scratch: &mut BytesMut, out: &mut BytesMut) {
        match self.sealing(&event.topic) {
            None => frame::encode_event(event, false, out),
            Some(sealing) => {
                scratch.clear();
                frame::encode_event(event, false, scratch);
                let seq = self.sealed_seq.fetch_add(1, Ordering::Relaxed) + 1;
                seal::seal(
                    &sealing.key,
                    sealing.encrypt,
                    self.id,
                    seq,
                    system_to_unix_ms(SystemTime::now()),
                    &scratch[frame::LENGTH_PREFIX_BYTES..],
                    out,
                );
            }
        }
    }
}
