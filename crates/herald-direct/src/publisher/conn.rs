//! One connection per member: connect and read its hello, announce features, then read its
//! replies and heartbeats while a writer task sends what publishing tasks could not write inline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::membership::set_state;
use super::{MemberState, Shared};
use crate::event::Reply;
use crate::frame::{self, Frame, Hello, NackReason, WireEvent};

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
pub(super) enum Inline {
    /// The frame is on its way (written, or its unwritten rest queued first in line).
    Sent,
    /// Nothing was written: the writer task is busy or the socket is full; queue it instead.
    Queue,
    /// The writer task has ended: the connection is gone.
    Closed,
}

impl Conn {
    pub(super) fn try_write_inline(&self, event: &WireEvent, request: bool) -> Inline {
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
    pub(super) async fn send_queued(&self, out: Out) -> Result<(), ()> {
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
    pub(super) fn try_queue(&self, out: Out) {
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

pub(super) enum Outcome {
    Ack,
    Nack(NackReason, String),
    Response(Reply),
    Lost,
}

pub(super) struct Conn {
    tx: mpsc::Sender<Out>,
    /// The connection's write side, shared with its writer task.
    writer: Arc<tokio::net::tcp::OwnedWriteHalf>,
    write: Arc<Mutex<WriteState>>,
    /// Replies owed on this connection. `None` once the connection ended: a sender that finds
    /// it so knows at once that its event was not delivered (no wait for a timeout).
    pub(super) pending: Mutex<Option<HashMap<u128, oneshot::Sender<Outcome>>>>,
}

/// Ends a connection's bookkeeping: every reply still owed becomes `Lost`, and later senders
/// see the connection is gone.
pub(super) fn fail_pending(conn: &Conn) {
    let owed = conn.pending.lock().take();
    for (_, tx) in owed.into_iter().flatten() {
        let _ = tx.send(Outcome::Lost);
    }
}

/// Keeps one connection to a member alive: connect, read hello, serve, and reconnect after a
/// pause when it drops, until the member is removed from the membership.
pub(super) async fn supervise(shared: Arc<Shared>, addr: SocketAddr) {
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
pub(super) enum Out {
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
