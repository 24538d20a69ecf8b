//! Many partitions on one broker: produce and consume across more partitions than the storage
//! may keep files open, and the clear refusal at the configured partition limit.

use std::time::Duration;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::NewPartitions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use herald_broker::BrokerConfig;

use crate::support::{self, admin, admin_options};

/// Kafka `POLICY_VIOLATION`.
const POLICY_VIOLATION: i16 = 44;

async fn create_raw(
    addr: std::net::SocketAddr,
    name: &'static str,
    partitions: i32,
) -> (i16, String) {
    let mut client = support::RawClient::connect(addr).await;
    let request = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(name)))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(10_000);
    let response: CreateTopicsResponse = client.request(ApiKey::CreateTopics, 4, &request).await;
    let topic = &response.topics[0];
    (
        topic.error_code,
        topic
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_limit_is_a_policy_violation_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let broker = support::start_with(BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        partitions_max: 10,
        ..support::test_config()
    })
    .await;
    let addr = broker.kafka_addr();
    assert_eq!(create_raw(addr, "first", 8).await.0, 0);
    let (code, message) = create_raw(addr, "second", 5).await;
    assert_eq!(code, POLICY_VIOLATION, "{message}");
    assert!(message.contains("partitions_max = 10"), "{message}");
    let grown = admin(&addr.to_string())
        .create_partitions(&[NewPartitions::new("first", 11)], &admin_options())
        .await
        .unwrap();
    assert_eq!(
        grown[0],
        Err(("first".to_string(), RDKafkaErrorCode::PolicyViolation))
    );
    // Within the limit it still works, and nothing of the refused topic was created.
    assert_eq!(create_raw(addr, "third", 2).await.0, 0);
    assert!(!dir.path().join("second-0").exists());
    let stats = broker.stats();
    assert_eq!(stats.partitions, 10);
    assert_eq!(stats.limit_refusals_total.get("partitions"), Some(&2));
    let metrics = herald_broker::metrics::render(&stats);
    assert!(
        metrics.contains("herald_limit_refusals_total{limit=\"partitions\"} 2\n"),
        "{metrics}"
    );
    broker.shutdown().await.unwrap();
}

/// Produces one record to each partition (acks=all) and reads every partition back.
async fn produce_and_read_all(bootstrap: &str, topic: &'static str, partitions: i32, round: u32) {
    let producer: FutureProducer = support::client_config(bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let sends: Vec<_> = (0..partitions)
        .map(|p| {
            let value = format!("r{round}p{p}");
            let producer = producer.clone();
            async move {
                producer
                    .send(
                        FutureRecord::<(), _>::to(topic)
                            .partition(p)
                            .payload(&value),
                        Duration::from_secs(20),
                    )
                    .await
                    .unwrap()
            }
        })
        .collect();
    futures::future::join_all(sends).await;
    let bootstrap = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = support::client_config(&bootstrap)
            .set("group.id", format!("check-{round}"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + support::PATIENCE;
        let want = (partitions as usize) * (round as usize + 1);
        while seen.len() < want && std::time::Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.unwrap();
                let value = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
                assert!(
                    value.ends_with(&format!("p{}", message.partition())),
                    "{value}"
                );
                seen.insert(value);
            }
        }
        assert_eq!(seen.len(), want, "records read back");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_across_more_partitions_than_open_files_and_a_restart() {
    const PARTITIONS: i32 = 60;
    const OPEN_FILES_MAX: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        open_files_max: Some(OPEN_FILES_MAX),
        ..support::test_config()
    };
    let broker = support::start_with(config.clone()).await;
    let bootstrap = broker.kafka_addr().to_string();
    support::create_topic(&bootstrap, "wide", PARTITIONS).await;
    produce_and_read_all(&bootstrap, "wide", PARTITIONS, 0).await;
    let stats = broker.stats();
    assert_eq!(stats.open_files_max, OPEN_FILES_MAX);
    assert!(stats.open_files <= OPEN_FILES_MAX, "{stats:?}");
    assert!(stats.open_files_evictions_total > 0, "{stats:?}");
    broker.shutdown().await.unwrap();
    drop(broker);

    // Serving starts before the logs are open: requests for a partition not open yet open it.
    let broker = support::start_with(config).await;
    let bootstrap = broker.kafka_addr().to_string();
    produce_and_read_all(&bootstrap, "wide", PARTITIONS, 1).await;
    support::eventually("every partition opened", || {
        (broker.stats().partitions_loading == 0).then_some(())
    })
    .await;
    assert!(broker.stats().open_files <= OPEN_FILES_MAX);
    broker.shutdown().await.unwrap();
}
