//! One connection per member: connect and read its hello, announce features, then read its
//! replies and heartbeats while a writer task sends what publishing tasks could not write inline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::membership::set_state;
use super::{MemberState, Shared};
use crate::conn_writer::{ConnWriter, Encode, Inline};
use crate::event::Reply;
use crate::frame::{self, Frame, Hello, NackReason, WireEvent};
use crate::handshake::{self, HandshakeError, read_frame};
use crate::stream::Stream;

/// How an attempt to deliver on a connection ended, as its reader (or the connection's end)
/// reports it to the waiting publisher.
pub(super) enum Outcome {
    Ack,
    Nack(NackReason, String),
    Response(Reply),
    Lost,
}

pub(super) struct Conn {
    /// The connection's write side, shared with its writer task.
    pub(super) out: ConnWriter<Out>,
    /// Replies owed on this connection. `None` once the connection ended: a sender that finds
    /// it so knows at once that its event was not delivered (no wait for a timeout).
    pub(super) pending: Mutex<Option<HashMap<u128, oneshot::Sender<Outcome>>>>,
}

impl Conn {
    /// Writes an event (or request) at once if the way is clear: nothing queued and no other
    /// event awaiting its reply. With other events awaiting replies the connection is busy: the
    /// writer task batches their frames into shared writes, which pipelining needs more than a
    /// saved task hop. Anything but [`Inline::Sent`] and [`Inline::Closed`] leaves the frame to
    /// be queued by the caller ([`ConnWriter::send_queued`]).
    pub(super) fn try_write_inline(&self, out: &Out) -> Inline {
        if self.pending.lock().as_ref().is_some_and(|p| p.len() > 1) {
            return Inline::Busy;
        }
        self.out.try_inline(out)
    }
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
                let (state, last_error) = shared
                    .members
                    .lock()
                    .get(&addr)
                    .map(|s| (s.state, s.last_error.clone()))
                    .unzip();
                let error_text = error.to_string();
                // Logged once per change, not on every reconnect attempt.
                if error.is_authentication() && last_error.flatten().as_ref() != Some(&error_text) {
                    tracing::warn!(%addr, error = %error_text, "member failed authentication; not used");
                }
                // A member that never answered stays "connecting"; one that left stays "left"
                // until it comes back; anything else that cannot be reached is down.
                let next = match state {
                    Some(MemberState::Connecting) | None => MemberState::Connecting,
                    Some(MemberState::Left) => MemberState::Left,
                    Some(_) => MemberState::Down,
                };
                set_state(&shared, addr, next, Some(error_text));
            }
        }
        tokio::time::sleep(reconnect).await;
    }
}

/// Why a connection to a member could not be set up; its text becomes the member's
/// `last_error` in the membership view.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("expected hello, got {0:?}")]
    NotHello(Box<Frame>),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("TLS handshake timed out")]
    TlsTimeout,
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("no hello in time")]
    HelloTimeout,
    #[error("features not sent in time")]
    FeaturesTimeout,
    #[error("write: {0}")]
    Write(std::io::Error),
}

impl ConnectError {
    /// Whether the member failed to prove who it is (TLS certificate, group key), as opposed
    /// to being unreachable.
    fn is_authentication(&self) -> bool {
        matches!(
            self,
            ConnectError::Tls(_)
                | ConnectError::Handshake(
                    HandshakeError::MemberProof | HandshakeError::MemberWithoutKey
                )
        )
    }
}

async fn connect(
    shared: &Shared,
    addr: SocketAddr,
) -> Result<(Stream, Hello, BytesMut), ConnectError> {
    let timeout = Duration::from_millis(shared.config.connect_timeout_ms);
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::ConnectTimeout)?
        .map_err(ConnectError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let mut stream = match &shared.config.tls {
        None => Stream::Tcp(tcp),
        Some(tls) => {
            let tls =
                tokio::time::timeout(timeout, tls.connector().connect(tls.server_name(addr), tcp))
                    .await
                    .map_err(|_| ConnectError::TlsTimeout)?
                    .map_err(ConnectError::Tls)?;
            Stream::Tls(Box::new(tls.into()))
        }
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let frame_bytes_max = shared.config.frame_bytes_max;
    let hello = tokio::time::timeout(timeout, async {
        let mut first = read_frame(&mut stream, &mut buf, frame_bytes_max).await?;
        // A member with a group key challenges first; one without says hello at once. Either
        // must match this producer's configuration: a producer with a key never sends events to
        // a member that has not proven it holds the key.
        match (&first, &shared.config.group_key) {
            (Frame::Challenge { nonce }, Some(key)) => {
                handshake::producer_side(&mut stream, &mut buf, key, nonce, frame_bytes_max)
                    .await?;
                first = read_frame(&mut stream, &mut buf, frame_bytes_max).await?;
            }
            (Frame::Challenge { .. }, None) => return Err(HandshakeError::KeyRequired.into()),
            (Frame::Hello(_), Some(_)) => return Err(HandshakeError::MemberWithoutKey.into()),
            _ => {}
        }
        match first {
            Frame::Hello(hello) => Ok(hello),
            other => Err(ConnectError::NotHello(Box::new(other))),
        }
    })
    .await
    .map_err(|_| ConnectError::HelloTimeout)??;
    // Announce what this producer decodes beyond version 1 before anything else is written, so
    // the member knows it by the first request. A member that predates features answers a PONG.
    let mut features = BytesMut::new();
    frame::encode(
        &Frame::Ping {
            nonce: frame::features_nonce(frame::FEATURE_REPLY),
        },
        &mut features,
    );
    tokio::time::timeout(timeout, async {
        stream.write_all(&features).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| ConnectError::FeaturesTimeout)?
    .map_err(ConnectError::Write)?;
    Ok((stream, hello, buf))
}

enum End {
    Goodbye,
    Failed(String),
}

async fn run_connection(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    stream: Stream,
    hello: Hello,
    mut buf: BytesMut,
) -> End {
    let (mut reader, writer) = stream.split();
    let (out, write_loop) = ConnWriter::new(writer, shared.config.send_queue_frames_max);
    let conn = Arc::new(Conn {
        out,
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
    let writer_task = tokio::spawn(write_loop.run());
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
                        conn.out.try_queue(Out::Frame(Frame::Pong { nonce }));
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
                    conn.out.try_queue(Out::Frame(Frame::Ping { nonce }));
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
}

impl Encode for Out {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Out::Frame(frame) => frame::encode(frame, buf),
            Out::Event(event, request) => frame::encode_event(event, *request, buf),
        }
    }
}
