//! Produce through librdkafka with keys, headers and every compression, then consume by
//! assignment and compare what comes back with what was sent, byte for byte.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::support::{self, PATIENCE};

/// One sent record: key, value, headers.
pub type Sent = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn record(i: usize) -> Sent {
    // Values of varied sizes and bytes, some repetitive so compression has work to do.
    let value: Vec<u8> = (0..(i * 37) % 3000)
        .map(|j| ((i * 7 + j / 5) % 251) as u8)
        .collect();
    let key = (i % 5 != 0).then(|| format!("key-{i}").into_bytes());
    let headers = match i % 3 {
        0 => vec![],
        1 => vec![("h1".to_string(), Some(vec![1, 2, 3]))],
        _ => vec![
            ("trace".to_string(), Some(format!("t{i}").into_bytes())),
            ("empty".to_string(), None),
        ],
    };
    (key, (i % 11 != 3).then_some(value), headers)
}

pub fn consume_all(bootstrap: &str, topic: &str, partition: i32, count: usize) -> Vec<Sent> {
    let consumer: BaseConsumer = support::client_config(bootstrap)
        .set("enable.auto.commit", "false")
        // librdkafka insists on a group id even for assign(); no group API is used.
        .set("group.id", "assign-only")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut received = Vec::new();
    while received.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "got {} of {count}",
            received.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        received.push((
            message.key().map(<[u8]>::to_vec),
            message.payload().map(<[u8]>::to_vec),
            headers,
        ));
    }
    received
}

async fn round_trip(compression: &str) {
    let broker = support::start().await;
    let topic = format!("round-trip-{compression}");
    support::create_topic(&broker.bootstrap, &topic, 1).await;
    let producer: FutureProducer = support::client_config(&broker.bootstrap)
        .set("compression.type", compression)
        .set("linger.ms", "5")
        .set("acks", "all")
        .create()
        .unwrap();
    let count = 300;
    let sent: Vec<Sent> = (0..count).map(record).collect();
    let mut deliveries = Vec::new();
    for (key, value, headers) in &sent {
        let mut owned = OwnedHeaders::new();
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: value.as_deref(),
            });
        }
        let mut message = FutureRecord::<[u8], [u8]>::to(&topic)
            .partition(0)
            .headers(owned);
        if let Some(key) = key {
            message = message.key(key.as_slice());
        }
        if let Some(value) = value {
            message = message.payload(value.as_slice());
        }
        deliveries.push(producer.send_result(message).unwrap());
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        let delivered = delivery.await.unwrap().unwrap();
        assert_eq!(delivered.partition, 0);
        offsets.push(delivered.offset);
    }
    let expected: Vec<i64> = (0..count as i64).collect();
    assert_eq!(offsets, expected, "offsets are dense and in send order");

    let received = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap.clone();
        move || consume_all(&bootstrap, &topic, 0, count)
    })
    .await
    .unwrap();
    assert_eq!(received, sent);
    let stats = broker.broker.stats();
    assert_eq!(stats.produced_records_total, count as u64);
    assert!(stats.fetched_records_total >= count as u64);
    broker.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_uncompressed() {
    round_trip("none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_gzip() {
    round_trip("gzip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_snappy() {
    round_trip("snappy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_lz4() {
    round_trip("lz4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_zstd() {
    round_trip("zstd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_and_one_store_messages_too() {
    let broker = support::start().await;
    for acks in ["0", "1"] {
        let topic = format!("acks-{acks}");
        support::create_topic(&broker.bootstrap, &topic, 1).await;
        let producer: FutureProducer = support::client_config(&broker.bootstrap)
            .set("acks", acks)
            .create()
            .unwrap();
        for i in 0..50 {
            let payload = format!("v{i}");
            producer
                .send(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(0)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
        let received = tokio::task::spawn_blocking({
            let bootstrap = broker.bootstrap.clone();
            move || consume_all(&bootstrap, &topic, 0, 50)
        })
        .await
        .unwrap();
        let values: Vec<String> = received
            .into_iter()
            .map(|(_, value, _)| String::from_utf8(value.unwrap()).unwrap())
            .collect();
        let expected: Vec<String> = (0..50).map(|i| format!("v{i}")).collect();
        assert_eq!(values, expected, "acks={acks}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_is_woken_by_a_produce() {
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "wake", 1).await;
    // The consumer starts first and long-polls an empty partition.
    let consumer = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap.clone();
        move || consume_all(&bootstrap, "wake", 0, 1)
    });
    let producer: FutureProducer = support::client_config(&broker.bootstrap).create().unwrap();
    producer
        .send(
            FutureRecord::<(), _>::to("wake")
                .partition(0)
                .payload("late"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let received = consumer.await.unwrap();
    assert_eq!(received[0].1.as_deref(), Some(&b"late"[..]));
}
