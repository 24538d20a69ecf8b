//! A member's side of producer connections: accept them, read frames, run the handler on each
//! event or request (answering at once when it finishes at once), and write the replies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Admit, DEADLINE_GRAIN, Shared, admit, finish};
use crate::conn_writer::ConnWriter;
use crate::error::HandlerError;
use crate::event::{Mode, Received, Reply, RequestContext, system_to_instant};
use crate::frame::{self, Frame, Hello, NackReason, WireEvent};
use crate::handshake;
use crate::stream::Stream;

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

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let limit = Duration::from_millis(shared.config.handshake_timeout_ms);
    let stream = match tokio::time::timeout(limit, secure(stream, &shared, &mut buf)).await {
        Ok(Ok(stream)) => stream,
        failed => {
            let error = match failed {
                Ok(Err(error)) => error,
                _ => format!("handshake not finished within {} ms", limit.as_millis()),
            };
            tracing::warn!(%peer, %error, "producer failed authentication; closed");
            shared.state.lock().stats.auth_failures += 1;
            return;
        }
    };
    let (mut reader, writer) = stream.split();
    let (out, write_loop) = ConnWriter::new(writer, shared.config.send_queue_frames_max);
    let writer_task = tokio::spawn(write_loop.run());
    let conn = Arc::new(Connection {
        out,
        features: AtomicU16::new(0),
    });
    let hello = Frame::Hello(Hello {
        member_id: shared.member_id,
        topic: shared.config.topic.clone(),
        group: shared.config.group.clone(),
        capacity: shared.config.capacity,
        frame_bytes_max: shared.config.frame_bytes_max.min(u32::MAX as usize) as u32,
    });
    if conn.out.send(hello).await.is_err() {
        return;
    }
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
                    if batch.len() >= REPLY_BATCH_BYTES_MAX
                        && conn.out.flush(&mut batch).await.is_err()
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
        if conn.out.flush(&mut batch).await.is_err() {
            break;
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = async { let _ = shutdown.wait_for(|down| *down).await; } => {
                let _ = conn.out.send(Frame::Goodbye).await;
                break;
            }
        }
    }
    // Replies to events handled before the connection ended still go out, as they would have
    // through the writer task.
    let _ = conn.out.flush(&mut batch).await;
    drop(conn);
    let _ = writer_task.await;
    tracing::debug!(%peer, "producer connection closed");
}

/// Runs what the member's configuration asks of a new connection before HELLO: the TLS
/// handshake (which checks the producer's certificate against the CA), then the group-key
/// handshake; returns the stream to serve or why the producer was refused.
async fn secure(stream: TcpStream, shared: &Shared, buf: &mut BytesMut) -> Result<Stream, String> {
    let mut stream = match &shared.config.tls {
        None => Stream::Tcp(stream),
        Some(tls) => {
            let tls = tls
                .acceptor()
                .accept(stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Stream::Tls(Box::new(tls.into()))
        }
    };
    if let Some(key) = &shared.config.group_key {
        handshake::member_side(&mut stream, buf, key, shared.config.frame_bytes_max)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(stream)
}

/// One producer connection as its reader and handler tasks share it: the write side (replies
/// are written by the task that has them, see [`ConnWriter`]) and what the producer announced.
struct Connection {
    out: ConnWriter<Frame>,
    /// The `frame::FEATURE_*` bits the producer on this connection announced (none from a
    /// producer that predates them): which reply frames it can decode.
    features: AtomicU16,
}

/// Handles one frame from a producer; returns false when the connection should close. Replies
/// decided at once are appended to `batch`; handlers that wait reply from their own task.
async fn on_frame(
    frame: Frame,
    shared: &Arc<Shared>,
    conn: &Arc<Connection>,
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
    conn: &Arc<Connection>,
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
                let _ = conn.out.send(reply).await;
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

fn event_reply(id: u128, result: &Result<(), HandlerError>) -> Frame {
    match result {
        Ok(()) => Frame::Ack { id },
        Err(error) => Frame::Nack {
            id,
            reason: NackReason::HandlerFailed,
            message: error.to_string(),
        },
    }
}

async fn on_request(
    request: WireEvent,
    shared: &Arc<Shared>,
    conn: &Arc<Connection>,
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
                let _ = conn.out.send(reply).await;
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
        Ok(Err(error)) => Frame::Nack {
            id,
            // Deadlines travel in whole milliseconds, so a nested call that gave up on the
            // shared deadline may finish a hair before this timer: a failure in the deadline's
            // last millisecond is the deadline's doing.
            reason: if tokio::time::Instant::now() + DEADLINE_GRAIN >= at {
                NackReason::DeadlineExceeded
            } else {
                NackReason::HandlerFailed
            },
            message: error.to_string(),
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
