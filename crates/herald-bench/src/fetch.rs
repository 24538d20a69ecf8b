//! A raw Fetch loop: what the broker alone can serve. It sends Kafka Fetch requests itself over
//! one TCP connection and never decodes a record: of each partition's record bytes it reads only
//! the batch headers (base offset and last offset delta) to know where to fetch next. So the
//! client costs next to nothing and the figure is the broker's, with the broker's CPU seconds per
//! GB served when its process id is given.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable as _, Encodable as _, StrBytes};
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::clock::{mono_ns, proc_usage};

/// Fetch v4: record batches v2, no flexible encoding, no sessions; every broker serves it.
const FETCH_VERSION: i16 = 4;
/// Bytes asked for per Fetch, over all partitions (KIP-74 `max_bytes`).
const FETCH_BYTES_MAX: i32 = 50 * 1024 * 1024;
/// Bytes asked for per partition per Fetch.
const PARTITION_FETCH_BYTES_MAX: i32 = 8 * 1024 * 1024;
/// Largest response accepted.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long the broker may take to answer one Fetch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a record batch header up to and including `lastOffsetDelta`.
const BATCH_HEADER_BYTES: usize = 27;

/// What a raw fetch read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawFetchReport {
    pub bytes: u64,
    pub batches: u64,
    /// Records in those batches (from each header's last offset delta; none decoded).
    pub records: u64,
    pub fetches: u64,
    pub seconds: f64,
    pub mib_per_s: f64,
    /// The broker's CPU seconds per GiB served (when its pid was given and it runs here).
    pub broker_cpu_s_per_gib: Option<f64>,
}

/// Reads `partitions` of `topic` from `start` offsets up to `end` offsets (each pair per
/// partition) with raw Fetch requests to the broker at `addr`.
pub fn raw_fetch(
    addr: &str,
    topic: &str,
    partitions: &[(i32, i64, i64)],
    broker_pid: Option<u32>,
) -> Result<RawFetchReport, BenchError> {
    let target = addr
        .to_socket_addrs()
        .map_err(BenchError::io(format!("resolving {addr}")))?
        .next()
        .ok_or_else(|| BenchError::Usage(format!("{addr} resolves to no address")))?;
    let mut stream = TcpStream::connect_timeout(&target, ANSWER_TIMEOUT)
        .map_err(BenchError::io(format!("connecting to {addr}")))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut next: Vec<(i32, i64, i64)> = partitions.to_vec();
    let before = broker_pid.map(|p| proc_usage(&p.to_string()));
    let start = mono_ns();
    let mut report = RawFetchReport::default();
    let mut correlation_id = 0;
    while next.iter().any(|(_, at, end)| at < end) {
        correlation_id += 1;
        let request = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES_MAX)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(
                        next.iter()
                            .filter(|(_, at, end)| at < end)
                            .map(|&(p, at, _)| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(at)
                                    .with_partition_max_bytes(PARTITION_FETCH_BYTES_MAX)
                            })
                            .collect(),
                    ),
            ]);
        let response = exchange(&mut stream, correlation_id, &request)?;
        report.fetches += 1;
        if response.error_code != 0 {
            return Err(BenchError::Kafka(format!(
                "fetch failed: error {}",
                response.error_code
            )));
        }
        for t in &response.responses {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(BenchError::Kafka(format!(
                        "fetch of {topic}/{} failed: error {}",
                        p.partition_index, p.error_code
                    )));
                }
                let Some(records) = &p.records else { continue };
                report.bytes += records.len() as u64;
                let (batches, count, after) = walk_batches(records);
                report.batches += batches;
                report.records += count;
                if let Some(after) = after
                    && let Some(entry) = next.iter_mut().find(|(id, _, _)| *id == p.partition_index)
                {
                    entry.1 = entry.1.max(after);
                }
            }
        }
    }
    report.seconds = (mono_ns() - start) as f64 / 1e9;
    report.mib_per_s = report.bytes as f64 / (1u64 << 20) as f64 / report.seconds.max(1e-9);
    if let (Some(before), Some(pid)) = (before, broker_pid) {
        let after = proc_usage(&pid.to_string());
        let gib = report.bytes as f64 / (1u64 << 30) as f64;
        report.broker_cpu_s_per_gib = (gib > 0.0).then(|| (after.cpu_s - before.cpu_s) / gib);
    }
    Ok(report)
}

/// Counts the whole batches in `records` and their records, and returns the offset after the
/// last one: only the
/// header's base offset and last offset delta are read, never a record.
fn walk_batches(records: &Bytes) -> (u64, u64, Option<i64>) {
    let mut rest = &records[..];
    let (mut batches, mut count, mut after) = (0, 0, None);
    while rest.len() >= BATCH_HEADER_BYTES {
        let base = i64::from_be_bytes(rest[0..8].try_into().unwrap_or_default());
        let length = i32::from_be_bytes(rest[8..12].try_into().unwrap_or_default());
        let whole = 12 + usize::try_from(length).unwrap_or(usize::MAX);
        // A partial batch at the end (cut by the byte limits) is fetched again next time.
        if length <= 0 || whole > rest.len() {
            break;
        }
        let delta = i32::from_be_bytes(rest[23..27].try_into().unwrap_or_default());
        after = Some(base + i64::from(delta) + 1);
        batches += 1;
        count += u64::try_from(delta).unwrap_or(0) + 1;
        rest = &rest[whole..];
    }
    (batches, count, after)
}

fn exchange(
    stream: &mut TcpStream,
    correlation_id: i32,
    request: &FetchRequest,
) -> Result<FetchResponse, BenchError> {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(FETCH_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("herald-bench")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, 1)
        .map_err(|e| BenchError::Kafka(format!("encoding a fetch: {e}")))?;
    request
        .encode(&mut body, FETCH_VERSION)
        .map_err(|e| BenchError::Kafka(format!("encoding a fetch: {e}")))?;
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.put_i32(i32::try_from(body.len()).unwrap_or(i32::MAX));
    frame.put_slice(&body);
    stream
        .write_all(&frame)
        .map_err(BenchError::io("sending a fetch"))?;
    let mut length = [0u8; 4];
    stream
        .read_exact(&mut length)
        .map_err(BenchError::io("reading a fetch answer"))?;
    let length = usize::try_from(i32::from_be_bytes(length)).unwrap_or(usize::MAX);
    if length > RESPONSE_BYTES_MAX {
        return Err(BenchError::Kafka(format!(
            "a fetch answer of {length} bytes"
        )));
    }
    let mut buf = vec![0u8; length];
    stream
        .read_exact(&mut buf)
        .map_err(BenchError::io("reading a fetch answer"))?;
    let mut buf = Bytes::from(buf);
    let header = ResponseHeader::decode(&mut buf, 0)
        .map_err(|e| BenchError::Kafka(format!("decoding a fetch answer: {e}")))?;
    if header.correlation_id != correlation_id {
        return Err(BenchError::Kafka("a fetch answer out of order".into()));
    }
    FetchResponse::decode(&mut buf, FETCH_VERSION)
        .map_err(|e| BenchError::Kafka(format!("decoding a fetch answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_walked_by_their_headers_and_a_partial_one_is_left() {
        let mut data = Vec::new();
        for (base, delta) in [(0i64, 9i32), (10, 4)] {
            let mut batch = vec![0u8; 61];
            batch[0..8].copy_from_slice(&base.to_be_bytes());
            batch[8..12].copy_from_slice(&49i32.to_be_bytes());
            batch[23..27].copy_from_slice(&delta.to_be_bytes());
            data.extend_from_slice(&batch);
        }
        let whole = Bytes::from(data.clone());
        assert_eq!(walk_batches(&whole), (2, 15, Some(15)));
        let cut = Bytes::from(data[..61 + 30].to_vec());
        assert_eq!(walk_batches(&cut), (1, 10, Some(10)));
    }
}
