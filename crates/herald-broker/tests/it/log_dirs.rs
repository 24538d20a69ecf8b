//! DescribeLogDirs over raw frames: partition sizes that follow what was produced, unknown
//! topics and partitions left out as Kafka does, a null list meaning every topic, and the
//! volume's size in v4.

use std::time::Duration;

use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::{self, RawClient};

fn asked(topic: &str, partitions: Vec<i32>) -> DescribableLogDirTopic {
    DescribableLogDirTopic::default()
        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(partitions)
}

/// (topic, partition, size) for every partition in the one log directory of the answer.
fn sizes(response: &DescribeLogDirsResponse) -> Vec<(String, i32, i64)> {
    assert_eq!(response.error_code, 0);
    assert_eq!(response.results.len(), 1, "one log directory");
    let result = &response.results[0];
    assert_eq!(result.error_code, 0);
    let mut sizes: Vec<_> = result
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| {
                assert!(!p.is_future_key);
                (
                    topic.name.0.as_str().to_string(),
                    p.partition_index,
                    p.partition_size,
                )
            })
        })
        .collect();
    sizes.sort();
    sizes
}

async fn produce(producer: &FutureProducer, topic: &str, partition: i32, count: usize) {
    for i in 0..count {
        let payload = format!("record {i} of a sized partition");
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(partition)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_sizes_follow_what_was_produced() {
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "sized", 2).await;
    support::create_topic(&broker.bootstrap, "other", 1).await;
    let producer: FutureProducer = support::client_config(&broker.bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    produce(&producer, "sized", 0, 5).await;

    let mut raw = RawClient::connect(broker.broker.kafka_addr()).await;
    let request = DescribeLogDirsRequest::default().with_topics(Some(vec![
        asked("sized", vec![0, 1, 7]),
        asked("no-such-topic", vec![0]),
    ]));
    let before: DescribeLogDirsResponse = raw.request(ApiKey::DescribeLogDirs, 1, &request).await;
    let before = sizes(&before);
    // Partition 7 and the unknown topic are left out; "other" was not asked for.
    let names: Vec<_> = before.iter().map(|(t, p, _)| (t.as_str(), *p)).collect();
    assert_eq!(names, vec![("sized", 0), ("sized", 1)]);
    let (size_0, size_1) = (before[0].2, before[1].2);
    assert!(size_0 > 5 * 20, "five records take room: {size_0}");
    assert_eq!(size_1, 0, "nothing was produced to partition 1");

    produce(&producer, "sized", 0, 5).await;
    let after: DescribeLogDirsResponse = raw.request(ApiKey::DescribeLogDirs, 1, &request).await;
    assert!(sizes(&after)[0].2 > size_0, "the partition grew");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_topic_list_describes_every_partition_and_v4_adds_the_volume() {
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "a", 2).await;
    support::create_topic(&broker.bootstrap, "b", 1).await;
    let producer: FutureProducer = support::client_config(&broker.bootstrap).create().unwrap();
    produce(&producer, "b", 0, 3).await;

    let mut raw = RawClient::connect(broker.broker.kafka_addr()).await;
    let all: DescribeLogDirsResponse = raw
        .request(
            ApiKey::DescribeLogDirs,
            4,
            &DescribeLogDirsRequest::default().with_topics(None),
        )
        .await;
    let listed = sizes(&all);
    let names: Vec<_> = listed.iter().map(|(t, p, _)| (t.as_str(), *p)).collect();
    assert_eq!(names, vec![("a", 0), ("a", 1), ("b", 0)]);
    assert!(listed[2].2 > 0);

    let result = &all.results[0];
    let dir = std::fs::canonicalize(broker.dir.path()).unwrap();
    assert_eq!(result.log_dir.as_str(), dir.to_string_lossy());
    assert!(result.total_bytes > 0, "total {}", result.total_bytes);
    assert!((0..=result.total_bytes).contains(&result.usable_bytes));

    // An empty list asks for nothing, unlike null.
    let none: DescribeLogDirsResponse = raw
        .request(
            ApiKey::DescribeLogDirs,
            4,
            &DescribeLogDirsRequest::default().with_topics(Some(Vec::new())),
        )
        .await;
    assert!(sizes(&none).is_empty());
}
