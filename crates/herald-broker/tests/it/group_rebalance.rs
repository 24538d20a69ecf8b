//! Consumer groups under the classic protocol with real librdkafka consumers: partitions spread
//! over members, exactly-once delivery when nobody fails, at-least-once when a member is killed,
//! and an immediate rebalance when a member leaves politely.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};

use crate::group_support::{
    assigned, consumer, create_topic, payload, poll_until, produce, start_broker,
};

const PARTITIONS: i32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_six_partitions_and_read_each_message_once() {
    let b = start_broker().await;
    create_topic(&b.bootstrap, "orders", PARTITIONS).await;
    let bootstrap = b.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let members: Vec<_> = (0..3)
            .map(|_| consumer(&bootstrap, "billing", "orders", &[]))
            .collect();
        let refs: Vec<_> = members.iter().collect();
        // Wait for the group to settle: each member owns two partitions, none shared.
        poll_until(
            &refs,
            Duration::from_secs(60),
            "a balanced assignment",
            |_, _| {},
            || {
                let sets: Vec<_> = members.iter().map(assigned).collect();
                let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
                sets.iter().all(|s| s.len() == 2) && union.len() == 6
            },
        );
        let owners: Vec<BTreeSet<i32>> = members.iter().map(assigned).collect();

        produce(&bootstrap, "orders", PARTITIONS, 0, 600);
        let seen: RefCell<BTreeMap<String, usize>> = RefCell::default();
        let mut wrong_owner = Vec::new();
        poll_until(
            &refs,
            Duration::from_secs(60),
            "all 600 messages",
            |i, m| {
                if !owners[i].contains(&m.partition()) {
                    wrong_owner.push((i, m.partition()));
                }
                *seen.borrow_mut().entry(payload(m)).or_default() += 1;
                members[i].commit_message(m, CommitMode::Sync).unwrap();
            },
            || seen.borrow().len() == 600,
        );
        assert!(
            wrong_owner.is_empty(),
            "read outside its assignment: {wrong_owner:?}"
        );
        let seen = seen.into_inner();
        let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(duplicates.is_empty(), "delivered twice: {duplicates:?}");
        // Every partition's committed offset reaches its end (100 messages each).
        let committed = members[0]
            .committed_offsets(
                {
                    let mut tpl = rdkafka::TopicPartitionList::new();
                    for p in 0..PARTITIONS {
                        tpl.add_partition("orders", p);
                    }
                    tpl
                },
                Duration::from_secs(10),
            )
            .unwrap();
        for e in committed.elements() {
            assert_eq!(
                e.offset(),
                rdkafka::Offset::Offset(100),
                "partition {}",
                e.partition()
            );
        }
    })
    .await
    .unwrap();
}

/// Runs as a separate process (started by the test below) so that it can be SIGKILLed: a
/// member that reads, never commits, and reports each message on stdout. It is a child
/// process's entry point, not a test: ignored, so a normal run neither runs nor counts it, and
/// the test below starts it with `--ignored`. Without its environment it does nothing.
#[test]
#[ignore = "child process entry point of killed_member_partitions_move_and_uncommitted_messages_are_read_again"]
fn victim_member_process() {
    let Ok(bootstrap) = std::env::var("HERALD_TEST_VICTIM_BOOTSTRAP") else {
        return;
    };
    let member = consumer(&bootstrap, "sms", "sms", &[]);
    loop {
        match member.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => println!("VICTIM {} {}", m.partition(), payload(&m)),
            Some(Err(e)) => eprintln!("victim: {e}"),
            None => {}
        }
        let parts: Vec<String> = assigned(&member).iter().map(i32::to_string).collect();
        println!("VICTIM-ASSIGNED {}", parts.join(","));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_member_partitions_move_and_uncommitted_messages_are_read_again() {
    let b = start_broker().await;
    create_topic(&b.bootstrap, "sms", PARTITIONS).await;
    let bootstrap = b.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let mut victim = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "group_rebalance::victim_member_process",
                "--ignored",
                "--nocapture",
            ])
            .env("HERALD_TEST_VICTIM_BOOTSTRAP", &bootstrap)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let victim_seen = Arc::new(Mutex::new(BTreeSet::<String>::new()));
        let victim_assigned = Arc::new(Mutex::new(String::new()));
        let stdout = victim.stdout.take().unwrap();
        let reader = {
            let seen = victim_seen.clone();
            let assigned_text = victim_assigned.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("VICTIM-ASSIGNED ") {
                        *assigned_text.lock() = rest.to_string();
                    } else if let Some(rest) = line.strip_prefix("VICTIM ") {
                        if let Some((_, payload)) = rest.split_once(' ') {
                            seen.lock().insert(payload.to_string());
                        }
                    }
                }
            })
        };

        let survivors: Vec<_> = (0..2)
            .map(|_| consumer(&bootstrap, "sms", "sms", &[]))
            .collect();
        let refs: Vec<_> = survivors.iter().collect();
        poll_until(
            &refs,
            Duration::from_secs(60),
            "a three-way assignment",
            |_, _| {},
            || {
                let sets: Vec<_> = survivors.iter().map(assigned).collect();
                sets.iter().all(|s| s.len() == 2) && victim_assigned.lock().split(',').count() == 2
            },
        );

        produce(&bootstrap, "sms", PARTITIONS, 0, 300);
        let seen = RefCell::new(BTreeSet::new());
        // Read until the victim has fetched something it will never commit.
        poll_until(
            &refs,
            Duration::from_secs(60),
            "the victim to fetch messages",
            |i, m| {
                seen.borrow_mut().insert(payload(m));
                survivors[i].commit_message(m, CommitMode::Sync).unwrap();
            },
            || !victim_seen.lock().is_empty(),
        );
        // SIGKILL: no LeaveGroup, no commit; only the session timeout can free its partitions.
        victim.kill().unwrap();
        victim.wait().unwrap();
        reader.join().unwrap();
        let fetched_by_victim = victim_seen.lock().clone();
        assert!(!fetched_by_victim.is_empty());

        poll_until(
            &refs,
            Duration::from_secs(90),
            "the survivors to read all 300 messages",
            |i, m| {
                seen.borrow_mut().insert(payload(m));
                survivors[i].commit_message(m, CommitMode::Sync).unwrap();
            },
            || seen.borrow().len() == 300,
        );
        let all: BTreeSet<i32> = survivors.iter().flat_map(assigned).collect();
        assert_eq!(
            all.len(),
            6,
            "the victim's partitions moved to the survivors"
        );
        let seen = seen.into_inner();
        let missing: Vec<_> = fetched_by_victim.difference(&seen).collect();
        assert!(
            missing.is_empty(),
            "fetched by the victim, never redelivered: {missing:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polite_leave_rebalances_before_any_session_could_expire() {
    let b = start_broker().await;
    create_topic(&b.bootstrap, "mail", PARTITIONS).await;
    let bootstrap = b.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        // A session long enough that only LeaveGroup can explain a quick rebalance.
        let long = [
            ("session.timeout.ms", "120000"),
            ("max.poll.interval.ms", "120000"),
        ];
        let stays = consumer(&bootstrap, "mailers", "mail", &long);
        let leaves = consumer(&bootstrap, "mailers", "mail", &long);
        poll_until(
            &[&stays, &leaves],
            Duration::from_secs(60),
            "a split",
            |_, _| {},
            || assigned(&stays).len() == 3 && assigned(&leaves).len() == 3,
        );
        drop(leaves);
        poll_until(
            &[&stays],
            Duration::from_secs(30),
            "the remaining member to own all",
            |_, _| {},
            || assigned(&stays).len() == 6,
        );
    })
    .await
    .unwrap();
}
