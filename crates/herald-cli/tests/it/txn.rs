//! `herald txn` and transactions across a broker crash, against the real `herald serve`
//! process: list and describe show an open transaction, and after a SIGKILL the committed
//! transaction is kept while the one in flight is aborted at its timeout, so a read_committed
//! consumer sees exactly the committed records. Those that need no broker crash run against
//! the external broker `HERALD_TEST_BOOTSTRAP` names, when set; the others skip there.

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

use crate::support::{ServeProcess, TestBroker};

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

/// The entry for `id` in the answer of `herald txn list`, which on a shared broker lists other
/// tests' transactional ids too.
fn listed_entry(listed: &Value, id: &str) -> Option<Value> {
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["transactional_id"] == id)
        .cloned()
}

#[test]
fn txn_list_and_describe_show_an_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(&dir.path().join("data"));
    let bootstrap = broker.bootstrap();
    let (topic, id) = (broker.name("orders"), broker.name("shop"));
    create_topic(&bootstrap, &topic);
    let p = producer(&bootstrap, &id, "60000");
    p.init_transactions(PATIENCE).unwrap();
    p.begin_transaction().unwrap();
    send(&p, &topic, "o", 3);
    p.flush(PATIENCE).unwrap();

    let listed = herald_json(&bootstrap, &["txn", "list"]);
    let entry = listed_entry(&listed, &id).unwrap_or_else(|| panic!("{id} not in {listed}"));
    assert_eq!(entry["state"], "Ongoing");
    let described = herald_json(&bootstrap, &["txn", "describe", &id]);
    assert_eq!(described["state"], "Ongoing");
    assert_eq!(described["timeout_ms"], 60000);
    assert_eq!(described["partitions"][0], format!("{topic}-0"));

    p.commit_transaction(PATIENCE).unwrap();
    let listed = herald_json(&bootstrap, &["txn", "list", "--state", "Ongoing"]);
    assert_eq!(listed_entry(&listed, &id), None, "{listed}");
    let described = herald_json(&bootstrap, &["txn", "describe", &id]);
    assert_eq!(described["state"], "CompleteCommit");

    let missing = herald(&bootstrap, &["txn", "describe", &broker.name("nobody")]);
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
    if herald_testkit::skip_on_external(
        "a_transaction_in_flight_at_a_broker_crash_is_aborted_and_never_seen",
        "SIGKILLs the broker and restarts it on the same data directory",
    ) {
        return;
    }
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

/// Records the exactly-once test pushes through the processor.
const EOS_RECORDS: usize = 100_000;

/// The exactly-once processors: the same program with two Kafka clients.
#[derive(Clone, Copy)]
enum Processor {
    /// `tests/python/eos_processor.py`, confluent-kafka.
    Python,
    /// `examples/eos_processor.rs`, the rdkafka crate (built with the tests).
    Rust,
}

/// Starts a processor, its stdout piped for progress lines.
fn start_processor(processor: Processor, bootstrap: &str) -> std::process::Child {
    let mut command = match processor {
        Processor::Python => {
            let mut command = Command::new("python3");
            command.arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/eos_processor.py"
            ));
            command
        }
        Processor::Rust => {
            // Examples are built next to the test binaries' `deps/` directory.
            let exe = std::env::current_exe().unwrap();
            let example = exe
                .parent()
                .and_then(|deps| deps.parent())
                .unwrap()
                .join("examples/eos_processor");
            assert!(example.exists(), "{} is not built", example.display());
            Command::new(example)
        }
    };
    command
        .args([
            bootstrap,
            "eos-in",
            "eos-out",
            "eos-group",
            "eos-processor",
            &EOS_RECORDS.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the processor could not start (python3 is installed by scripts/install-test-deps)")
}

/// Reads the processor's progress lines until `committed` reaches `at_least`, it prints
/// `done`, or it exits; returns the last count seen and whether it is done.
fn follow(child: &mut std::process::Child, at_least: usize) -> (usize, bool) {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut last = 0;
    while let Some(Ok(line)) = lines.next() {
        assert_ne!(line.trim(), "", "empty line");
        if line.contains("not installed") {
            panic!("confluent-kafka is missing: scripts/install-test-deps installs it");
        }
        if line == "done" {
            return (last, true);
        }
        eprintln!("processor: {line}");
        if let Some(n) = line.strip_prefix("committed ") {
            last = n.parse().unwrap();
            if last >= at_least {
                break;
            }
        }
    }
    (last, false)
}

/// Every value on both partitions of `topic`, as a read_committed consumer sees them.
fn read_all_committed(bootstrap: &str, topic: &str, partitions: i32) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "eos-checker")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut values = Vec::new();
    let mut ended = std::collections::BTreeSet::new();
    while ended.len() < usize::try_from(partitions).unwrap() {
        assert!(Instant::now() < deadline, "read {} values", values.len());
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => values
                .push(String::from_utf8(message.payload().unwrap_or_default().to_vec()).unwrap()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(error)) => panic!("consume failed: {error}"),
        }
    }
    values
}

#[test]
fn consume_transform_produce_is_exactly_once_across_client_and_broker_sigkills() {
    if herald_testkit::skip_on_external(
        "consume_transform_produce_is_exactly_once_across_client_and_broker_sigkills",
        "SIGKILLs the broker and restarts it on the same data directory",
    ) {
        return;
    }
    exactly_once_across_sigkills(Processor::Python);
}

#[test]
fn rdkafka_consume_transform_produce_is_exactly_once_across_client_and_broker_sigkills() {
    if herald_testkit::skip_on_external(
        "rdkafka_consume_transform_produce_is_exactly_once_across_client_and_broker_sigkills",
        "SIGKILLs the broker and restarts it on the same data directory",
    ) {
        return;
    }
    exactly_once_across_sigkills(Processor::Rust);
}

/// Pushes [`EOS_RECORDS`] through `processor`, SIGKILLing it a third of the way and the broker
/// two thirds of the way, and counts the output: none missing, none twice.
fn exactly_once_across_sigkills(processor_kind: Processor) {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(&dir.path().join("data"));
    let bootstrap = broker.kafka_addr.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for result in runtime
        .block_on(admin.create_topics(
            &[
                NewTopic::new("eos-in", 2, TopicReplication::Fixed(1)),
                NewTopic::new("eos-out", 2, TopicReplication::Fixed(1)),
            ],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap()
    {
        result.unwrap();
    }
    let input: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    for i in 0..EOS_RECORDS {
        let value = format!("r{i}");
        let partition = i32::try_from(i % 2).unwrap();
        loop {
            match input.send(
                BaseRecord::<(), _>::to("eos-in")
                    .payload(&value)
                    .partition(partition),
            ) {
                Ok(()) => break,
                Err((error, _)) => {
                    assert!(
                        matches!(
                            error.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "{error}"
                    );
                    input.poll(Duration::from_millis(10));
                }
            }
        }
        input.poll(Duration::ZERO);
    }
    input.flush(Duration::from_secs(60)).unwrap();
    eprintln!("input written");

    // A third of the way: SIGKILL the processor and start another.
    let mut processor = start_processor(processor_kind, &bootstrap);
    let (seen, done) = follow(&mut processor, EOS_RECORDS / 3);
    assert!(!done && seen >= EOS_RECORDS / 3, "progress {seen}");
    processor.kill().unwrap();
    processor.wait().unwrap();

    // Two thirds: SIGKILL the broker under the processor, then start the broker again; the
    // processor fails its call and is started again, as a supervisor would.
    let mut processor = start_processor(processor_kind, &bootstrap);
    let (seen, _) = follow(&mut processor, 2 * EOS_RECORDS / 3);
    assert!(seen >= 2 * EOS_RECORDS / 3, "progress {seen}");
    broker.sigkill();
    processor.kill().unwrap();
    processor.wait().unwrap();
    broker.restart();
    eprintln!("broker restarted");

    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "the processor never finished");
        let mut processor = start_processor(processor_kind, &bootstrap);
        let (_, done) = follow(&mut processor, usize::MAX);
        processor.wait().unwrap();
        if done {
            break;
        }
    }

    let output = read_all_committed(&bootstrap, "eos-out", 2);
    let unique: std::collections::BTreeSet<&String> = output.iter().collect();
    assert_eq!(unique.len(), output.len(), "duplicates in the output");
    assert_eq!(output.len(), EOS_RECORDS, "missing records in the output");
    for i in (0..EOS_RECORDS).step_by(997) {
        assert!(unique.contains(&format!("r{i}")), "r{i} missing");
    }
}

#[test]
fn python_transactions_commit_and_abort_for_read_committed_readers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(&dir.path().join("data"));
    let bootstrap = broker.bootstrap();
    // The script names its transactional id and reader group after the topic.
    let topic = broker.name("py-txn");
    create_topic(&bootstrap, &topic);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/txn_commit_abort.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .args([bootstrap.as_str(), topic.as_str()])
        .output()
        .expect("python3 is not installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_ne!(
        output.status.code(),
        Some(3),
        "confluent-kafka is missing: scripts/install-test-deps installs it ({stdout})"
    );
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "python transactions failed:\n{stdout}\n{}\nbroker log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        broker.log()
    );
}
