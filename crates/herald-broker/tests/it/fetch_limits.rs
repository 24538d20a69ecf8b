//! Fetch limits at the wire level: partition_max_bytes and max_bytes bound a response except
//! for its first batch (KIP-74), an out-of-range offset is reported with the log's range, and a
//! long poll on an empty partition ends with an empty answer.

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::support::{self, RawClient};

fn name(topic: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(topic))
}

async fn produce_batch(client: &mut RawClient, topic: &'static str, partition: i32, value: &[u8]) {
    produce_batch_acks(client, topic, partition, value, -1).await;
}

async fn produce_batch_acks(
    client: &mut RawClient,
    topic: &'static str,
    partition: i32,
    value: &[u8],
    acks: i16,
) {
    let batch = herald_storage::build_batch(1_000, &[], &[value], None);
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ]);
    let response: ProduceResponse = client.request(ApiKey::Produce, 8, &request).await;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

fn fetch(partitions: &[(i32, i64, i32)], max_bytes: i32, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("limits"))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&(partition, offset, partition_max)| {
                            FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(partition_max)
                        })
                        .collect(),
                ),
        ])
}

/// Batches in a run of record batches (each: 8-byte offset, 4-byte length, then length bytes).
fn batch_count(records: &Bytes) -> usize {
    let mut rest = &records[..];
    let mut count = 0;
    while rest.len() >= 12 {
        let length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        rest = &rest[12 + length..];
        count += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_honours_partition_and_response_limits() {
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "limits", 2).await;
    let mut client = RawClient::connect(broker.broker.kafka_addr()).await;
    let value = vec![42u8; 1000];
    for partition in [0, 1] {
        for _ in 0..3 {
            produce_batch(&mut client, "limits", partition, &value).await;
        }
    }
    let records = |response: &FetchResponse, partition: usize| {
        response.responses[0].partitions[partition]
            .records
            .clone()
            .unwrap_or_default()
    };

    // Everything fits.
    let all: FetchResponse = client
        .request(
            ApiKey::Fetch,
            11,
            &fetch(&[(0, 0, 1 << 20), (1, 0, 1 << 20)], 1 << 20, 0),
        )
        .await;
    assert_eq!(batch_count(&records(&all, 0)), 3);
    assert_eq!(batch_count(&records(&all, 1)), 3);
    assert_eq!(all.responses[0].partitions[0].high_watermark, 3);

    // A partition limit smaller than one batch still yields the first batch whole (KIP-74),
    // but the next partition, once the response has data, stays within its own limit.
    let tiny: FetchResponse = client
        .request(
            ApiKey::Fetch,
            11,
            &fetch(&[(0, 0, 10), (1, 0, 10)], 1 << 20, 0),
        )
        .await;
    assert_eq!(batch_count(&records(&tiny, 0)), 1);
    assert_eq!(batch_count(&records(&tiny, 1)), 0);

    // The response limit caps the total: room for about two batches in all.
    let capped: FetchResponse = client
        .request(
            ApiKey::Fetch,
            11,
            &fetch(&[(0, 0, 1 << 20), (1, 0, 1 << 20)], 2200, 0),
        )
        .await;
    let total = batch_count(&records(&capped, 0)) + batch_count(&records(&capped, 1));
    assert_eq!(total, 2);

    // Past the end: OFFSET_OUT_OF_RANGE with the log's range.
    let beyond: FetchResponse = client
        .request(ApiKey::Fetch, 11, &fetch(&[(0, 99, 1 << 20)], 1 << 20, 0))
        .await;
    let partition = &beyond.responses[0].partitions[0];
    assert_eq!(partition.error_code, 1);
    assert_eq!(
        (partition.log_start_offset, partition.high_watermark),
        (0, 3)
    );

    // A long poll at the end of the log ends empty when its wait is over.
    let empty: FetchResponse = client
        .request(ApiKey::Fetch, 12, &fetch(&[(0, 3, 1 << 20)], 1 << 20, 100))
        .await;
    assert_eq!(empty.responses[0].partitions[0].error_code, 0);
    assert!(records(&empty, 0).is_empty());
}

/// A topic that fsyncs before acknowledging shows consumers only what is durable (a consumer
/// that committed past a record a crash took back would skip the one sent again in its
/// place); a producer with acks=1 does not wait for the fsync, but its records are fsynced in
/// the next round all the same, and a long-polling fetch wakes when they become visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_acknowledged_before_their_fsync_reach_a_waiting_fetch_once_durable() {
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "limits", 1).await;
    let mut client = RawClient::connect(broker.broker.kafka_addr()).await;
    for _ in 0..3 {
        produce_batch_acks(&mut client, "limits", 0, b"not waited for", 1).await;
    }
    let mut seen = 0;
    while seen < 3 {
        // A long poll from the next offset: it returns when the next records become readable.
        let response: FetchResponse = client
            .request(
                ApiKey::Fetch,
                11,
                &fetch(&[(0, seen, 1 << 20)], 1 << 20, 30_000),
            )
            .await;
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        let records = partition.records.clone().unwrap_or_default();
        assert!(
            !records.is_empty(),
            "a 30 s long poll returned nothing at offset {seen}"
        );
        assert!(partition.high_watermark >= seen + batch_count(&records) as i64);
        seen += batch_count(&records) as i64;
    }
    assert_eq!(seen, 3);
}
