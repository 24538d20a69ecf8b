//! Request decoding and response encoding: the Kafka request header, the body through
//! `kafka-protocol`, and a guard that keeps hostile length fields from allocating memory.
//!
//! `kafka-protocol` sizes vectors from the length fields it reads (`Vec::with_capacity(n)`,
//! `vec![0; n]`) before checking that the bytes are there, so one 30-byte frame claiming an
//! array of two billion elements would make it ask for hundreds of gigabytes and abort the
//! process. [`decode_request`] therefore decodes a body first through [`GuardedBuf`], which
//! never lets a varint length exceed the bytes left and clamps every `i32` read to the bytes
//! left. Any field used as a length is then provably sane when that pass succeeds; because
//! clamping may have changed a non-length field (a timeout, say), the body is decoded once more
//! without the guard when anything was clamped.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::buf::ByteBuf;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::segmented::{Part, SegmentedBuf, is_placeholder};
use super::versions;
use herald_storage::FileRange;

/// Why a request frame could not be turned into a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is shorter than the fixed part of a request header.
    #[error("frame of {frame_bytes} bytes is too short for a request header")]
    TooShort {
        /// Length of the frame.
        frame_bytes: usize,
    },
    /// The API key is not one this broker serves.
    #[error("unknown API key {api_key}")]
    UnknownApi {
        /// The key the client sent.
        api_key: i16,
        /// Its version.
        api_version: i16,
        /// The correlation id, so an error response can still be matched.
        correlation_id: i32,
    },
    /// The API is served, but not in this version.
    #[error("API {api_key} version {api_version} is not supported")]
    UnsupportedVersion {
        /// The key the client sent.
        api_key: i16,
        /// The version the client sent.
        api_version: i16,
        /// The correlation id, so an error response can still be matched.
        correlation_id: i32,
    },
    /// The header or body does not parse (truncated, bad lengths, garbage).
    #[error("malformed {api} v{api_version} request: {message}")]
    Malformed {
        /// Name of the API.
        api: &'static str,
        /// Version the client sent.
        api_version: i16,
        /// What went wrong.
        message: String,
    },
}

/// A decoded request: its header and its body.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) api_key: ApiKey,
    pub(crate) header: RequestHeader,
    pub(crate) body: RequestKind,
}

/// Decodes one request frame (without its 4-byte size prefix).
pub(crate) fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    let mut peek = &frame[..];
    if peek.len() < 8 {
        return Err(DecodeError::TooShort {
            frame_bytes: frame.len(),
        });
    }
    let api_key_raw = peek.get_i16();
    let api_version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let Some(api_key) = versions::served(api_key_raw) else {
        return Err(DecodeError::UnknownApi {
            api_key: api_key_raw,
            api_version,
            correlation_id,
        });
    };
    if !versions::supports(api_key, api_version) {
        return Err(DecodeError::UnsupportedVersion {
            api_key: api_key_raw,
            api_version,
            correlation_id,
        });
    }
    let malformed = |message: String| DecodeError::Malformed {
        api: versions::name(api_key),
        api_version,
        message,
    };
    if api_key == ApiKey::Produce && api_version < versions::PRODUCE_VERSION_DECODED_MIN {
        return Err(malformed(
            "message formats v0 and v1 are not stored; use Produce v3 or later".to_string(),
        ));
    }
    let header_version = api_key.request_header_version(api_version);
    let mut body = frame;
    let header = guarded_decode::<RequestHeader>(&mut body, header_version).map_err(malformed)?;
    let request = guarded_decode_body(api_key, &mut body, api_version).map_err(malformed)?;
    // Trailing bytes are ignored, as Kafka does: librdkafka 2.x sends Metadata v12 with
    // three more bytes than the schema has.
    Ok(Request {
        api_key,
        header,
        body: request,
    })
}

/// Decodes a header-like message through the guard, then without it if something was clamped.
fn guarded_decode<T: Decodable>(buf: &mut Bytes, version: i16) -> Result<T, String> {
    let start = buf.clone();
    let mut guarded = GuardedBuf::new(buf.clone());
    let value = T::decode(&mut guarded, version).map_err(|error| error.to_string())?;
    if !guarded.clamped {
        *buf = guarded.inner;
        return Ok(value);
    }
    let mut again = start;
    let value = T::decode(&mut again, version).map_err(|error| error.to_string())?;
    *buf = again;
    Ok(value)
}

fn guarded_decode_body(
    api_key: ApiKey,
    buf: &mut Bytes,
    version: i16,
) -> Result<RequestKind, String> {
    let start = buf.clone();
    let mut guarded = GuardedBuf::new(buf.clone());
    let value = decode_kind(api_key, &mut guarded, version)?;
    if !guarded.clamped {
        *buf = guarded.inner;
        return Ok(value);
    }
    let mut again = start;
    let value = decode_kind(api_key, &mut again, version)?;
    *buf = again;
    Ok(value)
}

/// Decodes the body of one of the served APIs from any buffer type.
fn decode_kind<B: ByteBuf>(
    api_key: ApiKey,
    buf: &mut B,
    version: i16,
) -> Result<RequestKind, String> {
    use kafka_protocol::messages::*;
    fn body<T: Decodable, B: ByteBuf>(buf: &mut B, version: i16) -> Result<T, String> {
        T::decode(buf, version).map_err(|error| error.to_string())
    }
    Ok(match api_key {
        ApiKey::Produce => RequestKind::Produce(body(buf, version)?),
        ApiKey::Fetch => RequestKind::Fetch(body(buf, version)?),
        ApiKey::ListOffsets => RequestKind::ListOffsets(body(buf, version)?),
        ApiKey::Metadata => RequestKind::Metadata(body(buf, version)?),
        ApiKey::ApiVersions => RequestKind::ApiVersions(body(buf, version)?),
        ApiKey::CreateTopics => RequestKind::CreateTopics(body(buf, version)?),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(body(buf, version)?),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(body(buf, version)?),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(body(buf, version)?),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(body(buf, version)?),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(body(buf, version)?),
        ApiKey::IncrementalAlterConfigs => {
            RequestKind::IncrementalAlterConfigs(body(buf, version)?)
        }
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(body(buf, version)?),
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(body(buf, version)?),
        ApiKey::InitProducerId => RequestKind::InitProducerId(body(buf, version)?),
        ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(body(buf, version)?),
        ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(body(buf, version)?),
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(body(buf, version)?),
        ApiKey::EndTxn => RequestKind::EndTxn(body(buf, version)?),
        ApiKey::DescribeTransactions => RequestKind::DescribeTransactions(body(buf, version)?),
        ApiKey::ListTransactions => RequestKind::ListTransactions(body(buf, version)?),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(body(buf, version)?),
        ApiKey::JoinGroup => RequestKind::JoinGroup(body(buf, version)?),
        ApiKey::SyncGroup => RequestKind::SyncGroup(body(buf, version)?),
        ApiKey::Heartbeat => RequestKind::Heartbeat(body(buf, version)?),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(body(buf, version)?),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(body(buf, version)?),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(body(buf, version)?),
        ApiKey::ListGroups => RequestKind::ListGroups(body(buf, version)?),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(body(buf, version)?),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(body(buf, version)?),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(body(buf, version)?),
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(body(buf, version)?),
        ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(body(buf, version)?),
        ApiKey::CreateAcls => RequestKind::CreateAcls(body(buf, version)?),
        ApiKey::DescribeAcls => RequestKind::DescribeAcls(body(buf, version)?),
        ApiKey::DeleteAcls => RequestKind::DeleteAcls(body(buf, version)?),
        ApiKey::DescribeUserScramCredentials => {
            RequestKind::DescribeUserScramCredentials(body(buf, version)?)
        }
        ApiKey::AlterUserScramCredentials => {
            RequestKind::AlterUserScramCredentials(body(buf, version)?)
        }
        other => return Err(format!("API {other:?} has no decoder here")),
    })
}

/// A read buffer that keeps length fields honest; see the module docs.
struct GuardedBuf {
    inner: Bytes,
    /// Set when an `i32` was clamped, so the body must be decoded again unguarded.
    clamped: bool,
    /// The unsigned varint being read byte by byte, with the shift of its next byte.
    varint: Option<(u64, u32)>,
    /// Bytes left when the current varint started: no length can exceed them.
    varint_limit: u64,
}

impl GuardedBuf {
    fn new(inner: Bytes) -> Self {
        GuardedBuf {
            inner,
            clamped: false,
            varint: None,
            varint_limit: 0,
        }
    }
}

impl Buf for GuardedBuf {
    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.inner.chunk()
    }

    fn advance(&mut self, cnt: usize) {
        self.varint = None;
        self.inner.advance(cnt);
    }

    fn try_get_i32(&mut self) -> Result<i32, bytes::TryGetError> {
        self.varint = None;
        let value = self.inner.try_get_i32()?;
        // One more than the bytes left: a length that large can never be satisfied, so the
        // guarded pass still fails where the real one would, without a huge allocation.
        let limit = i32::try_from(self.inner.remaining().saturating_add(1)).unwrap_or(i32::MAX);
        if value > limit {
            self.clamped = true;
            return Ok(limit);
        }
        Ok(value)
    }

    fn try_get_u8(&mut self) -> Result<u8, bytes::TryGetError> {
        // Unsigned varints (compact lengths, tagged-field counts and sizes) are read one byte
        // at a time through this method; follow them and refuse one larger than the bytes left.
        let byte = self.inner.try_get_u8()?;
        let (value, shift) = match self.varint.take() {
            Some(state) => state,
            None => {
                self.varint_limit = self.inner.remaining() as u64 + 2;
                (0, 0)
            }
        };
        let value = value | (u64::from(byte & 0x7f) << shift.min(63));
        if value > self.varint_limit {
            return Err(bytes::TryGetError {
                requested: usize::MAX,
                available: self.inner.remaining(),
            });
        }
        if byte & 0x80 != 0 && shift < 63 {
            self.varint = Some((value, shift + 7));
        }
        Ok(byte)
    }
}

impl ByteBuf for GuardedBuf {
    fn peek_bytes(&mut self, r: std::ops::Range<usize>) -> Bytes {
        self.inner.peek_bytes(r)
    }

    fn get_bytes(&mut self, size: usize) -> Bytes {
        self.varint = None;
        self.inner.get_bytes(size)
    }
}

/// Encodes a response frame: size prefix, response header, body. The frame comes in parts;
/// a Fetch response's record batches are parts of their own, shared with the log's read
/// buffers rather than copied, or left in their files: `files` are the ranges behind the
/// response's placeholder records, in order (see `segmented`).
pub(crate) fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    files: Vec<FileRange>,
) -> Result<Vec<Part>, String> {
    // ApiVersions answers with header v0 whatever its version, so that a client that sent a
    // version we do not know can still read the error and our supported range.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(api_version)
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut with_files = !files.is_empty();
    if let ResponseKind::Fetch(fetch) = body {
        let (stand_ins, shared): (Vec<Bytes>, Vec<Bytes>) = fetch
            .responses
            .iter()
            .flat_map(|topic| topic.partitions.iter())
            .filter_map(|partition| partition.records.clone())
            .partition(|records| is_placeholder(records));
        with_files |= !stand_ins.is_empty();
        let mut buf = SegmentedBuf::new(shared, files);
        header
            .encode(&mut buf, header_version)
            .map_err(|error| error.to_string())?;
        fetch
            .encode(&mut buf, api_version)
            .map_err(|error| error.to_string())?;
        let size = i32::try_from(buf.len()).map_err(|_| "response too large".to_string())?;
        if let Some(mut parts) = buf.finish() {
            parts.insert(0, Part::Bytes(Bytes::copy_from_slice(&size.to_be_bytes())));
            return Ok(parts);
        }
    }
    // Copying would send the placeholders' zeros in place of the records.
    if with_files {
        return Err(
            "the records left in their files could not be placed in the response".to_string(),
        );
    }
    let mut buf = BytesMut::with_capacity(capacity_hint(body));
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(|error| error.to_string())?;
    body.encode(&mut buf, api_version)
        .map_err(|error| error.to_string())?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| "response too large".to_string())?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(vec![Part::Bytes(buf.freeze())])
}

/// Bytes to reserve for a response, so that large Fetch responses are not regrown (and
/// copied) several times while their record batches are written in.
fn capacity_hint(body: &ResponseKind) -> usize {
    const OVERHEAD_BYTES: usize = 1024;
    match body {
        ResponseKind::Fetch(fetch) => {
            fetch
                .responses
                .iter()
                .flat_map(|topic| topic.partitions.iter())
                .map(|partition| partition.records.as_ref().map_or(0, Bytes::len) + 64)
                .sum::<usize>()
                + OVERHEAD_BYTES
        }
        _ => OVERHEAD_BYTES,
    }
}

/// The client id of a request, for log lines.
pub(crate) fn client_id(header: &RequestHeader) -> &str {
    header.client_id.as_ref().map_or("", StrBytes::as_str)
}

/// Runs the full decoding path over arbitrary bytes; the fuzz target and the property test
/// call this. Returns whether the bytes decoded as a request.
pub fn fuzz_decode(frame: &[u8]) -> bool {
    decode_request(Bytes::copy_from_slice(frame)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, MetadataRequest, TopicName};

    fn frame<T: Encodable>(api_key: ApiKey, version: i16, body: &T) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(9);
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn large_non_length_fields_survive_the_guard() {
        // max_wait_ms, max_bytes and partition_max_bytes are far larger than the frame, so the
        // guarded pass clamps them; the decoded request must still carry the real values.
        let request = FetchRequest::default()
            .with_max_wait_ms(30_000)
            .with_min_bytes(1)
            .with_max_bytes(52_428_800)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(1 << 40)
                            .with_partition_max_bytes(1_048_576),
                    ]),
            ]);
        for version in [4, 11, 12] {
            let decoded = decode_request(frame(ApiKey::Fetch, version, &request)).unwrap();
            let RequestKind::Fetch(fetch) = decoded.body else {
                panic!("not a fetch");
            };
            assert_eq!(fetch.max_wait_ms, 30_000, "v{version}");
            assert_eq!(fetch.max_bytes, 52_428_800, "v{version}");
            assert_eq!(fetch.topics[0].partitions[0].partition_max_bytes, 1_048_576);
            assert_eq!(fetch.topics[0].partitions[0].fetch_offset, 1 << 40);
            assert_eq!(decoded.header.correlation_id, 9);
        }
    }

    #[test]
    fn huge_array_lengths_are_refused_without_allocating() {
        let mut bytes =
            BytesMut::from(&frame(ApiKey::Metadata, 1, &MetadataRequest::default())[..]);
        // Replace the (empty) topic array's length with i32::MAX.
        let at = bytes.len() - 4;
        bytes[at..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_request(bytes.freeze()),
            Err(DecodeError::Malformed { .. })
        ));

        let mut flexible =
            BytesMut::from(&frame(ApiKey::Metadata, 12, &MetadataRequest::default())[..]);
        let header_len = flexible.len() - 4; // body: topics, two booleans, tagged fields
        flexible.truncate(header_len);
        flexible.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0]);
        assert!(matches!(
            decode_request(flexible.freeze()),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn unknown_keys_and_versions_keep_the_correlation_id() {
        let mut bytes = BytesMut::new();
        bytes.put_i16(ApiKey::ApiVersions as i16);
        bytes.put_i16(99);
        bytes.put_i32(1234);
        match decode_request(bytes.freeze()) {
            Err(DecodeError::UnsupportedVersion { correlation_id, .. }) => {
                assert_eq!(correlation_id, 1234);
            }
            other => panic!("{other:?}"),
        }
        let mut bytes = BytesMut::new();
        bytes.put_i16(31_000);
        bytes.put_i16(0);
        bytes.put_i32(5);
        assert!(matches!(
            decode_request(bytes.freeze()),
            Err(DecodeError::UnknownApi {
                correlation_id: 5,
                ..
            })
        ));
    }

    /// The bytes of encoded parts, file ranges read from their files.
    fn joined(parts: &[Part]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            match part {
                Part::Bytes(bytes) => out.extend_from_slice(bytes),
                Part::File(range) => out.extend_from_slice(&range.to_bytes().unwrap()),
            }
        }
        out
    }

    #[test]
    fn fetch_responses_with_file_ranges_encode_as_with_their_bytes() {
        use crate::wire::segmented::placeholder;
        use crate::wire::segmented::tests::{log_on_disk, range_at};
        use kafka_protocol::messages::FetchResponse;
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};

        let dir = tempfile::tempdir().unwrap();
        let log = log_on_disk(dir.path(), herald_storage::LogConfig::default(), 8, 8);
        let ranges = [range_at(&log, 0, 20_000), range_at(&log, 24, 1 << 20)];
        let small = Bytes::from_static(b"not a batch, only bytes");
        let response = |records: [Bytes; 2]| {
            let [first, second] = records;
            let partition = |index, records| {
                PartitionData::default()
                    .with_partition_index(index)
                    .with_high_watermark(64)
                    .with_records(Some(records))
            };
            ResponseKind::Fetch(FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        partition(0, first),
                        partition(1, small.clone()),
                        partition(2, second),
                    ]),
            ]))
        };
        let with_bytes = response(ranges.clone().map(|range| range.to_bytes().unwrap()));
        let with_files = response(
            ranges
                .clone()
                .map(|range| placeholder(range.len()).unwrap()),
        );
        for version in 4..=12 {
            let copied =
                encode_response(ApiKey::Fetch, version, 3, &with_bytes, Vec::new()).unwrap();
            let sent =
                encode_response(ApiKey::Fetch, version, 3, &with_files, ranges.to_vec()).unwrap();
            assert_eq!(
                sent.iter()
                    .filter(|part| matches!(part, Part::File(_)))
                    .count(),
                2,
                "v{version}"
            );
            assert_eq!(joined(&sent), joined(&copied), "v{version}");
            let size = i32::from_be_bytes(joined(&sent)[..4].try_into().unwrap());
            let total: u64 = sent.iter().map(Part::len).sum();
            assert_eq!(u64::try_from(size).unwrap() + 4, total, "v{version}");
            // Placeholders whose ranges are missing are an error, never zeros on the wire.
            assert!(encode_response(ApiKey::Fetch, version, 3, &with_files, Vec::new()).is_err());
        }
    }
}
