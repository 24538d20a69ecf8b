//! Size on disk of a topic's partitions, asked of each broker with a DescribeLogDirs request.
//!
//! librdkafka has no DescribeLogDirs call, so this module sends the one request itself over a
//! plain TCP connection. It is best effort: a broker that does not support the request, refuses
//! it or does not answer in time makes the size "unknown" rather than failing `topic describe`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::metadata::Metadata;

use crate::Global;

/// The request version sent: v1 is the oldest still supported by current brokers and needs no
/// flexible-version encoding.
const REQUEST_VERSION: i16 = 1;

/// Longest time one broker may take to connect and answer.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest response accepted; a topic with many thousands of partitions stays well below it.
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Bytes on disk of each partition of `topic`, summed over log directories, or `None` when any
/// broker leading a partition did not say.
pub fn partition_sizes(
    _global: &Global,
    metadata: &Metadata,
    topic: &str,
) -> Option<BTreeMap<i32, u64>> {
    let meta = metadata.topics().iter().find(|t| t.name() == topic)?;
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in meta.partitions() {
        by_leader.entry(p.leader()).or_default().push(p.id());
    }
    let mut sizes = BTreeMap::new();
    for (leader, partitions) in by_leader {
        let broker = metadata.brokers().iter().find(|b| b.id() == leader)?;
        let response = ask(broker.host(), broker.port(), topic, &partitions)?;
        if response.error_code != 0 {
            return None;
        }
        for result in &response.results {
            if result.error_code != 0 {
                continue;
            }
            for t in result.topics.iter().filter(|t| t.name.0.as_str() == topic) {
                for p in t.partitions.iter().filter(|p| !p.is_future_key) {
                    // Only the leader's copy counts, so a replicated topic is not counted twice.
                    if partitions.contains(&p.partition_index) {
                        let bytes = u64::try_from(p.partition_size).unwrap_or(0);
                        *sizes.entry(p.partition_index).or_insert(0) += bytes;
                    }
                }
            }
        }
    }
    for p in meta.partitions() {
        if !sizes.contains_key(&p.id()) {
            return None;
        }
    }
    Some(sizes)
}

/// Sends one DescribeLogDirs request to one broker and decodes the answer.
fn ask(host: &str, port: i32, topic: &str, partitions: &[i32]) -> Option<DescribeLogDirsResponse> {
    let port = u16::try_from(port).ok()?;
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&addr, BROKER_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(BROKER_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(BROKER_TIMEOUT)).ok()?;

    let correlation_id = 1;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::DescribeLogDirs as i16)
        .with_request_api_version(REQUEST_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("herald-cli")));
    let request = DescribeLogDirsRequest::default().with_topics(Some(vec![
        DescribableLogDirTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions.to_vec()),
    ]));
    let mut body = BytesMut::new();
    header.encode(&mut body, 1).ok()?;
    request.encode(&mut body, REQUEST_VERSION).ok()?;
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.put_i32(i32::try_from(body.len()).ok()?);
    frame.put_slice(&body);
    stream.write_all(&frame).ok()?;

    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let length = usize::try_from(i32::from_be_bytes(length)).ok()?;
    if length > RESPONSE_BYTES_MAX {
        return None;
    }
    let mut buf = vec![0u8; length];
    stream.read_exact(&mut buf).ok()?;
    let mut buf = Bytes::from(buf);
    let header = ResponseHeader::decode(&mut buf, 0).ok()?;
    if header.correlation_id != correlation_id {
        return None;
    }
    let response = DescribeLogDirsResponse::decode(&mut buf, REQUEST_VERSION).ok()?;
    if buf.has_remaining() {
        // Trailing bytes mean the broker spoke another version than asked: do not trust sizes.
        return None;
    }
    Some(response)
}
