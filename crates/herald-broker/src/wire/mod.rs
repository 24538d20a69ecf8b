//! The Kafka wire server: connection handling, request framing, and the dispatch of each API to
//! its handler module (`produce`, `fetch`, `metadata`, `admin`, ...).
//!
//! This module and its children are the only code that knows `kafka_protocol` types; handlers
//! translate requests into calls on the broker core ([`crate::Core`]) and its results back.
//!
//! Per connection, a reader decodes requests and applies each one's effect in arrival order,
//! as Kafka does (appends from one producer, offset commits, group joins and syncs stay in
//! order), and a writer sends responses in the same order. A handler that must wait (an
//! `acks=all` fsync, a commit's fsync, a rebalance, a Fetch long poll) applies its effect
//! first and returns a future for the wait alone; it runs on its own task while the reader
//! moves on, up to `connection_requests_in_flight_max` requests per connection. A request that
//! reads what earlier ones wrote waits for them first (an OffsetFetch for the commits queued
//! before it).

mod acls;
mod admin;
mod api_versions;
mod authorize;
pub(crate) mod codec;
mod configs;
pub(crate) mod errors;
mod fetch;
pub(crate) mod group;
mod log_dirs;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod sasl;
mod segmented;
pub(crate) mod txn;
pub(crate) mod versions;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::Core;
use crate::auth::{Listener, Principal};
use crate::stats::Counters;
use authorize::Gate;
use codec::{DecodeError, Request};
use sasl::Session;

/// What a handler hands back for one request.
pub(crate) enum Reply {
    /// The response, ready now.
    Ready(Box<ResponseKind>),
    /// The response, once this future completes (durability wait, long poll); requests that
    /// follow on the connection are handled meanwhile, so the request's effect must already be
    /// applied when the handler returns this: the future only waits.
    Later(Pin<Box<dyn Future<Output = ResponseKind> + Send>>),
    /// The response, once this future completes; the connection handles nothing else until
    /// then, because later requests may depend on its effect (create, then produce; delete,
    /// then create again).
    /// `None` means the handler failed and the connection is closed.
    Serial(Pin<Box<dyn Future<Output = Option<ResponseKind>> + Send>>),
    /// No response at all (Produce with `acks=0`).
    Nothing,
    /// No response, and the connection is closed: the only way to tell an `acks=0` producer
    /// that its data was refused, as Kafka does.
    Close(String),
}

/// A response on its way to the writer, in request order.
enum Outgoing {
    Ready(Vec<Bytes>),
    Later(tokio::task::JoinHandle<Option<Vec<Bytes>>>),
}

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
enum CloseReason {
    #[error("request frame of {frame_bytes} bytes is over request_bytes_max ({limit})")]
    FrameTooLarge { frame_bytes: i64, limit: u32 },
    #[error("read failed: {0}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Refused(String),
    #[error("the {api} handler failed")]
    HandlerFailed { api: &'static str },
    #[error("could not encode the {api} response: {message}")]
    Encode { api: &'static str, message: String },
}

/// Bytes read from the socket at once under a TLS connection.
const TLS_READ_BUFFER_BYTES: usize = 64 * 1024;

/// Serves one accepted connection: the TLS handshake first on a TLS listener (bounded by
/// `authentication_ms_max`), then requests until it closes, fails, or the broker stops.
pub(crate) async fn accept_connection(
    core: Arc<Core>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    stop: watch::Receiver<bool>,
) {
    // Responses are small and latency matters more than packet count.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "could not set TCP_NODELAY");
    }
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(core.config.authentication_ms_max);
    let Some(tls) = listener
        .protocol
        .tls()
        .then(|| core.security.tls.clone())
        .flatten()
    else {
        let session = Session::new(listener, peer, Principal::anonymous());
        let (reader, writer) = stream.into_split();
        serve_connection(core, reader, writer, session, deadline, stop).await;
        return;
    };
    let client_certificates = listener.protocol == crate::auth::SecurityProtocol::Ssl;
    let acceptor = tls.acceptor(client_certificates);
    // rustls pulls TLS records off the socket 4 KiB per read; a buffer under it turns the
    // hundreds of reads a large produce request would cost into a few.
    let stream = tokio::io::BufReader::with_capacity(TLS_READ_BUFFER_BYTES, stream);
    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            // rustls has already sent the client an alert saying why (unknown CA, expired
            // certificate, not TLS at all).
            Counters::add(&core.counters.authentication_failures, 1);
            info!(%peer, listener = %listener.name, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            Counters::add(&core.counters.authentication_failures, 1);
            info!(%peer, listener = %listener.name, "TLS handshake timed out");
            return;
        }
    };
    let principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::auth::certificate_subject(leaf))
        .map(|subject| Principal::user(&core.security.mapping.map(&subject)))
        .unwrap_or_else(Principal::anonymous);
    debug!(%peer, %principal, listener = %listener.name, "TLS established");
    let session = Session::new(listener, peer, principal);
    let (reader, writer) = tokio::io::split(stream);
    serve_connection(core, reader, writer, session, deadline, stop).await;
}

/// Serves one client connection until it closes, fails, or the broker stops; a SASL listener's
/// client that has not authenticated by `deadline` is closed.
async fn serve_connection<R, W>(
    core: Arc<Core>,
    mut reader: R,
    writer: W,
    mut session: Session,
    deadline: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let peer = session.peer;
    let in_flight =
        usize::try_from(core.config.connection_requests_in_flight_max.max(1)).unwrap_or(usize::MAX);
    let (outgoing, queue) = mpsc::channel::<Outgoing>(in_flight);
    let writer_task = tokio::spawn(write_responses(writer, queue, peer));
    loop {
        let authenticated = session.authenticated();
        let frame = tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => break,
            _ = tokio::time::sleep_until(deadline), if !authenticated => {
                Counters::add(&core.counters.authentication_failures, 1);
                info!(%peer, listener = %session.listener.name, "closing connection: not authenticated within authentication_ms_max");
                break;
            }
            frame = read_frame(&mut reader, core.config.request_bytes_max) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(CloseReason::Read(error)) => {
                // A peer that resets or half-sends a frame is gone, not malicious.
                debug!(%peer, %error, "connection ended mid-frame");
                break;
            }
            Err(reason) => {
                Counters::add(&core.counters.requests_malformed, 1);
                info!(%peer, %reason, "closing connection");
                break;
            }
        };
        if session.raw_tokens && !session.authenticated() {
            match sasl::raw_token(&core, &mut session, frame).await {
                Some(token) => {
                    let size = u32::try_from(token.len()).unwrap_or(u32::MAX).to_be_bytes();
                    let parts = vec![Bytes::copy_from_slice(&size), Bytes::from(token)];
                    if outgoing.send(Outgoing::Ready(parts)).await.is_err() {
                        break;
                    }
                    continue;
                }
                None => break,
            }
        }
        match handle_frame(&core, frame, &mut session).await {
            Ok(Some(response)) => {
                if outgoing.send(response).await.is_err() {
                    // The writer stopped (the peer went away); nothing more to answer.
                    break;
                }
            }
            Ok(None) => {}
            Err(reason) => {
                if matches!(reason, CloseReason::Decode(_)) {
                    Counters::add(&core.counters.requests_malformed, 1);
                }
                info!(%peer, %reason, "closing connection");
                break;
            }
        }
        if session.close_after_reply {
            break;
        }
    }
    // Dropping the sender lets the writer finish the responses already queued, then stop.
    drop(outgoing);
    if let Err(error) = writer_task.await {
        warn!(%peer, %error, "response writer failed");
    }
}

/// Reads one size-prefixed frame; `None` on a clean end of stream between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: u32,
) -> Result<Option<Bytes>, CloseReason> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(CloseReason::Read(error)),
    }
    // A TLS record (handshake type 22, version 3.x) where a Kafka frame should be: say so
    // rather than report a frame of 369 MB.
    if size[0] == 0x16 && size[1] == 0x03 {
        return Err(CloseReason::Refused(
            "a TLS handshake on a listener without TLS (client uses SSL/SASL_SSL on a plaintext port?)".to_string(),
        ));
    }
    let frame_bytes = i32::from_be_bytes(size);
    // The size is checked before anything is allocated for it.
    let Ok(len) = u32::try_from(frame_bytes) else {
        return Err(CloseReason::FrameTooLarge {
            frame_bytes: i64::from(frame_bytes),
            limit,
        });
    };
    if len > limit {
        return Err(CloseReason::FrameTooLarge {
            frame_bytes: i64::from(frame_bytes),
            limit,
        });
    }
    let mut frame = BytesMut::zeroed(len as usize);
    reader
        .read_exact(&mut frame)
        .await
        .map_err(CloseReason::Read)?;
    Ok(Some(frame.freeze()))
}

/// Decodes and dispatches one frame; `Ok(None)` when no response is due.
async fn handle_frame(
    core: &Arc<Core>,
    frame: Bytes,
    session: &mut Session,
) -> Result<Option<Outgoing>, CloseReason> {
    let request = match codec::decode_request(frame) {
        Ok(request) => request,
        Err(DecodeError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        }) if api_key == ApiKey::ApiVersions as i16 => {
            // The one request every client may send in a version we do not know: answer
            // with our range (in v0) so the client can retry in one we do.
            core.counters.count_request(api_key);
            let body = ResponseKind::ApiVersions(api_versions::response(api_versions::error_for(
                api_version,
            )));
            return encode(ApiKey::ApiVersions, 0, correlation_id, &body).map(Some);
        }
        Err(error) => {
            if let DecodeError::UnknownApi { .. } = error {
                Counters::add(&core.counters.requests_unknown, 1);
            }
            return Err(CloseReason::Decode(error));
        }
    };
    core.counters.count_request(request.api_key as i16);
    let api_key = request.api_key;
    let version = request.header.request_api_version;
    let correlation_id = request.header.correlation_id;
    debug!(
        api = versions::name(api_key),
        version,
        correlation_id,
        client_id = codec::client_id(&request.header),
        "request"
    );
    // The SASL exchange changes the session, so it is served here, in order, by the reader.
    match request.body {
        RequestKind::SaslHandshake(body) => {
            let body = ResponseKind::SaslHandshake(sasl::handshake(core, session, body, version));
            return encode(api_key, version, correlation_id, &body).map(Some);
        }
        RequestKind::SaslAuthenticate(body) => {
            let body =
                ResponseKind::SaslAuthenticate(sasl::authenticate(core, session, body).await);
            return encode(api_key, version, correlation_id, &body).map(Some);
        }
        _ if !session.authenticated() && api_key != ApiKey::ApiVersions => {
            return Err(CloseReason::Refused(format!(
                "{} before SASL authentication",
                versions::name(api_key)
            )));
        }
        _ => {}
    }
    let mut request = request;
    let patch = match authorize::gate(core, session, &mut request) {
        Gate::Pass(patch) => patch,
        Gate::Refuse(body) => return encode(api_key, version, correlation_id, &body).map(Some),
    };
    let started = std::time::Instant::now();
    let reply = dispatch(core, request, session).await;
    let reply = match patch {
        None => reply,
        Some(patch) => patched(reply, patch),
    };
    let reply = timed(reply, core, versions::name(api_key), started);
    match reply {
        Reply::Ready(body) => encode(api_key, version, correlation_id, &body).map(Some),
        Reply::Later(future) => Ok(Some(Outgoing::Later(tokio::spawn(async move {
            let body = future.await;
            match encode(api_key, version, correlation_id, &body) {
                Ok(Outgoing::Ready(bytes)) => Some(bytes),
                Ok(Outgoing::Later(_)) => None,
                Err(reason) => {
                    warn!(%reason, "dropping response");
                    None
                }
            }
        })))),
        Reply::Serial(future) => match future.await {
            Some(body) => encode(api_key, version, correlation_id, &body).map(Some),
            None => Err(CloseReason::HandlerFailed {
                api: versions::name(api_key),
            }),
        },
        Reply::Nothing => Ok(None),
        Reply::Close(reason) => Err(CloseReason::Refused(reason)),
    }
}

/// The same reply with `patch` applied to its response once there is one.
fn patched(reply: Reply, patch: authorize::Patch) -> Reply {
    match reply {
        Reply::Ready(mut body) => {
            patch(&mut body);
            Reply::Ready(body)
        }
        Reply::Later(future) => Reply::Later(Box::pin(async move {
            let mut body = future.await;
            patch(&mut body);
            body
        })),
        Reply::Serial(future) => Reply::Serial(Box::pin(async move {
            let mut body = future.await?;
            patch(&mut body);
            Some(body)
        })),
        other => other,
    }
}

/// The same reply, recording in the latency histogram of `api` when its response is ready.
fn timed(reply: Reply, core: &Arc<Core>, api: &'static str, started: std::time::Instant) -> Reply {
    let latency = core.counters.latency.clone();
    match reply {
        Reply::Later(future) => Reply::Later(Box::pin(async move {
            let body = future.await;
            latency.observe_request(api, started.elapsed());
            body
        })),
        Reply::Serial(future) => Reply::Serial(Box::pin(async move {
            let body = future.await;
            latency.observe_request(api, started.elapsed());
            body
        })),
        other => {
            latency.observe_request(api, started.elapsed());
            other
        }
    }
}

fn encode(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Outgoing, CloseReason> {
    codec::encode_response(api_key, version, correlation_id, body)
        .map(Outgoing::Ready)
        .map_err(|message| CloseReason::Encode {
            api: versions::name(api_key),
            message,
        })
}

/// Sends a request to its API family's handler.
async fn dispatch(core: &Arc<Core>, request: Request, session: &Session) -> Reply {
    if group::handles(request.api_key) {
        return group::dispatch(core, request, session).await;
    }
    let version = request.header.request_api_version;
    let ready = |body: ResponseKind| Reply::Ready(Box::new(body));
    match request.body {
        RequestKind::ApiVersions(_) => ready(ResponseKind::ApiVersions(api_versions::response(
            api_versions::error_for(version),
        ))),
        RequestKind::Metadata(body) => ready(ResponseKind::Metadata(metadata::metadata(
            core, session, body, version,
        ))),
        RequestKind::DescribeCluster(body) => ready(ResponseKind::DescribeCluster(
            metadata::describe_cluster(core, session, body),
        )),
        RequestKind::CreateAcls(body) => acls::create_acls(core, session, body),
        RequestKind::DescribeAcls(body) => ready(ResponseKind::DescribeAcls(acls::describe_acls(
            core, session, body,
        ))),
        RequestKind::DeleteAcls(body) => acls::delete_acls(core, session, body),
        RequestKind::DescribeUserScramCredentials(body) => {
            ready(ResponseKind::DescribeUserScramCredentials(
                acls::describe_user_scram_credentials(core, session, body),
            ))
        }
        RequestKind::AlterUserScramCredentials(body) => {
            acls::alter_user_scram_credentials(core, session, body)
        }
        RequestKind::Produce(body) => produce::produce(core, body, version),
        RequestKind::Fetch(body) => fetch::fetch(core, body, version),
        RequestKind::ListOffsets(body) => ready(ResponseKind::ListOffsets(offsets::list_offsets(
            core, body, version,
        ))),
        RequestKind::DeleteRecords(body) => ready(ResponseKind::DeleteRecords(
            offsets::delete_records(core, body),
        )),
        // A transactional id's InitProducerId may write markers and the state: blocking pool.
        RequestKind::InitProducerId(body) => blocking(core, move |core| {
            ResponseKind::InitProducerId(producer_id::init_producer_id(&core, body, version))
        }),
        RequestKind::AddPartitionsToTxn(body) => txn::add_partitions(core, body, version),
        RequestKind::AddOffsetsToTxn(body) => txn::add_offsets(core, body, version),
        RequestKind::TxnOffsetCommit(body) => txn::offset_commit(core, body, version),
        RequestKind::EndTxn(body) => txn::end_txn(core, body, version),
        RequestKind::DescribeTransactions(body) => ready(txn::describe(core, body)),
        RequestKind::ListTransactions(body) => ready(txn::list(core, body)),
        RequestKind::CreateTopics(body) => admin::create_topics(core, body, version),
        RequestKind::DeleteTopics(body) => admin::delete_topics(core, body, version),
        RequestKind::CreatePartitions(body) => admin::create_partitions(core, body),
        RequestKind::DescribeConfigs(body) => ready(ResponseKind::DescribeConfigs(
            configs::describe_configs(core, body, version),
        )),
        RequestKind::AlterConfigs(body) => configs::alter_configs(core, body),
        RequestKind::IncrementalAlterConfigs(body) => {
            configs::incremental_alter_configs(core, body)
        }
        // Sizes come from the logs' memory, but the volume's come from the file system.
        RequestKind::DescribeLogDirs(body) => blocking(core, move |core| {
            ResponseKind::DescribeLogDirs(log_dirs::describe_log_dirs(&core, body))
        }),
        _ => {
            // The version table lists only APIs with a handler above, so decoding never
            // yields anything else; answer nothing rather than something wrong.
            warn!(
                api = versions::name(request.api_key),
                "no handler for a decoded request"
            );
            Reply::Nothing
        }
    }
}

/// Runs a handler that touches files on the blocking pool; the connection waits for it.
fn blocking(
    core: &Arc<Core>,
    handler: impl FnOnce(Arc<Core>) -> ResponseKind + Send + 'static,
) -> Reply {
    let core = core.clone();
    Reply::Serial(Box::pin(async move {
        match tokio::task::spawn_blocking(move || handler(core)).await {
            Ok(body) => Some(body),
            Err(error) => {
                // A panicking handler is a bug; its connection is closed, the broker goes on.
                warn!(%error, "request handler failed");
                None
            }
        }
    }))
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic_name(text: &str) -> TopicName {
    TopicName(str_bytes(text))
}

/// Writes responses in request order, waiting for pending ones in turn.
async fn write_responses<W: AsyncWrite + Unpin + Send>(
    writer: W,
    mut queue: mpsc::Receiver<Outgoing>,
    peer: SocketAddr,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(outgoing) = queue.recv().await {
        let parts = match outgoing {
            Outgoing::Ready(parts) => parts,
            Outgoing::Later(task) => {
                // Responses already written must not wait in the buffer behind one that is
                // not ready (an fsync, a long poll): pipelined acks=all producers would see
                // their answers held until the buffer filled.
                if !task.is_finished() {
                    if let Err(error) = writer.flush().await {
                        debug!(%peer, %error, "flush failed");
                        return;
                    }
                }
                match task.await {
                    Ok(Some(parts)) => parts,
                    Ok(None) => break,
                    Err(error) => {
                        warn!(%peer, %error, "response task failed");
                        break;
                    }
                }
            }
        };
        for part in parts {
            // Parts larger than the buffer (record batches) go straight to the socket.
            if let Err(error) = writer.write_all(&part).await {
                debug!(%peer, %error, "write failed");
                return;
            }
        }
        // Flush when nothing else is ready, so pipelined responses share a write.
        if queue.is_empty() {
            if let Err(error) = writer.flush().await {
                debug!(%peer, %error, "flush failed");
                return;
            }
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}
