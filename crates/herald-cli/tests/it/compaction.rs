//! A compacted topic through a real Kafka client: updates and tombstones are cleaned to one
//! value per key, the cleaner's progress shows in `/metrics` and `herald topic describe`, and
//! the result survives a restart.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::support::{ServeProcess, eventually_true, free_addr, http_get};

const KEYS: usize = 50;
const ROUNDS: usize = 40;

fn create_compacted_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        // Small segments so updates reach closed segments, and tombstones expire at once.
        .set("segment.bytes", "4096")
        .set("segment.ms", "200")
        .set("delete.retention.ms", "0")
        .set("min.cleanable.dirty.ratio", "0.01");
    let results = runtime
        .block_on(admin.create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .unwrap()
}

fn send(producer: &BaseProducer, topic: &str, key: &str, value: Option<&str>) {
    let mut record = BaseRecord::<str, str>::to(topic).key(key);
    if let Some(value) = value {
        record = record.payload(value);
    }
    producer.send(record).unwrap();
    producer.poll(Duration::ZERO);
}

/// Every record from the start of partition 0, as (key, value) in offset order.
fn consume_all(bootstrap: &str, topic: &str) -> Vec<(String, Option<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "compaction-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "consuming to {high} timed out");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            // A compacted log may end in a gap before its high watermark.
            let position = consumer.position().unwrap();
            let at = position.find_partition(topic, 0).map(|e| e.offset());
            if matches!(at, Some(Offset::Offset(o)) if o >= high) || !out.is_empty() {
                let (_, now_high) = consumer
                    .fetch_watermarks(topic, 0, Duration::from_secs(10))
                    .unwrap();
                if now_high == high && consumer.poll(Duration::from_millis(500)).is_none() {
                    return out;
                }
            }
            continue;
        };
        let message = message.unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let value = message
            .payload()
            .map(|v| String::from_utf8(v.to_vec()).unwrap());
        out.push((key, value));
        if message.offset() + 1 >= high {
            return out;
        }
    }
}

fn metric(server: &ServeProcess, name: &str) -> u64 {
    let body = http_get(server.http_addr, "/metrics").unwrap().body;
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_compacted_topic_keeps_the_latest_value_per_key_and_drops_tombstoned_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "maintenance_interval_ms = 50\ncleaner_backoff_ms = 50\n",
    )
    .unwrap();
    let mut server = ServeProcess::start_with(
        &dir.path().join("data"),
        free_addr(),
        &["--config", config.to_str().unwrap()],
    );
    let bootstrap = server.kafka_addr.to_string();
    create_compacted_topic(&bootstrap, "prices");
    let p = producer(&bootstrap);
    let mut want: BTreeMap<String, Option<String>> = BTreeMap::new();
    for round in 0..ROUNDS {
        for k in 0..KEYS {
            let (key, value) = (format!("key-{k}"), format!("price-{round}-{k}"));
            send(&p, "prices", &key, Some(&value));
            want.insert(key, Some(value));
        }
    }
    // The first ten keys are deleted.
    for k in 0..10 {
        send(&p, "prices", &format!("key-{k}"), None);
        want.insert(format!("key-{k}"), None);
    }
    p.flush(Duration::from_secs(30)).unwrap();
    // A keyless record is refused on a compacted topic (INVALID_RECORD): it never shows up
    // below, where every record read must have a key.
    p.send(BaseRecord::<str, str>::to("prices").payload("no key"))
        .unwrap();
    p.flush(Duration::from_secs(30)).unwrap();

    // The last segment rolls by age (segment.ms) and the cleaner runs until nothing is dirty.
    eventually_true("the cleaner to clean everything written", || {
        let body = http_get(server.http_addr, "/metrics").unwrap().body;
        let dirty = body
            .lines()
            .find_map(|l| {
                l.strip_prefix("herald_cleaner_dirty_bytes{topic=\"prices\",partition=\"0\"} ")
            })
            .and_then(|v| v.trim().parse::<u64>().ok());
        let cleaned_to = body
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "herald_cleaner_cleaned_to_offset{topic=\"prices\",partition=\"0\"} ",
                )
            })
            .and_then(|v| v.trim().parse::<u64>().ok());
        // The pass counters are added once the pass has returned, a moment after its swap
        // moved the gauges: wait for both.
        dirty == Some(0)
            && cleaned_to >= Some((ROUNDS * KEYS + 10) as u64)
            && metric(&server, "herald_cleaner_passes_total") >= 1
            && metric(&server, "herald_cleaner_records_removed_total")
                >= (ROUNDS - 1) as u64 * KEYS as u64
    });

    let check = |records: Vec<(String, Option<String>)>| {
        let mut seen = BTreeMap::new();
        for (key, value) in &records {
            assert!(
                seen.insert(key.clone(), value.clone()).is_none(),
                "{key} twice"
            );
        }
        let live: BTreeMap<_, _> = want
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(
            seen, live,
            "one value per key, the latest; deleted keys gone"
        );
    };
    check(consume_all(&bootstrap, "prices"));

    // `herald topic describe --metrics-url` shows the cleaner's progress.
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "topic",
            "describe",
            "prices",
            "--output",
            "json",
            "--metrics-url",
        ])
        .arg(format!("http://{}/metrics", server.http_addr))
        .env("HERALD_BOOTSTRAP", &bootstrap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cleaner = &described["partitions"][0]["cleaner"];
    assert_eq!(cleaner["dirty_bytes"], 0, "{described}");
    assert!(cleaner["cleaned_to_offset"].as_u64().unwrap() >= (ROUNDS * KEYS) as u64);

    // After a restart the compacted log reads the same.
    server.sigterm();
    server.restart();
    check(consume_all(&bootstrap, "prices"));
}
