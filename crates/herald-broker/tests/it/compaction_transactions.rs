//! A compacted topic written by a transactional librdkafka producer: the cleaner removes the
//! aborted records, keeps the latest committed value per key for read_uncommitted and
//! read_committed consumers alike, stops listing the aborted transactions once their records
//! are gone, and drops the markers after `delete.retention.ms`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herald_broker::{Broker, BrokerConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::Message;
use rdkafka::admin::{AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::support::{self, PATIENCE, RawClient};

const TOPIC: &str = "ledger";
const KEYS: usize = 10;
const ROUNDS: usize = 8;

/// The topic's configs: small segments rolled by age so records reach closed segments, and
/// every dirty byte worth a pass.
fn configs(delete_retention_ms: &str) -> Vec<(&'static str, String)> {
    vec![
        ("cleanup.policy", "compact".into()),
        ("segment.bytes", "4096".into()),
        ("segment.ms", "200".into()),
        ("min.cleanable.dirty.ratio", "0.01".into()),
        ("delete.retention.ms", delete_retention_ms.into()),
    ]
}

/// A value written in `round` for `key`: odd rounds abort.
fn value(round: usize, key: usize) -> String {
    let outcome = if round % 2 == 0 { "commit" } else { "abort" };
    format!("{outcome}-{round}-{key}")
}

/// Every (key, value) a consumer with `isolation` reads from the start to the end.
fn consume_all(bootstrap: &str, isolation: &str) -> Vec<(String, String)> {
    let consumer =
        support::reader_from_start(bootstrap, TOPIC, &format!("check-{isolation}"), isolation);
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no end after {out:?}");
        match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Ok(message)) => out.push((
                String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
                String::from_utf8(message.payload().unwrap().to_vec()).unwrap(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(error)) => panic!("consume failed: {error}"),
        }
    }
}

/// What a raw Fetch of the whole partition shows: the high watermark, the aborted
/// transactions a read_committed reader is told of, and (producer id, abort?) of every control
/// batch (transaction marker) in the log.
struct RawView {
    high_watermark: i64,
    aborted_listed: usize,
    markers: Vec<(i64, bool)>,
}

async fn raw_view(broker: &Broker) -> RawView {
    let mut client = RawClient::connect(broker.kafka_addr()).await;
    let mut offset = 0;
    let mut view = RawView {
        high_watermark: 0,
        aborted_listed: 0,
        markers: Vec::new(),
    };
    loop {
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_isolation_level(1)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        let response: FetchResponse = client.request(ApiKey::Fetch, 11, &request).await;
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        view.high_watermark = partition.high_watermark;
        if offset == 0 {
            view.aborted_listed = partition.aborted_transactions.as_ref().map_or(0, Vec::len);
        }
        let records = partition.records.clone().unwrap_or_default();
        if records.is_empty() {
            return view;
        }
        let mut rest = &records[..];
        while rest.len() >= 61 {
            let length = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize + 12;
            let base = i64::from_be_bytes(rest[0..8].try_into().unwrap());
            let last_delta = i32::from_be_bytes(rest[23..27].try_into().unwrap());
            let attributes = i16::from_be_bytes(rest[21..23].try_into().unwrap());
            if attributes & herald_storage::CONTROL_BIT != 0 {
                let producer_id = i64::from_be_bytes(rest[43..51].try_into().unwrap());
                // The control record: length, attributes, timestamp and offset deltas and key
                // length take a byte each; the 4-byte key ends with the type (0 abort).
                let abort = rest[61 + 5 + 3] == 0;
                view.markers.push((producer_id, abort));
            }
            offset = base + i64::from(last_delta) + 1;
            rest = &rest[length..];
        }
        if offset >= partition.last_stable_offset {
            return view;
        }
    }
}

/// Waits until the cleaner has been through everything below the high watermark, nothing
/// dirty is left, and the partition looks as `wanted` says.
async fn cleaned_until(broker: &Broker, what: &str, wanted: impl Fn(&RawView) -> bool) -> RawView {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let view = raw_view(broker).await;
        let cleaned = broker.stats().cleaner_partitions.iter().any(|p| {
            p.topic == TOPIC
                && p.dirty_bytes == 0
                && p.cleaned_to_offset >= view.high_watermark as u64
        });
        if cleaned && wanted(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {} aborted transactions listed, markers {:?}",
            view.aborted_listed,
            view.markers
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleaner_removes_aborted_records_then_the_markers_past_the_delete_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let broker = support::start_with(BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        maintenance_interval_ms: 50,
        cleaner_backoff_ms: 50,
        ..support::test_config()
    })
    .await;
    let bootstrap = broker.kafka_addr().to_string();
    let mut topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1));
    let initial = configs("3600000");
    for (name, value) in &initial {
        topic = topic.set(name, value);
    }
    for result in support::admin(&bootstrap)
        .create_topics(&[topic], &support::admin_options())
        .await
        .unwrap()
    {
        result.unwrap();
    }

    // Every key is written in every round; even rounds commit, odd ones abort (the last one
    // too, so the newest records of every key are aborted ones).
    let writer = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = support::client_config(&writer)
            .set("transactional.id", "ledger-writer")
            .set("transaction.timeout.ms", "60000")
            .create()
            .unwrap();
        producer.init_transactions(PATIENCE).unwrap();
        for round in 0..ROUNDS {
            producer.begin_transaction().unwrap();
            for key in 0..KEYS {
                let (key, value) = (format!("key-{key}"), value(round, key));
                producer
                    .send(BaseRecord::to(TOPIC).partition(0).key(&key).payload(&value))
                    .unwrap();
            }
            if round % 2 == 0 {
                producer.commit_transaction(PATIENCE).unwrap();
            } else {
                producer.flush(PATIENCE).unwrap();
                producer.abort_transaction(PATIENCE).unwrap();
            }
        }
    })
    .await
    .unwrap();

    let before = raw_view(&broker).await;
    assert_eq!(before.markers.len(), ROUNDS);
    let aborts = before.markers.iter().filter(|(_, abort)| *abort).count();
    assert_eq!(aborts, ROUNDS / 2);
    // Once the aborted transactions have no record left, read_committed readers are no
    // longer told of them; their markers stay until `delete.retention.ms` has passed.
    let view = cleaned_until(&broker, "the aborted transactions to be unlisted", |view| {
        view.aborted_listed == 0
    })
    .await;
    assert_eq!(view.markers.len(), ROUNDS);

    let latest_committed: BTreeMap<String, String> = (0..KEYS)
        .map(|key| (format!("key-{key}"), value(ROUNDS - 2, key)))
        .collect();
    let reader = bootstrap.clone();
    let want = latest_committed.clone();
    tokio::task::spawn_blocking(move || {
        for isolation in ["read_uncommitted", "read_committed"] {
            let records = consume_all(&reader, isolation);
            assert!(
                records.iter().all(|(_, v)| !v.starts_with("abort")),
                "{isolation}: {records:?}"
            );
            let mut seen = BTreeMap::new();
            for (key, value) in &records {
                assert!(
                    seen.insert(key.clone(), value.clone()).is_none(),
                    "{isolation}: {key} twice"
                );
            }
            assert_eq!(
                seen, want,
                "{isolation}: the latest committed value per key"
            );
        }
    })
    .await
    .unwrap();

    // Past the delete horizon, the next pass (new dirty data makes one due) drops every
    // marker but the commit of the transaction whose records are the latest.
    let admin = support::admin(&bootstrap);
    let zero = configs("0");
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(TOPIC));
    for (name, value) in &zero {
        alter = alter.set(name, value);
    }
    for result in admin
        .alter_configs(&[alter], &support::admin_options())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    let writer = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> =
            support::client_config(&writer).create().unwrap();
        producer
            .send(
                BaseRecord::to(TOPIC)
                    .partition(0)
                    .key("other")
                    .payload("plain"),
            )
            .unwrap();
        producer.flush(PATIENCE).unwrap();
    })
    .await
    .unwrap();
    let view = cleaned_until(&broker, "the markers to go", |view| {
        view.high_watermark > before.high_watermark && view.markers.len() == 1
    })
    .await;
    assert!(!view.markers[0].1, "the commit marker stays");
    assert_eq!(view.aborted_listed, 0);

    let reader = bootstrap.clone();
    let mut want = latest_committed;
    want.insert("other".into(), "plain".into());
    tokio::task::spawn_blocking(move || {
        for isolation in ["read_uncommitted", "read_committed"] {
            let seen: BTreeMap<String, String> =
                consume_all(&reader, isolation).into_iter().collect();
            assert_eq!(seen, want, "{isolation}");
        }
    })
    .await
    .unwrap();
}
