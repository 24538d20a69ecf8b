//! A member's side of producer connections: accept them, read frames, run the handler on each
//! event or request (answering at once when it finishes at once), and write the replies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use super::{Admit, DEADLINE_GRAIN, Shared, admit, finish};
use crate::event::{Mode, Received, Reply, RequestContext, system_to_instant};
use crate::frame::{self, Frame, Hello, NackReason, WireEvent};

pub(super) async fn accept_loop(
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
