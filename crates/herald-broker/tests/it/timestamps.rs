//! Record timestamps against retention and the produce-time limits, through librdkafka: records
//! without a timestamp are kept for the retention period from when they were stored, records
//! dated outside `message.timestamp.{before,after}.max.ms` are refused with INVALID_TIMESTAMP.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_broker::BrokerConfig;
use rdkafka::Message;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::{self, PATIENCE};

const DAY_MS: i64 = 24 * 3600 * 1000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn broker_with_fast_maintenance() -> support::TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let broker = support::start_with(BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        maintenance_interval_ms: 10,
        log_retention_check_interval_ms: 10,
        ..support::test_config()
    })
    .await;
    support::TestBroker {
        bootstrap: broker.kafka_addr().to_string(),
        broker,
        dir,
    }
}

async fn create(bootstrap: &str, topic: &str, configs: &[(&str, &str)]) {
    let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (name, value) in configs {
        new = new.set(name, value);
    }
    for result in support::admin(bootstrap)
        .create_topics(&[new], &support::admin_options())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

/// Produces `count` records dated `timestamp` (-1: none) and returns each one's outcome.
async fn produce(
    bootstrap: &str,
    topic: &str,
    timestamp: i64,
    count: usize,
) -> Vec<Result<i64, KafkaError>> {
    let producer: FutureProducer = support::client_config(bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let mut out = Vec::new();
    for i in 0..count {
        let value = format!("v{i}");
        let record = FutureRecord::<(), _>::to(topic)
            .payload(&value)
            .timestamp(timestamp);
        out.push(
            producer
                .send(record, PATIENCE)
                .await
                .map(|delivery| delivery.offset)
                .map_err(|(error, _)| error),
        );
    }
    out
}

/// (low, high) watermarks of partition 0, asked from a blocking thread: the broker runs on
/// this test's runtime.
async fn watermarks(bootstrap: &str, topic: &str) -> (i64, i64) {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = support::client_config(&bootstrap).create().unwrap();
        consumer
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap()
}

/// Waits until the broker has run `passes` more housekeeping passes.
async fn maintenance_passes(broker: &herald_broker::Broker, passes: u64) {
    let start = broker.stats().maintenance_passes_total;
    support::eventually("maintenance passes", || {
        (broker.stats().maintenance_passes_total >= start + passes).then_some(())
    })
    .await;
}

#[tokio::test]
async fn records_without_a_timestamp_outlive_retention_passes() {
    let b = broker_with_fast_maintenance().await;
    create(&b.bootstrap, "untimed", &[("retention.ms", "3600000")]).await;
    let outcomes = produce(&b.bootstrap, "untimed", -1, 5).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    maintenance_passes(&b.broker, 5).await;
    assert_eq!(watermarks(&b.bootstrap, "untimed").await, (0, 5));
    assert_eq!(b.broker.stats().retention_segments_deleted_total, 0);

    // And they are read back with no timestamp, as sent.
    let bootstrap = b.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = support::client_config(&bootstrap)
            .set("group.id", "untimed-reader")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["untimed"]).unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut seen = 0;
        while seen < 5 {
            assert!(std::time::Instant::now() < deadline, "read {seen} of 5");
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.unwrap();
                assert_eq!(message.timestamp().to_millis(), None);
                seen += 1;
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn records_dated_before_retention_are_deleted_by_the_next_pass() {
    let b = broker_with_fast_maintenance().await;
    create(
        &b.bootstrap,
        "old",
        &[("retention.ms", &DAY_MS.to_string())],
    )
    .await;
    let outcomes = produce(&b.bootstrap, "old", now_ms() - 30 * DAY_MS, 3).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    // Kafka's rule: a segment is as old as its newest record says.
    let deadline = std::time::Instant::now() + PATIENCE;
    while watermarks(&b.bootstrap, "old").await != (3, 3) {
        assert!(
            std::time::Instant::now() < deadline,
            "old records still there"
        );
        maintenance_passes(&b.broker, 1).await;
    }
}
#[tokio::test]
async fn timestamps_outside_the_topic_limits_are_refused() {
    let b = broker_with_fast_maintenance().await;
    create(
        &b.bootstrap,
        "bounded",
        &[("message.timestamp.before.max.ms", &DAY_MS.to_string())],
    )
    .await;
    let invalid = |outcome: &Result<i64, KafkaError>| {
        matches!(
            outcome,
            Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidTimestamp
            ))
        )
    };
    let past = produce(&b.bootstrap, "bounded", now_ms() - 30 * DAY_MS, 1).await;
    assert!(invalid(&past[0]), "{past:?}");
    // `message.timestamp.after.max.ms` is one hour by default, as in Kafka.
    let future = produce(&b.bootstrap, "bounded", now_ms() + 365 * DAY_MS, 1).await;
    assert!(invalid(&future[0]), "{future:?}");
    let fine = produce(&b.bootstrap, "bounded", now_ms() - 3600 * 1000, 1).await;
    assert_eq!(fine[0].as_ref().ok(), Some(&0));
    // Nothing refused was stored; no timestamp at all is always accepted.
    let untimed = produce(&b.bootstrap, "bounded", -1, 1).await;
    assert_eq!(untimed[0].as_ref().ok(), Some(&1));
    maintenance_passes(&b.broker, 3).await;
    assert_eq!(watermarks(&b.bootstrap, "bounded").await, (0, 2));
}

#[tokio::test]
async fn a_topic_can_recompress_and_stamp_log_append_time() {
    let b = broker_with_fast_maintenance().await;
    create(
        &b.bootstrap,
        "stamped",
        &[
            ("compression.type", "zstd"),
            ("message.timestamp.type", "LogAppendTime"),
            // Kafka clients send these routinely; accepted, reported, no effect here.
            ("min.insync.replicas", "1"),
            ("unclean.leader.election.enable", "false"),
        ],
    )
    .await;
    let before = now_ms();
    let producer: FutureProducer = support::client_config(&b.bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sent: Vec<String> = (0..50)
        .map(|i| format!("value-{i}-{}", "x".repeat(i)))
        .collect();
    for value in &sent {
        producer
            .send(
                FutureRecord::<(), _>::to("stamped")
                    .payload(value)
                    .timestamp(1_000),
                PATIENCE,
            )
            .await
            .unwrap();
    }
    let bootstrap = b.bootstrap.clone();
    let received = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = support::client_config(&bootstrap)
            .set("group.id", "stamped-reader")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["stamped"]).unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut received = Vec::new();
        while received.len() < 50 {
            assert!(
                std::time::Instant::now() < deadline,
                "read {}",
                received.len()
            );
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.unwrap();
                let rdkafka::Timestamp::LogAppendTime(ts) = message.timestamp() else {
                    panic!("not log-append-time: {:?}", message.timestamp());
                };
                let value = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
                received.push((value, ts));
            }
        }
        received
    })
    .await
    .unwrap();
    assert_eq!(
        received.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>(),
        sent
    );
    assert!(received.iter().all(|(_, ts)| *ts >= before), "{received:?}");
}
