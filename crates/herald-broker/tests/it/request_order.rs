//! One connection's requests take effect in the order they were sent, as Kafka applies them:
//! pipelined offset commits never leave an older offset committed, and an OffsetFetch sees the
//! commits sent before it, whether the client is librdkafka or raw frames.

use std::time::Duration;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::support::{self, RawClient};

const COMMITS: i64 = 200;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn commit(group: &str, topic: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ]),
        ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_raw_commits_apply_in_order_and_a_fetch_sees_them() {
    let b = support::start().await;
    support::create_topic(&b.bootstrap, "ordered", 1).await;
    let mut raw = RawClient::connect(b.broker.kafka_addr()).await;
    let mut sent = Vec::new();
    for offset in 1..=COMMITS {
        sent.push(
            raw.send(ApiKey::OffsetCommit, 2, &commit("raw", "ordered", offset))
                .await,
        );
    }
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("raw")))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("ordered")))
                .with_partition_indexes(vec![0]),
        ]));
    let fetch_id = raw.send(ApiKey::OffsetFetch, 1, &fetch).await;
    for id in sent {
        let answer: OffsetCommitResponse = raw.receive(ApiKey::OffsetCommit, 2, id).await;
        assert_eq!(answer.topics[0].partitions[0].error_code, 0);
    }
    let fetched: OffsetFetchResponse = raw.receive(ApiKey::OffsetFetch, 1, fetch_id).await;
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, COMMITS);

    // What is durable is the last commit too: a new connection reads the same.
    let mut other = RawClient::connect(b.broker.kafka_addr()).await;
    let fetched: OffsetFetchResponse = other.request(ApiKey::OffsetFetch, 1, &fetch).await;
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, COMMITS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_async_commits_end_at_the_last_one() {
    let b = support::start().await;
    support::create_topic(&b.bootstrap, "async-commits", 1).await;
    let bootstrap = b.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        for round in 0..3 {
            let group = format!("async-{round}");
            let consumer: BaseConsumer = support::client_config(&bootstrap)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset("async-commits", 0, Offset::Beginning)
                .unwrap();
            consumer.assign(&assignment).unwrap();
            // A first synchronous commit waits for the coordinator to be known, so the
            // asynchronous ones below go out back to back on one connection.
            let mut first = TopicPartitionList::new();
            first
                .add_partition_offset("async-commits", 0, Offset::Offset(0))
                .unwrap();
            consumer.commit(&first, CommitMode::Sync).unwrap();
            for offset in 1..=COMMITS {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset("async-commits", 0, Offset::Offset(offset))
                    .unwrap();
                consumer.commit(&tpl, CommitMode::Async).unwrap();
            }
            let committed = consumer
                .committed(Duration::from_secs(20))
                .unwrap()
                .find_partition("async-commits", 0)
                .unwrap()
                .offset();
            assert_eq!(committed, Offset::Offset(COMMITS), "round {round}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_ready_is_sent_while_a_later_one_still_waits() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let b = support::start().await;
    support::create_topic(&b.bootstrap, "quiet", 1).await;
    let mut raw = RawClient::connect(b.broker.kafka_addr()).await;
    // A commit (answered after its fsync), then a long poll on an empty partition that waits
    // far longer than the test's patience: the commit's answer must not wait behind it.
    let committed = raw
        .send(ApiKey::OffsetCommit, 2, &commit("held", "quiet", 1))
        .await;
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(120_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(s("quiet")))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    raw.send(ApiKey::Fetch, 4, &fetch).await;
    let answer: OffsetCommitResponse = raw.receive(ApiKey::OffsetCommit, 2, committed).await;
    assert_eq!(answer.topics[0].partitions[0].error_code, 0);
}
