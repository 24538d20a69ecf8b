//! Transactions through librdkafka: commits and aborts seen by read_committed and
//! read_uncommitted consumers, zombie fencing, offsets sent to a transaction, and the
//! coordinator's answers to raw DescribeTransactions and ListTransactions requests.

use std::time::Duration;

use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::support::{self, PATIENCE, RawClient};

fn transactional(bootstrap: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    support::client_config(bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap()
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, values: &[String]) {
    for value in values {
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(value.as_bytes()),
            )
            .unwrap();
    }
}

/// Every value on partition 0 a consumer with `isolation` sees, up to the end it may read.
fn read_to_end(bootstrap: &str, topic: &str, isolation: &str) -> Vec<String> {
    let consumer = support::reader_from_start(bootstrap, topic, "reader", isolation);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut values = Vec::new();
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no end after {values:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Ok(message)) => values
                .push(String::from_utf8(message.payload().unwrap_or_default().to_vec()).unwrap()),
            Some(Err(KafkaError::PartitionEOF(_))) => return values,
            Some(Err(error)) => panic!("consume failed: {error}"),
        }
    }
}

fn values(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_exactly_the_committed_records() {
    let broker = support::start().await;
    let bootstrap = broker.bootstrap.clone();
    support::create_topic(&bootstrap, "tx", 1).await;
    tokio::task::spawn_blocking(move || {
        let producer = transactional(&bootstrap, "writer");
        producer.init_transactions(PATIENCE).unwrap();
        for (prefix, commit) in [("a", true), ("b", false), ("c", true), ("d", false)] {
            producer.begin_transaction().unwrap();
            send(&producer, "tx", &values(prefix, 10));
            if commit {
                producer.commit_transaction(PATIENCE).unwrap();
            } else {
                producer.flush(PATIENCE).unwrap();
                producer.abort_transaction(PATIENCE).unwrap();
            }
        }
        let committed = read_to_end(&bootstrap, "tx", "read_committed");
        let mut expected = values("a", 10);
        expected.extend(values("c", 10));
        assert_eq!(committed, expected);
        // Uncommitted readers see every record; the markers are never handed out as records.
        let all = read_to_end(&bootstrap, "tx", "read_uncommitted");
        assert_eq!(all.len(), 40, "{all:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_read_committed_readers_back() {
    let broker = support::start().await;
    let bootstrap = broker.bootstrap.clone();
    support::create_topic(&bootstrap, "held", 1).await;
    tokio::task::spawn_blocking(move || {
        let plain: ThreadedProducer<DefaultProducerContext> =
            support::client_config(&bootstrap).create().unwrap();
        send(&plain, "held", &values("before", 3));
        plain.flush(PATIENCE).unwrap();
        let producer = transactional(&bootstrap, "slow");
        producer.init_transactions(PATIENCE).unwrap();
        producer.begin_transaction().unwrap();
        send(&producer, "held", &values("open", 5));
        producer.flush(PATIENCE).unwrap();
        send(&plain, "held", &values("after", 2));
        plain.flush(PATIENCE).unwrap();
        // The last stable offset stops at the open transaction: not even the records of
        // other producers after it are shown yet.
        assert_eq!(
            read_to_end(&bootstrap, "held", "read_committed"),
            values("before", 3)
        );
        producer.commit_transaction(PATIENCE).unwrap();
        let mut expected = values("before", 3);
        expected.extend(values("open", 5));
        expected.extend(values("after", 2));
        assert_eq!(read_to_end(&bootstrap, "held", "read_committed"), expected);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_id_fences_the_first() {
    let broker = support::start().await;
    let bootstrap = broker.bootstrap.clone();
    support::create_topic(&bootstrap, "fence", 1).await;
    tokio::task::spawn_blocking(move || {
        let zombie = transactional(&bootstrap, "same");
        zombie.init_transactions(PATIENCE).unwrap();
        zombie.begin_transaction().unwrap();
        send(&zombie, "fence", &values("zombie", 3));
        zombie.flush(PATIENCE).unwrap();
        let fresh = transactional(&bootstrap, "same");
        fresh.init_transactions(PATIENCE).unwrap();
        let error = zombie.commit_transaction(PATIENCE).unwrap_err();
        let KafkaError::Transaction(error) = &error else {
            panic!("not a transaction error: {error:?}");
        };
        assert!(error.is_fatal(), "{error}");
        assert_eq!(error.code(), RDKafkaErrorCode::Fenced, "{error}");
        fresh.begin_transaction().unwrap();
        send(&fresh, "fence", &values("fresh", 2));
        fresh.commit_transaction(PATIENCE).unwrap();
        // The zombie's records were aborted when the new producer took over.
        assert_eq!(
            read_to_end(&bootstrap, "fence", "read_committed"),
            values("fresh", 2)
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_to_a_transaction_are_committed_with_it_only() {
    let broker = support::start().await;
    let bootstrap = broker.bootstrap.clone();
    support::create_topic(&bootstrap, "in", 1).await;
    support::create_topic(&bootstrap, "out", 1).await;
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = support::client_config(&bootstrap)
            .set("group.id", "processor")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let producer = transactional(&bootstrap, "processor-1");
        producer.init_transactions(PATIENCE).unwrap();
        let metadata = consumer.group_metadata().unwrap();
        for (offset, commit) in [(7, false), (5, true)] {
            producer.begin_transaction().unwrap();
            send(&producer, "out", &values(&format!("at{offset}"), 1));
            let mut offsets = TopicPartitionList::new();
            offsets
                .add_partition_offset("in", 0, Offset::Offset(offset))
                .unwrap();
            producer
                .send_offsets_to_transaction(&offsets, &metadata, PATIENCE)
                .unwrap();
            if commit {
                producer.commit_transaction(PATIENCE).unwrap();
            } else {
                producer.abort_transaction(PATIENCE).unwrap();
            }
        }
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition("in", 0);
        let committed = consumer.committed_offsets(wanted, PATIENCE).unwrap();
        assert_eq!(
            committed.find_partition("in", 0).unwrap().offset(),
            Offset::Offset(5)
        );
        assert_eq!(
            read_to_end(&bootstrap, "out", "read_committed"),
            values("at5", 1)
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_described_and_listed() {
    let broker = support::start().await;
    let bootstrap = broker.bootstrap.clone();
    support::create_topic(&bootstrap, "seen", 2).await;
    let producer = tokio::task::spawn_blocking(move || {
        let producer = transactional(&bootstrap, "shown");
        producer.init_transactions(PATIENCE).unwrap();
        producer.begin_transaction().unwrap();
        producer
            .send(BaseRecord::<(), _>::to("seen").partition(1).payload("x"))
            .unwrap();
        producer.flush(PATIENCE).unwrap();
        producer
    })
    .await
    .unwrap();
    let mut client = RawClient::connect(broker.broker.kafka_addr()).await;
    let described: DescribeTransactionsResponse = client
        .request(
            ApiKey::DescribeTransactions,
            0,
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![
                StrBytes::from_static_str("shown").into(),
                StrBytes::from_static_str("never").into(),
            ]),
        )
        .await;
    let shown = &described.transaction_states[0];
    assert_eq!(shown.error_code, 0);
    assert_eq!(shown.transaction_state.as_str(), "Ongoing");
    assert_eq!(shown.transaction_timeout_ms, 60_000);
    assert_eq!(shown.topics.len(), 1);
    assert_eq!(shown.topics[0].partitions, vec![1]);
    assert_eq!(described.transaction_states[1].error_code, 105);
    let listed: ListTransactionsResponse = client
        .request(
            ApiKey::ListTransactions,
            1,
            &ListTransactionsRequest::default()
                .with_state_filters(vec![StrBytes::from_static_str("Ongoing")])
                .with_duration_filter(-1),
        )
        .await;
    assert_eq!(listed.transaction_states.len(), 1);
    assert_eq!(
        listed.transaction_states[0].transactional_id.as_str(),
        "shown"
    );
    tokio::task::spawn_blocking(move || producer.commit_transaction(PATIENCE).unwrap())
        .await
        .unwrap();
    let listed: ListTransactionsResponse = client
        .request(
            ApiKey::ListTransactions,
            1,
            &ListTransactionsRequest::default()
                .with_state_filters(vec![StrBytes::from_static_str("Ongoing")])
                .with_duration_filter(-1),
        )
        .await;
    assert!(listed.transaction_states.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_transaction_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = support::start_in(dir.path()).await;
    let bootstrap = broker.kafka_addr().to_string();
    support::create_topic(&bootstrap, "kept", 1).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let producer = transactional(&b, "durable");
        producer.init_transactions(PATIENCE).unwrap();
        producer.begin_transaction().unwrap();
        send(&producer, "kept", &values("in", 4));
        producer.commit_transaction(PATIENCE).unwrap();
        // A transaction left open at the stop.
        producer.begin_transaction().unwrap();
        send(&producer, "kept", &values("open", 2));
        producer.flush(PATIENCE).unwrap();
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
    let broker = support::start_in(dir.path()).await;
    let bootstrap = broker.kafka_addr().to_string();
    tokio::task::spawn_blocking(move || {
        // The open transaction still holds readers back; a new producer with the same id
        // aborts it, and readers then see the committed records only.
        assert_eq!(
            read_to_end(&bootstrap, "kept", "read_committed"),
            values("in", 4)
        );
        let producer = transactional(&bootstrap, "durable");
        producer.init_transactions(PATIENCE).unwrap();
        producer.begin_transaction().unwrap();
        send(&producer, "kept", &values("next", 1));
        producer.commit_transaction(PATIENCE).unwrap();
        let mut expected = values("in", 4);
        expected.extend(values("next", 1));
        assert_eq!(read_to_end(&bootstrap, "kept", "read_committed"), expected);
    })
    .await
    .unwrap();
}
