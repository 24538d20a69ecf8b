//! The producer side: membership (static peers and mDNS), pooled pipelined connections with
//! heartbeats, flow control against advertised capacities, and the three ways to send:
//! direct publish (acked), datagrams, and requests.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{DatagramError, PublishError, RequestError};
use crate::event::{Message, Reply, system_to_instant, system_to_unix_ms};
use crate::frame::{self, Frame, Hello, NackReason, WireEvent};
use crate::mdns::{self, Discovery};
use crate::member::DATAGRAM_PAYLOAD_BYTES_MAX_DEFAULT;

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

/// Who may write to a connection. While nothing is queued for the writer task and no other event
/// awaits its reply, a publishing task writes its event itself (one non-blocking write under this lock, so frames never
/// interleave), which saves the hop to the writer task on the latency path. Whatever a
/// non-blocking write leaves unwritten is queued ahead of everything else, so a frame is never
/// left half-written even if the publishing task is then dropped.
#[derive(Default)]
struct WriteState {
    /// Frames handed to the writer task and not yet completely written.
    queued: usize,
    /// Encoding buffer of the inline path, kept to avoid an allocation per event.
    scratch: BytesMut,
}

/// What an inline write attempt did.
enum Inline {
    /// The frame is on its way (written, or its unwritten rest queued first in line).
    Sent,
    /// Nothing was written: the writer task is busy or the socket is full; queue it instead.
    Queue,
    /// The writer task has ended: the connection is gone.
    Closed,
}

impl Conn {
    fn try_write_inline(&self, event: &WireEvent, request: bool) -> Inline {
        // With other events awaiting replies the connection is busy: the writer task batches
        // their frames into shared writes, which pipelining needs more than a saved task hop.
        if self.pending.lock().as_ref().is_some_and(|p| p.len() > 1) {
            return Inline::Queue;
        }
        let mut state = self.write.lock();
        if state.queued != 0 {
            return Inline::Queue;
        }
        let state = &mut *state;
        state.scratch.clear();
        frame::encode_event(event, request, &mut state.scratch);
        match self.writer.try_write(&state.scratch) {
            Ok(n) if n == state.scratch.len() => Inline::Sent,
            Ok(n) => {
                let rest = Bytes::copy_from_slice(&state.scratch[n..]);
                // Nothing is queued, so only a closed channel refuses this.
                match self.tx.try_send(Out::Raw(rest)) {
                    Ok(()) => {
                        state.queued += 1;
                        Inline::Sent
                    }
                    Err(_) => Inline::Closed,
                }
            }
            // A write error ends the connection through the reader or the writer task; the
            // queued path then reports the event lost as before.
            Err(_) => Inline::Queue,
        }
    }

    /// Queues a frame for the writer task, waiting for room.
    async fn send_queued(&self, out: Out) -> Result<(), ()> {
        self.write.lock().queued += 1;
        let mut guard = QueuedGuard {
            state: &self.write,
            armed: true,
        };
        let sent = self.tx.send(out).await.is_ok();
        // Once in the channel the writer task accounts for the frame.
        guard.armed = !sent;
        if sent { Ok(()) } else { Err(()) }
    }

    /// Queues a control frame if there is room; drops it otherwise (heartbeats are best effort).
    fn try_queue(&self, out: Out) {
        let mut state = self.write.lock();
        if self.tx.try_send(out).is_ok() {
            state.queued += 1;
        }
    }
}

/// Undoes a queued count for a frame that never reached the channel (send failed or the
/// sending future was dropped), so the inline path is not blocked forever.
struct QueuedGuard<'a> {
    state: &'a Mutex<WriteState>,
    armed: bool,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.state.lock();
            state.queued = state.queued.saturating_sub(1);
        }
    }
}

enum Outcome {
    Ack,
    Nack(NackReason, String),
    Response(Reply),
    Lost,
}

struct Conn {
    tx: mpsc::Sender<Out>,
    /// The connection's write side, shared with its writer task.
    writer: Arc<tokio::net::tcp::OwnedWriteHalf>,
    write: Arc<Mutex<WriteState>>,
    /// Replies owed on this connection. `None` once the connection ended: a sender that finds
    /// it so knows at once that its event was not delivered (no wait for a timeout).
    pending: Mutex<Option<HashMap<u128, oneshot::Sender<Outcome>>>>,
}

struct Slot {
    source: Source,
    state: MemberState,
    hello: Option<Hello>,
    conn: Option<Arc<Conn>>,
    in_flight: u32,
    last_error: Option<String>,
    task: Option<JoinHandle<()>>,
    datagram_seq: u64,
    mdns_name: Option<String>,
    /// The first connection attempt has finished (hello received or failed).
    settled: bool,
}

struct Shared {
    config: PublisherConfig,
    id: u128,
    seq: AtomicU64,
    members: Mutex<HashMap<SocketAddr, Slot>>,
    changed: Notify,
    udp: DatagramSocket,
    rr: AtomicUsize,
    /// Encoding buffer and target list of `send_datagram`, kept to avoid allocations per
    /// datagram. A call takes them out and puts them back; concurrent calls make their own.
    datagram_scratch: Mutex<DatagramScratch>,
}

#[derive(Default)]
struct DatagramScratch {
    buf: BytesMut,
    targets: Vec<(SocketAddr, u64)>,
}

/// The publisher's UDP socket: non-blocking, and not watched by the runtime. A socket registered
/// with the runtime's epoll gets a write-space event each time the kernel frees the buffer of a
/// sent datagram, which on loopback happens inside every send: each datagram would wake the
/// runtime's thread for nothing. Sends go straight to the kernel; only when its send buffer is
/// full is the socket registered, for as long as it takes to become writable again.
struct DatagramSocket {
    socket: std::net::UdpSocket,
    /// One registration at a time: the same descriptor cannot be added to epoll twice.
    wait: tokio::sync::Mutex<()>,
}

impl DatagramSocket {
    fn bind() -> std::io::Result<DatagramSocket> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.set_nonblocking(true)?;
        let _ = socket2::SockRef::from(&socket).set_send_buffer_size(4 * 1024 * 1024);
        Ok(DatagramSocket {
            socket,
            wait: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends one datagram, waiting for room in the send buffer if it is full.
    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> std::io::Result<usize> {
        loop {
            match self.socket.send_to(buf, addr) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.writable().await?,
                done => return done,
            }
        }
    }

    /// Waits until the socket can take a datagram again.
    async fn writable(&self) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        let _turn = self.wait.lock().await;
        // Registered edge-triggered; epoll reports a socket that is writable already at once, so
        // room freed between the failed send and this registration is not missed.
        // SAFETY: the descriptor is `self.socket`'s, which the borrow keeps open and unchanged
        // until `fd` is dropped at the end of this function, and a BorrowedFd returns that same
        // descriptor on every call.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                self.socket.as_fd(),
                tokio::io::Interest::WRITABLE,
            )
        }?;
        let _ready = fd.writable().await?;
        Ok(())
    }
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

/// Why a publisher could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublisherStartError {
    #[error("cannot open the UDP socket: {0}")]
    Udp(std::io::Error),
    #[error(transparent)]
    Mdns(#[from] mdns::MdnsError),
}

impl Publisher {
    /// Starts connecting to the static peers (and browsing mDNS if asked). Returns at once;
    /// use [`Publisher::wait_for_topic`] to wait until members are known.
    pub async fn start(config: PublisherConfig) -> Result<Publisher, PublisherStartError> {
        let udp = DatagramSocket::bind().map_err(PublisherStartError::Udp)?;
        let shared = Arc::new(Shared {
            id: uuid::Uuid::new_v4().as_u128(),
            seq: AtomicU64::new(0),
            members: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            udp,
            rr: AtomicUsize::new(0),
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
            if let Some(task) = slot.task.take() {
                task.abort();
            }
            if let Some(conn) = slot.conn.take() {
                fail_pending(&conn);
            }
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
        validate(&message).map_err(PublishError::Invalid)?;
        let event = shared.wire_event(message, deadline, 0);
        let bytes = frame::event_frame_len(&event);
        if bytes > shared.config.frame_bytes_max {
            return Err(PublishError::TooLarge {
                bytes,
                limit: shared.config.frame_bytes_max,
            });
        }
        let at = Instant::from_std(system_to_instant(deadline));
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

    /// Sends one datagram to one member of every group serving the topic; returns how many
    /// datagrams left (one per group). Loss is counted by the receivers, not reported here.
    pub async fn send_datagram(&self, message: Message) -> Result<usize, DatagramError> {
        let shared = self.shared();
        validate(&message).map_err(DatagramError::Invalid)?;
        let mut event = shared.wire_event(message, SystemTime::UNIX_EPOCH, 0);
        event.deadline_unix_ms = 0;
        let bytes = frame::event_frame_len(&event);
        let limit = shared.config.datagram_payload_bytes_max;
        if bytes > limit {
            return Err(DatagramError::TooLarge { bytes, limit });
        }
        let mut scratch = std::mem::take(&mut *shared.datagram_scratch.lock());
        scratch.targets.clear();
        shared.datagram_targets(&event.topic, &mut scratch.targets);
        if scratch.targets.is_empty() {
            return Err(DatagramError::NoLiveMember {
                topic: event.topic.clone(),
            });
        }
        let mut sent = 0;
        for &(addr, seq) in &scratch.targets {
            event.seq = seq;
            if let Some(n) = shared.config.drop_every_nth_datagram
                && n > 0
                && seq % n == 0
            {
                continue;
            }
            scratch.buf.clear();
            frame::encode_event(&event, false, &mut scratch.buf);
            shared.udp.send_to(&scratch.buf, addr).await?;
            sent += 1;
        }
        *shared.datagram_scratch.lock() = scratch;
        Ok(sent)
    }

    /// Sends a batch of datagrams, each to one member of every group serving its topic, handing
    /// up to [`DATAGRAM_BATCH_MAX`] of them to the kernel per system call (`sendmmsg`); returns
    /// how many datagrams left. A producer with many events at hand pays one system call per
    /// batch instead of one per datagram.
    ///
    /// Every message is checked before any is sent: an invalid or oversized one fails the whole
    /// call with nothing sent. A send error after part of the batch left returns the error;
    /// the sequence numbers of the datagrams that did not leave are used up, so the receivers
    /// count them as lost.
    pub async fn send_datagrams(
        &self,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<usize, DatagramError> {
        let shared = self.shared();
        let limit = shared.config.datagram_payload_bytes_max;
        let mut events = Vec::new();
        for message in messages {
            validate(&message).map_err(DatagramError::Invalid)?;
            let mut event = shared.wire_event(message, SystemTime::UNIX_EPOCH, 0);
            event.deadline_unix_ms = 0;
            let bytes = frame::event_frame_len(&event);
            if bytes > limit {
                return Err(DatagramError::TooLarge { bytes, limit });
            }
            events.push(event);
        }
        let mut batch = DatagramBatch::default();
        let mut targets = Vec::new();
        let mut sent = 0;
        for mut event in events {
            targets.clear();
            shared.datagram_targets(&event.topic, &mut targets);
            if targets.is_empty() {
                return Err(DatagramError::NoLiveMember {
                    topic: event.topic.clone(),
                });
            }
            for &(addr, seq) in &targets {
                event.seq = seq;
                if let Some(n) = shared.config.drop_every_nth_datagram
                    && n > 0
                    && seq % n == 0
                {
                    continue;
                }
                let start = batch.buf.len();
                frame::encode_event(&event, false, &mut batch.buf);
                batch.datagrams.push((start, batch.buf.len(), addr));
                if batch.datagrams.len() == DATAGRAM_BATCH_MAX {
                    sent += batch.flush(&shared.udp).await?;
                }
            }
        }
        sent += batch.flush(&shared.udp).await?;
        Ok(sent)
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
        validate(&message).map_err(RequestError::Invalid)?;
        let event = shared.wire_event(message, deadline, 0);
        let bytes = frame::event_frame_len(&event);
        if bytes > shared.config.frame_bytes_max {
            return Err(RequestError::TooLarge {
                bytes,
                limit: shared.config.frame_bytes_max,
            });
        }
        let at = Instant::from_std(system_to_instant(deadline));
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

fn validate(message: &Message) -> Result<(), String> {
    if message.topic.is_empty() || message.topic.len() > 255 {
        return Err("topic must be 1..=255 bytes".into());
    }
    if message.headers.len() > frame::HEADERS_MAX {
        return Err(format!("at most {} headers", frame::HEADERS_MAX));
    }
    if message.headers.iter().any(|(k, _)| k.len() > 255) {
        return Err("header names must be at most 255 bytes".into());
    }
    Ok(())
}

impl Shared {
    fn wire_event(&self, message: Message, deadline: SystemTime, seq: u64) -> WireEvent {
        let seq = if seq == 0 {
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            seq
        };
        WireEvent {
            // Unique without a random draw per event: this publisher's random id in the high
            // half, its sequence number in the low half.
            id: (self.id << 64) | seq as u128,
            publisher: self.id,
            seq,
            deadline_unix_ms: system_to_unix_ms(deadline),
            topic: message.topic,
            key: message.key,
            value: message.value,
            headers: message.headers,
        }
    }

    fn has_live(&self, topic: &str) -> bool {
        self.members.lock().values().any(|s| {
            s.state == MemberState::Up && s.hello.as_ref().is_some_and(|h| h.topic == topic)
        })
    }

    /// Groups serving `topic`: those of every member that said hello and has not left
    /// (members that are down still count, so their group fails loudly instead of being skipped).
    fn groups(&self, topic: &str) -> BTreeSet<String> {
        self.members
            .lock()
            .values()
            .filter(|s| s.state != MemberState::Left)
            .filter_map(|s| s.hello.as_ref())
            .filter(|h| h.topic == topic)
            .map(|h| h.group.clone())
            .collect()
    }

    /// Every static peer has been tried at least once.
    fn static_settled(&self) -> bool {
        self.members
            .lock()
            .values()
            .all(|s| s.source != Source::Static || s.settled)
    }

    /// The groups serving `topic`, once the static peers have all been tried: an event published
    /// right after start must not skip a group whose hello is still on its way.
    async fn groups_until(&self, topic: &str, at: Instant) -> Option<BTreeSet<String>> {
        loop {
            let changed = self.changed.notified();
            let groups = self.groups(topic);
            if !groups.is_empty() && self.static_settled() {
                return Some(groups);
            }
            if tokio::time::timeout_at(at, changed).await.is_err() {
                return (!groups.is_empty()).then_some(groups);
            }
        }
    }

    /// One live member of every group serving `topic` (rotating within a group), each with the
    /// next datagram sequence number for that member, appended to `out`.
    fn datagram_targets(&self, topic: &str, out: &mut Vec<(SocketAddr, u64)>) {
        let mut members = self.members.lock();
        let mut live: Vec<(&str, u128, SocketAddr)> = members
            .iter()
            .filter(|(_, s)| s.state == MemberState::Up)
            .filter_map(|(addr, s)| s.hello.as_ref().map(|h| (h, *addr)))
            .filter(|(h, _)| h.topic == topic)
            .map(|(h, addr)| (h.group.as_str(), h.member_id, addr))
            .collect();
        live.sort_unstable();
        // A member known at several addresses (mDNS announces one per interface) is one
        // destination, always reached at the same address: otherwise each address would count
        // its own sequence numbers and the member would see duplicates instead of a sequence.
        live.dedup_by(|later, first| later.0 == first.0 && later.1 == first.1);
        let turn = self.rr.fetch_add(1, Ordering::Relaxed);
        let mut chosen: Vec<(u128, SocketAddr)> = Vec::new();
        for group in live.chunk_by(|a, b| a.0 == b.0) {
            let (_, member_id, addr) = group[turn % group.len()];
            chosen.push((member_id, addr));
        }
        drop(live);
        for (member_id, addr) in chosen {
            // Sequence numbers count per destination member, so each member sees a gap-free
            // sequence when nothing is lost, whatever the load balancing does. A member known
            // at several addresses shares one count over all of them, so a change of address
            // (one coming up later, another going down) does not restart it.
            let same_member = |s: &Slot| s.hello.as_ref().is_some_and(|h| h.member_id == member_id);
            let next = members
                .values()
                .filter(|s| same_member(s))
                .map(|s| s.datagram_seq)
                .max()
                .unwrap_or(0)
                + 1;
            for slot in members.values_mut().filter(|s| same_member(s)) {
                slot.datagram_seq = next;
            }
            if members.contains_key(&addr) {
                out.push((addr, next));
            }
        }
    }

    fn pick(&self, topic: &str, group: &str, tried: &HashSet<SocketAddr>) -> Pick {
        let mut members = self.members.lock();
        let mut live = false;
        let mut best: Option<(SocketAddr, bool, u64, u64)> = None;
        let turn = self.rr.fetch_add(1, Ordering::Relaxed);
        for (addr, s) in members.iter() {
            let Some(h) = &s.hello else { continue };
            if s.state != MemberState::Up
                || h.topic != topic
                || h.group != group
                // A connection already known to be gone is skipped even before its reader has
                // noticed and taken it out of the slot.
                || s.conn.as_ref().is_none_or(|c| c.pending.lock().is_none())
            {
                continue;
            }
            live = true;
            if s.in_flight >= h.capacity {
                continue;
            }
            let untried = !tried.contains(addr);
            // Least loaded by fraction of capacity used: compare in_flight/capacity as a cross
            // product, untried members first; ties rotate so equal members share the load.
            let load = (s.in_flight as u64, h.capacity as u64);
            let better = match best {
                None => true,
                Some((_, b_untried, b_in, b_cap)) => {
                    if untried != b_untried {
                        untried
                    } else {
                        let (a, b) = (load.0 * b_cap, b_in * load.1);
                        a < b || (a == b && (addr.port() as usize ^ turn) & 1 == 0)
                    }
                }
            };
            if better {
                best = Some((*addr, untried, load.0, load.1));
            }
        }
        match best {
            Some((addr, ..)) => {
                let Some(slot) = members.get_mut(&addr) else {
                    return Pick::NoneLive;
                };
                let Some(conn) = slot.conn.clone() else {
                    return Pick::NoneLive;
                };
                slot.in_flight += 1;
                Pick::Chosen(addr, conn)
            }
            None if live => Pick::AllFull,
            None => Pick::NoneLive,
        }
    }

    fn release(&self, addr: SocketAddr) {
        if let Some(slot) = self.members.lock().get_mut(&addr) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
        self.changed.notify_waiters();
    }
}

enum Pick {
    Chosen(SocketAddr, Arc<Conn>),
    AllFull,
    NoneLive,
}

/// Delivers one event (or request) to one member of `group`, failing over on nack, timeout or a
/// lost connection with the same event id, until acked or the deadline passes.
async fn deliver(
    shared: &Arc<Shared>,
    group: &str,
    event: Arc<WireEvent>,
    at: Instant,
    request: bool,
    progress: &AtomicU8,
) -> Result<Option<Reply>, PublishError> {
    let topic = &event.topic;
    let mut tried = HashSet::new();
    let mut nacks = 0u32;
    let mut last;
    loop {
        let changed = shared.changed.notified();
        let (addr, conn) = match shared.pick(topic, group, &tried) {
            Pick::Chosen(addr, conn) => {
                progress.store(WAITING_FOR_REPLY, Ordering::Relaxed);
                (addr, conn)
            }
            Pick::AllFull => {
                progress.store(WAITING_FOR_ROOM, Ordering::Relaxed);
                if tokio::time::timeout_at(at, changed).await.is_err() {
                    return Err(PublishError::BackPressure {
                        topic: topic.clone(),
                        group: group.to_string(),
                    });
                }
                continue;
            }
            Pick::NoneLive => {
                progress.store(WAITING_FOR_MEMBER, Ordering::Relaxed);
                if tokio::time::timeout_at(at, changed).await.is_err() {
                    return Err(PublishError::NoLiveMember {
                        topic: topic.clone(),
                        group: Some(group.to_string()),
                    });
                }
                continue;
            }
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let registered = match conn.pending.lock().as_mut() {
            Some(pending) => {
                pending.insert(event.id, reply_tx);
                true
            }
            None => false,
        };
        let frame = Out::Event(event.clone(), request);
        let attempt_at =
            at.min(Instant::now() + Duration::from_millis(shared.config.attempt_timeout_ms));
        let outcome = if !registered {
            Ok(Ok(Outcome::Lost))
        } else {
            let sent = match conn.try_write_inline(&event, request) {
                Inline::Sent => Ok(Ok(())),
                Inline::Closed => Ok(Err(())),
                Inline::Queue => tokio::time::timeout_at(attempt_at, conn.send_queued(frame)).await,
            };
            match sent {
                Ok(Ok(())) => tokio::time::timeout_at(attempt_at, reply_rx).await,
                Ok(Err(())) => Ok(Ok(Outcome::Lost)),
                Err(elapsed) => Err(elapsed),
            }
        };
        if let Some(pending) = conn.pending.lock().as_mut() {
            pending.remove(&event.id);
        }
        shared.release(addr);
        match outcome {
            Ok(Ok(Outcome::Ack)) => return Ok(None),
            Ok(Ok(Outcome::Response(reply))) => return Ok(Some(reply)),
            Ok(Ok(Outcome::Nack(reason, message))) => {
                tried.insert(addr);
                last = format!("{addr} nacked: {reason:?}: {message}");
                match reason {
                    NackReason::HandlerFailed | NackReason::DeadlineExceeded => {
                        nacks += 1;
                        if request
                            || reason == NackReason::DeadlineExceeded
                            || nacks >= shared.config.attempts_max
                        {
                            return Err(PublishError::Nacked {
                                group: group.to_string(),
                                attempts: nacks,
                                reason,
                                message,
                            });
                        }
                    }
                    NackReason::Busy | NackReason::ShuttingDown | NackReason::Unsupported => {
                        // Another producer filled the member, or it is leaving: wait for a change
                        // briefly rather than spin.
                        let pause = Instant::now() + Duration::from_millis(5);
                        let _ = tokio::time::timeout_at(pause.min(at), changed).await;
                    }
                }
            }
            Ok(Ok(Outcome::Lost)) | Ok(Err(_)) => {
                if matches!(outcome, Ok(Ok(Outcome::Lost))) {
                    // The connection is gone (its writer has ended, or it was failed already).
                    // Fail it for every sender now: until its reader notices and takes it out
                    // of the slot, a pick could choose it again and again, each attempt failing
                    // at once without yielding, which would starve that very reader until the
                    // deadline.
                    fail_pending(&conn);
                }
                tried.insert(addr);
                last = format!("connection to {addr} lost");
                tracing::debug!(%addr, id = %uuid::Uuid::from_u128(event.id), "retrying on another member after a lost connection");
            }
            Err(_) => {
                tried.insert(addr);
                last = format!("{addr} did not answer in time");
            }
        }
        if Instant::now() >= at {
            return Err(PublishError::Timeout {
                group: group.to_string(),
                last,
            });
        }
    }
}

fn add_peer(shared: &Arc<Shared>, addr: SocketAddr, source: Source, mdns_name: Option<String>) {
    let mut members = shared.members.lock();
    if let Some(slot) = members.get_mut(&addr) {
        if mdns_name.is_some() {
            slot.mdns_name = mdns_name;
        }
        return;
    }
    let task = tokio::spawn(supervise(shared.clone(), addr));
    members.insert(
        addr,
        Slot {
            source,
            state: MemberState::Connecting,
            hello: None,
            conn: None,
            in_flight: 0,
            last_error: None,
            task: Some(task),
            datagram_seq: 0,
            mdns_name,
            settled: false,
        },
    );
}

fn remove_mdns(shared: &Arc<Shared>, fullname: &str) {
    let mut members = shared.members.lock();
    let gone: Vec<SocketAddr> = members
        .iter()
        .filter(|(_, s)| s.source == Source::Mdns && s.mdns_name.as_deref() == Some(fullname))
        .map(|(a, _)| *a)
        .collect();
    for addr in gone {
        if let Some(mut slot) = members.remove(&addr) {
            tracing::info!(%addr, %fullname, "member withdrew its mDNS record; removed");
            if let Some(task) = slot.task.take() {
                task.abort();
            }
            if let Some(conn) = slot.conn.take() {
                fail_pending(&conn);
            }
        }
    }
    drop(members);
    shared.changed.notify_waiters();
}

/// Ends a connection's bookkeeping: every reply still owed becomes `Lost`, and later senders
/// see the connection is gone.
fn fail_pending(conn: &Conn) {
    let owed = conn.pending.lock().take();
    for (_, tx) in owed.into_iter().flatten() {
        let _ = tx.send(Outcome::Lost);
    }
}

fn set_state(shared: &Shared, addr: SocketAddr, state: MemberState, error: Option<String>) {
    let mut members = shared.members.lock();
    let mut changed_group = None;
    if let Some(slot) = members.get_mut(&addr) {
        let before = slot.state;
        slot.state = state;
        slot.settled = true;
        if state != MemberState::Up {
            slot.conn = None;
        }
        if error.is_some() {
            slot.last_error = error.clone();
        }
        if before != state {
            changed_group = Some(
                slot.hello
                    .as_ref()
                    .map(|h| h.group.clone())
                    .unwrap_or_default(),
            );
        }
    }
    drop(members);
    // Logged after the lock is released: a slow log writer must not stall deliveries.
    if let Some(group) = changed_group {
        match state {
            MemberState::Down => {
                tracing::warn!(%addr, %group, error = error.as_deref().unwrap_or(""), "member down")
            }
            MemberState::Left => tracing::info!(%addr, %group, "member left"),
            _ => {}
        }
    }
    shared.changed.notify_waiters();
}

/// Keeps one connection to a member alive: connect, read hello, serve, and reconnect after a
/// pause when it drops, until the member is removed from the membership.
async fn supervise(shared: Arc<Shared>, addr: SocketAddr) {
    let reconnect = Duration::from_millis(shared.config.reconnect_interval_ms);
    loop {
        match connect(&shared, addr).await {
            Ok((stream, hello, buf)) => {
                let end = run_connection(&shared, addr, stream, hello, buf).await;
                match end {
                    End::Goodbye => set_state(&shared, addr, MemberState::Left, None),
                    End::Failed(error) => set_state(&shared, addr, MemberState::Down, Some(error)),
                }
            }
            Err(error) => {
                let state = shared.members.lock().get(&addr).map(|s| s.state);
                // A member that never answered stays "connecting"; one that left stays "left"
                // until it comes back; anything else that cannot be reached is down.
                let next = match state {
                    Some(MemberState::Connecting) | None => MemberState::Connecting,
                    Some(MemberState::Left) => MemberState::Left,
                    Some(_) => MemberState::Down,
                };
                set_state(&shared, addr, next, Some(error));
            }
        }
        tokio::time::sleep(reconnect).await;
    }
}

async fn connect(
    shared: &Shared,
    addr: SocketAddr,
) -> Result<(TcpStream, Hello, BytesMut), String> {
    let timeout = Duration::from_millis(shared.config.connect_timeout_ms);
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let hello = tokio::time::timeout(timeout, async {
        loop {
            match frame::decode_stream(&mut buf, shared.config.frame_bytes_max) {
                Ok(Some(Frame::Hello(hello))) => return Ok(hello),
                Ok(Some(other)) => return Err(format!("expected hello, got {other:?}")),
                Ok(None) => {}
                Err(e) => return Err(format!("bad hello: {e}")),
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err("closed before hello".to_string()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    })
    .await
    .map_err(|_| "no hello in time".to_string())??;
    // Announce what this producer decodes beyond version 1 before anything else is written, so
    // the member knows it by the first request. A member that predates features answers a PONG.
    let mut features = BytesMut::new();
    frame::encode(
        &Frame::Ping {
            nonce: frame::features_nonce(frame::FEATURE_REPLY),
        },
        &mut features,
    );
    tokio::time::timeout(timeout, stream.write_all(&features))
        .await
        .map_err(|_| "features not sent in time".to_string())?
        .map_err(|e| format!("write: {e}"))?;
    Ok((stream, hello, buf))
}

enum End {
    Goodbye,
    Failed(String),
}

async fn run_connection(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    stream: TcpStream,
    hello: Hello,
    mut buf: BytesMut,
) -> End {
    let (mut reader, writer) = stream.into_split();
    let writer = Arc::new(writer);
    let write = Arc::new(Mutex::new(WriteState::default()));
    let (tx, rx) = mpsc::channel(shared.config.send_queue_frames_max);
    let conn = Arc::new(Conn {
        tx: tx.clone(),
        writer: writer.clone(),
        write: write.clone(),
        pending: Mutex::new(Some(HashMap::new())),
    });
    tracing::info!(
        %addr,
        topic = %hello.topic,
        group = %hello.group,
        capacity = hello.capacity,
        member = %uuid::Uuid::from_u128(hello.member_id),
        "member up"
    );
    {
        let mut members = shared.members.lock();
        let Some(slot) = members.get_mut(&addr) else {
            return End::Failed("removed".into());
        };
        slot.hello = Some(hello);
        slot.state = MemberState::Up;
        slot.conn = Some(conn.clone());
        slot.last_error = None;
        slot.settled = true;
    }
    shared.changed.notify_waiters();
    let writer_task = tokio::spawn(write_loop(writer, write, rx));
    let interval = Duration::from_millis(shared.config.heartbeat_interval_ms.max(1));
    let dead_after = Duration::from_millis(shared.config.heartbeat_timeout_ms.max(1));
    let mut ticker = tokio::time::interval(interval);
    let mut last_heard = Instant::now();
    let mut nonce = 0u64;
    let end = 'conn: loop {
        loop {
            match frame::decode_stream(&mut buf, shared.config.frame_bytes_max) {
                Ok(Some(frame)) => match frame {
                    Frame::Ack { id } => reply(&conn, id, Outcome::Ack),
                    Frame::Nack {
                        id,
                        reason,
                        message,
                    } => reply(&conn, id, Outcome::Nack(reason, message)),
                    Frame::Response { id, value } => {
                        reply(&conn, id, Outcome::Response(Reply::new(value)))
                    }
                    Frame::Reply {
                        id,
                        key,
                        value,
                        headers,
                    } => reply(
                        &conn,
                        id,
                        Outcome::Response(Reply {
                            key,
                            value,
                            headers,
                        }),
                    ),
                    Frame::Ping { nonce } => {
                        conn.try_queue(Out::Frame(Frame::Pong { nonce }));
                    }
                    Frame::Pong { .. } => {}
                    Frame::Goodbye => break 'conn End::Goodbye,
                    other => {
                        break 'conn End::Failed(format!("unexpected frame {other:?}"));
                    }
                },
                Ok(None) => break,
                Err(e) => break 'conn End::Failed(format!("malformed frame: {e}")),
            }
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break End::Failed("connection closed".into()),
                Ok(_) => last_heard = Instant::now(),
                Err(e) => break End::Failed(format!("read: {e}")),
            },
            _ = ticker.tick() => {
                let quiet = last_heard.elapsed();
                if quiet >= dead_after {
                    break End::Failed(format!("no heartbeat for {} ms", quiet.as_millis()));
                }
                if quiet >= interval {
                    nonce += 1;
                    conn.try_queue(Out::Frame(Frame::Ping { nonce }));
                }
            }
        }
    };
    writer_task.abort();
    if let Some(slot) = shared.members.lock().get_mut(&addr)
        && slot.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn))
    {
        slot.conn = None;
    }
    fail_pending(&conn);
    end
}

fn reply(conn: &Conn, id: u128, reply: Outcome) {
    let owed = conn.pending.lock().as_mut().and_then(|p| p.remove(&id));
    if let Some(tx) = owed {
        let _ = tx.send(reply);
    }
}

/// What a connection's writer sends: control frames, or events shared with the publishing task
/// (encoded straight from the shared event, never cloned).
enum Out {
    Frame(Frame),
    Event(Arc<WireEvent>, bool),
    /// The unwritten rest of a frame a publishing task started writing itself.
    Raw(Bytes),
}

fn encode_out(out: &Out, buf: &mut BytesMut) {
    match out {
        Out::Frame(frame) => frame::encode(frame, buf),
        Out::Event(event, request) => frame::encode_event(event, *request, buf),
        Out::Raw(bytes) => buf.extend_from_slice(bytes),
    }
}

/// Writes frames in batches: everything queued goes out in one write, so pipelined events share
/// system calls.
async fn write_loop(
    writer: Arc<tokio::net::tcp::OwnedWriteHalf>,
    write: Arc<Mutex<WriteState>>,
    mut rx: mpsc::Receiver<Out>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(out) = rx.recv().await {
        encode_out(&out, &mut buf);
        let mut frames = 1;
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(out) => {
                    encode_out(&out, &mut buf);
                    frames += 1;
                }
                Err(_) => break,
            }
        }
        let mut written = 0;
        while written < buf.len() {
            if writer.writable().await.is_err() {
                return;
            }
            // Under the lock, so an inline write never lands between two parts of a batch.
            let result = {
                let _state = write.lock();
                writer.try_write(&buf[written..])
            };
            match result {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        buf.clear();
        let mut state = write.lock();
        state.queued = state.queued.saturating_sub(frames);
    }
}

/// Datagrams handed to the kernel in one `sendmmsg` call at most.
pub const DATAGRAM_BATCH_MAX: usize = 64;

/// Encoded datagrams waiting for one `sendmmsg`: one buffer, and each datagram's byte range
/// and destination. Holds at most [`DATAGRAM_BATCH_MAX`] datagrams.
#[derive(Default)]
struct DatagramBatch {
    buf: BytesMut,
    datagrams: Vec<(usize, usize, SocketAddr)>,
}

impl DatagramBatch {
    /// Sends every datagram in the batch (several calls if the kernel takes part of it) and
    /// empties it; returns how many were sent.
    async fn flush(&mut self, udp: &DatagramSocket) -> std::io::Result<usize> {
        let mut done = 0;
        while done < self.datagrams.len() {
            match sendmmsg(&udp.socket, &self.buf, &self.datagrams[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => udp.writable().await?,
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.datagrams.clear();
        Ok(done)
    }
}

/// One non-blocking `sendmmsg` of `datagrams` (ranges of `buf`); returns how many the kernel
/// took (at least one) or the error (`WouldBlock` when the send buffer is full).
fn sendmmsg(
    udp: &std::net::UdpSocket,
    buf: &[u8],
    datagrams: &[(usize, usize, SocketAddr)],
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let addrs: Vec<socket2::SockAddr> = datagrams
        .iter()
        .map(|&(_, _, addr)| socket2::SockAddr::from(addr))
        .collect();
    let mut iovs: Vec<libc::iovec> = datagrams
        .iter()
        .map(|&(start, end, _)| libc::iovec {
            // The kernel only reads through this pointer (sendmmsg does not write to iov_base).
            iov_base: buf[start..end].as_ptr() as *mut libc::c_void,
            iov_len: end - start,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(&addrs)
        .map(|(iov, addr)| {
            // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid value
            // (null pointers, zero lengths); the fields used are set below.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            hdr.msg_namelen = addr.len();
            hdr.msg_iov = iov as *mut libc::iovec;
            hdr.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        })
        .collect();
    let count = libc::c_uint::try_from(msgs.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: `msgs` holds `count` initialised headers whose name, iovec and data pointers
    // point into `addrs`, `iovs` and `buf`, all alive and unmoved until the call returns.
    let n = unsafe {
        libc::sendmmsg(
            udp.as_raw_fd(),
            msgs.as_mut_ptr(),
            count,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n == 0 {
        // sendmmsg reports an error rather than 0 when nothing was sent; should it ever return
        // 0, wait for writability again instead of counting a datagram that did not leave.
        return Err(std::io::ErrorKind::WouldBlock.into());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::DatagramSocket;

    #[tokio::test]
    async fn waiting_for_room_registers_one_waiter_at_a_time_and_sends_after() {
        let socket = DatagramSocket::bind().unwrap();
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = receiver.local_addr().unwrap();
        // Two waits at once: the second must not try to add the same descriptor to epoll while
        // the first holds it (that would fail with EEXIST); both see the idle socket writable.
        let (a, b) = tokio::join!(socket.writable(), socket.writable());
        a.unwrap();
        b.unwrap();
        // The registration is gone again, so sends still go straight out.
        assert_eq!(socket.send_to(b"after", addr).await.unwrap(), 5);
        let mut buf = [0u8; 16];
        let (n, _) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
    }
}
