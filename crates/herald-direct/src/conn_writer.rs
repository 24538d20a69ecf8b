//! The write side of one connection (TCP, or TLS: `stream.rs`), used by both ends of the direct protocol: frames are
//! written by the task that has them while the way is clear, and go through a batching writer
//! task only when it is not.
//!
//! While nothing is queued for the writer task, a frame is written by the task that has it (one
//! non-blocking write under the lock, so frames never interleave): a publishing task writes its
//! event, a member's reader writes the replies it decided at once, a handler task writes its own
//! ack. That saves the hop to the writer task (a task switch and a wake-up) on every round trip,
//! which is the latency path (`docs/benchmarks.md`). Whatever a non-blocking write leaves
//! unwritten is queued ahead of everything else, so a frame is never left half-written even if
//! the writing task is then dropped; frames that find the socket full or other frames queued go
//! through the writer task, which batches them into shared writes.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::frame::{self, Frame};
use crate::stream::WriteSide;

/// Bytes the writer task gathers from its queue into one write.
pub(crate) const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Something a connection writes: it encodes itself into the connection's buffer.
pub(crate) trait Encode {
    fn encode(&self, buf: &mut BytesMut);
}

impl Encode for Frame {
    fn encode(&self, buf: &mut BytesMut) {
        frame::encode(self, buf);
    }
}

/// What the writer task sends: an item, or the unwritten rest of bytes a task started writing.
enum Queued<T> {
    Item(T),
    Raw(Bytes),
}

impl<T: Encode> Queued<T> {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Queued::Item(item) => item.encode(buf),
            Queued::Raw(bytes) => buf.extend_from_slice(bytes),
        }
    }
}

/// The handle the tasks that write share; the writer task runs from the [`WriteLoop`] made with
/// it. Dropping every handle ends the writer task once the queue is written, and dropping the
/// last reference to the write half then shuts the write side down.
pub(crate) struct ConnWriter<T> {
    writer: Arc<WriteSide>,
    shared: Arc<WriteShared>,
    tx: mpsc::Sender<Queued<T>>,
}

/// What a connection's writer task shares with the tasks that write inline.
struct WriteShared {
    state: Mutex<WriteState>,
    /// Signalled when the queue empties (or the writer task ends), for a task waiting to write.
    drained: Notify,
}

#[derive(Default)]
struct WriteState {
    /// Frames handed to the writer task and not yet completely written.
    queued: usize,
    /// The writer task has ended or a write failed: the connection is gone.
    closed: bool,
    /// Encoding buffer of the inline path, kept to avoid an allocation per frame.
    scratch: BytesMut,
}

/// What an inline write attempt did.
pub(crate) enum Inline {
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
pub(crate) struct Closed;

/// The writer task's half: run it on its own task with [`WriteLoop::run`].
pub(crate) struct WriteLoop<T> {
    writer: Arc<WriteSide>,
    shared: Arc<WriteShared>,
    rx: mpsc::Receiver<Queued<T>>,
}

impl<T: Encode> ConnWriter<T> {
    /// The shared write side of `writer`, with room for `queue_frames_max` frames queued for the
    /// writer task before senders wait, and that writer task's loop.
    pub(crate) fn new(writer: WriteSide, queue_frames_max: usize) -> (ConnWriter<T>, WriteLoop<T>) {
        let (tx, rx) = mpsc::channel(queue_frames_max.max(1));
        let writer = Arc::new(writer);
        let shared = Arc::new(WriteShared {
            state: Mutex::new(WriteState::default()),
            drained: Notify::new(),
        });
        let write_loop = WriteLoop {
            writer: writer.clone(),
            shared: shared.clone(),
            rx,
        };
        (ConnWriter { writer, shared, tx }, write_loop)
    }

    /// One non-blocking write of `bytes`; the caller holds the state lock and has checked that
    /// nothing is queued.
    fn write_now(&self, state: &mut WriteState, bytes: &[u8]) -> Inline {
        match self.writer.try_write(bytes) {
            Ok(n) if n == bytes.len() => Inline::Sent,
            Ok(n) => {
                let rest = Bytes::copy_from_slice(&bytes[n..]);
                // Nothing is queued, so only a closed channel refuses this.
                match self.tx.try_send(Queued::Raw(rest)) {
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

    /// Writes `item` at once if nothing is queued ahead of it; says what happened. Anything but
    /// [`Inline::Sent`] and [`Inline::Closed`] leaves the item to be queued by the caller.
    pub(crate) fn try_inline(&self, item: &T) -> Inline {
        let mut guard = self.shared.state.lock();
        let state = &mut *guard;
        if state.closed {
            return Inline::Closed;
        }
        if state.queued != 0 {
            return Inline::Busy;
        }
        let mut scratch = std::mem::take(&mut state.scratch);
        scratch.clear();
        item.encode(&mut scratch);
        let outcome = self.write_now(state, &scratch);
        state.scratch = scratch;
        outcome
    }

    /// Sends one item: written at once when the way is clear, queued for the writer task
    /// otherwise (waiting for room in the queue).
    pub(crate) async fn send(&self, item: T) -> Result<(), Closed> {
        match self.try_inline(&item) {
            Inline::Sent => Ok(()),
            Inline::Closed => Err(Closed),
            Inline::Busy | Inline::WouldBlock => self.send_queued(item).await,
        }
    }

    /// Queues an item for the writer task, waiting for room.
    pub(crate) async fn send_queued(&self, item: T) -> Result<(), Closed> {
        self.shared.state.lock().queued += 1;
        let mut guard = QueuedGuard {
            shared: &self.shared,
            armed: true,
        };
        let sent = self.tx.send(Queued::Item(item)).await.is_ok();
        // Once in the channel the writer task accounts for the frame.
        guard.armed = !sent;
        if sent { Ok(()) } else { Err(Closed) }
    }

    /// Queues an item if there is room; drops it otherwise (for best-effort control frames such
    /// as heartbeats).
    pub(crate) fn try_queue(&self, item: T) {
        // Under the lock, so the writer task cannot count the frame written before it is counted.
        let mut state = self.shared.state.lock();
        if self.tx.try_send(Queued::Item(item)).is_ok() {
            state.queued += 1;
        }
    }

    /// Writes a batch of encoded frames and empties it. When frames are queued ahead, or the
    /// socket is full, the caller waits here: that is the back-pressure that stops a member's
    /// reader taking new events from a producer that does not read its acks.
    pub(crate) async fn flush(&self, batch: &mut BytesMut) -> Result<(), Closed> {
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
                Inline::WouldBlock if self.writer.is_tls() => {
                    // Nothing is queued ahead (checked above), and the TLS side's lock keeps
                    // the writer task's batches from interleaving with this one.
                    if self.writer.write_all(batch).await.is_err() {
                        self.shared.state.lock().closed = true;
                        return Err(Closed);
                    }
                    batch.clear();
                }
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

impl WriteShared {
    /// Takes `frames` written frames off the queued count, waking a task waiting for the queue
    /// to drain when it reaches zero.
    fn written(&self, frames: usize) {
        let mut state = self.state.lock();
        debug_assert!(
            state.queued >= frames,
            "{frames} frames written of {} queued",
            state.queued
        );
        // Clamped as well, so that a release build that got the count wrong never wraps it
        // into a queue that looks busy forever (which would end every inline write).
        state.queued = state.queued.saturating_sub(frames);
        let drained = state.queued == 0;
        drop(state);
        if drained {
            self.drained.notify_waiters();
        }
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
            self.shared.written(1);
        }
    }
}

/// Marks the connection closed when the writer task ends, however it ends (its task aborted
/// included), and wakes a task waiting for the queue to drain.
struct WriterExit<'a>(&'a WriteShared);

impl Drop for WriterExit<'_> {
    fn drop(&mut self) {
        self.0.state.lock().closed = true;
        self.0.drained.notify_waiters();
    }
}

impl<T: Encode> WriteLoop<T> {
    /// Writes queued frames in batches: whatever is queued is encoded into one buffer and
    /// written at once, so frames that found the way blocked (pipelined events, acks) share
    /// system calls. Ends when every sender is gone or a write fails.
    pub(crate) async fn run(self) {
        let WriteLoop {
            writer,
            shared,
            mut rx,
        } = self;
        let _exit = WriterExit(&shared);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        while let Some(queued) = rx.recv().await {
            queued.encode(&mut buf);
            let mut frames = 1;
            while buf.len() < WRITE_BATCH_BYTES_MAX {
                match rx.try_recv() {
                    Ok(queued) => {
                        queued.encode(&mut buf);
                        frames += 1;
                    }
                    Err(_) => break,
                }
            }
            if writer.is_tls() {
                // Nothing is written inline on a TLS side, so the batch needs no lock of ours.
                if writer.write_all(&buf).await.is_err() {
                    return;
                }
                buf.clear();
                shared.written(frames);
                continue;
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
            shared.written(frames);
        }
    }
}
