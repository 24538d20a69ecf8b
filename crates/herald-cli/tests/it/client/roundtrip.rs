//! `herald produce` then `herald consume`: what goes in comes out, in order per partition.

use std::collections::BTreeMap;

use serde_json::Value;

use super::harness::Broker;

const EVENTS: usize = 10_000;
const KEYS: usize = 37;

/// Input lines `key:value`; values carry spaces, punctuation and non-ASCII text.
fn input() -> Vec<(String, String)> {
    (0..EVENTS)
        .map(|i| {
            (
                format!("user-{}", i % KEYS),
                format!("event {i} ümlaut, \"quoted\" = {}", i * 7),
            )
        })
        .collect()
}

#[test]
fn ten_thousand_keyed_events_with_headers_come_back_identical() {
    let broker = Broker::start();
    let n_events = broker.name("events");
    broker.ok(&["topic", "create", &n_events, "--partitions", "3"]);
    let lines = input();
    let text: String = lines.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();

    let produced = broker.herald_with_input(
        &[
            "--output",
            "json",
            "produce",
            &n_events,
            "--key-separator",
            ":",
            "--header",
            "source=import",
            "--header",
            "batch=7",
            "--compression",
            "lz4",
        ],
        text.as_bytes(),
    );
    produced.assert_code(0);
    let summary = produced.json();
    assert_eq!(summary["sent"], EVENTS);
    assert_eq!(summary["acknowledged"], EVENTS);
    assert_eq!(summary["failed"], 0);
    let per_partition: u64 = summary["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["events"].as_u64().unwrap())
        .sum();
    assert_eq!(per_partition, EVENTS as u64);

    let consumed = broker.herald(&[
        "--output",
        "json",
        "consume",
        &n_events,
        "--from-beginning",
        "--max-messages",
        &EVENTS.to_string(),
    ]);
    consumed.assert_code(0);
    let events: Vec<Value> = consumed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), EVENTS);

    // Every key lives in one partition, so the events of a partition, in offset order, must be
    // exactly the input lines of its keys, in input order.
    let mut by_partition: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for event in &events {
        assert_eq!(event["topic"], n_events.as_str());
        assert_eq!(
            event["headers"],
            serde_json::json!([
                {"key": "source", "value": "import"},
                {"key": "batch", "value": "7"}
            ])
        );
        by_partition
            .entry(event["partition"].as_u64().unwrap())
            .or_default()
            .push(event);
    }
    let mut key_partition: BTreeMap<String, u64> = BTreeMap::new();
    for (partition, events) in &by_partition {
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event["offset"], i as u64, "partition {partition}");
            let key = event["key"].as_str().unwrap().to_string();
            let previous = key_partition.insert(key.clone(), *partition);
            assert!(
                previous.is_none_or(|p| p == *partition),
                "key {key} in two partitions"
            );
        }
        let expected: Vec<(String, String)> = lines
            .iter()
            .filter(|(k, _)| key_partition.get(k) == Some(partition))
            .cloned()
            .collect();
        let got: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["key"].as_str().unwrap().to_string(),
                    e["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got, expected, "partition {partition}");
    }
    assert_eq!(key_partition.len(), KEYS);

    // The template output prints the same fields.
    let one = broker.ok(&[
        "consume",
        &n_events,
        "--partition",
        "0",
        "--offset",
        "0",
        "--max-messages",
        "1",
        "--format",
        "{partition}|{offset}|{key}|{headers}|{value}",
    ]);
    let first = by_partition[&0][0];
    assert_eq!(
        one,
        format!(
            "0|0|{}|source=import,batch=7|{}\n",
            first["key"].as_str().unwrap(),
            first["value"].as_str().unwrap()
        )
    );
}

#[test]
fn consume_positions_partition_and_group_commits() {
    let broker = Broker::start();
    let n_ticks = broker.name("ticks");
    let n_readers = broker.name("readers");
    broker.ok(&["topic", "create", &n_ticks, "--partitions", "2"]);
    let text: String = (0..20).map(|i| format!("tick-{i}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ticks.txt");
    std::fs::write(&file, &text).unwrap();
    let produced = broker.herald(&[
        "produce",
        &n_ticks,
        "--file",
        file.to_str().unwrap(),
        "--partition",
        "1",
        "--acks",
        "1",
    ]);
    produced.assert_code(0);
    assert!(
        produced.stdout.contains("produced 20 of 20 events"),
        "{}",
        produced.stdout
    );

    // Without --follow, a limit larger than what is stored stops at the end of the partitions.
    let all = broker.ok(&[
        "consume",
        &n_ticks,
        "--from-beginning",
        "--max-messages",
        "100",
    ]);
    assert_eq!(all.lines().count(), 20);

    let from_offset = broker.ok(&[
        "consume",
        &n_ticks,
        "--partition",
        "1",
        "--offset",
        "15",
        "--max-messages",
        "100",
    ]);
    assert_eq!(from_offset, "tick-15\ntick-16\ntick-17\ntick-18\ntick-19\n");
    let tail = broker.ok(&[
        "consume",
        &n_ticks,
        "--partition",
        "1",
        "--offset",
        "-2",
        "--max-messages",
        "100",
    ]);
    assert_eq!(tail, "tick-18\ntick-19\n");
    let since_epoch = broker.ok(&[
        "consume",
        &n_ticks,
        "--from-time",
        "2000-01-01T00:00:00Z",
        "--max-messages",
        "3",
    ]);
    assert_eq!(since_epoch, "tick-0\ntick-1\ntick-2\n");
    let future = broker.ok(&[
        "consume",
        &n_ticks,
        "--from-time",
        "2999-01-01",
        "--max-messages",
        "3",
    ]);
    assert_eq!(future, "");

    // A group resumes after what it printed and committed.
    let first = broker.ok(&[
        "consume",
        &n_ticks,
        "--group",
        &n_readers,
        "--from-beginning",
        "--max-messages",
        "5",
    ]);
    assert_eq!(first, "tick-0\ntick-1\ntick-2\ntick-3\ntick-4\n");
    let second = broker.ok(&[
        "consume",
        &n_ticks,
        "--group",
        &n_readers,
        "--from-beginning",
        "--max-messages",
        "2",
    ]);
    assert_eq!(second, "tick-5\ntick-6\n");
}

#[test]
fn follow_prints_new_events_and_commits_on_ctrl_c() {
    let broker = Broker::start();
    let n_live = broker.name("live");
    let n_watchers = broker.name("watchers");
    broker.ok(&["topic", "create", &n_live]);
    broker
        .herald_with_input(&["produce", &n_live], b"a\nb\n")
        .assert_code(0);
    let mut follower = broker.spawn(&[
        "consume",
        &n_live,
        "--group",
        &n_watchers,
        "--from-beginning",
    ]);
    assert_eq!(follower.wait_lines(2), ["a", "b"]);
    // Events produced while following arrive without restarting.
    broker
        .herald_with_input(&["produce", &n_live], b"c\n")
        .assert_code(0);
    assert_eq!(follower.wait_lines(3), ["a", "b", "c"]);
    assert_eq!(follower.interrupt(), Some(0));

    // Everything printed was committed: the group resumes after "c".
    broker
        .herald_with_input(&["produce", &n_live], b"d\n")
        .assert_code(0);
    let rest = broker.ok(&[
        "consume",
        &n_live,
        "--group",
        &n_watchers,
        "--max-messages",
        "10",
    ]);
    assert_eq!(rest, "d\n");
}
