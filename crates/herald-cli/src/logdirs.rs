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

/// The request version sent: v1 is the oldest still supported by current brokers and needs no
/// flexible-version encoding.
const REQUEST_VERSION: i16 = 1;

/// Longest time one broker may take to connect and answer.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest response accepted; a topic with many thousands of partitions stays well below it.
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Bytes on disk of each partition of `topic`, summed over log directories, or `None` when any
/// broker leading a partition did not say.
pub fn partition_sizes(metadata: &Metadata, topic: &str) -> Option<BTreeMap<i32, u64>> {
    let meta = metadata.topics().iter().find(|t| t.name() == topic)?;
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in meta.partitions() {
        by_leader.entry(p.leader()).or_default().push(p.id());
    }
    let mut sizes = BTreeMap::new();
    for (leader, partitions) in by_leader {
        let broker = metadata.brokers().iter().find(|b| b.id() == leader)?;
        let response = ask(broker.host(), broker.port(), topic, &partitions)?;
        add_sizes(&response, topic, &partitions, &mut sizes)?;
    }
    for p in meta.partitions() {
        if !sizes.contains_key(&p.id()) {
            return None;
        }
    }
    Some(sizes)
}

/// Adds the sizes one broker reported for the partitions it leads to `sizes`; `None` when the
/// broker refused the request.
fn add_sizes(
    response: &DescribeLogDirsResponse,
    topic: &str,
    partitions: &[i32],
    sizes: &mut BTreeMap<i32, u64>,
) -> Option<()> {
    if response.error_code != 0 {
        return None;
    }
    for result in response.results.iter().filter(|r| r.error_code == 0) {
        for t in result.topics.iter().filter(|t| t.name.0.as_str() == topic) {
            // A future replica is a copy being moved between directories: not counted twice.
            for p in t.partitions.iter().filter(|p| !p.is_future_key) {
                // Only the leader's copy counts, so a replicated topic is not counted twice.
                if partitions.contains(&p.partition_index) {
                    let bytes = u64::try_from(p.partition_size).unwrap_or(0);
                    *sizes.entry(p.partition_index).or_insert(0) += bytes;
                }
            }
        }
    }
    Some(())
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };

    use super::*;

    /// A one-request broker: checks the request it gets and answers with `sizes` for `topic`.
    fn fake_broker(topic: &'static str, sizes: Vec<(i32, i64)>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut length = [0u8; 4];
            stream.read_exact(&mut length).unwrap();
            let mut frame = vec![0u8; i32::from_be_bytes(length) as usize];
            stream.read_exact(&mut frame).unwrap();
            let mut frame = Bytes::from(frame);
            let header = RequestHeader::decode(&mut frame, 1).unwrap();
            assert_eq!(header.request_api_key, ApiKey::DescribeLogDirs as i16);
            let request = DescribeLogDirsRequest::decode(&mut frame, REQUEST_VERSION).unwrap();
            let asked = request.topics.unwrap();
            assert_eq!(asked[0].topic.0.as_str(), topic);
            let partitions = sizes
                .iter()
                .map(|&(index, size)| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(index)
                        .with_partition_size(size)
                })
                .collect();
            let response = DescribeLogDirsResponse::default().with_results(vec![
                DescribeLogDirsResult::default()
                    .with_log_dir(StrBytes::from_static_str("/data"))
                    .with_topics(vec![
                        DescribeLogDirsTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str(topic)))
                            .with_partitions(partitions),
                    ]),
            ]);
            let mut body = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut body, 0)
                .unwrap();
            response.encode(&mut body, REQUEST_VERSION).unwrap();
            let mut out = BytesMut::new();
            out.put_i32(body.len() as i32);
            out.put_slice(&body);
            stream.write_all(&out).unwrap();
        });
        port
    }

    #[test]
    fn sizes_come_from_the_describe_log_dirs_answer() {
        let port = fake_broker("orders", vec![(0, 1000), (1, 24), (7, 5)]);
        let response = ask("127.0.0.1", i32::from(port), "orders", &[0, 1]).unwrap();
        let mut sizes = BTreeMap::new();
        add_sizes(&response, "orders", &[0, 1], &mut sizes).unwrap();
        // Partition 7 is led elsewhere, so it is not counted here.
        assert_eq!(sizes, BTreeMap::from([(0, 1000), (1, 24)]));
    }

    #[test]
    fn a_broker_that_closes_the_connection_gives_no_size() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let closer = std::thread::spawn(move || drop(listener.accept().unwrap()));
        assert!(ask("127.0.0.1", i32::from(port), "orders", &[0]).is_none());
        closer.join().unwrap();
    }
}
