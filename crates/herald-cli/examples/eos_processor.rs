//! A consume-transform-produce processor with the rdkafka crate's transactions, for the
//! exactly-once crash test (`tests/it/txn.rs`): reads INPUT from the group's committed offsets
//! (read_committed), writes each value to OUTPUT in a transaction that also commits the input
//! offsets (`send_offsets_to_transaction`), and exits 0 printing `done` once the committed
//! offsets cover COUNT records. Any error exits 1: the test starts it again, as a supervisor
//! would.
//!
//! Usage: eos_processor BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID COUNT
//! Prints `committed N` after each transaction (N = input records the committed offsets cover).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Records per transaction, how long one is gathered, and how long a client call may take.
const BATCH_RECORDS_MAX: usize = 2000;
const BATCH_GATHER: Duration = Duration::from_millis(200);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, input, output, group, transactional_id, count] = args.as_slice() else {
        anyhow::bail!("usage: eos_processor BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID COUNT");
    };
    let count: i64 = count.parse().context("COUNT")?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "10000")
        .set("linger.ms", "5")
        .create()?;
    // First: this fences the previous processor and ends its transaction, so the committed
    // offsets read next are final.
    producer.init_transactions(CALL_TIMEOUT)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(input), CALL_TIMEOUT)?;
    let topic = metadata.topics().first().context("no metadata for INPUT")?;
    let mut wanted = TopicPartitionList::new();
    for partition in topic.partitions() {
        wanted.add_partition(input, partition.id());
    }
    let committed = consumer.committed_offsets(wanted, CALL_TIMEOUT)?;
    let mut offsets: BTreeMap<i32, i64> = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(offset) => (e.partition(), offset),
            _ => (e.partition(), 0),
        })
        .collect();
    let mut assignment = TopicPartitionList::new();
    for (partition, offset) in &offsets {
        assignment.add_partition_offset(input, *partition, Offset::Offset(*offset))?;
    }
    // Assigned, not subscribed: a killed processor leaves no member behind to wait out.
    consumer.assign(&assignment)?;
    let mut done: i64 = offsets.values().sum();
    println!("committed {done}");
    while done < count {
        let mut batch = Vec::new();
        let deadline = Instant::now() + BATCH_GATHER;
        while batch.len() < BATCH_RECORDS_MAX && Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(50)) {
                let message = message?;
                let payload = message.payload().unwrap_or_default().to_vec();
                batch.push((message.partition(), message.offset(), payload));
            }
        }
        if batch.is_empty() {
            continue;
        }
        producer.begin_transaction()?;
        let mut next = offsets.clone();
        for (partition, offset, payload) in &batch {
            loop {
                let record = BaseRecord::<(), _>::to(output)
                    .partition(*partition)
                    .payload(payload);
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((error, _)) => return Err(error.into()),
                }
            }
            next.insert(*partition, offset + 1);
        }
        let mut positions = TopicPartitionList::new();
        for (partition, offset) in &next {
            positions.add_partition_offset(input, *partition, Offset::Offset(*offset))?;
        }
        let group_metadata = consumer.group_metadata().context("no group metadata")?;
        producer.send_offsets_to_transaction(&positions, &group_metadata, CALL_TIMEOUT)?;
        producer.commit_transaction(CALL_TIMEOUT)?;
        offsets = next;
        done = offsets.values().sum();
        println!("committed {done}");
    }
    println!("done");
    Ok(())
}
