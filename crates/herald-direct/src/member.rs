//! The consumer side: a member of a group serving one topic, taking direct events and requests
//! over TCP and datagrams over UDP on the same port number.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::error::StartError;
use crate::event::{Handler, Mode, Received, Reply, RequestContext, system_to_instant};
use crate::frame::{self, Frame, Hello, NackReason, WireEvent};
use crate::mdns::Advertisement;
use crate::window::{DedupWindow, GapCounter};

/// Resolution of deadlines on the wire.
const DEADLINE_GRAIN: Duration = Duration::from_millis(1);

/// Default number of recent event ids a member remembers to drop duplicates.
pub const DEDUP_WINDOW_EVENTS_DEFAULT: usize = 100_000;
/// Default largest datagram payload: a 1500-byte Ethernet MTU minus IPv4 (20) and UDP (8) headers.
pub const DATAGRAM_PAYLOAD_BYTES_MAX_DEFAULT: usize = 1472;

/// How a member is set up.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub topic: String,
    pub group: String,
    /// TCP and UDP address; port 0 picks a free port for both.
    pub bind: SocketAddr,
    /// Events (and requests) handled at once; advertised to producers, who never exceed it.
    pub capacity: u32,
    pub frame_bytes_max: usize,
    pub dedup_window_events: usize,
    pub datagram_payload_bytes_max: usize,
    /// Kernel receive buffer asked for on the UDP socket, so bursts are queued, not dropped.
    pub udp_recv_buffer_bytes: usize,
    /// Frames queued for one connection's writer task (replies that could not be written at once
    /// because the socket was full or other frames were ahead of them) before their senders wait.
    pub send_queue_frames_max: usize,
    /// Distinct datagram publishers tracked for gap counting.
    pub publishers_max: usize,
    /// Producer connections served at once; further ones are closed at once.
    pub connections_max: usize,
    /// Test hook: discard every Nth datagram received (before counting), so loss is exact.
    pub drop_every_nth_datagram: Option<u64>,
    /// How long shutdown waits for handlers in flight before saying goodbye.
    pub shutdown_drain_ms: u64,
    /// Announce the member with mDNS-SD (`_herald._tcp.local.`).
    pub mdns: bool,
}

impl MemberConfig {
    pub fn new(topic: impl Into<String>, group: impl Into<String>, bind: SocketAddr) -> Self {
        MemberConfig {
            topic: topic.into(),
            group: group.into(),
            bind,
            capacity: 64,
            frame_bytes_max: frame::FRAME_BYTES_MAX_DEFAULT,
            dedup_window_events: DEDUP_WINDOW_EVENTS_DEFAULT,
            datagram_payload_bytes_max: DATAGRAM_PAYLOAD_BYTES_MAX_DEFAULT,
            udp_recv_buffer_bytes: 8 * 1024 * 1024,
            send_queue_frames_max: 4096,
            publishers_max: 1024,
            connections_max: 1024,
            drop_every_nth_datagram: None,
            shutdown_drain_ms: 5_000,
            mdns: false,
        }
    }
}

/// Counters a member exposes (also printed by `herald peer listen` on exit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemberStats {
    /// Direct events handled successfully (duplicates excluded).
    pub direct_handled: u64,
    /// Requests answered.
    pub requests_answered: u64,
    /// Distinct datagrams received (after the drop hook).
    pub datagrams_received: u64,
    /// Datagrams known lost: gaps in publishers' sequence numbers.
    pub datagrams_lost: u64,
    /// Datagrams discarded by the drop test hook.
    pub datagrams_dropped_by_hook: u64,
    /// Retried events acknowledged again without running the handler.
    pub duplicates_dropped: u64,
    /// Handler failures (nacked).
    pub handler_failures: u64,
    /// Events refused because the member was at capacity.
    pub busy_refusals: u64,
    /// Connections closed because of malformed frames.
    pub malformed_frames: u64,
    /// Events or requests in flight now.
    pub in_flight: u32,
    /// The most events ever in flight at once.
    pub max_in_flight: u32,
}

/// Datagram counters of one publisher, as [`Member::datagram_publishers`] reports them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PublisherLoss {
    pub publisher: String,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
}

struct State {
    dedup: DedupWindow,
    in_progress: HashSet<u128>,
    gaps: GapCounter,
    stats: MemberStats,
    shutting_down: bool,
}

struct Shared {
    config: MemberConfig,
    member_id: u128,
    handler: Arc<dyn Handler>,
    state: Mutex<State>,
    datagrams_seen: AtomicU64,
    idle: tokio::sync::Notify,
}

/// A running member. Dropping it without [`Member::shutdown`] stops it abruptly (like a crash).
pub struct Member {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
    connections: Arc<Mutex<JoinSet<()>>>,
    advertisement: Mutex<Option<Advertisement>>,
}

impl Member {
    /// Binds TCP and UDP on the same port and starts serving.
    pub async fn start(
        config: MemberConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Member, StartError> {
        if config.capacity == 0 {
            return Err(StartError::Config("capacity must be at least 1".into()));
        }
        if config.topic.is_empty() || config.topic.len() > 255 || config.group.len() > 255 {
            return Err(StartError::Config(
                "topic must be 1..=255 bytes, group at most 255".into(),
            ));
        }
        let (listener, udp) = bind_pair(config.bind).await?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let member_id = uuid::Uuid::new_v4().as_u128();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                dedup: DedupWindow::new(config.dedup_window_events),
                in_progress: HashSet::new(),
                gaps: GapCounter::new(config.publishers_max),
                stats: MemberStats::default(),
                shutting_down: false,
            }),
            config,
            member_id,
            handler,
            datagrams_seen: AtomicU64::new(0),
            idle: tokio::sync::Notify::new(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            listener,
            shared.clone(),
            shutdown_rx.clone(),
            connections.clone(),
        ));
        tasks.spawn(datagram_loop(udp, shared.clone()));
        let advertisement = if shared.config.mdns {
            Some(
                Advertisement::register(
                    local_addr,
                    member_id,
                    &shared.config.topic,
                    &shared.config.group,
                    shared.config.capacity,
                )
                .map_err(|e| StartError::Mdns(e.to_string()))?,
            )
        } else {
            None
        };
        tracing::info!(
            addr = %local_addr,
            topic = %shared.config.topic,
            group = %shared.config.group,
            capacity = shared.config.capacity,
            "member listening (tcp and udp)"
        );
        Ok(Member {
            shared,
            local_addr,
            shutdown_tx,
            tasks: Mutex::new(tasks),
            connections,
            advertisement: Mutex::new(advertisement),
        })
    }

    /// The TCP (and UDP) address the member listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This member's id, as sent in its hello frame.
    pub fn member_id(&self) -> u128 {
        self.shared.member_id
    }

    pub fn stats(&self) -> MemberStats {
        let state = self.shared.state.lock();
        let mut stats = state.stats;
        stats.datagrams_received = state.gaps.received();
        stats.datagrams_lost = state.gaps.lost();
        stats
    }

    /// Datagram counts per publisher (the ones still tracked, at most `publishers_max`), so loss
    /// can be traced to its source.
    pub fn datagram_publishers(&self) -> Vec<PublisherLoss> {
        let state = self.shared.state.lock();
        let mut out: Vec<PublisherLoss> = state
            .gaps
            .publishers()
            .map(|(id, gaps)| PublisherLoss {
                publisher: uuid::Uuid::from_u128(id).to_string(),
                received: gaps.received(),
                lost: gaps.lost(),
                duplicates: gaps.duplicates(),
            })
            .collect();
        out.sort_by(|a, b| a.publisher.cmp(&b.publisher));
        out
    }

    /// Leaves the group politely: takes no new work, waits for handlers in flight (bounded by
    /// `shutdown_drain_ms`), unregisters from mDNS, sends goodbye on every connection and closes.
    pub async fn shutdown(self) -> MemberStats {
        self.shared.state.lock().shutting_down = true;
        if let Some(ad) = self.advertisement.lock().take() {
            ad.unregister();
        }
        let drain_deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.shared.config.shutdown_drain_ms);
        loop {
            let idle = self.shared.idle.notified();
            if self.shared.state.lock().stats.in_flight == 0 {
                break;
            }
            if tokio::time::timeout_at(drain_deadline, idle).await.is_err() {
                tracing::warn!("shutdown: handlers still running after the drain time");
                break;
            }
        }
        let _ = self.shutdown_tx.send(true);
        self.tasks.lock().abort_all();
        // Each connection sends goodbye and flushes; wait for them, bounded.
        let mut conns = std::mem::take(&mut *self.connections.lock());
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        tracing::info!(addr = %self.local_addr, "member left");
        self.stats()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.tasks.lock().abort_all();
        self.connections.lock().abort_all();
    }
}

async fn bind_pair(bind: SocketAddr) -> Result<(TcpListener, UdpSocket), StartError> {
    // With port 0 the TCP port is chosen first; the same UDP port may be taken by someone else,
    // so try a few times.
    let attempts = if bind.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| StartError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: bind, source })?;
        match bind_udp(addr) {
            Ok(udp) => return Ok((listener, udp)),
            Err(source) => last = Some(StartError::Bind { addr, source }),
        }
    }
    Err(last.unwrap_or(StartError::Config("no port".into())))
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

fn set_recv_buffer(socket: &UdpSocket, bytes: usize) {
    let sock = socket2::SockRef::from(socket);
    if let Err(error) = sock.set_recv_buffer_size(bytes) {
        tracing::debug!(%error, "could not enlarge the UDP receive buffer");
    }
    // The kernel caps SO_RCVBUF at net.core.rmem_max (about 200 KiB by default: a few hundred
    // datagrams). A privileged process may go beyond it, which keeps bursts from being dropped
    // while the member is descheduled; others keep the capped size.
    if sock.recv_buffer_size().is_ok_and(|got| got < bytes) {
        force_recv_buffer(socket, bytes);
    }
}

fn force_recv_buffer(socket: &UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads exactly `size_of::<c_int>()` bytes from a pointer to a live local
    // c_int, on a file descriptor this socket owns for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "UDP receive buffer stays at net.core.rmem_max"
        );
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    connections: Arc<Mutex<JoinSet<()>>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tracing::debug!(%peer, "producer connected");
                let conn = serve_connection(stream, peer, shared.clone(), shutdown.clone());
                let mut set = connections.lock();
                // Reap finished connections so the set stays as small as the live ones.
                while set.try_join_next().is_some() {}
                if set.len() >= shared.config.connections_max {
                    tracing::warn!(%peer, limit = shared.config.connections_max, "too many producer connections; refused");
                    continue;
                }
                set.spawn(conn);
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reply bytes the reader gathers from one read's worth of frames before it writes them (or waits
/// for room), so pipelined acks share a system call and the batch stays bounded.
const REPLY_BATCH_BYTES_MAX: usize = 64 * 1024;
/// Bytes the writer task gathers from its queue into one write.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut reader, writer) = stream.into_split();
    let (conn, rx) = ConnWriter::new(writer, shared.config.send_queue_frames_max);
    let writer_task = tokio::spawn(write_loop(conn.writer.clone(), conn.shared.clone(), rx));
    let hello = Frame::Hello(Hello {
        member_id: shared.member_id,
        topic: shared.config.topic.clone(),
        group: shared.config.group.clone(),
        capacity: shared.config.capacity,
        frame_bytes_max: shared.config.frame_bytes_max.min(u32::MAX as usize) as u32,
    });
    if conn.send(hello).await.is_err() {
        return;
    }
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // Replies decided while reading (acks of handlers that finished at once, refusals, pongs):
    // written from this task after the frames at hand are handled, with no hop to another task.
    let mut batch = BytesMut::with_capacity(4 * 1024);
    'conn: loop {
        loop {
            match frame::decode_stream(&mut buf, shared.config.frame_bytes_max) {
                Ok(Some(frame)) => {
                    if !on_frame(frame, &shared, &conn, &mut batch).await {
                        break 'conn;
                    }
                    if batch.len() >= REPLY_BATCH_BYTES_MAX && conn.flush(&mut batch).await.is_err()
                    {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%peer, %error, "malformed frame; closing this connection");
                    shared.state.lock().stats.malformed_frames += 1;
                    break 'conn;
                }
            }
        }
        if conn.flush(&mut batch).await.is_err() {
            break;
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = async { let _ = shutdown.wait_for(|down| *down).await; } => {
                let _ = conn.send(Frame::Goodbye).await;
                break;
            }
        }
    }
    // Replies to events handled before the connection ended still go out, as they would have
    // through the writer task.
    let _ = conn.flush(&mut batch).await;
    drop(conn);
    let _ = writer_task.await;
    tracing::debug!(%peer, "producer connection closed");
}

/// The write side of one producer connection, shared by its reader and its handler tasks.
///
/// While nothing is queued for the writer task, a reply is written by the task that has it (one
/// non-blocking write under the lock, so frames never interleave): the reader writes the replies
/// it decided at once, a handler task writes its own ack. That saves the hop to the writer task
/// (a task switch and a wake-up) on every round trip. Whatever a non-blocking write leaves
/// unwritten is queued ahead of everything else, so a frame is never left half-written; frames
/// that find the socket full or other frames queued go through the writer task, which batches
/// them into shared writes.
struct ConnWriter {
    writer: Arc<tokio::net::tcp::OwnedWriteHalf>,
    shared: Arc<WriteShared>,
    tx: mpsc::Sender<Out>,
    /// The `frame::FEATURE_*` bits the producer on this connection announced (none from a
    /// producer that predates them): which reply frames it can decode.
    features: AtomicU16,
}

/// What a connection's writer task shares with the tasks that write inline.
struct WriteShared {
    state: Mutex<WriteState>,
    /// Signalled when the queue empties (or the writer task ends), for a reader waiting to write.
    drained: Notify,
}

#[derive(Default)]
struct WriteState {
    /// Frames handed to the writer task and not yet completely written.
    queued: usize,
    /// The writer task has ended or a write failed: the connection is gone.
    closed: bool,
    /// Encoding buffer of the inline path, kept to avoid an allocation per reply.
    scratch: BytesMut,
}

/// What the writer task sends: a frame, or the unwritten rest of bytes a task started writing.
enum Out {
    Frame(Frame),
    Raw(Bytes),
}

/// What an inline write attempt did.
enum Inline {
    /// Written, or its unwritten rest queued first in line.
    Sent,
    /// Nothing written: other frames are queued ahead.
    Busy,
    /// Nothing written: the socket's send buffer is full.
    WouldBlock,
    /// The connection is gone.
    Closed,
}

/// The connection is gone; the frame was not sent.
#[derive(Debug)]
struct Closed;

impl ConnWriter {
    fn new(
        writer: tokio::net::tcp::OwnedWriteHalf,
        send_queue_frames_max: usize,
    ) -> (Arc<ConnWriter>, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(send_queue_frames_max.max(1));
        let conn = ConnWriter {
            writer: Arc::new(writer),
            shared: Arc::new(WriteShared {
                state: Mutex::new(WriteState::default()),
                drained: Notify::new(),
            }),
            tx,
            features: AtomicU16::new(0),
        };
        (Arc::new(conn), rx)
    }

    /// One non-blocking write of `bytes`; the caller holds the state lock and has checked that
    /// nothing is queued.
    fn write_now(&self, state: &mut WriteState, bytes: &[u8]) -> Inline {
        match self.writer.try_write(bytes) {
            Ok(n) if n == bytes.len() => Inline::Sent,
            Ok(n) => {
                let rest = Bytes::copy_from_slice(&bytes[n..]);
                // Nothing is queued, so only a closed channel refuses this.
                match self.tx.try_send(Out::Raw(rest)) {
                    Ok(()) => {
                        state.queued += 1;
                        Inline::Sent
                    }
                    Err(_) => {
                        state.closed = true;
                        Inline::Closed
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Inline::WouldBlock,
            Err(_) => {
                state.closed = true;
                Inline::Closed
            }
        }
    }

    /// Sends one frame: written at once when the way is clear, queued for the writer task
    /// otherwise (waiting for room in the queue).
    async fn send(&self, frame: Frame) -> Result<(), Closed> {
        {
            let mut guard = self.shared.state.lock();
            let state = &mut *guard;
            if state.closed {
                return Err(Closed);
            }
            if state.queued == 0 {
                let mut scratch = std::mem::take(&mut state.scratch);
                scratch.clear();
                frame::encode(&frame, &mut scratch);
                let outcome = self.write_now(state, &scratch);
                state.scratch = scratch;
                match outcome {
                    Inline::Sent => return Ok(()),
                    Inline::Closed => return Err(Closed),
                    Inline::Busy | Inline::WouldBlock => {}
                }
            }
        }
        self.send_queued(Out::Frame(frame)).await
    }

    /// Queues a frame for the writer task, waiting for room.
    async fn send_queued(&self, out: Out) -> Result<(), Closed> {
        self.shared.state.lock().queued += 1;
        let mut guard = QueuedGuard {
            shared: &self.shared,
            armed: true,
        };
        let sent = self.tx.send(out).await.is_ok();
        // Once in the channel the writer task accounts for the frame.
        guard.armed = !sent;
        if sent { Ok(()) } else { Err(Closed) }
    }

    /// Writes the reader's batch of replies and empties it. When frames are queued ahead, or the
    /// socket is full, the reader waits here: that is the back-pressure that stops it taking new
    /// events from a producer that does not read its acks.
    async fn flush(&self, batch: &mut BytesMut) -> Result<(), Closed> {
        while !batch.is_empty() {
            let drained = self.shared.drained.notified();
            let outcome = {
                let mut state = self.shared.state.lock();
                if state.closed {
                    Inline::Closed
                } else if state.queued != 0 {
                    Inline::Busy
                } else {
                    self.write_now(&mut state, batch)
                }
            };
            match outcome {
                Inline::Sent => batch.clear(),
                Inline::Closed => return Err(Closed),
                Inline::Busy => drained.await,
                Inline::WouldBlock => {
                    if self.writer.writable().await.is_err() {
                        self.shared.state.lock().closed = true;
                        return Err(Closed);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Undoes a queued count for a frame that never reached the channel (send failed or the sending
/// future was dropped), so the inline path is not blocked forever.
struct QueuedGuard<'a> {
    shared: &'a WriteShared,
    armed: bool,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.shared.state.lock();
            state.queued = state.queued.saturating_sub(1);
            let drained = state.queued == 0;
            drop(state);
            if drained {
                self.shared.drained.notify_waiters();
            }
        }
    }
}

/// Marks the connection closed when the writer task ends, however it ends, and wakes a reader
/// waiting for the queue to drain.
struct WriterExit<'a>(&'a WriteShared);

impl Drop for WriterExit<'_> {
    fn drop(&mut self) {
        self.0.state.lock().closed = true;
        self.0.drained.notify_waiters();
    }
}

fn encode_out(out: &Out, buf: &mut BytesMut) {
    match out {
        Out::Frame(frame) => frame::encode(frame, buf),
        Out::Raw(bytes) => buf.extend_from_slice(bytes),
    }
}

/// Writes queued frames in batches: whatever is queued is encoded into one buffer and written at
/// once, so replies that found the way blocked share system calls. Ends when every sender is gone
/// (dropping the last handle to the write half then shuts the write side down) or a write fails.
async fn write_loop(
    writer: Arc<tokio::net::tcp::OwnedWriteHalf>,
    shared: Arc<WriteShared>,
    mut rx: mpsc::Receiver<Out>,
) {
    let _exit = WriterExit(&shared);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(out) = rx.recv().await {
        encode_out(&out, &mut buf);
        let mut frames = 1;
        while buf.len() < WRITE_BATCH_BYTES_MAX {
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
                let _state = shared.state.lock();
                writer.try_write(&buf[written..])
            };
            match result {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        buf.clear();
        let mut state = shared.state.lock();
        state.queued = state.queued.saturating_sub(frames);
        let drained = state.queued == 0;
        drop(state);
        if drained {
            shared.drained.notify_waiters();
        }
    }
}

enum Admit {
    Run,
    Duplicate,
    Refuse(NackReason, &'static str),
}

fn admit(shared: &Shared, id: u128, dedup: bool) -> Admit {
    let mut state = shared.state.lock();
    if state.shutting_down {
        return Admit::Refuse(NackReason::ShuttingDown, "member is leaving");
    }
    if dedup && state.dedup.contains(id) {
        state.stats.duplicates_dropped += 1;
        return Admit::Duplicate;
    }
    if state.in_progress.contains(&id) {
        return Admit::Refuse(NackReason::Busy, "this event is being handled already");
    }
    if state.stats.in_flight >= shared.config.capacity {
        state.stats.busy_refusals += 1;
        return Admit::Refuse(NackReason::Busy, "member at capacity");
    }
    state.in_progress.insert(id);
    state.stats.in_flight += 1;
    state.stats.max_in_flight = state.stats.max_in_flight.max(state.stats.in_flight);
    Admit::Run
}

fn finish(shared: &Shared, id: u128, handled: bool, request: bool) {
    let mut state = shared.state.lock();
    state.in_progress.remove(&id);
    state.stats.in_flight -= 1;
    if handled {
        if request {
            state.stats.requests_answered += 1;
        } else {
            state.dedup.insert(id);
            state.stats.direct_handled += 1;
        }
    } else {
        state.stats.handler_failures += 1;
    }
    let idle = state.stats.in_flight == 0;
    drop(state);
    if idle {
        shared.idle.notify_waiters();
    }
}

/// Handles one frame from a producer; returns false when the connection should close. Replies
/// decided at once are appended to `batch`; handlers that wait reply from their own task.
async fn on_frame(
    frame: Frame,
    shared: &Arc<Shared>,
    conn: &Arc<ConnWriter>,
    batch: &mut BytesMut,
) -> bool {
    match frame {
        Frame::Event(event) => on_event(event, shared, conn, batch).await,
        Frame::Request(request) => on_request(request, shared, conn, batch).await,
        Frame::Ping { nonce } => {
            // A producer announces its features in a PING before its first request, so they
            // are known by the time that request is read (frames are handled in order).
            if let Some(features) = frame::nonce_features(nonce) {
                conn.features.store(features, Ordering::Relaxed);
            }
            frame::encode(&Frame::Pong { nonce }, batch)
        }
        Frame::Pong { .. } => {}
        Frame::Goodbye => return false,
        other => {
            tracing::warn!(
                ?other,
                "unexpected frame from a producer; closing this connection"
            );
            shared.state.lock().stats.malformed_frames += 1;
            return false;
        }
    }
    true
}

async fn on_event(
    event: WireEvent,
    shared: &Arc<Shared>,
    conn: &Arc<ConnWriter>,
    batch: &mut BytesMut,
) {
    let id = event.id;
    if let Some(nack) = wrong_topic_nack(shared, &event) {
        frame::encode(&nack, batch);
        return;
    }
    match admit(shared, id, true) {
        Admit::Duplicate => frame::encode(&Frame::Ack { id }, batch),
        Admit::Refuse(reason, message) => frame::encode(
            &Frame::Nack {
                id,
                reason,
                message: message.into(),
            },
            batch,
        ),
        Admit::Run => {
            let mut handling = shared
                .handler
                .on_event(Received::from_wire(event, Mode::Direct));
            // A handler that finishes at once is answered from the reader, saving a task switch
            // on the latency path; one that waits continues on its own task, which writes its
            // own reply, so the connection keeps reading (pipelining).
            if let std::task::Poll::Ready(result) = futures::poll!(&mut handling) {
                finish(shared, id, result.is_ok(), false);
                frame::encode(&event_reply(id, &result), batch);
                return;
            }
            let shared = shared.clone();
            let conn = conn.clone();
            tokio::spawn(async move {
                let result = handling.await;
                let reply = event_reply(id, &result);
                finish(&shared, id, result.is_ok(), false);
                let _ = conn.send(reply).await;
            });
        }
    }
}

/// The refusal for an event or request on a topic this member does not serve, if it is one.
fn wrong_topic_nack(shared: &Shared, event: &WireEvent) -> Option<Frame> {
    (event.topic != shared.config.topic).then(|| Frame::Nack {
        id: event.id,
        reason: NackReason::Unsupported,
        message: format!("this member serves topic {:?}", shared.config.topic),
    })
}

fn event_reply(id: u128, result: &Result<(), String>) -> Frame {
    match result {
        Ok(()) => Frame::Ack { id },
        Err(message) => Frame::Nack {
            id,
            reason: NackReason::HandlerFailed,
            message: message.clone(),
        },
    }
}

async fn on_request(
    request: WireEvent,
    shared: &Arc<Shared>,
    conn: &Arc<ConnWriter>,
    batch: &mut BytesMut,
) {
    let id = request.id;
    if let Some(nack) = wrong_topic_nack(shared, &request) {
        frame::encode(&nack, batch);
        return;
    }
    match admit(shared, id, false) {
        Admit::Duplicate | Admit::Run => {
            let replies = conn.features.load(Ordering::Relaxed) & frame::FEATURE_REPLY != 0;
            let mut answering = Box::pin(answer_request(request, shared.clone(), replies));
            // As for events: a handler that answers at once is answered from the reader.
            if let std::task::Poll::Ready(reply) = futures::poll!(&mut answering) {
                frame::encode(&reply, batch);
                return;
            }
            let conn = conn.clone();
            tokio::spawn(async move {
                let reply = answering.await;
                let _ = conn.send(reply).await;
            });
        }
        Admit::Refuse(reason, message) => frame::encode(
            &Frame::Nack {
                id,
                reason,
                message: message.into(),
            },
            batch,
        ),
    }
}

/// The frame carrying a handler's reply: REPLY when the producer decodes it and there is a key
/// or a header to carry, else RESPONSE (the value alone), which every producer understands. A
/// reply the producer's decoder would refuse (too many headers, an over-long header name, a frame
/// beyond this member's `frame_bytes_max`) fails the request instead of the whole connection.
fn reply_frame(id: u128, reply: Reply, replies: bool, frame_bytes_max: usize) -> Frame {
    let frame = if replies && (reply.key.is_some() || !reply.headers.is_empty()) {
        if reply.headers.len() > frame::HEADERS_MAX {
            return invalid_reply(id, format!("more than {} headers", frame::HEADERS_MAX));
        }
        if let Some((name, _)) = reply.headers.iter().find(|(name, _)| name.len() > 255) {
            return invalid_reply(id, format!("header name of {} bytes", name.len()));
        }
        Frame::Reply {
            id,
            key: reply.key,
            value: reply.value,
            headers: reply.headers,
        }
    } else {
        Frame::Response {
            id,
            value: reply.value,
        }
    };
    let bytes = frame::encoded_len(&frame) - frame::LENGTH_PREFIX_BYTES;
    if bytes > frame_bytes_max {
        return invalid_reply(
            id,
            format!("{bytes} bytes exceed frame_bytes_max {frame_bytes_max}"),
        );
    }
    frame
}

fn invalid_reply(id: u128, problem: String) -> Frame {
    Frame::Nack {
        id,
        reason: NackReason::HandlerFailed,
        message: format!("invalid reply: {problem}"),
    }
}

/// Runs the request handler within the request's deadline and returns the reply frame; `replies`
/// says whether the producer decodes REPLY frames.
async fn answer_request(request: WireEvent, shared: Arc<Shared>, replies: bool) -> Frame {
    let id = request.id;
    let received = Received::from_wire(request, Mode::Request);
    // A request without a deadline still gets one: the member never works forever.
    let deadline = received
        .deadline
        .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(30));
    let ctx = RequestContext::new(deadline);
    let run = shared.handler.answer(received, ctx);
    let at = tokio::time::Instant::from_std(system_to_instant(deadline));
    let reply = match tokio::time::timeout_at(at, run).await {
        Ok(Ok(reply)) => reply_frame(id, reply, replies, shared.config.frame_bytes_max),
        Ok(Err(message)) => Frame::Nack {
            id,
            // Deadlines travel in whole milliseconds, so a nested call that gave up on the
            // shared deadline may finish a hair before this timer: a failure in the deadline's
            // last millisecond is the deadline's doing.
            reason: if tokio::time::Instant::now() + DEADLINE_GRAIN >= at {
                NackReason::DeadlineExceeded
            } else {
                NackReason::HandlerFailed
            },
            message,
        },
        Err(_) => {
            tracing::info!(id = %uuid::Uuid::from_u128(id), "request deadline exceeded in the handler");
            Frame::Nack {
                id,
                reason: NackReason::DeadlineExceeded,
                message: "deadline exceeded".into(),
            }
        }
    };
    finish(
        &shared,
        id,
        matches!(reply, Frame::Response { .. } | Frame::Reply { .. }),
        true,
    );
    reply
}

async fn datagram_loop(socket: UdpSocket, shared: Arc<Shared>) {
    set_recv_buffer(&socket, shared.config.udp_recv_buffer_bytes);
    // One byte more than the limit, so an oversized datagram is seen as such, not truncated.
    let limit = shared.config.datagram_payload_bytes_max;
    let mut buf = vec![0u8; limit + 1];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(error) => {
                tracing::debug!(%error, "udp receive failed");
                continue;
            }
        };
        if len > limit {
            tracing::warn!(%from, "datagram larger than datagram_payload_bytes_max; ignored");
            shared.state.lock().stats.malformed_frames += 1;
            continue;
        }
        let seen = shared.datagrams_seen.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(n) = shared.config.drop_every_nth_datagram
            && n > 0
            && seen % n == 0
        {
            shared.state.lock().stats.datagrams_dropped_by_hook += 1;
            continue;
        }
        let event = match frame::decode_datagram(Bytes::copy_from_slice(&buf[..len]), limit) {
            Ok(Frame::Event(event)) => event,
            Ok(_) | Err(_) => {
                tracing::warn!(%from, "malformed datagram ignored");
                shared.state.lock().stats.malformed_frames += 1;
                continue;
            }
        };
        if event.topic != shared.config.topic {
            continue;
        }
        let fresh = shared.state.lock().gaps.record(event.publisher, event.seq);
        if !fresh {
            continue;
        }
        let started = Instant::now();
        if let Err(message) = shared
            .handler
            .on_event(Received::from_wire(event, Mode::Datagram))
            .await
        {
            tracing::debug!(%message, elapsed_us = started.elapsed().as_micros() as u64, "datagram handler failed");
        }
    }
}
