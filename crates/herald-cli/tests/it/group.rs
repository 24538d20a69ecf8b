//! `herald group` and consumer groups across a broker crash, against the real `herald serve`
//! process: committed offsets survive SIGKILL, consumers resume, and the CLI's lag and
//! reset-offsets agree with what a consumer then reads. The last runs against the external
//! broker `HERALD_TEST_BOOTSTRAP` names, when set; the crash needs Herald and skips there.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::support::{ServeProcess, TestBroker};

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
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
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

fn produce(bootstrap: &str, topic: &str, partitions: i32, count: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..count {
        let payload = format!("m{i}");
        let partition = i32::try_from(i).unwrap() % partitions;
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .payload(&payload)
                    .partition(partition),
            )
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn group_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("reconnect.backoff.max.ms", "500")
        .create()
        .unwrap()
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

fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let client = group_consumer(bootstrap, group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Right after a restart the coordinator may not answer yet; retry within the deadline.
        match client.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(list) => {
                return list
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect();
            }
            Err(error) => {
                assert!(Instant::now() < deadline, "committed offsets: {error}");
            }
        }
    }
}

#[test]
fn committed_offsets_survive_broker_sigkill_and_consumers_resume() {
    if herald_testkit::skip_on_external(
        "committed_offsets_survive_broker_sigkill_and_consumers_resume",
        "SIGKILLs the broker and restarts it on the same data directory",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServeProcess::start(&dir.path().join("data"));
    let bootstrap = server.kafka_addr.to_string();
    create_topic(&bootstrap, "sms", 3);
    produce(&bootstrap, "sms", 3, 300);

    let consumers = [
        group_consumer(&bootstrap, "sms-service"),
        group_consumer(&bootstrap, "sms-service"),
    ];
    for c in &consumers {
        c.subscribe(&["sms"]).unwrap();
    }
    let mut seen = BTreeSet::new();
    // Highest offset per partition whose commit the broker acknowledged.
    let mut acked: BTreeMap<i32, i64> = BTreeMap::new();
    let consume = |seen: &mut BTreeSet<String>,
                   acked: &mut BTreeMap<i32, i64>,
                   stop_at: usize,
                   within: Duration| {
        let deadline = Instant::now() + within;
        while seen.len() < stop_at {
            assert!(
                Instant::now() < deadline,
                "consumed only {} of {stop_at}",
                seen.len()
            );
            for c in &consumers {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                    seen.insert(
                        String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    );
                    // A commit that fails (the broker is restarting) is simply not counted.
                    if c.commit_message(&m, CommitMode::Sync).is_ok() {
                        let next = m.offset() + 1;
                        let entry = acked.entry(m.partition()).or_insert(next);
                        *entry = (*entry).max(next);
                    }
                }
            }
        }
    };
    consume(&mut seen, &mut acked, 120, Duration::from_secs(60));

    // SIGKILL: no shutdown path runs. The restart keeps the same addresses and data directory.
    server.sigkill();
    let acked_before_kill = acked.clone();
    server.restart();
    let after = committed(&bootstrap, "sms-service", "sms", 3);
    for (partition, offset) in &acked_before_kill {
        let now = after.get(partition).copied().unwrap_or(-1);
        assert!(
            now >= *offset,
            "partition {partition}: acknowledged commit {offset}, after restart {now}"
        );
    }

    consume(&mut seen, &mut acked, 300, Duration::from_secs(120));
    assert_eq!(
        seen.len(),
        300,
        "every message was consumed after the restart"
    );
    drop(server);
}

#[test]
fn cli_lag_and_reset_offsets_match_what_a_consumer_reads() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestBroker::start(&dir.path().join("data"));
    let bootstrap = server.bootstrap();
    let (topic, group) = (server.name("t"), server.name("g"));
    let (topic, group) = (topic.as_str(), group.as_str());
    create_topic(&bootstrap, topic, 1);
    produce(&bootstrap, topic, 1, 10);

    // Read four messages and commit offset 4, then leave the group.
    let reader = group_consumer(&bootstrap, group);
    reader.subscribe(&[topic]).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < 4 {
        assert!(Instant::now() < deadline);
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            read += 1;
            if read == 4 {
                reader.commit_message(&m, CommitMode::Sync).unwrap();
            }
        }
    }

    // While the member is active, reset-offsets is refused with exit code 6.
    let out = herald(
        &bootstrap,
        &[
            "group",
            "reset-offsets",
            group,
            "--topic",
            topic,
            "--to-offset",
            "2",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(reader);

    let describe = |bootstrap: &str| {
        let d = herald_json(bootstrap, &["group", "describe", group]);
        let o = d["offsets"][0].clone();
        (
            d["state"].as_str().unwrap().to_string(),
            o["committed"].as_i64(),
            o["end"].as_i64(),
            o["lag"].as_i64(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // LeaveGroup empties the group at once; poll until DescribeGroups shows it.
        let (state, committed, end, lag) = describe(&bootstrap);
        if state == "Empty" {
            assert_eq!((committed, end, lag), (Some(4), Some(10), Some(6)));
            break;
        }
        assert!(Instant::now() < deadline, "group still {state}");
    }
    let listed = herald_json(&bootstrap, &["group", "list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == group && g["state"] == "Empty")
    );

    let plan = herald_json(
        &bootstrap,
        &[
            "group",
            "reset-offsets",
            group,
            "--topic",
            topic,
            "--to-offset",
            "2",
            "--dry-run",
        ],
    );
    assert_eq!(plan["partitions"][0]["new"], 2);
    assert_eq!(describe(&bootstrap).1, Some(4), "a dry run commits nothing");

    herald_json(
        &bootstrap,
        &[
            "group",
            "reset-offsets",
            group,
            "--topic",
            topic,
            "--to-offset",
            "2",
        ],
    );
    assert_eq!(describe(&bootstrap).3, Some(8));
    herald_json(
        &bootstrap,
        &[
            "group",
            "reset-offsets",
            group,
            "--topic",
            topic,
            "--shift-by",
            "-1",
        ],
    );
    let (_, committed, _, lag) = describe(&bootstrap);
    assert_eq!((committed, lag), (Some(1), Some(9)));

    // A consumer of the group now starts exactly there.
    let next = group_consumer(&bootstrap, group);
    next.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        assert!(Instant::now() < deadline);
        if let Some(Ok(m)) = next.poll(Duration::from_millis(100)) {
            break (
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            );
        }
    };
    assert_eq!(first, (1, "m1".to_string()));
    drop(next);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = herald(&bootstrap, &["group", "delete", group]);
        if out.status.success() {
            break;
        }
        // Until the last member's LeaveGroup lands the group is not Empty (exit 6).
        assert_eq!(
            out.status.code(),
            Some(6),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(Instant::now() < deadline, "group never became deletable");
    }
    assert_eq!(
        herald(&bootstrap, &["group", "describe", group])
            .status
            .code(),
        Some(4)
    );
    let table = herald(&bootstrap, &["group", "list"]);
    assert!(table.status.success());
}
