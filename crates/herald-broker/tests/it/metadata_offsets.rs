//! Metadata (topics, partitions, auto-creation) and ListOffsets (earliest, latest, by
//! timestamp through librdkafka; the largest timestamp in raw frames).

use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::support::{self, RawClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lists_topics_and_partitions() {
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "three", 3).await;
    support::create_topic(&broker.bootstrap, "one", 1).await;
    let bootstrap = broker.bootstrap.clone();
    let (topics, brokers) = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = support::client_config(&bootstrap).create().unwrap();
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        let mut topics: Vec<(String, Vec<i32>)> = metadata
            .topics()
            .iter()
            .map(|topic| {
                assert!(topic.error().is_none(), "{:?}", topic.error());
                let mut partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
                partitions.sort();
                for partition in topic.partitions() {
                    assert_eq!(partition.leader(), 0);
                    assert_eq!(partition.replicas(), &[0]);
                }
                (topic.name().to_string(), partitions)
            })
            .collect();
        topics.sort();
        let brokers: Vec<(i32, String, i32)> = metadata
            .brokers()
            .iter()
            .map(|b| (b.id(), b.host().to_string(), b.port()))
            .collect();
        (topics, brokers)
    })
    .await
    .unwrap();
    assert_eq!(
        topics,
        vec![
            ("one".to_string(), vec![0]),
            ("three".to_string(), vec![0, 1, 2])
        ]
    );
    let port = i32::from(broker.broker.kafka_addr().port());
    assert_eq!(brokers, vec![(0, "127.0.0.1".to_string(), port)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producing_to_a_new_topic_creates_it_with_the_default_partitions() {
    let broker = support::start().await;
    let producer: FutureProducer = support::client_config(&broker.bootstrap).create().unwrap();
    let delivered = producer
        .send(
            FutureRecord::<(), _>::to("auto-made").payload("x"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!((delivered.partition, delivered.offset), (0, 0));
    let stats = broker.broker.stats();
    assert_eq!(stats.topics, 1);
    assert_eq!(stats.partitions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_creation_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let broker = support::start_with(herald_broker::BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        auto_create_topics_enable: false,
        ..support::test_config()
    })
    .await;
    let bootstrap = broker.kafka_addr().to_string();
    let error = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = support::client_config(&bootstrap).create().unwrap();
        let metadata = consumer
            .fetch_metadata(Some("not-there"), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0].error()
    })
    .await
    .unwrap();
    assert!(error.is_some(), "unknown topic reported");
    assert_eq!(broker.stats().topics, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_earliest_latest_and_timestamp() {
    let broker = support::start().await;
    // Records dated 1970 would be past retention at once; keep them for the test.
    for result in support::admin(&broker.bootstrap)
        .create_topics(
            &[NewTopic::new("times", 1, TopicReplication::Fixed(1)).set("retention.ms", "-1")],
            &support::admin_options(),
        )
        .await
        .unwrap()
    {
        result.unwrap();
    }
    let producer: FutureProducer = support::client_config(&broker.bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    // Ten records with explicit timestamps 1000, 2000, ... 10000.
    for i in 0..10i64 {
        producer
            .send(
                FutureRecord::<(), _>::to("times")
                    .partition(0)
                    .payload("t")
                    .timestamp((i + 1) * 1000),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let bootstrap = broker.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = support::client_config(&bootstrap).create().unwrap();
        let (low, high) = consumer
            .fetch_watermarks("times", 0, Duration::from_secs(10))
            .unwrap();
        assert_eq!((low, high), (0, 10));
        let lookup = |ts: i64| {
            let mut list = TopicPartitionList::new();
            list.add_partition_offset("times", 0, Offset::Offset(ts))
                .unwrap();
            let found = consumer
                .offsets_for_times(list, Duration::from_secs(10))
                .unwrap();
            found.elements()[0].offset()
        };
        assert_eq!(lookup(1000), Offset::Offset(0));
        assert_eq!(
            lookup(4500),
            Offset::Offset(4),
            "first record at or after the time"
        );
        assert_eq!(lookup(10_000), Offset::Offset(9));
        // Later than every record: Kafka answers -1, which librdkafka reports as the end.
        assert_eq!(lookup(99_000), Offset::End);
    })
    .await
    .unwrap();

    // MAX_TIMESTAMP (ListOffsets v7): the record with the largest timestamp, not the last one.
    producer
        .send(
            FutureRecord::<(), _>::to("times")
                .partition(0)
                .payload("late")
                .timestamp(5_500),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut raw = RawClient::connect(broker.broker.kafka_addr()).await;
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("times")))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-3),
                ]),
        ]);
    let answer: ListOffsetsResponse = raw.request(ApiKey::ListOffsets, 7, &request).await;
    let p = &answer.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset, p.timestamp), (0, 9, 10_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorized_operations_are_reported_when_asked() {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    };
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "ops", 1).await;
    let mut raw = RawClient::connect(broker.broker.kafka_addr()).await;
    let ask = |include: bool| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("ops")))),
            ]))
            .with_include_cluster_authorized_operations(include)
            .with_include_topic_authorized_operations(include)
    };
    let answer: MetadataResponse = raw.request(ApiKey::Metadata, 10, &ask(true)).await;
    // No ACL stands in the way: every operation of a topic (8) and of the cluster (7), as Kafka
    // answers without an authorizer.
    assert_eq!(answer.topics[0].topic_authorized_operations.count_ones(), 8);
    assert_eq!(answer.cluster_authorized_operations.count_ones(), 7);
    let answer: MetadataResponse = raw.request(ApiKey::Metadata, 10, &ask(false)).await;
    assert_eq!(answer.topics[0].topic_authorized_operations, i32::MIN);
    let cluster: DescribeClusterResponse = raw
        .request(
            ApiKey::DescribeCluster,
            0,
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
        )
        .await;
    assert_eq!(cluster.cluster_authorized_operations.count_ones(), 7);
    let groups: kafka_protocol::messages::DescribeGroupsResponse = raw
        .request(
            ApiKey::DescribeGroups,
            3,
            &kafka_protocol::messages::DescribeGroupsRequest::default()
                .with_groups(vec![kafka_protocol::messages::GroupId(
                    StrBytes::from_static_str("any-group"),
                )])
                .with_include_authorized_operations(true),
        )
        .await;
    // A group's READ, DELETE and DESCRIBE.
    assert_eq!(groups.groups[0].authorized_operations.count_ones(), 3);
}
