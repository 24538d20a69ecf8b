//! Fetch responses whose record batches go from the segment files by sendfile(2)
//! (`fetch_sendfile`, the default) carry exactly the bytes the copying path sends, across
//! segment boundaries, and librdkafka reads back everything produced either way.

use std::path::Path;

use bytes::Bytes;
use herald_broker::BrokerConfig;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::produce_consume::{Sent, consume_all};
use crate::support::{self, RawClient};

const TOPIC: &str = "sendfile";
const RECORDS: usize = 3000;
/// Small segments, so that consumers cross many segment boundaries.
const SEGMENT_BYTES: u64 = 64 * 1024;

fn config(dir: &Path, sendfile: bool) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        log_segment_bytes: SEGMENT_BYTES,
        fetch_sendfile: sendfile,
        ..support::test_config()
    }
}

/// Record `i`: a key and a value of 500 to 1500 bytes that say which record they are.
fn record(i: usize) -> (Vec<u8>, Vec<u8>) {
    let value: Vec<u8> = (0..500 + (i * 131) % 1000)
        .map(|j| ((i + j) % 251) as u8)
        .collect();
    (format!("key-{i}").into_bytes(), value)
}

async fn produce_all(bootstrap: &str) {
    support::create_topic(bootstrap, TOPIC, 1).await;
    let producer: FutureProducer = support::client_config(bootstrap)
        .set("linger.ms", "5")
        // Batches of about 16 KiB: several to a segment, some shorter than a sendfile is
        // worth and some longer.
        .set("batch.size", "20000")
        .set("acks", "all")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        let (key, value) = record(i);
        let message = FutureRecord::to(TOPIC)
            .partition(0)
            .key(&key)
            .payload(&value);
        deliveries.push(producer.send_result(message).unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(format!("{TOPIC}-0")))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "log")
        })
        .count()
}

/// Every batch of the partition, fetched by raw Fetch requests of `max_bytes` from offset 0
/// to the end, each response decoded (so its sizes must be exact).
async fn fetch_everything(client: &mut RawClient, max_bytes: i32) -> Vec<Bytes> {
    let mut offset = 0i64;
    let mut responses = Vec::new();
    loop {
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(max_bytes),
                    ]),
            ]);
        let response: FetchResponse = client.request(ApiKey::Fetch, 12, &request).await;
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        let records = partition.records.clone().unwrap_or_default();
        if records.is_empty() {
            assert_eq!(offset, partition.high_watermark, "stopped before the end");
            return responses;
        }
        // Walk the batches: offsets must follow on from the last response's.
        let mut rest = &records[..];
        while !rest.is_empty() {
            let base = i64::from_be_bytes(rest[..8].try_into().unwrap());
            let length = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize + 12;
            let delta = i32::from_be_bytes(rest[23..27].try_into().unwrap());
            assert!(base <= offset && offset <= base + i64::from(delta));
            offset = base + i64::from(delta) + 1;
            rest = &rest[length..];
        }
        responses.push(records);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendfile_sends_the_bytes_the_copying_path_sends_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let broker = support::start_with(config(dir.path(), true)).await;
    produce_all(&broker.kafka_addr().to_string()).await;
    assert!(
        segment_files(dir.path()) > 10,
        "the log spans many segments"
    );
    let mut client = RawClient::connect(broker.kafka_addr()).await;
    // Limits that end ranges inside segments, at their ends, and one batch at a time.
    let mut by_sendfile = Vec::new();
    for max_bytes in [1, 20_000, 100_000, 1 << 20] {
        by_sendfile.push(fetch_everything(&mut client, max_bytes).await);
    }
    let stats = broker.stats();
    drop(client);
    broker.shutdown().await.unwrap();

    let broker = support::start_with(config(dir.path(), false)).await;
    let mut client = RawClient::connect(broker.kafka_addr()).await;
    for (max_bytes, sent) in [1, 20_000, 100_000, 1 << 20].into_iter().zip(by_sendfile) {
        let copied = fetch_everything(&mut client, max_bytes).await;
        assert_eq!(sent, copied, "max_bytes {max_bytes}");
    }
    // The records counted out are the same whichever way they left.
    let copied_stats = broker.stats();
    assert_eq!(
        stats.fetched_records_total,
        copied_stats.fetched_records_total
    );
    assert_eq!(stats.fetched_bytes_total, copied_stats.fetched_bytes_total);
    assert_eq!(stats.fetched_records_total, 4 * RECORDS as u64);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_reads_back_everything_with_sendfile_on_and_off() {
    for sendfile in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let broker = support::start_with(config(dir.path(), sendfile)).await;
        let bootstrap = broker.kafka_addr().to_string();
        produce_all(&bootstrap).await;
        let received =
            tokio::task::spawn_blocking(move || consume_all(&bootstrap, TOPIC, 0, RECORDS))
                .await
                .unwrap();
        let expected: Vec<Sent> = (0..RECORDS)
            .map(|i| {
                let (key, value) = record(i);
                (Some(key), Some(value), Vec::new())
            })
            .collect();
        assert!(received == expected, "sendfile {sendfile}: records differ");
        broker.shutdown().await.unwrap();
    }
}
