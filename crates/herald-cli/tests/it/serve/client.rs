//! librdkafka helpers for the process tests: produce and wait for acks, read a topic back by
//! assignment, create topics and read their configs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// How long a client operation may take before the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// One record as read back: key and value bytes.
pub type Record = (Option<Vec<u8>>, Vec<u8>);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn admin(addr: SocketAddr) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .create()
        .unwrap()
}

/// Creates `topic` with `partitions` and the given topic configs.
pub fn create_topic(addr: SocketAddr, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin = admin(addr);
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().request_timeout(Some(CLIENT_TIMEOUT));
    let results = runtime()
        .block_on(admin.create_topics([&new_topic], &options))
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

/// The configs of `topic` as the broker describes them.
pub fn topic_configs(addr: SocketAddr, topic: &str) -> HashMap<String, String> {
    let admin = admin(addr);
    let options = AdminOptions::new().request_timeout(Some(CLIENT_TIMEOUT));
    let results = runtime()
        .block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options))
        .unwrap();
    let resource = results.into_iter().next().unwrap().unwrap();
    resource
        .entries
        .into_iter()
        .filter_map(|entry| Some((entry.name, entry.value?)))
        .collect()
}

/// A producer with `acks=all` and the extra settings given.
pub fn producer(addr: SocketAddr, extra: &[(&str, &str)]) -> BaseProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", addr.to_string())
        .set("acks", "all")
        .set("linger.ms", "5");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().unwrap()
}

/// Produces `records` to `topic` with `acks=all` and waits until every one is acknowledged.
pub fn produce_all(addr: SocketAddr, topic: &str, records: &[Record]) {
    let producer = producer(addr, &[]);
    for (key, value) in records {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer.send(record).map_err(|(error, _)| error).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(CLIENT_TIMEOUT).unwrap();
    // flush only says nothing is queued; a failed delivery would have been dropped from the
    // queue too, so count on the broker's end instead.
    assert_eq!(producer.in_flight_count(), 0);
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived, and
/// returns them grouped in partition order (within a partition in offset order).
pub fn consume_all(addr: SocketAddr, topic: &str, expected: usize) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "serve-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), CLIENT_TIMEOUT)
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut by_partition: Vec<(i32, i64, Record)> = Vec::new();
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while by_partition.len() < expected {
        assert!(
            Instant::now() < deadline,
            "read {} of {expected} records of {topic}",
            by_partition.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            by_partition.push((
                message.partition(),
                message.offset(),
                (
                    message.key().map(<[u8]>::to_vec),
                    message.payload().unwrap_or_default().to_vec(),
                ),
            ));
        }
    }
    by_partition.sort_by_key(|(partition, offset, _)| (*partition, *offset));
    by_partition
        .into_iter()
        .map(|(_, _, record)| record)
        .collect()
}

/// `count` keyed records with distinct, recognisable values.
pub fn sample_records(count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| {
            (
                Some(format!("key-{i}").into_bytes()),
                format!("value-{i}-{}", "x".repeat(i % 100)).into_bytes(),
            )
        })
        .collect()
}
