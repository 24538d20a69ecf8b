//! `herald txn` and transactions across a broker crash, against the real `herald serve`
//! process: list and describe show an open transaction, and after a SIGKILL the committed
//! transaction is kept while the one in flight is aborted at its timeout, so a read_committed
//! consumer sees exactly the committed records.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::support::ServeProcess;

const PATIENCE: Duration = Duration::from_secs(30);

fn create_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

fn herald(bootstrap: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("HERALD_BOOTSTRAP", bootstrap)
        .output()
        .unwrap()
}

fn herald_json(bootstrap: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = herald(bootstrap, &all);
    assert!(
        out.status.success(),
        "herald {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn producer(bootstrap: &str, id: &str, timeout_ms: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms)
        .create()
        .unwrap()
}

fn send(producer: &BaseProducer, topic: &str, prefix: &str, count: usize) {
    for i in 0..count {
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&format!("{prefix}-{i}")),
            )
            .unwrap();
        producer.poll(Duration::ZERO);
    }
}

/// What a read_committed consumer sees from the start up to the end it may read.
fn read_committed(bootstrap: &str, topic: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut values = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no end after {values:?}");
        match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Ok(message)) => values
                .push(String::from_utf8(message.payload().unwrap_or_default().to_vec()).unwrap()),
            Some(Err(KafkaError::PartitionEOF(_))) => return values,
            Some(Err(error)) => panic!("consume failed: {error}"),
        }
    }
}

fn expected(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn txn_list_and_describe_show_an_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    let bootstrap = broker.kafka_addr.to_string();
    create_topic(&bootstrap, "orders");
    let p = producer(&bootstrap, "shop", "60000");
    p.init_transactions(PATIENCE).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "orders", "o", 3);
    p.flush(PATIENCE).unwrap();

    let listed = herald_json(&bootstrap, &["txn", "list"]);
    assert_eq!(listed[0]["transactional_id"], "shop");
    assert_eq!(listed[0]["state"], "Ongoing");
    let described = herald_json(&bootstrap, &["txn", "describe", "shop"]);
    assert_eq!(described["state"], "Ongoing");
    assert_eq!(described["timeout_ms"], 60000);
    assert_eq!(described["partitions"][0], "orders-0");

    p.commit_transaction(PATIENCE).unwrap();
    let listed = herald_json(&bootstrap, &["txn", "list", "--state", "Ongoing"]);
    assert_eq!(listed.as_array().unwrap().len(), 0);
    let described = herald_json(&bootstrap, &["txn", "describe", "shop"]);
    assert_eq!(described["state"], "CompleteCommit");

    let missing = herald(&bootstrap, &["txn", "describe", "nobody"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not known"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let bad = herald(&bootstrap, &["txn", "list", "--state", "Sleeping"]);
    assert!(!bad.status.success());
}

#[test]
fn a_transaction_in_flight_at_a_broker_crash_is_aborted_and_never_seen() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(&dir.path().join("data"));
    let bootstrap = broker.kafka_addr.to_string();
    create_topic(&bootstrap, "ledger");
    let p = producer(&bootstrap, "bookkeeper", "3000");
    p.init_transactions(PATIENCE).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "ledger", "kept", 5);
    p.commit_transaction(PATIENCE).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "ledger", "lost", 5);
    p.flush(PATIENCE).unwrap();
    broker.sigkill();
    drop(p);
    broker.restart();
    // The coordinator aborts the open transaction once its 3 s timeout passes; until then
    // read_committed readers are held at it. Either way they never see its records.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = read_committed(&bootstrap, "ledger");
        assert!(
            seen.iter().all(|v| v.starts_with("kept")),
            "an aborted record was shown: {seen:?}"
        );
        let state = herald_json(&bootstrap, &["txn", "describe", "bookkeeper"]);
        if state["state"] == "CompleteAbort" {
            assert_eq!(seen, expected("kept", 5));
            break;
        }
        assert!(Instant::now() < deadline, "not aborted: {state}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A new producer with the same id carries on.
    let p = producer(&bootstrap, "bookkeeper", "60000");
    p.init_transactions(PATIENCE).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "ledger", "next", 2);
    p.commit_transaction(PATIENCE).unwrap();
    let mut all = expected("kept", 5);
    all.extend(expected("next", 2));
    assert_eq!(read_committed(&bootstrap, "ledger"), all);
}
