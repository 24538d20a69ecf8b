//! The consumer side: a member of a group serving one topic, taking direct events and requests
//! over TCP and datagrams over UDP on the same port number.
//!
//! This module holds the member's API, its admission bookkeeping and the datagram receiver;
//! `conn` serves the producers' TCP connections.

mod conn;

use conn::accept_loop;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::MemberStartError;
use crate::event::system_to_unix_ms;
use crate::event::{Handler, Mode, Received};
use crate::frame::{self, Frame, NackReason};
use crate::handshake::{GroupKey, HANDSHAKE_TIMEOUT_MS_DEFAULT};
use crate::mdns::{Advertisement, LOAD_ANNOUNCE_INTERVAL_MS_MIN};
use crate::seal::{self, DatagramKey, Replay, ReplayGuard};
use crate::tls::MemberTls;
use crate::window::{DedupWindow, GapCounter};

/// Resolution of deadlines on the wire.
const DEADLINE_GRAIN: Duration = Duration::from_millis(1);

/// Default number of recent event ids a member remembers to drop duplicates.
pub const DEDUP_WINDOW_EVENTS_DEFAULT: usize = 100_000;
/// Default largest datagram payload: a 1500-byte Ethernet MTU minus IPv4 (20) and UDP (8) headers.
pub const DATAGRAM_PAYLOAD_BYTES_MAX_DEFAULT: usize = 1472;

/// Default largest age of a sealed datagram (see [`MemberConfig::datagram_age_ms_max`]).
pub const DATAGRAM_AGE_MS_MAX_DEFAULT: u64 = 30_000;

/// Default shortest time between two mDNS announcements of a member's load (see
/// [`MemberConfig::load_announce_interval_ms`]).
pub const LOAD_ANNOUNCE_INTERVAL_MS_DEFAULT: u64 = 5_000;

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
    /// With `mdns`, the member advertises its load (events admitted and not yet acknowledged)
    /// in a `load` TXT property and re-announces it when it changed, at most once per this
    /// many milliseconds. 0 turns load announcements off (no `load` property at all); otherwise
    /// at least [`LOAD_ANNOUNCE_INTERVAL_MS_MIN`].
    pub load_announce_interval_ms: u64,
    /// The topic's datagram keys. When there is any, only sealed datagrams whose tag checks
    /// with one of them are delivered (several keys allow a rotation); every other datagram is
    /// counted as rejected. Empty: datagrams are taken unsealed, as version 1 sends them.
    pub datagram_keys: Vec<DatagramKey>,
    /// Largest difference between a sealed datagram's send time and this member's clock; an
    /// older (or later) one is counted as replayed.
    pub datagram_age_ms_max: u64,
    /// The group key: with it, every producer connection starts with the group-key handshake
    /// (`docs/direct-protocol.md`, "Group key") and a producer that fails it is closed before
    /// it can send anything.
    pub group_key: Option<GroupKey>,
    /// Bound on the handshake (group key or TLS) of one connection.
    pub handshake_timeout_ms: u64,
    /// TLS: producers must present a certificate signed by the configured CA; the member
    /// presents its own (`docs/direct-protocol.md`, "TLS").
    pub tls: Option<MemberTls>,
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
            load_announce_interval_ms: LOAD_ANNOUNCE_INTERVAL_MS_DEFAULT,
            datagram_keys: Vec::new(),
            datagram_age_ms_max: DATAGRAM_AGE_MS_MAX_DEFAULT,
            group_key: None,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            tls: None,
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
    /// Datagrams refused because they could not be authenticated: unsealed while the member has
    /// datagram keys, a key id it does not know, a tag that does not match. Never delivered.
    pub datagrams_rejected: u64,
    /// Authentic datagrams refused as replays: a sequence number seen already or older than the
    /// replay window, or a send time beyond `datagram_age_ms_max`. Never delivered.
    pub datagrams_replayed: u64,
    /// Producer connections closed because they failed authentication (group key or TLS) or did
    /// not finish it within `handshake_timeout_ms`.
    pub auth_failures: u64,
    /// Events or requests in flight now.
    pub in_flight: u32,
    /// The most events ever in flight at once.
    pub in_flight_max: u32,
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
    replay: ReplayGuard,
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
    /// Whether the member announces its load: only then do admissions and completions signal
    /// `load_changed`.
    announces_load: bool,
    /// Signalled when the count of events in flight moved; holds one permit while nobody waits,
    /// so the announcing task sees every change made during its pause.
    load_changed: tokio::sync::Notify,
}

/// A running member. Dropping it without [`Member::shutdown`] stops it abruptly (like a crash).
pub struct Member {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
    connections: Arc<Mutex<JoinSet<()>>>,
    /// Shared with the load announcing task, which re-registers under this lock: taking the
    /// advertisement out (shutdown) therefore waits for an announcement being made, and no
    /// announcement follows the goodbye.
    advertisement: Arc<Mutex<Option<Advertisement>>>,
}

impl Member {
    /// Binds TCP and UDP on the same port and starts serving.
    pub async fn start(
        config: MemberConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Member, MemberStartError> {
        if config.capacity == 0 {
            return Err(MemberStartError::Config(
                "capacity must be at least 1".into(),
            ));
        }
        if config.topic.is_empty() || config.topic.len() > 255 || config.group.len() > 255 {
            return Err(MemberStartError::Config(
                "topic must be 1..=255 bytes, group at most 255".into(),
            ));
        }
        if config.load_announce_interval_ms != 0
            && config.load_announce_interval_ms < LOAD_ANNOUNCE_INTERVAL_MS_MIN
        {
            return Err(MemberStartError::Config(format!(
                "load_announce_interval_ms must be 0 (off) or at least {LOAD_ANNOUNCE_INTERVAL_MS_MIN}"
            )));
        }
        let (listener, udp) = bind_pair(config.bind).await?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| MemberStartError::Bind {
                addr: config.bind,
                source,
            })?;
        let member_id = uuid::Uuid::new_v4().as_u128();
        let announces_load = config.mdns && config.load_announce_interval_ms > 0;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                dedup: DedupWindow::new(config.dedup_window_events),
                in_progress: HashSet::new(),
                gaps: GapCounter::new(config.publishers_max),
                replay: ReplayGuard::new(config.publishers_max, config.datagram_age_ms_max),
                stats: MemberStats::default(),
                shutting_down: false,
            }),
            config,
            member_id,
            handler,
            datagrams_seen: AtomicU64::new(0),
            idle: tokio::sync::Notify::new(),
            announces_load,
            load_changed: tokio::sync::Notify::new(),
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
                    announces_load.then_some(0),
                )
                .map_err(|e| MemberStartError::Mdns(e.to_string()))?,
            )
        } else {
            None
        };
        let advertisement = Arc::new(Mutex::new(advertisement));
        if announces_load {
            tasks.spawn(announce_load_loop(shared.clone(), advertisement.clone()));
        }
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
            advertisement,
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
        // Taken under the lock the announcing task re-registers with, so none follows the goodbye.
        let advertisement = self.advertisement.lock().take();
        if let Some(ad) = advertisement {
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

async fn bind_pair(bind: SocketAddr) -> Result<(TcpListener, UdpSocket), MemberStartError> {
    // With port 0 the TCP port is chosen first; the same UDP port may be taken by someone else,
    // so try a few times.
    let attempts = if bind.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| MemberStartError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MemberStartError::Bind { addr: bind, source })?;
        match bind_udp(addr) {
            Ok(udp) => return Ok((listener, udp)),
            Err(source) => last = Some(MemberStartError::Bind { addr, source }),
        }
    }
    Err(last.unwrap_or(MemberStartError::Config("no port".into())))
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
    debug_assert_eq!(state.stats.in_flight as usize, state.in_progress.len());
    state.stats.in_flight_max = state.stats.in_flight_max.max(state.stats.in_flight);
    drop(state);
    if shared.announces_load {
        shared.load_changed.notify_one();
    }
    Admit::Run
}

fn finish(shared: &Shared, id: u128, handled: bool, request: bool) {
    let mut state = shared.state.lock();
    let was_in_progress = state.in_progress.remove(&id);
    debug_assert!(was_in_progress, "finished an event that was not admitted");
    state.stats.in_flight -= 1;
    debug_assert_eq!(state.stats.in_flight as usize, state.in_progress.len());
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
    if shared.announces_load {
        shared.load_changed.notify_one();
    }
    if idle {
        shared.idle.notify_waiters();
    }
}

/// Re-announces the member's load over mDNS when it changed, until the member stops (the task
/// is in the member's task set) or its advertisement is taken for the goodbye.
///
/// The mDNS traffic this adds is bounded whatever the event rate: after every wake-up the task
/// pauses for `load_announce_interval_ms` (at least [`LOAD_ANNOUNCE_INTERVAL_MS_MIN`]), so it
/// re-registers at most once per interval, and each re-registration is two multicast responses
/// per interface and address family (the announcement and its repeat a second later), a few
/// hundred bytes each: at most 0.4 packets a second per interface at the 5 s default, 0.8 at
/// the 2.5 s minimum. An idle
/// member costs nothing: the task sleeps on `load_changed` and nothing signals it, and a load
/// that came back to the value last announced is not announced again.
async fn announce_load_loop(shared: Arc<Shared>, advertisement: Arc<Mutex<Option<Advertisement>>>) {
    let pause = Duration::from_millis(shared.config.load_announce_interval_ms);
    // The registration advertised 0.
    let mut announced = 0u32;
    loop {
        shared.load_changed.notified().await;
        let load = shared.state.lock().stats.in_flight;
        if load != announced {
            let mut guard = advertisement.lock();
            let Some(ad) = guard.as_mut() else {
                return;
            };
            match ad.announce_load(load) {
                Ok(()) => announced = load,
                Err(error) => {
                    // The daemon's command queue was full: try again after the pause, changed
                    // or not, so the announced load does not stay stale.
                    tracing::debug!(%error, load, "could not re-announce the load");
                    shared.load_changed.notify_one();
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
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
        let datagram = Bytes::copy_from_slice(&buf[..len]);
        let event = if shared.config.datagram_keys.is_empty() {
            match frame::decode_datagram(datagram, limit) {
                Ok(Frame::Event(event)) => event,
                Ok(_) | Err(_) => {
                    tracing::warn!(%from, "malformed datagram ignored");
                    shared.state.lock().stats.malformed_frames += 1;
                    continue;
                }
            }
        } else {
            match open_sealed(&shared, datagram) {
                Ok(event) => event,
                Err(refusal) => {
                    // At debug level: whoever can reach the port can send these, as many as
                    // they like; the counters say how many.
                    tracing::debug!(%from, %refusal, "datagram refused");
                    let mut state = shared.state.lock();
                    match refusal {
                        Refusal::Replayed(_) => state.stats.datagrams_replayed += 1,
                        _ => state.stats.datagrams_rejected += 1,
                    }
                    continue;
                }
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

/// Why a datagram was refused by a member with datagram keys.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("not sealed")]
    Unsealed,
    #[error("malformed envelope: {0}")]
    Malformed(frame::DecodeError),
    #[error(transparent)]
    Open(seal::OpenError),
    #[error("sealed payload is not an event of its sender")]
    Payload,
    #[error("replayed ({0:?})")]
    Replayed(Replay),
}

/// Authenticates a sealed datagram, checks it against its sender's replay window, and returns
/// its event. Only a datagram that passes the tag check can move a replay window.
fn open_sealed(shared: &Shared, datagram: Bytes) -> Result<frame::WireEvent, Refusal> {
    if !seal::is_sealed(&datagram) {
        return Err(Refusal::Unsealed);
    }
    let envelope = seal::decode_sealed(datagram).map_err(Refusal::Malformed)?;
    let body = seal::open(&envelope, &shared.config.datagram_keys).map_err(Refusal::Open)?;
    let event = match frame::decode_body(body) {
        Ok(Frame::Event(event)) if event.publisher == envelope.sender => event,
        _ => return Err(Refusal::Payload),
    };
    let now = system_to_unix_ms(std::time::SystemTime::now());
    shared
        .state
        .lock()
        .replay
        .check(&envelope, now)
        .map_err(Refusal::Replayed)?;
    Ok(event)
}
