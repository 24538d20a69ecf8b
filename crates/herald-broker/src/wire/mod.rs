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
use herald_storage::FileRange;
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
use segmented::Part;

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
    /// A response whose record batches may be left in their files (Fetch), ready now.
    ReadyWithFiles(Box<WithFiles>),
    /// The same once this future completes (a Fetch long poll); waits like `Later`.
    LaterWithFiles(Pin<Box<dyn Future<Output = WithFiles> + Send>>),
}

/// A response whose record batches may be partly left in their segment files, to be sent
/// from there (`sendfile(2)`): `files` are the ranges behind the response's placeholder
/// records, in the order the response holds them (see `segmented`).
pub(crate) struct WithFiles {
    pub(crate) body: ResponseKind,
    pub(crate) files: Vec<FileRange>,
}

/// A response on its way to the writer, in request order.
enum Outgoing {
    Ready(Vec<Part>),
    Later(tokio::task::JoinHandle<Option<Vec<Part>>>),
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
    W: ResponseStream,
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
                    let parts = vec![
                        Part::Bytes(Bytes::copy_from_slice(&size)),
                        Part::Bytes(Bytes::from(token)),
                    ];
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
        Reply::ReadyWithFiles(response) => {
            let WithFiles { body, files } = *response;
            encode_with_files(api_key, version, correlation_id, &body, files).map(Some)
        }
        Reply::Later(future) => Ok(Some(Outgoing::Later(tokio::spawn(async move {
            let body = future.await;
            later_parts(encode(api_key, version, correlation_id, &body))
        })))),
        Reply::LaterWithFiles(future) => Ok(Some(Outgoing::Later(tokio::spawn(async move {
            let WithFiles { body, files } = future.await;
            later_parts(encode_with_files(
                api_key,
                version,
                correlation_id,
                &body,
                files,
            ))
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

/// The parts of a response encoded on its own task; `None` drops it (and ends the
/// connection's responses there, as a failed handler does).
fn later_parts(encoded: Result<Outgoing, CloseReason>) -> Option<Vec<Part>> {
    match encoded {
        Ok(Outgoing::Ready(parts)) => Some(parts),
        Ok(Outgoing::Later(_)) => None,
        Err(reason) => {
            warn!(%reason, "dropping response");
            None
        }
    }
}

/// The same reply with `patch` applied to its response once there is one.
fn patched(reply: Reply, patch: authorize::Patch) -> Reply {
    match reply {
        Reply::Ready(mut body) => {
            patch(&mut body);
            Reply::Ready(body)
        }
        Reply::ReadyWithFiles(mut response) => {
            patch(&mut response.body);
            Reply::ReadyWithFiles(response)
        }
        Reply::LaterWithFiles(future) => Reply::LaterWithFiles(Box::pin(async move {
            let mut response = future.await;
            patch(&mut response.body);
            response
        })),
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
        Reply::LaterWithFiles(future) => Reply::LaterWithFiles(Box::pin(async move {
            let response = future.await;
            latency.observe_request(api, started.elapsed());
            response
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
    encode_with_files(api_key, version, correlation_id, body, Vec::new())
}

fn encode_with_files(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    files: Vec<FileRange>,
) -> Result<Outgoing, CloseReason> {
    codec::encode_response(api_key, version, correlation_id, body, files)
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

/// Bytes the writer buffers before a write to the socket.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Bytes of a file range read at once for a stream that cannot take it by `sendfile(2)`.
const RANGE_COPY_BYTES: usize = 64 * 1024;

/// The stream a connection's responses are written to, and whether it takes file ranges
/// straight from the page cache.
pub(crate) trait ResponseStream: AsyncWrite + Unpin + Send + 'static {
    /// The plain TCP socket under the stream, which file ranges are sent to with
    /// `sendfile(2)`; `None` for a stream that transforms the bytes (TLS), to which the
    /// writer copies them through a buffer instead.
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl ResponseStream for tokio::net::tcp::OwnedWriteHalf {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> ResponseStream for tokio::io::WriteHalf<S> {}

/// Writes responses in request order, waiting for pending ones in turn.
async fn write_responses<W: ResponseStream>(
    writer: W,
    mut queue: mpsc::Receiver<Outgoing>,
    peer: SocketAddr,
) {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer);
    // Allocated the first time a range is copied rather than sent by sendfile.
    let mut scratch = Vec::new();
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
            let written = match part {
                Part::Bytes(bytes) => writer.write_all(&bytes).await,
                Part::File(range) => write_range(&mut writer, &range, &mut scratch)
                    .await
                    .map(|_| ()),
            };
            if let Err(error) = written {
                // The response's size prefix promised these bytes: the connection cannot go on.
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

/// Writes a file range: with `sendfile(2)` from the page cache to a plain TCP socket, after
/// what is buffered so the bytes stay in order; otherwise (TLS, or a file `sendfile` cannot
/// read) read into `scratch` piece by piece and written through the buffer. Returns the
/// bytes `sendfile` sent.
async fn write_range<W: ResponseStream>(
    writer: &mut BufWriter<W>,
    range: &FileRange,
    scratch: &mut Vec<u8>,
) -> std::io::Result<u64> {
    let mut sent = 0u64;
    if range.raw_fd().is_some() && writer.get_ref().socket().is_some() {
        writer.flush().await?;
        if let (Some(socket), Some(fd)) = (writer.get_ref().socket(), range.raw_fd()) {
            sent = sendfile_range(socket, fd, range).await?;
        }
    }
    let by_sendfile = sent;
    while sent < range.len() {
        if scratch.is_empty() {
            scratch.resize(RANGE_COPY_BYTES, 0);
        }
        let want = usize::try_from(range.len() - sent)
            .unwrap_or(usize::MAX)
            .min(scratch.len());
        let n = range.read_at(&mut scratch[..want], sent)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "segment file shorter than the range read from it",
            ));
        }
        writer.write_all(&scratch[..n]).await?;
        sent += n as u64;
    }
    Ok(by_sendfile)
}

/// Sends `range` (whose file is `fd`) to `socket` with `sendfile(2)`, waiting for the socket
/// to take more whenever it is full. Returns the bytes sent: all of them, or fewer when the
/// kernel cannot `sendfile` from this file, in which case the caller copies the rest.
async fn sendfile_range(
    socket: &TcpStream,
    fd: std::os::fd::RawFd,
    range: &FileRange,
) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut sent = 0u64;
    while sent < range.len() {
        socket.writable().await?;
        let result = socket.try_io(tokio::io::Interest::WRITABLE, || {
            let mut offset = libc::off_t::try_from(range.position() + sent)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            let count = usize::try_from(range.len() - sent).unwrap_or(usize::MAX);
            // SAFETY: both descriptors are open for the call: the socket's while `socket` is
            // borrowed, the file's while `range` (which holds the file) lives; `offset` is a
            // valid `off_t` the kernel reads and advances.
            let n = unsafe { libc::sendfile(socket.as_raw_fd(), fd, &mut offset, count) };
            usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
        });
        match result {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file shorter than the range read from it",
                ));
            }
            Ok(n) => sent += n as u64,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            // A file system without the page-cache path sendfile needs: copy instead.
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                ) =>
            {
                return Ok(sent);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::segmented::tests::{log_on_disk, range_at};
    use super::*;
    use herald_storage::LogConfig;
    use tokio::net::TcpListener;

    /// A connected pair: the broker's write half and the client's stream.
    async fn tcp_pair() -> (tokio::net::tcp::OwnedWriteHalf, TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let (_read, write) = server.into_split();
        (write, client, peer)
    }

    /// Queues `responses`, lets the writer send them and returns what the client received.
    async fn written<W: ResponseStream, R: AsyncRead + Unpin>(
        writer: W,
        mut client: R,
        peer: SocketAddr,
        responses: Vec<Vec<Part>>,
    ) -> Vec<u8> {
        let (queue, receiver) = mpsc::channel(responses.len());
        let writing = tokio::spawn(write_responses(writer, receiver, peer));
        for parts in responses {
            queue.send(Outgoing::Ready(parts)).await.unwrap();
        }
        drop(queue);
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        writing.await.unwrap();
        received
    }

    /// Responses of bytes around file ranges, and the bytes they stand for.
    fn responses(ranges: &[FileRange]) -> (Vec<Vec<Part>>, Vec<u8>) {
        let mut expected = Vec::new();
        let mut out = Vec::new();
        for (i, range) in ranges.iter().enumerate() {
            let head = Bytes::from(format!("head {i}"));
            let tail = Bytes::from(vec![i as u8; 100]);
            expected.extend_from_slice(&head);
            expected.extend_from_slice(&range.to_bytes().unwrap());
            expected.extend_from_slice(&tail);
            out.push(vec![
                Part::Bytes(head),
                Part::File(range.clone()),
                Part::Bytes(tail),
            ]);
        }
        (out, expected)
    }

    #[tokio::test]
    async fn file_ranges_reach_a_tcp_socket_by_sendfile_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_on_disk(dir.path(), LogConfig::default(), 40, 16);
        let range = range_at(&log, 0, 1 << 20);
        let (writer, mut client, _) = tcp_pair().await;
        // More than a socket's send buffer usually takes at once: the send may wait for the
        // reader, partway through the range.
        let big = range_at(&log, 0, 8 << 20);
        assert!(big.len() > 600_000);
        let reading = tokio::spawn(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        });
        let mut buffered = BufWriter::new(writer);
        buffered.write_all(b"before").await.unwrap();
        let mut scratch = Vec::new();
        let by_sendfile = write_range(&mut buffered, &big, &mut scratch)
            .await
            .unwrap();
        assert_eq!(by_sendfile, big.len(), "all of it by sendfile");
        assert!(scratch.is_empty(), "nothing copied");
        buffered.write_all(b"after").await.unwrap();
        buffered.shutdown().await.unwrap();
        drop(buffered);
        let mut expected = b"before".to_vec();
        expected.extend_from_slice(&big.to_bytes().unwrap());
        expected.extend_from_slice(b"after");
        assert_eq!(reading.await.unwrap(), expected);

        // Through the connection's writer: several responses, in order.
        let (writer, client, peer) = tcp_pair().await;
        let (parts, expected) = responses(&[range.clone(), big, range]);
        assert_eq!(written(writer, client, peer, parts).await, expected);
    }

    #[tokio::test]
    async fn a_range_is_sent_after_retention_deleted_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 64 * 1024,
            ..LogConfig::default()
        };
        let log = log_on_disk(dir.path(), config, 20, 16);
        let range = range_at(&log, 0, 1 << 20);
        let (parts, expected) = responses(&[range]);
        // The read is done; before the response is sent, the segment goes.
        let first = dir.path().join(format!("{:020}.log", 0));
        log.delete_records_before(log.offsets().high_watermark)
            .unwrap();
        assert!(!first.exists());
        let (writer, client, peer) = tcp_pair().await;
        assert_eq!(written(writer, client, peer, parts).await, expected);
    }

    #[tokio::test]
    async fn streams_without_a_socket_get_file_ranges_copied() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_on_disk(dir.path(), LogConfig::default(), 20, 16);
        let ranges = [range_at(&log, 0, 100_000), range_at(&log, 32, 1 << 20)];
        let (parts, expected) = responses(&ranges);
        // A stream like TLS's write half: not a socket, so no sendfile.
        let (server, client) = tokio::io::duplex(16 * 1024);
        let (_read, write) = tokio::io::split(server);
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(written(write, client, peer, parts).await, expected);
    }
}
